import t from 'tap';
import type { TesterLockClient } from '../tester/lock-tester.js';
import { realClock, sleep } from '../lib/clock.js';
import type { Random } from '../lib/env.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import { tcpNetwork } from '../lib/tcp.js';
import { CachingLockClient } from '../lockserver/cache-client.js';
import { Notifier, startCachingLockServer, type RunningCachingLockServer } from '../lockserver/cache-host.js';
import { CacheProc, cacheCallbackProtocol, type Notice } from '../lockserver/cache-protocol.js';
import { CachingLockServer, type CachingLockServerLimits } from '../lockserver/cache-server.js';
import { runLockTester } from '../tester/lock-tester.js';
import { lockErrorCode, resolved, track } from './helpers/sim.js';

const SERVER = 'server:1';

interface Harness {
  readonly world: SimWorld;
  readonly net: SimNetwork;
  readonly server: RunningCachingLockServer;
  readonly table: CachingLockServer;
  client(name: string, options?: { closeTimeoutMs?: number; acquireTimeoutMs?: number }): Promise<CachingLockClient>;
}

async function harness(seed: number | string, limits: Partial<CachingLockServerLimits> = {}): Promise<Harness> {
  const world = new SimWorld(seed);
  const net = new SimNetwork(world);
  const table = new CachingLockServer(limits);
  const server = await startCachingLockServer({
    network: net.forOwner('server'),
    clock: world.clockFor('server'),
    random: world.random.fork(),
    address: SERVER,
    stateMachine: table,
  });
  return {
    world,
    net,
    server,
    table,
    client: (name, options = {}) =>
      CachingLockClient.open({
        network: net.forOwner(name),
        clock: world.clockFor(name),
        random: world.random.fork(),
        server: SERVER,
        host: name,
        checkInvariants: true,
        ...options,
      }),
  };
}


/**
 * The end-to-end workload: `clients` caching clients with `callers` concurrent callers each, every
 * caller doing `rounds` × (acquire a random lock, hold it a little, release). A checker asserts at
 * every grant that no other caller (of any client) holds the lock and that the server's table
 * names this caller's client as the holder. Returns the trace hash and counters.
 */
async function workload(
  seed: string,
  faults: { loss: number; duplicate: number; delayMaxMs: number },
  shape = { clients: 3, callers: 4, rounds: 15, locks: [1, 2, 3] },
  options: { limits?: Partial<CachingLockServerLimits>; isolations?: number } = {},
): Promise<{ hash: string; grants: number; acquireRpcs: number; endMs: number; violations: string[] }> {
  const h = await harness(seed, options.limits);
  h.net.setLinkFaults({ delayMinMs: 1, delayMaxMs: faults.delayMaxMs, loss: faults.loss, duplicate: faults.duplicate });
  const random: Random = h.world.random.fork();
  // Cut one node (the server or a client) off for a few seconds, now and then.
  const nodes = ['server', ...Array.from({ length: shape.clients }, (_, i) => `c${i}`)];
  for (let i = 0; i < (options.isolations ?? 0); i++) {
    h.world.schedule(random.int(6_000), () => {
      h.net.isolate(nodes[random.int(nodes.length)]!);
      h.world.schedule(1 + random.int(5_000), () => h.net.heal());
    });
  }
  const holders = new Map<string, string>();
  const violations: string[] = [];
  let grants = 0;
  const clients = await Promise.all(
    Array.from({ length: shape.clients }, (_, i) => h.client(`c${i}`, { closeTimeoutMs: 60_000 })),
  );
  // Each caller is one sequential actor; its operations are interleaved with everyone else's by
  // the simulator (virtual time, lossy network).
  const caller = async (client: CachingLockClient, owner: string, clock: ReturnType<SimWorld['clockFor']>): Promise<void> => {
    for (let round = 0; round < shape.rounds; round++) {
      const lid = String(shape.locks[random.int(shape.locks.length)]!);
      await client.acquire(lid);
      const other = holders.get(lid);
      if (other !== undefined) violations.push(`${owner} granted ${lid} while ${other} holds it`);
      if (h.table.holderOf(lid)?.id !== client.id) violations.push(`${owner} holds ${lid} but the server says ${JSON.stringify(h.table.holderOf(lid))}`);
      holders.set(lid, owner);
      grants++;
      await sleep(clock, random.int(40));
      holders.delete(lid); // before the release, as lock_tester does
      await client.release(lid);
      await sleep(clock, random.int(20));
    }
  };
  const all = Promise.all(
    clients.flatMap((client, c) =>
      Array.from({ length: shape.callers }, (_, w) => caller(client, `c${c}/w${w}`, h.world.clockFor(`c${c}`))),
    ),
  );
  await resolved(h.world, all);
  const endMs = h.world.now();
  const acquireRpcs = clients.reduce((sum, client) => sum + client.acquireRpcCount, 0);
  // Closing gives every cached lock back: afterwards the server's table is empty.
  await resolved(h.world, Promise.all(clients.map((client) => client.close())));
  for (const lid of shape.locks.map(String)) {
    if (h.table.holderOf(lid) !== undefined) violations.push(`lock ${lid} still held by ${JSON.stringify(h.table.holderOf(lid))} after close`);
  }
  h.table.invariants();
  h.server.host.close();
  return { hash: h.world.traceHash(), grants, acquireRpcs, endMs, violations };
}

