import fc from 'fast-check';
import t from 'tap';
import { RpcEndpoint } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import {
  BasicLockClient,
  BasicLockServer,
  BasicLockTable,
  LockError,
  type BasicLockLimits,
} from '../lockserver/index.js';
import { lockErrorCode, resolved, track } from './helpers/sim.js';

const SERVER = 'server:1';
const A = 1;

interface Harness {
  world: SimWorld;
  net: SimNetwork;
  server: BasicLockServer;
  /** A new lock client with its own endpoint, owned by `name`. */
  client(name: string): BasicLockClient;
  /** Replaces the server by a new instance (new nonce, empty table), as a crash and restart would. */
  restartServer(): Promise<BasicLockServer>;
}

async function harness(seed: number | string, limits: Partial<BasicLockLimits> = {}): Promise<Harness> {
  const world = new SimWorld(seed);
  const net = new SimNetwork(world);
  const startServer = async (): Promise<BasicLockServer> => {
    const rpc = new RpcEndpoint(await net.forOwner('server').listen(SERVER), world.clockFor('server'), world.random.fork());
    return new BasicLockServer(rpc, limits);
  };
  const h: Harness = {
    world,
    net,
    server: await startServer(),
    client: (name) => {
      const rpc = new RpcEndpoint(net.forOwner(name).connect(), world.clockFor(name), world.random.fork());
      return new BasicLockClient(rpc, SERVER);
    },
    restartServer: async () => {
      world.crash('server');
      world.restart('server');
      h.server = await startServer();
      return h.server;
    },
  };
  return h;
}

/** A promise whose settlement can be inspected synchronously. */

async function until(world: SimWorld, predicate: () => boolean, what: string, limitMs = 60_000): Promise<void> {
  if (!(await world.runUntil(predicate, limitMs))) throw new Error(`${what}: not reached within ${limitMs} virtual ms`);
}

t.test('mutual exclusion and FIFO hand-off', async (t) => {
  const h = await harness('fifo');
  const [a, b, c] = [h.client('a'), h.client('b'), h.client('c')];
  const table = h.server.table;
  await resolved(h.world, a.acquire(A));
  t.equal(table.holder(A), a.clt);

  // Queue b, then c, each only once the previous one is queued, so the arrival order is known.
  const bWaits = track(b.acquire(A));
  await until(h.world, () => table.waiters === 1, 'b queued');
  const cWaits = track(c.acquire(A));
  await until(h.world, () => table.waiters === 2, 'c queued');
  await h.world.runFor(30_000); // far beyond any retransmission: nothing may be granted while a holds
  t.notOk(bWaits.settled || cWaits.settled, 'no waiter is granted while the lock is held');

  const lock2 = await resolved(h.world, c.stat(2));
  t.equal(lock2, 0, 'another lock is untouched');
  await resolved(h.world, a.acquire(2));
  t.equal(table.holder(2), a.clt, 'other locks are independent');

  await resolved(h.world, a.release(A));
  await until(h.world, () => bWaits.settled, 'b granted');
  t.equal(bWaits.result?.status, 'fulfilled');
  t.equal(table.holder(A), b.clt, 'the first waiter gets the lock');
  await h.world.runFor(30_000);
  t.notOk(cWaits.settled, 'the second waiter still waits');

  await resolved(h.world, b.release(A));
  await until(h.world, () => cWaits.settled, 'c granted');
  t.equal(cWaits.result?.status, 'fulfilled');
  t.equal(table.holder(A), c.clt);
  t.equal(await resolved(h.world, a.stat(A)), 3, 'three acquires granted');
  table.invariants();
});

t.test('a holder acquiring again waits like anyone (locks are not reentrant)', async (t) => {
  const h = await harness('reentrant');
  const a = h.client('a');
  await resolved(h.world, a.acquire(A));
  const again = track(a.acquire(A));
  await h.world.runFor(30_000);
  t.notOk(again.settled, 'the second acquire by the same client waits');
  await resolved(h.world, a.release(A));
  await until(h.world, () => again.settled, 'second acquire granted');
  t.equal(h.server.table.holder(A), a.clt);
});

t.test('release by a non-holder is LOCK_NOT_HELD and changes nothing', async (t) => {
  const h = await harness('noent');
  const [a, b] = [h.client('a'), h.client('b')];
  t.equal(await lockErrorCode(h.world, b.release(A)), 'LOCK_NOT_HELD', 'a lock nobody ever held');
  await resolved(h.world, a.acquire(A));
  t.equal(await lockErrorCode(h.world, b.release(A)), 'LOCK_NOT_HELD', 'a lock held by someone else');
  t.equal(h.server.table.holder(A), a.clt, 'the holder keeps it');
  await resolved(h.world, a.release(A));
  t.equal(await lockErrorCode(h.world, a.release(A)), 'LOCK_NOT_HELD', 'a second release');
  t.equal(h.server.table.holder(A), undefined);
  t.equal(await resolved(h.world, b.stat(A)), 1, 'failed releases grant nothing');
});

