/**
 * The application lock API (`connect`, `Lock`, tryAcquire, withLock, `await using`) against three
 * in-process replicas of the replicated lock service on free loopback ports.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { CacheProc, LockStatus } from '../lockserver/cache-protocol.js';
import { RsmClient } from '../rsm/client.js';
import { connect, openLockConnection, type LockClient } from '../lockserver/locks.js';
import { startLockReplica, type LockReplica } from '../lockserver/lock-replica.js';
import { clusterPorts } from '../tester/cluster.js';
import { freeBasePort, waitUntil } from './helpers/ports.js';

t.test('the lock API against a 3-replica lock service', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lock-api-'));
  const replicas: LockReplica[] = [];
  const clients: LockClient[] = [];
  t.teardown(async () => {
    for (const client of clients) await client.close();
    for (const replica of replicas) await replica.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const base = await freeBasePort();
  const ports = clusterPorts(base, 3).map(String);
  for (const [i, me] of ports.entries()) {
    const replica = await startLockReplica({ master: ports[0]!, me, logDir: dir, dataDir: path.join(dir, 'data'), lossyPercent: 0 });
    replicas.push(replica);
    const node = replica.replica.node;
    await waitUntil(() => node.status().members.length === i + 1 && !node.isInViewChange, 30_000, `${me} in view ${i + 1}`);
  }
  const members = ports.map((p) => `127.0.0.1:${p}`);
  const a = await connect({ members });
  const b = await connect({ members });
  clients.push(a, b);

  await t.test('acquire resolves to a Lock with a token; tryAcquire: free → Lock, held → null', async (t) => {
    const lock = await a.acquire('orders');
    t.equal(lock.name, 'orders');
    t.ok(lock.token >= 1, 'a fencing token');
    t.equal(lock.signal.aborted, false);
    t.equal(await b.tryAcquire('orders'), null, 'held by a: null, without waiting');
    await lock.release();
    await t.rejects(lock.release(), { code: 'LOCK_NOT_HELD' }, 'a second release');
    const again = await a.tryAcquire('orders');
    t.ok(again !== null, 'cached and free: a try succeeds');
    t.equal(again?.token, lock.token, 'a local re-grant from the cache carries the token of the hold');
    await again?.release();
    const taken = await b.acquire('orders', { timeoutMs: 20_000 });
    t.ok(taken.token > lock.token, 'the next grant elsewhere has a larger token');
    const seen = await a.inspect('orders');
    t.same(seen.holder?.session, b.id, 'inspect: who holds it');
    t.equal(seen.holder?.token, taken.token, '...with which token');
    t.ok(seen.sessions >= 2, 'and how many sessions the service knows');
    t.same(seen.waiters, []);
    await taken.release();
  });

  await t.test('withLock releases also when fn throws; await using releases at the end of the block', async (t) => {
    await t.rejects(
      a.withLock('jobs', async (lock) => {
        t.ok(lock.held);
        throw new Error('boom');
      }),
      { message: 'boom' },
    );
    t.same(a.heldLocks, [], 'released after the throw');
    const value = await a.withLock('jobs', (lock) => lock.token);
    t.ok(value >= 1);
    let inside: boolean | undefined;
    {
      await using lock = await a.acquire('jobs');
      inside = lock.held;
      t.equal(a.heldLocks.length, 1);
    }
    t.equal(inside, true);
    t.same(a.heldLocks, [], 'released at the end of the block');
  });

  await t.test('names: non-ASCII round-trips; bad names fail with LOCK_BAD_NAME before anything is sent', async (t) => {
    const name = 'zámek/訂單 🔒';
    const lock = await a.acquire(name);
    t.equal(lock.name, name);
    t.equal(await b.tryAcquire(name), null, 'the same name from another client is the same lock');
    await lock.release();
    await t.rejects(a.acquire(''), { code: 'LOCK_BAD_NAME' });
    await t.rejects(a.acquire('é'.repeat(129)), { code: 'LOCK_BAD_NAME' }, '258 bytes');
    await t.rejects(a.tryAcquire(42 as unknown as string), { code: 'LOCK_BAD_NAME' });
    const fresh = await connect({ members });
    clients.push(fresh);
    await t.rejects(fresh.acquire('x'.repeat(257)), { code: 'LOCK_BAD_NAME' });
    t.equal(fresh.stats().acquireRpcs, 0, 'nothing was sent');
  });

  await t.test('malformed lock requests reaching the replicas are refused with a status; the service keeps serving', async (t) => {
    const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
    const rsm = new RsmClient({ rpc, knownMembers: [members[0]!], addressOf: (id) => (id.includes(':') ? id : `127.0.0.1:${id}`) });
    try {
      for (const [proc, bytes] of [
        [CacheProc.ACQUIRE, new Uint8Array([1, 2, 3])],
        [CacheProc.TRY_ACQUIRE, new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 0x61])], // an empty name
        [CacheProc.RELEASE, new Uint8Array(0)],
        [0x7fff, new Uint8Array([9])],
      ] as const) {
        const answer = await rsm.invoke(proc, bytes, { timeoutMs: 20_000 });
        t.equal(answer.status, LockStatus.RPCERR, `proc 0x${proc.toString(16)} refused`);
      }
    } finally {
      rsm.close();
      await rpc.close();
    }
    const lock = await a.acquire('after-junk', { timeoutMs: 20_000 });
    t.ok(lock.token >= 1, 'and still grants locks');
    await lock.release();
  });

  await t.test('sessions renew through the primary host\'s keepalive batches', async (t) => {
    const batchedBefore = replicas.reduce((sum, r) => sum + r.host.keepalivesBatched, 0);
    const idle = await Promise.all([0, 1, 2, 3, 4].map(() => connect({ members, session: { ttlMs: 1_000 } })));
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past the TTL: renewals must have worked
    t.ok(idle.every((c) => !c.sessionLost), 'no session lost');
    const batched = replicas.reduce((sum, r) => sum + r.host.keepalivesBatched, 0) - batchedBefore;
    const keepalives = idle.reduce((sum, c) => sum + (c.sessionKeeper?.keepalivesSent ?? 0), 0);
    t.ok(batched > 0 && batched <= keepalives, `${batched} of ${keepalives} keepalives went through the primary's batches`);
    const lock = await idle[0]!.acquire('renewed');
    t.ok(lock.token >= 1);
    for (const c of idle) await c.close();
    t.equal(lock.signal.aborted, true, 'closed while held: lost');
  });

  await t.test('clients sharing one connection: each its own id and locks, handed on between them, one RSM client', async (t) => {
    const connection = openLockConnection({ members });
    const shared = await Promise.all([0, 1, 2].map(() => connect({ connection })));
    t.equal(new Set(shared.map((c) => c.id)).size, 3, 'each client has its own id');
    t.ok(shared.every((c) => c.rsmClient === connection.rsm), 'all send through the one RSM client');
    const first = await shared[0]!.acquire('shared-conn');
    t.equal(await shared[1]!.tryAcquire('shared-conn'), null, 'another client of the connection is excluded');
    const order: number[] = [];
    const waiting = [1, 2].map(async (i) => {
      const lock = await shared[i]!.acquire('shared-conn', { timeoutMs: 20_000 });
      order.push(i);
      t.ok(lock.token > first.token, `client ${i} gets a larger token`);
      await lock.release();
    });
    for (let polls = 0; polls < 400 && (await a.inspect('shared-conn')).waiters.length < 2; polls++) await new Promise((resolve) => setTimeout(resolve, 50));
    t.equal((await a.inspect('shared-conn')).waiters.length, 2, 'both wait at the service');
    await first.release();
    await Promise.all(waiting);
    t.same(order.length, 2, 'both waiters got it in turn');
    await shared[0]!.close();
    const stillWorks = await shared[1]!.acquire('shared-conn-2', { timeoutMs: 20_000 });
    t.ok(stillWorks.token >= 1, 'closing one client leaves the connection to the others');
    await stillWorks.release();
    for (const c of shared.slice(1)) await c.close();
    await connection.close();
    await t.rejects(connect({ connection }), { code: 'LOCK_BAD_OPTION' }, 'a closed connection is refused');
    await t.rejects(connect({ connection: {} as never }), { code: 'LOCK_BAD_OPTION' }, 'so is something else');
    t.throws(() => openLockConnection({ members: [] }), { code: 'LOCK_BAD_OPTION' });
  });

  await t.test('bad connect options and a lock lost at close', async (t) => {
    await t.rejects(connect({ members: [] }), { code: 'LOCK_BAD_OPTION' });
    await t.rejects(connect({ members, acquireTimeoutMs: -1 }), { code: 'LOCK_BAD_OPTION' });
    for (const ttlMs of [999, 300_001, 1_500.5, Number.NaN, '5000' as unknown as number]) {
      await t.rejects(connect({ members, session: { ttlMs } }), { code: 'LOCK_BAD_OPTION' }, `TTL ${String(ttlMs)} refused at connect`);
    }
    const edge = await connect({ members, session: { ttlMs: 1_000 } });
    t.equal(edge.sessionKeeper?.renewEveryMs, 333, 'renews every TTL/3');
    t.equal(edge.sessionKeeper?.marginMs, 200, 'margin TTL/10 + 100 ms');
    await edge.close();
    const c = await connect({ members });
    const lock = await c.acquire('lost-at-close');
    const lost: string[] = [];
    c.on('lost', (l: { name: string }) => lost.push(l.name));
    await c.close();
    t.equal(lock.signal.aborted, true);
    t.match(lock.signal.reason, { code: 'LOCK_LOST' });
    t.same(lost, ['lost-at-close']);
    const next = await a.acquire('lost-at-close', { timeoutMs: 20_000 });
    t.ok(next.token > lock.token, 'close gave the lock back');
    await next.release();
  });
});