t.test('end to end in the simulator: mutual exclusion on a lossy network, and everything finishes', async (t) => {
  for (let i = 1; i <= 8; i++) {
    const seed = `e2e-${i}`;
    const run = await workload(seed, { loss: 0.1, duplicate: 0.1, delayMaxMs: 30 });
    t.same(run.violations, [], `${seed}: no violation`);
    t.equal(run.grants, 3 * 4 * 15, `${seed}: every caller finished every round (${run.endMs} virtual ms)`);
    t.comment(`${seed}: ${run.acquireRpcs} acquire RPCs for ${run.grants} grants`);
  }
});

t.test('end to end with heavy faults: 30% loss, 30% duplicates, long reordering delays', async (t) => {
  const run = await workload('heavy', { loss: 0.3, duplicate: 0.3, delayMaxMs: 300 }, { clients: 4, callers: 2, rounds: 10, locks: [1, 2] });
  t.same(run.violations, []);
  t.equal(run.grants, 4 * 2 * 10, `every caller finished (${run.endMs} virtual ms, ${run.acquireRpcs} acquire RPCs)`);
});

t.test('end to end, one caller per client: every hand-off goes through the server', async (t) => {
  const run = await workload('one-caller', { loss: 0.1, duplicate: 0.1, delayMaxMs: 50 }, { clients: 5, callers: 1, rounds: 20, locks: [1, 2] });
  t.same(run.violations, []);
  t.equal(run.grants, 5 * 20, `every caller finished (${run.endMs} virtual ms, ${run.acquireRpcs} acquire RPCs)`);
});

t.test('end to end with tiny server bounds: pressure and shedding keep everyone moving', async (t) => {
  const limits = { maxLocks: 2, maxClients: 3, maxLocksPerClient: 2, maxWaitersPerLock: 2 };
  for (let i = 1; i <= 4; i++) {
    const run = await workload(`tiny-${i}`, { loss: 0.1, duplicate: 0.1, delayMaxMs: 50 }, { clients: 4, callers: 2, rounds: 10, locks: [1, 2, 3] }, { limits });
    t.same(run.violations, [], `tiny-${i}: no violation`);
    t.equal(run.grants, 4 * 2 * 10, `tiny-${i}: every caller finished (${run.endMs} virtual ms)`);
  }
});

t.test('end to end with partitions: nodes cut off for seconds, then healed', async (t) => {
  for (let i = 1; i <= 4; i++) {
    const run = await workload(`isolate-${i}`, { loss: 0.05, duplicate: 0.05, delayMaxMs: 50 }, { clients: 3, callers: 2, rounds: 10, locks: [1, 2] }, { isolations: 5 });
    t.same(run.violations, [], `isolate-${i}: no violation`);
    t.equal(run.grants, 3 * 2 * 10, `isolate-${i}: every caller finished (${run.endMs} virtual ms)`);
  }
});

t.test('the same seed gives the same run, byte for byte', async (t) => {
  const a = await workload('replay', { loss: 0.1, duplicate: 0.1, delayMaxMs: 30 }, { clients: 2, callers: 2, rounds: 5, locks: [1, 2] });
  const b = await workload('replay', { loss: 0.1, duplicate: 0.1, delayMaxMs: 30 }, { clients: 2, callers: 2, rounds: 5, locks: [1, 2] });
  t.equal(a.hash, b.hash);
  t.same(a.violations, []);
});