t.test('stat counts the acquires granted per lock', async (t) => {
  const h = await harness('stat');
  const clients = [h.client('a'), h.client('b'), h.client('c')];
  t.equal(await resolved(h.world, clients[0]!.stat(7)), 0);
  for (const client of [...clients, ...clients]) {
    await resolved(h.world, client.acquire(7));
    await resolved(h.world, client.release(7));
  }
  t.equal(await resolved(h.world, clients[1]!.stat(7)), 6);
  t.equal(await resolved(h.world, clients[1]!.stat(8)), 0);
});

t.test('aborting a waiting acquire: LOCK_ABORTED, and a later grant is handed back', async (t) => {
  const h = await harness('abort');
  const [a, b, c] = [h.client('a'), h.client('b'), h.client('c')];
  const table = h.server.table;
  await resolved(h.world, a.acquire(A));

  const controller = new AbortController();
  const bWaits = track(b.acquire(A, { signal: controller.signal }));
  await until(h.world, () => table.waiters === 1, 'b queued');
  controller.abort(new Error('caller gave up'));
  await until(h.world, () => bWaits.settled, 'abort seen');
  const reason = bWaits.result?.status === 'rejected' ? bWaits.result.reason : undefined;
  t.type(reason, LockError);
  t.equal((reason as LockError).code, 'LOCK_ABORTED');
  t.equal(((reason as LockError).cause as Error).message, 'caller gave up', 'cause is the signal reason');

  // The server still grants b's queued request when a releases; b's client returns it at once.
  await resolved(h.world, a.release(A));
  await until(h.world, () => table.grants(A) === 2 && table.holder(A) === undefined, 'abandoned grant released');
  await resolved(h.world, c.acquire(A));
  t.equal(table.holder(A), c.clt, 'the lock is usable again');

  const already = AbortSignal.abort();
  t.equal(await lockErrorCode(h.world, b.acquire(9, { signal: already })), 'LOCK_ABORTED', 'already aborted');
  t.equal(await resolved(h.world, c.stat(9)), 0, 'an already-aborted acquire is never sent');
});

t.test('close fails a waiting acquire with LOCK_CLIENT_CLOSED', async (t) => {
  const h = await harness('close');
  const [a, b] = [h.client('a'), h.client('b')];
  await resolved(h.world, a.acquire(A));
  const bWaits = b.acquire(A);
  await until(h.world, () => h.server.table.waiters === 1, 'b queued');
  b.close();
  t.equal(await lockErrorCode(h.world, bWaits), 'LOCK_CLIENT_CLOSED');
  t.equal(await lockErrorCode(h.world, b.stat(A)), 'LOCK_CLIENT_CLOSED', 'closed for good');
});

t.test('a full waiter table answers RETRY; the client backs off and gets the lock later', async (t) => {
  const h = await harness('retry', { maxWaiters: 1 });
  const [a, b, c] = [h.client('a'), h.client('b'), h.client('c')];
  const table = h.server.table;
  await resolved(h.world, a.acquire(A));
  const bWaits = track(b.acquire(A));
  await until(h.world, () => table.waiters === 1, 'b queued');
  const cWaits = track(c.acquire(A));
  await h.world.runFor(20_000);
  t.equal(table.waiters, 1, 'c was refused, not queued');
  t.notOk(cWaits.settled, 'c keeps retrying');
  await resolved(h.world, a.release(A));
  await until(h.world, () => bWaits.settled, 'b granted');
  await resolved(h.world, b.release(A));
  await until(h.world, () => cWaits.settled, 'c granted after retrying');
  t.equal(cWaits.result?.status, 'fulfilled');
  t.equal(table.holder(A), c.clt);
});

t.test('server restart (RPC_OLDSRV): the request is sent once more to the new instance', async (t) => {
  const h = await harness('oldsrv');
  const a = h.client('a');
  await resolved(h.world, a.acquire(A));
  const fresh = await h.restartServer();
  t.equal(fresh.table.holder(A), undefined, 'the new instance starts empty');
  await resolved(h.world, a.acquire(A));
  t.equal(fresh.table.holder(A), a.clt, 'granted by the new instance');
  await resolved(h.world, a.release(A));
});

