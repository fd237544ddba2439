/**
 * The real host wiring (tester/replica.ts): three replicas over TCP on loopback with classic-level
 * storage and file logs, with short timers. Checks the log files the process tester reads, a
 * restart from disk, and the control port.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { realClock, sleep } from '../lib/clock.js';
import { openFileLineLog, paxosLogPath } from '../lib/file-log.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { RsmTestStatus, rsmClientProtocol, rsmTestProtocol } from '../rsm/protocol.js';
import { freeBasePort } from './helpers/ports.js';
import { controlAddressOf, nodeIdFromArgument, replicaDirsFromEnv, startReplica, type Replica } from '../rsm/replica-process.js';

const TIMING = { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 300, paxosTimeoutMs: 300, removeJitterMsMax: 100, joinRetryMs: 200 };

async function waitFor(predicate: () => boolean, limitMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (predicate()) return true;
    await sleep(realClock, 20);
  }
  return predicate();
}

function doneLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter((line) => line.startsWith('done '));
  } catch {
    return [];
  }
}

t.test('the file log: exact lines (trailing spaces kept), replace rewrites, directories created', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-filelog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = paxosLogPath(join(dir, 'nested', 'logs'), '3772');
  t.equal(path, join(dir, 'nested', 'logs', 'paxos-3772.log'));
  const log = openFileLineLog(path);
  log.append('done 1 3772');
  log.append('done 2 3772 3774 ');
  t.equal(readFileSync(path, 'utf8'), 'done 1 3772\ndone 2 3772 3774 \n');
  log.replace(['done 1 3772', 'done 2 3772 3776 ', 'done 3 3772 3776 3774 ']);
  t.equal(readFileSync(path, 'utf8'), 'done 1 3772\ndone 2 3772 3776 \ndone 3 3772 3776 3774 \n');
  log.replace([]);
  t.equal(readFileSync(path, 'utf8'), '');
});

t.test('ids, control addresses and directories', async (t) => {
  t.equal(nodeIdFromArgument('3772'), '3772');
  t.equal(nodeIdFromArgument('localhost:3772'), 'localhost:3772');
  t.throws(() => nodeIdFromArgument('x'), { code: 'ADDRESS_INVALID' });
  t.equal(controlAddressOf('3772'), '127.0.0.1:3773');
  t.equal(controlAddressOf('10.0.0.1:3772'), '10.0.0.1:3773');
  t.same(replicaDirsFromEnv({}), { logDir: 'logs', dataDir: join('logs', 'data') });
  t.same(replicaDirsFromEnv({ RSM_LOG_DIR: '/tmp/l' }), { logDir: '/tmp/l', dataDir: join('/tmp/l', 'data') });
  t.same(replicaDirsFromEnv({ RSM_LOG_DIR: '/tmp/l', RSM_DATA_DIR: '/tmp/d' }), { logDir: '/tmp/l', dataDir: '/tmp/d' });
});

t.test('three replicas over TCP: views in the log files, restart from disk, control port', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-replica-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = await freeBasePort(3);
  const ids = [0, 1, 2].map((i) => String(base + 2 * i));
  const deaths: string[] = [];
  const replicas = new Map<string, Replica>();
  const start = async (id: string): Promise<void> => {
    replicas.set(id, await startReplica({ master: ids[0]!, me: id, logDir: dir, timing: TIMING, lossyPercent: 0, die: (m) => deaths.push(`${id} ${m}`) }));
  };
  t.teardown(async () => {
    for (const replica of replicas.values()) await replica.close();
  });
  const logOf = (id: string): string => join(dir, `paxos-${id}.log`);

  for (let i = 0; i < 3; i++) {
    await start(ids[i]!);
    const expected = ids.slice(0, i + 1);
    t.ok(await waitFor(() => expected.every((id) => doneLines(logOf(id)).length === i + 1)), `view ${i + 1}`);
  }
  const views = [`done 1 ${ids[0]}`, `done 2 ${ids[0]} ${ids[1]} `, `done 3 ${ids[0]} ${ids[1]} ${ids[2]} `];
  for (const id of ids) t.same(doneLines(logOf(id)), views, `${id}: log file`);

  // Kill p2 (no goodbye): the others form view 4 without it.
  await replicas.get(ids[2]!)!.close();
  replicas.delete(ids[2]!);
  t.ok(await waitFor(() => doneLines(logOf(ids[0]!)).length === 4), 'view 4');
  t.equal(doneLines(logOf(ids[0]!))[3], `done 4 ${ids[0]} ${ids[1]} `);
  // Restart p2 from its data directory: it knows view 3, learns view 4, rejoins in view 5.
  await start(ids[2]!);
  t.ok(await waitFor(() => ids.every((id) => doneLines(logOf(id)).length === 5)), 'view 5 everywhere');
  for (const id of ids) t.equal(doneLines(logOf(id))[4], `done 5 ${ids[0]} ${ids[1]} ${ids[2]} `);

  // The client `members` call and the control port.
  const random = osRandom();
  const network = tcpNetwork({ random: random.fork() });
  const client = new RpcEndpoint(network.connect(), realClock, random.fork());
  t.teardown(() => client.close());
  const members = await client.call(`127.0.0.1:${ids[1]}`, rsmClientProtocol.members, { dummy: 0 }, { timeoutMs: 5000 });
  t.same(members.ok && members.result, [...ids, ids[0]]);
  const armed = await client.call(controlAddressOf(ids[1]!), rsmTestProtocol.breakpoint, { b: 1 }, { timeoutMs: 5000 });
  t.same(armed.ok && armed.status, RsmTestStatus.OK);
  replicas.get(ids[1]!)!.node.breakpoint1();
  t.same(deaths, [`${ids[1]} Dying at breakpoint 1 in rsm!`], 'die was called with the lab message');
});

t.test('a primary restarted from disk learns the newer view before it acts as primary of its old one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-replica-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const base = await freeBasePort(3);
  const ids = [0, 1, 2].map((i) => String(base + 2 * i));
  const replicas = new Map<string, Replica>();
  const start = async (id: string): Promise<Replica> => {
    const replica = await startReplica({ master: ids[0]!, me: id, logDir: dir, timing: TIMING, lossyPercent: 0, die: () => undefined });
    replicas.set(id, replica);
    return replica;
  };
  t.teardown(async () => {
    for (const replica of replicas.values()) await replica.close();
  });
  const ready = (replica: Replica, vid: number): boolean => {
    const status = replica.node.status();
    return status.vid === vid && !status.inViewChange;
  };
  for (let i = 0; i < 3; i++) {
    await start(ids[i]!);
    t.ok(await waitFor(() => ids.slice(0, i + 1).every((id) => ready(replicas.get(id)!, i + 1))), `view ${i + 1} ready`);
  }
  const oldPrimary = replicas.get(ids[0]!)!.node.status().primary;
  t.ok(ids.includes(oldPrimary), `view 3 has primary ${oldPrimary}`);
  // Kill the primary (no goodbye); the other two form view 4 without it.
  await replicas.get(oldPrimary)!.close();
  replicas.delete(oldPrimary);
  const survivors = ids.filter((id) => id !== oldPrimary);
  t.ok(await waitFor(() => survivors.every((id) => ready(replicas.get(id)!, 4))), 'view 4 ready without the old primary');

  // Restart it from its data directory and watch its status closely until it knows view 4.
  const restarted = await start(oldPrimary);
  let actedAsOldPrimary = 0;
  let samples = 0;
  const learned = await waitFor(() => {
    const status = restarted.node.status();
    samples++;
    if (status.vid === 3 && status.primary === oldPrimary && !status.inViewChange) actedAsOldPrimary++;
    return status.vid >= 4;
  }, 15_000);
  t.ok(learned, `the restarted node learned view 4 (${samples} status samples)`);
  t.equal(actedAsOldPrimary, 0, 'it never served as primary of view 3 meanwhile');
});