t.test('repeated acquire/release of a cached lock by one client sends exactly one acquire RPC', async (t) => {
  const h = await harness('cached');
  const client = await h.client('c0');
  for (let i = 0; i < 20; i++) {
    await resolved(h.world, client.acquire('7'));
    await resolved(h.world, client.release('7'));
  }
  t.equal(client.acquireRpcCount, 1);
  t.equal(h.server.host.executed.get(CacheProc.ACQUIRE), 1, 'the server executed one acquire');
  t.equal(h.server.host.executed.get(CacheProc.RELEASE), undefined, 'and no release: nobody asked for it back');
  t.equal(client.cacheStateOf('7'), 'free');

  // Another client wants it: the server revokes, the first client gives it back.
  const other = await h.client('c1');
  await resolved(h.world, other.acquire('7'));
  t.equal(h.table.holderOf('7')?.id, other.id);
  t.equal(client.cacheStateOf('7'), 'none');
  t.equal(client.stats().revokesReceived >= 1, true);
});

t.test('API errors: LOCK_NOT_HELD, LOCK_TIMEOUT, LOCK_ABORTED, LOCK_CLIENT_CLOSED, LOCK_RPC_FAILED', async (t) => {
  const h = await harness('errors');
  const a = await h.client('a');
  const b = await h.client('b');
  t.equal(await lockErrorCode(h.world, a.release('1')), 'LOCK_NOT_HELD');
  await resolved(h.world, a.acquire('1'));
  t.equal(await lockErrorCode(h.world, b.acquire('1', { timeoutMs: 500 })), 'LOCK_TIMEOUT', 'a holds it and a local caller keeps it');

  const controller = new AbortController();
  const waiting = b.acquire('1', { signal: controller.signal });
  h.world.schedule(100, () => controller.abort(new Error('bored')));
  t.equal(await lockErrorCode(h.world, waiting), 'LOCK_ABORTED');
  t.equal(await lockErrorCode(h.world, b.acquire('1', { signal: AbortSignal.abort() })), 'LOCK_ABORTED', 'already aborted');

  // b's attempt goes on after its callers gave up; once a releases, b ends up caching the lock.
  await resolved(h.world, a.release('1'));
  await h.world.runFor(5_000);
  t.equal(h.table.holderOf('1')?.id, b.id, 'the abandoned attempt completed: b caches the lock');
  await resolved(h.world, a.acquire('1'));
  t.equal(h.table.holderOf('1')?.id, a.id, '...and gives it back when asked');

  const waitingOnClose = b.acquire('1');
  await h.world.runFor(100);
  const closing = b.close();
  t.equal(await lockErrorCode(h.world, waitingOnClose), 'LOCK_CLIENT_CLOSED');
  await resolved(h.world, closing);
  t.equal(await lockErrorCode(h.world, b.acquire('2')), 'LOCK_CLIENT_CLOSED');

  const c = await h.client('c');
  h.net.partition([['server', 'a', 'b'], ['c']]);
  t.equal(await lockErrorCode(h.world, c.acquire('3', { timeoutMs: 30_000 })), 'LOCK_RPC_FAILED', 'server unreachable');
  h.net.heal();
  await resolved(h.world, c.acquire('3'));
  t.equal(h.table.holderOf('3')?.id, c.id, 'works again after the partition heals');
});

t.test('a lost grant notice is made up (the notifier resends it; the retry timer would re-ask)', async (t) => {
  const h = await harness('lost-retry');
  const a = await h.client('a');
  const b = await h.client('b');
  await resolved(h.world, a.acquire('1'));
  const bWaits = track(b.acquire('1'));
  await h.world.runFor(100);
  // Cut the server's calls to b (the grant of the hand-off), but not b's calls to the server.
  h.net.setLinkFaults({ loss: 1 }, ['server', 'b']);
  h.net.setLinkFaults({ loss: 0 }, ['server', 'a']);
  await resolved(h.world, a.release('1'));
  await h.world.runFor(50);
  h.net.clearLinkFaults(['server', 'b']);
  await h.world.runUntil(() => bWaits.settled, 30_000);
  t.equal(bWaits.result?.status, 'fulfilled', 'b got the lock anyway');
  t.equal(h.table.holderOf('1')?.id, b.id, 'and the table agrees');
  t.ok(b.stats().grantsReceived + b.acquireRpcCount >= 2, 'through a resent grant or a second ask');
});

