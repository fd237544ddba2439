/**
 * The lock table's limit options of `lock_server` (--max-locks N, …): the parser refuses what is
 * not an integer 1..LOCK_LIMIT_MAX with a usage error (exit 2), and a value given reaches the
 * table, shown by what the service answers (a lowered bound changes answers the defaults would
 * give), in the replica form and in the unreplicated caching form.
 */
import { startChild, waitForOutput, type Child } from './helpers/child.js';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { UsageError } from '../lib/cli.js';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { CacheProc, LockStatus, cacheLockProtocol, decodeI32Reply, encodeCacheLockRequest, encodeCacheStatRequest } from '../lockserver/cache-protocol.js';
import { defaultCachingLockServerLimits } from '../lockserver/cache-server.js';
import { LOCK_LIMIT_MAX, LOCK_LIMIT_OPTIONS, lockLimitArguments, lockLimitsFromOptions } from '../lockserver/lock-replica.js';
import { RsmClient } from '../rsm/client.js';
import { freeBasePort } from './helpers/ports.js';

const LOCK_SERVER = fileURLToPath(new URL('../lockserver/bin/lock_server.js', import.meta.url));

function startLockServer(args: readonly string[], env: Record<string, string> = {}): Child {
  return startChild(LOCK_SERVER, args, env);
}

function stopOnTeardown(t: Test, child: Child): void {
  t.teardown(async () => {
    if (child.process.exitCode === null && child.process.signalCode === null) {
      child.process.kill('SIGTERM');
      await child.exited(10_000);
    }
  });
}

t.test('lockLimitsFromOptions: absent options keep the defaults, given ones are integers 1..LOCK_LIMIT_MAX', async (t) => {
  t.same(lockLimitsFromOptions({}), {});
  t.same(lockLimitsFromOptions({ 'max-idle-locks': '1000000', 'max-locks': '1', unfenced: true }), { maxIdleLocks: 1_000_000, maxLocks: 1 });
  t.same(lockLimitsFromOptions({ 'max-locks-per-client': String(LOCK_LIMIT_MAX) }), { maxLocksPerClient: LOCK_LIMIT_MAX });
  for (const bad of ['0', '-1', 'x', '1e6', '1.5', '', String(LOCK_LIMIT_MAX + 1)]) {
    t.throws(
      () => lockLimitsFromOptions({ 'max-clients': bad }),
      new UsageError(`--max-clients must be an integer 1..${LOCK_LIMIT_MAX}, got ${JSON.stringify(bad)}`),
      `--max-clients ${JSON.stringify(bad)} is refused`,
    );
  }
  // Every limit of the table has its option, and the options a tool passes read back the same.
  t.same(LOCK_LIMIT_OPTIONS.map((o) => o.limit).sort(), Object.keys(defaultCachingLockServerLimits).sort());
  const raised = { maxLocks: 7, maxIdleLocks: 2_000_000, maxWaitersPerLock: 3, maxClients: 9, maxLocksPerClient: 11 };
  const args = lockLimitArguments(raised);
  const values = Object.fromEntries(Array.from({ length: args.length / 2 }, (_, i) => [args[2 * i]!.replace(/^--/, ''), args[2 * i + 1]]));
  t.same(lockLimitsFromOptions(values), raised);
  t.same(lockLimitArguments(defaultCachingLockServerLimits), [], 'the defaults need no option');
});