t.test('lock ids must be safe non-negative integers', async (t) => {
  const h = await harness('ids');
  const a = h.client('a');
  for (const bad of [-1, 1.5, 2 ** 53, Number.NaN]) {
    await t.rejects(a.acquire(bad), RangeError, `acquire(${bad})`);
    await t.rejects(a.release(bad), RangeError, `release(${bad})`);
  }
  await resolved(h.world, a.acquire(2 ** 53 - 1));
  t.equal(h.server.table.holder(2 ** 53 - 1), a.clt, 'the largest safe id works end to end');
});

t.test('mutual exclusion holds under loss, duplication and reordering', async (t) => {
  for (const seed of [1, 2, 3]) {
    const h = await harness(`lossy-${seed}`);
    h.net.setLinkFaults({ loss: 0.2, duplicate: 0.2, delayMinMs: 1, delayMaxMs: 300 });
    const clients = Array.from({ length: 4 }, (_, i) => h.client(`c${i}`));
    let holders = 0;
    let maxHolders = 0;
    const workers = clients.map(async (client) => {
      for (let i = 0; i < 5; i++) {
        await client.acquire(A);
        maxHolders = Math.max(maxHolders, ++holders);
        holders--;
        await client.release(A);
      }
    });
    await resolved(h.world, Promise.all(workers));
    t.equal(maxHolders, 1, `seed ${seed}: never two holders`);
    t.equal(h.server.table.grants(A), 20, `seed ${seed}: every acquire executed exactly once`);
    h.server.table.invariants();
  }
});

// ---------------------------------------------------------------------------------------------
// The table against a simple model: holder per lock plus one FIFO queue per lock.

type TableOp = { kind: 'acquire' | 'release'; clt: number; lid: number };

t.test('BasicLockTable behaves like the model', async (t) => {
  const op = fc.record({
    kind: fc.constantFrom<'acquire' | 'release'>('acquire', 'release'),
    clt: fc.integer({ min: 1, max: 4 }),
    lid: fc.integer({ min: 0, max: 2 }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 0, max: 6 }), (ops: TableOp[], maxWaiters) => {
      const table = new BasicLockTable<number>({ maxWaiters, maxHeldLocks: 10, maxIdleLocks: 10 });
      const holder = new Map<number, number>();
      const queues = new Map<number, Array<{ clt: number; token: number }>>();
      const grants = new Map<number, number>();
      let token = 0;
      for (const { kind, clt, lid } of ops) {
        const queue = queues.get(lid) ?? [];
        queues.set(lid, queue);
        const waiting = [...queues.values()].reduce((n, q) => n + q.length, 0);
        if (kind === 'acquire') {
          const expected = !holder.has(lid) ? 'granted' : waiting < maxWaiters ? 'queued' : 'full';
          if (expected === 'granted') {
            holder.set(lid, clt);
            grants.set(lid, (grants.get(lid) ?? 0) + 1);
          }
          if (expected === 'queued') queue.push({ clt, token });
          if (table.acquire(clt, lid, token++) !== expected) return false;
        } else {
          const outcome = table.release(clt, lid);
          if (holder.get(lid) !== clt) {
            if (outcome.released) return false;
          } else {
            const next = queue.shift();
            if (!outcome.released || outcome.granted !== next?.token) return false;
            if (next === undefined) holder.delete(lid);
            else {
              holder.set(lid, next.clt);
              grants.set(lid, (grants.get(lid) ?? 0) + 1);
            }
          }
        }
        table.invariants();
        for (const l of [0, 1, 2]) {
          if (table.holder(l) !== holder.get(l) || table.grants(l) !== (grants.get(l) ?? 0)) return false;
        }
      }
      return true;
    }),
  );
  t.pass('matches the model');
});

t.test('BasicLockTable bounds held and remembered locks', async (t) => {
  const table = new BasicLockTable<number>({ maxWaiters: 0, maxHeldLocks: 2, maxIdleLocks: 1 });
  t.equal(table.acquire(1, 10, 0), 'granted');
  t.equal(table.acquire(1, 11, 0), 'granted');
  t.equal(table.acquire(1, 12, 0), 'full', 'a third held lock is refused');
  t.equal(table.acquire(2, 10, 0), 'full', 'no waiter slots');
  t.same(table.release(1, 10), { released: true });
  t.same(table.release(1, 11), { released: true });
  t.equal(table.grants(11), 1, 'the most recently released count is kept');
  t.equal(table.grants(10), 0, 'the oldest idle count was forgotten');
  table.invariants();
});