t.test('a hand-off is taken from the grant notice: the waiter asks once, and gets the hand-off token', async (t) => {
  const h = await harness('grant-direct');
  const a = await h.client('a');
  const b = await h.client('b');
  await resolved(h.world, a.acquire('1'));
  const bWaits = track(b.acquire('1'));
  await h.world.runFor(100);
  t.equal(b.acquireRpcCount, 1, 'b asked once and waits in the queue');
  await resolved(h.world, a.release('1'));
  await h.world.runUntil(() => bWaits.settled, 10_000);
  t.equal(bWaits.result?.status, 'fulfilled', 'b holds the lock');
  t.equal(b.acquireRpcCount, 1, 'without asking again after the grant');
  const holder = h.table.holderOf('1');
  t.equal(holder?.id, b.id, 'the table agrees');
  t.equal(b.fencingTokenOf('1'), holder?.token, "b's hold carries the hand-off's token");
  await resolved(h.world, b.release('1'));
  await h.world.runFor(50);
  t.equal(h.table.holderOf('1')?.id, b.id, 'b caches it (nobody waits)');
  const grants = b.stats().grantsReceived;
  await h.world.runFor(5_000);
  t.equal(b.stats().grantsReceived, grants, 'the answered grant is not resent while b caches the lock');
});

t.test('Notifier: a grant the client answered is not resent until resendAll; a revoke is', async (t) => {
  const world = new SimWorld('notifier-grant');
  const net = new SimNetwork(world);
  const serverRpc = new RpcEndpoint(await net.forOwner('server').listen(SERVER), world.clockFor('server'), world.random.fork());
  const clientRpc = new RpcEndpoint(await net.forOwner('c').listen('c:1'), world.clockFor('c'), world.random.fork());
  const received: string[] = [];
  for (const kind of ['grant', 'revoke'] as const) {
    clientRpc.handle(cacheCallbackProtocol[kind], ({ lid, xid }) => {
      received.push(`${kind} ${lid}/${xid}`);
      return { status: 0, result: 0 };
    });
  }
  const notices: Notice[] = [
    { kind: 'grant', to: 'c:1', lid: '1', xid: 5, token: 9 },
    { kind: 'revoke', to: 'c:1', lid: '1', xid: 5, token: 0 },
  ];
  const notifier = new Notifier({ rpc: serverRpc, clock: world.clockFor('server'), pendingNotices: () => notices, isPrimary: () => true, noticeResendMs: 1_000 });
  notifier.poke();
  await world.runFor(3_500);
  t.equal(received.filter((r) => r.startsWith('grant')).length, 1, 'the grant went once');
  t.equal(received.filter((r) => r.startsWith('revoke')).length, 4, 'the revoke every second while pending');
  notifier.resendAll();
  await world.runFor(10);
  t.equal(received.filter((r) => r.startsWith('grant')).length, 2, 'resendAll (a view change) sends the grant again');
  notifier.stop();
  await serverRpc.close();
  await clientRpc.close();
});

t.test('Notifier: sends only while primary, resends while pending, restarts at once after a view change', async (t) => {
  const world = new SimWorld('notifier');
  const net = new SimNetwork(world);
  const serverRpc = new RpcEndpoint(await net.forOwner('server').listen(SERVER), world.clockFor('server'), world.random.fork());
  const clientRpc = new RpcEndpoint(await net.forOwner('c').listen('c:1'), world.clockFor('c'), world.random.fork());
  const received: string[] = [];
  clientRpc.handle(cacheCallbackProtocol.revoke, ({ lid, xid }) => {
    received.push(`revoke ${lid}/${xid} @${world.now()}`);
    return { status: 0, result: 0 };
  });
  clientRpc.handle(cacheCallbackProtocol.retry, ({ lid, xid }) => {
    received.push(`retry ${lid}/${xid} @${world.now()}`);
    return { status: 0, result: 0 };
  });
  let notices: Notice[] = [];
  let primary = false;
  const notifier = new Notifier({
    rpc: serverRpc,
    clock: world.clockFor('server'),
    pendingNotices: () => notices,
    isPrimary: () => primary,
    noticeResendMs: 1_000,
  });
  notices = [{ kind: 'revoke', to: 'c:1', lid: '1', xid: 5, token: 0 }];
  notifier.poke();
  await world.runFor(3_000);
  t.same(received, [], 'a backup sends nothing');
  primary = true;
  notifier.poke(); // the view change
  await world.runFor(10);
  t.equal(received.length, 1, 'the new primary sends at once');
  await world.runFor(2_500);
  t.equal(received.length, 3, 'resent every second while pending');
  notices = [{ kind: 'retry', to: 'c:1', lid: '2', xid: 6, token: 0 }];
  notifier.poke();
  await world.runFor(10);
  t.match(received.at(-1), /^retry 2\/6/, 'a new notice goes out promptly');
  notices = [];
  const before = received.length;
  await world.runFor(5_000);
  t.equal(received.length, before, 'nothing once nothing is pending');
  t.equal(world.pendingEvents, 0, 'and no timer keeps running');
  notifier.stop();
  await serverRpc.close();
  await clientRpc.close();
});