t.test('lock_server refuses a bad limit with the usage error, exit 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--max-locks', '0', '1', '2'], /^lock_server: USAGE: --max-locks must be an integer 1\.\.100000000, got "0" \(usage: lock_server /m],
    [['--max-idle-locks', 'many', '1'], /^lock_server: USAGE: --max-idle-locks must be an integer 1\.\.100000000, got "many" /m],
    [['--max-clients', '100000001', '1', '2'], /^lock_server: USAGE: --max-clients must be an integer 1\.\.100000000, got "100000001" /m],
    [['1', '2', '--max-waiters-per-lock'], /^lock_server: USAGE: option --max-waiters-per-lock needs a value /m],
    [['--max-locks-per-client', '-3', '1', '2'], /^lock_server: USAGE: /m],
    [['--basic', '--max-locks', '5', '1'], /^lock_server: USAGE: the --max-… limits apply to the caching lock table, not to --basic /m],
  ];
  for (const [args, pattern] of cases) {
    const child = startLockServer(args);
    t.equal(await child.exited(20_000), 2, `lock_server ${args.join(' ')}: exit 2`);
    t.match(child.output(), pattern);
  }
  const help = startLockServer(['--help']);
  t.equal(await help.exited(20_000), 0);
  t.match(help.output(), /--max-idle-locks N +idle locks whose grant count is remembered \(default 100000\)/);
  t.match(help.output(), /Every replica of a group must be started with the same values/);
});

t.test('a replica started with --max-idle-locks 1 serves, and forgets all but the last idle lock', async (t) => {
  const port = await freeBasePort(1);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-limits-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  // A one-node group: MASTER = ME.
  const replica = startLockServer(['--max-idle-locks', '1', String(port), String(port)], { RSM_LOG_DIR: dir, RSM_DATA_DIR: path.join(dir, 'data') });
  stopOnTeardown(t, replica);
  await waitForOutput(replica, /^lock_server: lock table limits: max-locks 100000, max-idle-locks 1, max-waiters-per-lock 1000, max-clients 10000, max-locks-per-client 1000$/m, 20_000);

  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  const rsm = new RsmClient({ rpc, knownMembers: [String(port)], addressOf: (id) => normalizeAddress(id) });
  t.teardown(async () => {
    rsm.close();
    await rpc.close();
  });
  const invoke = (proc: number, request: Uint8Array) => rsm.invoke(proc, request, { timeoutMs: 20_000 });
  for (const [lid, xid] of [
    ['first', 1],
    ['second', 2],
  ] as const) {
    const request = encodeCacheLockRequest({ lid, id: 'limits-test-client', xid });
    t.equal((await invoke(CacheProc.ACQUIRE, request)).status, LockStatus.OK, `acquire ${lid}`);
    t.equal((await invoke(CacheProc.RELEASE, request)).status, LockStatus.OK, `release ${lid}`);
  }
  const grants = async (lid: string): Promise<number | undefined> => {
    const answer = await invoke(CacheProc.STAT, encodeCacheStatRequest({ lid }));
    const decoded = decodeI32Reply(answer.reply);
    return answer.status === LockStatus.OK && decoded.ok ? decoded.value : undefined;
  };
  // With the default bound (100,000) both would be remembered with 1 grant.
  t.equal(await grants('second'), 1, 'the last idle lock is remembered');
  t.equal(await grants('first'), 0, 'the idle lock before it was forgotten: the bound is 1');
});

t.test('the unreplicated caching server takes the limits too: --max-locks 1 refuses a second busy lock', async (t) => {
  const port = await freeBasePort(1);
  const server = startLockServer(['--max-locks', '1', String(port)]);
  stopOnTeardown(t, server);
  await waitForOutput(server, /^lock_server: lock table limits: max-locks 1, /m, 20_000);
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  const client = rpc.newClient(`127.0.0.1:${port}`);
  t.teardown(async () => {
    client.close();
    await rpc.close();
  });
  // Client ids are callback addresses; nobody listens on these (the revokes that pressure sends go nowhere).
  const first = await client.call(cacheLockProtocol.acquire, { lid: 'a', id: '127.0.0.1:9', xid: 1 }, { timeoutMs: 10_000 });
  t.ok(first.ok && first.status === LockStatus.OK, 'the first lock is granted');
  const second = await client.call(cacheLockProtocol.acquire, { lid: 'b', id: '127.0.0.1:10', xid: 1 }, { timeoutMs: 10_000 });
  t.ok(second.ok && second.status === LockStatus.IOERR, 'a second busy lock is beyond --max-locks 1: IOERR (the default would grant it)');
});