t.test('the classic lock_tester in the simulator (lossy network) against caching clients', async (t) => {
  const h = await harness('lock-tester-sim');
  h.net.setLinkFaults({ delayMinMs: 1, delayMaxMs: 20, loss: 0.05, duplicate: 0.05 });
  const lines: string[] = [];
  const result = await resolved(
    h.world,
    runLockTester({
      clients: async (i) => testerClient(await h.client(`tester-c${i}`)),
      clock: h.world.clockFor('tester'),
      print: (line) => lines.push(line),
      printError: (line) => lines.push(line),
    }),
  );
  t.same(result, { ok: true, passed: [1, 2, 3, 4, 5] }, lines.filter((l) => l.startsWith('error')).join('\n'));
  h.table.invariants();
});

async function lockTesterOverTcp(lossyPercent: number): Promise<{ result: unknown; errors: string }> {
  const random = osRandom();
  const server = await startCachingLockServer({
    network: tcpNetwork({ lossyPercent }),
    clock: realClock,
    random,
    address: '127.0.0.1:0',
  });
  const lines: string[] = [];
  try {
    const result = await runLockTester({
      clients: async () =>
        testerClient(await CachingLockClient.open({
          network: tcpNetwork({ lossyPercent }),
          clock: realClock,
          random: random.fork(),
          server: server.address,
          retryIntervalMs: 500,
          checkInvariants: true,
        })),
      holdMs: 100,
      timeoutMs: 120_000,
      print: (line) => lines.push(line),
      printError: (line) => lines.push(line),
    });
    return { result, errors: lines.filter((l) => l.startsWith('error')).join('\n') };
  } finally {
    await server.close();
  }
}

// Over real TCP, since it is about Node's event loop: in the simulator a zero-delay timer comes
// before any message, so callers that never wait would stop virtual time instead.
t.test('callers looping acquire → release on a cached lock yield to I/O: a remote waiter gets it', async (t) => {
  const random = osRandom();
  const table = new CachingLockServer();
  const server = await startCachingLockServer({ network: tcpNetwork(), clock: realClock, random, address: '127.0.0.1:0', stateMachine: table });
  const open = (): Promise<CachingLockClient> =>
    CachingLockClient.open({ network: tcpNetwork(), clock: realClock, random: random.fork(), server: server.address, checkInvariants: true });
  const [looper, waiter] = [await open(), await open()];
  try {
    await looper.acquire('1');
    await looper.release('1');
    // Two callers of one client hand its cached lock to each other without pause, at most
    // LOOP_GRANTS times in all. Were a grant handed over in the microtasks of the release that
    // freed it, they would never let the event loop run: the other client's acquire would not
    // even be sent, nor the revoke read, until they were done.
    const LOOP_GRANTS = 20_000;
    let loopGrants = 0;
    let grantsBeforeRemote: number | undefined;
    let holderAtGrant: string | undefined;
    const loop = async (): Promise<void> => {
      while (loopGrants < LOOP_GRANTS && grantsBeforeRemote === undefined) {
        await looper.acquire('1');
        loopGrants++;
        await looper.release('1');
      }
    };
    const remote = waiter.acquire('1').then(async () => {
      grantsBeforeRemote = loopGrants;
      holderAtGrant = table.holderOf('1')?.id;
      await waiter.release('1'); // a looping caller may be waiting for it again
    });
    await Promise.all([loop(), loop(), remote]);
    t.ok(grantsBeforeRemote !== undefined && grantsBeforeRemote < LOOP_GRANTS, `the remote waiter got the lock after ${grantsBeforeRemote} local grants`);
    t.equal(holderAtGrant, waiter.id, "the server's table named the remote waiter at its grant");
  } finally {
    await Promise.all([looper.close(), waiter.close()]);
    await server.close();
  }
});

t.test('the classic lock_tester over real TCP on 127.0.0.1 against an unreplicated cache-host', async (t) => {
  const { result, errors } = await lockTesterOverTcp(0);
  t.same(result, { ok: true, passed: [1, 2, 3, 4, 5] }, errors);
});

t.test('...and with RPC_LOSSY-style faults (10%)', async (t) => {
  const { result, errors } = await lockTesterOverTcp(10);
  t.same(result, { ok: true, passed: [1, 2, 3, 4, 5] }, errors);
});

/** lock_tester's numeric ids are lock names in decimal. */
function testerClient(client: CachingLockClient): TesterLockClient {
  return {
    acquire: async (lid) => void (await client.acquire(String(lid))),
    release: (lid) => client.release(String(lid)),
    close: () => client.close(),
  };
}
