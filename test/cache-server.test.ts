import fc from 'fast-check';
import t from 'tap';
import { encode } from '../lib/codec.js';
import {
  CacheProc,
  decodeTokenReply,
  LockStatus,
  decodeCacheLockRequest,
  decodeI32Reply,
  encodeCacheLockRequest,
  encodeCacheStatRequest,
  type Notice,
} from '../lockserver/cache-protocol.js';
import { CachingLockServer, type CachingLockServerLimits } from '../lockserver/cache-server.js';

const { OK, RETRY, NOENT, IOERR, RPCERR } = LockStatus;

function acquire(server: CachingLockServer, lid: number | string, id: string, xid: number): number {
  return server.execute(CacheProc.ACQUIRE, encodeCacheLockRequest({ lid: String(lid), id, xid })).status;
}

function release(server: CachingLockServer, lid: number | string, id: string, xid: number): number {
  return server.execute(CacheProc.RELEASE, encodeCacheLockRequest({ lid: String(lid), id, xid })).status;
}

function stat(server: CachingLockServer, lid: number | string): number {
  const result = server.execute(CacheProc.STAT, encodeCacheStatRequest({ lid: String(lid) }));
  const reply = decodeI32Reply(result.reply);
  if (!reply.ok || result.status !== OK) throw new Error('stat failed');
  return reply.value;
}

/** Raw request bytes for an xid of 0, which the codec helper refuses to validate but encodes. */
function rawLockRequest(lid: number | string, id: string, xid: number): Uint8Array {
  return encode((w) => w.string(String(lid)).string(id).u64(xid));
}

function clone(server: CachingLockServer): CachingLockServer {
  const copy = new CachingLockServer(server.limits);
  const result = copy.unmarshalState(server.marshalState());
  if (!result.ok) throw new Error(`unmarshal failed: ${result.reason}`);
  return copy;
}

t.test('request codec round-trips and rejects bad values', async (t) => {
  const bytes = encodeCacheLockRequest({ lid: 'zámek/訂單', id: '127.0.0.1:4000', xid: 9 });
  t.same(decodeCacheLockRequest(bytes), { ok: true, value: { lid: 'zámek/訂單', id: '127.0.0.1:4000', xid: 9 } }, 'non-ASCII names round-trip');
  t.equal(decodeCacheLockRequest(rawLockRequest('', 'a', 1)).ok, false, 'empty name');
  t.equal(decodeCacheLockRequest(rawLockRequest('é'.repeat(129), 'a', 1)).ok, false, 'a name over 256 bytes');
  t.equal(decodeCacheLockRequest(rawLockRequest(1, 'a', 0)).ok, false, 'xid 0');
  t.equal(decodeCacheLockRequest(rawLockRequest(1, '', 1)).ok, false, 'empty id');
  t.equal(decodeCacheLockRequest(bytes.subarray(0, bytes.length - 1)).ok, false, 'truncated');
  t.equal(decodeCacheLockRequest(new Uint8Array([...bytes, 0])).ok, false, 'trailing byte');
  t.equal(decodeCacheLockRequest(encode((w) => w.u64(1).string('x'.repeat(257)).u64(1))).ok, false, 'id too long');
});

t.test('acquire grants a free lock, queues others with RETRY, and the table owes a revoke', async (t) => {
  const s = new CachingLockServer();
  t.equal(acquire(s, 1, 'a', 3), OK);
  t.has(s.holderOf('1'), { id: 'a', xid: 3 });
  t.same(s.pendingNotices(), [], 'no waiter, no notice');
  t.equal(acquire(s, 1, 'b', 1), RETRY);
  t.equal(acquire(s, 1, 'c', 5), RETRY);
  t.same(s.waitersOf('1'), [{ id: 'b', xid: 1 }, { id: 'c', xid: 5 }]);
  t.same(s.pendingNotices(), [{ kind: 'revoke', to: 'a', lid: '1', xid: 3, token: 0 }]);
  t.equal(acquire(s, 1, 'b', 2), RETRY, 'a waiter asking again keeps its place');
  t.same(s.waitersOf('1'), [{ id: 'b', xid: 2 }, { id: 'c', xid: 5 }], '...with the new xid');

  t.equal(release(s, 1, 'b', 2), NOENT, 'only the holder releases');
  t.equal(release(s, 1, 'a', 2), NOENT, '...and only with its xid');
  t.has(s.holderOf('1'), { id: 'a', xid: 3 });
  const first = s.holderOf('1')!.token;
  t.equal(release(s, 1, 'a', 3), OK);
  const handed = s.holderOf('1')!;
  t.has(handed, { id: 'b', xid: 2, handedOff: true }, 'the release hands the lock to the first waiter (FIFO)');
  t.ok(handed.token > first, 'with a larger fencing token');
  t.same(s.pendingNotices(), [
    { kind: 'grant', to: 'b', lid: '1', xid: 2, token: handed.token },
    { kind: 'revoke', to: 'b', lid: '1', xid: 2, token: 0 },
  ], 'b is told it holds the lock, and asked for it back (c waits)');
  t.equal(acquire(s, 1, 'b', 2), OK, "b's waiting attempt is now answered OK (a resent acquire agrees)");
  t.same(s.pendingNotices(), [{ kind: 'revoke', to: 'b', lid: '1', xid: 2, token: 0 }], 'that answer told b of the hand-off: no grant owed');
  t.equal(acquire(s, 1, 'a', 7), RETRY, 'the client that released queues behind: it cannot win the lock back at once');
  t.same(s.waitersOf('1'), [{ id: 'c', xid: 5 }, { id: 'a', xid: 7 }]);
  t.equal(stat(s, 1), 2);
  s.invariants();
});

t.test('duplicates get the saved answer without re-executing; older xids get RPCERR', async (t) => {
  const s = new CachingLockServer();
  t.equal(acquire(s, 1, 'a', 3), OK);
  t.equal(release(s, 1, 'a', 3), OK);
  const before = s.marshalState();
  t.equal(acquire(s, 1, 'a', 3), OK, 'a duplicate acquire is answered OK again');
  t.equal(s.holderOf('1'), undefined, '...and does not grant the lock again');
  t.equal(release(s, 1, 'a', 3), OK, 'a duplicate release is answered OK again');
  t.equal(acquire(s, 1, 'a', 2), RPCERR, 'an older acquire is stale');
  t.equal(release(s, 1, 'a', 1), RPCERR, 'an older release is stale');
  t.same(s.marshalState(), before, 'none of them changed the state');

  t.equal(acquire(s, 1, 'b', 1), OK);
  t.equal(acquire(s, 1, 'a', 4), RETRY);
  t.equal(release(s, 1, 'b', 1), OK);
  t.has(s.holderOf('1'), { id: 'a', xid: 4 }, 'handed to the waiter');
  t.equal(acquire(s, 1, 'a', 4), OK, 'a duplicate of the waiting attempt now gets the hand-off answer');
  t.equal(acquire(s, 1, 'a', 5), OK, 'a newer attempt of the holder keeps it');
  t.same(s.waitersOf('1'), []);
  s.invariants();
});

t.test('a holder asking again under a newer xid keeps the lock under that xid', async (t) => {
  const s = new CachingLockServer();
  t.equal(acquire(s, 1, 'a', 1), OK);
  t.equal(acquire(s, 1, 'b', 1), RETRY);
  t.equal(acquire(s, 1, 'a', 2), OK);
  t.has(s.holderOf('1'), { id: 'a', xid: 2 });
  t.same(s.pendingNotices(), [{ kind: 'revoke', to: 'a', lid: '1', xid: 2, token: 0 }]);
  t.equal(release(s, 1, 'a', 1), NOENT, 'the old hold is gone');
  t.equal(release(s, 1, 'a', 2), OK);
  s.invariants();
});

t.test('malformed requests and unknown procedures answer RPCERR without effect', async (t) => {
  const s = new CachingLockServer();
  const before = s.marshalState();
  t.equal(s.execute(CacheProc.ACQUIRE, new Uint8Array([1, 2, 3])).status, RPCERR);
  t.equal(s.execute(CacheProc.ACQUIRE, rawLockRequest(1, 'a', 0)).status, RPCERR, 'xid 0');
  t.equal(s.execute(CacheProc.RELEASE, new Uint8Array(0)).status, RPCERR);
  t.equal(s.execute(CacheProc.STAT, new Uint8Array(0)).status, RPCERR);
  t.equal(s.execute(0x9999, encodeCacheLockRequest({ lid: '1', id: 'a', xid: 1 })).status, RPCERR);
  t.same(s.marshalState(), before);
  t.ok(decodeI32Reply(s.execute(0x9999, new Uint8Array(0)).reply).ok, 'the reply still decodes');
});

t.test('bounds answer IOERR deterministically and without effect', async (t) => {
  t.test('maxLocks', async (t) => {
    const s = new CachingLockServer({ maxLocks: 2 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 2, 'a', 2), OK);
    t.equal(acquire(s, 3, 'a', 3), IOERR);
    t.equal(acquire(s, 3, 'a', 3), IOERR, 'its duplicate too');
    t.equal(release(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 3, 'a', 4), OK, 'room again once a lock is idle');
    s.invariants();
  });
  t.test('maxWaitersPerLock', async (t) => {
    const s = new CachingLockServer({ maxWaitersPerLock: 1 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 1, 'b', 1), RETRY);
    t.equal(acquire(s, 1, 'c', 1), IOERR);
    t.same(s.waitersOf('1'), [{ id: 'b', xid: 1 }]);
    s.invariants();
  });
  t.test('maxClients evicts an idle client, else refuses', async (t) => {
    const s = new CachingLockServer({ maxClients: 2 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 2, 'b', 1), OK);
    t.equal(acquire(s, 3, 'c', 1), IOERR, 'both clients hold locks: nothing to evict');
    t.equal(release(s, 2, 'b', 1), OK);
    t.equal(acquire(s, 3, 'c', 2), OK, 'b holds nothing now and is forgotten');
    t.equal(s.sizes.clients, 2);
    s.invariants();
  });
  t.test('maxLocksPerClient evicts a quiet record and refuses its stale duplicates', async (t) => {
    const s = new CachingLockServer({ maxLocksPerClient: 2 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 2, 'a', 2), OK);
    t.equal(acquire(s, 3, 'a', 3), IOERR, 'a holds both locks it has records for');
    t.equal(release(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 3, 'a', 4), OK, 'the record of lock 1 is forgotten');
    t.equal(acquire(s, 1, 'a', 1), RPCERR, 'a late duplicate for the forgotten record is stale');
    t.equal(release(s, 1, 'a', 1), RPCERR);
    t.equal(s.holderOf('1'), undefined);
    s.invariants();
  });
  t.test('refusals for want of room put the table under pressure: every holder is revoked', async (t) => {
    const s = new CachingLockServer({ maxLocks: 2, maxClients: 3 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 2, 'b', 1), OK);
    t.same(s.pendingNotices(), [], 'cached locks nobody waits for are left alone');
    t.equal(acquire(s, 3, 'c', 1), IOERR, 'no busy-lock slot');
    t.ok(s.isUnderPressure);
    t.same(s.pendingNotices(), [
      { kind: 'revoke', to: 'a', lid: '1', xid: 1, token: 0 },
      { kind: 'revoke', to: 'b', lid: '2', xid: 1, token: 0 },
    ]);
    t.same(clone(s).pendingNotices(), s.pendingNotices(), 'pressure survives state transfer');
    t.equal(release(s, 1, 'a', 1), OK);
    t.notOk(s.isUnderPressure, 'room again: pressure ends');
    t.same(s.pendingNotices(), []);
    t.equal(acquire(s, 3, 'c', 2), OK);
    t.equal(acquire(s, 2, 'd', 1), RETRY, 'a holds nothing: forgotten to make room for d');
    t.equal(s.sizes.clients, 3);
    t.equal(acquire(s, 3, 'e', 1), IOERR, 'b, c and d all hold or wait: no client slot');
    t.ok(s.isUnderPressure);
    t.same(s.pendingNotices(), [
      { kind: 'revoke', to: 'b', lid: '2', xid: 1, token: 0 },
      { kind: 'revoke', to: 'c', lid: '3', xid: 2, token: 0 },
    ]);
    s.invariants();
  });

  t.test('maxIdleLocks forgets the oldest grant counts', async (t) => {
    const s = new CachingLockServer({ maxIdleLocks: 1 });
    t.equal(acquire(s, 1, 'a', 1), OK);
    t.equal(release(s, 1, 'a', 1), OK);
    t.equal(acquire(s, 2, 'a', 2), OK);
    t.equal(release(s, 2, 'a', 2), OK);
    t.equal(stat(s, 1), 0);
    t.equal(stat(s, 2), 1);
  });
});

t.test('marshalled state records the limits and refuses other limits and junk', async (t) => {
  const s = new CachingLockServer();
  acquire(s, 1, 'a', 1);
  acquire(s, 1, 'b', 1);
  const state = s.marshalState();
  t.same(clone(s).marshalState(), state);
  const other = new CachingLockServer({ maxLocks: 5 });
  const result = other.unmarshalState(state);
  t.equal(result.ok, false);
  t.match(result, { reason: /limits differ/ });
  t.equal(new CachingLockServer().unmarshalState(new Uint8Array([1, 2, 3])).ok, false);
  const fresh = new CachingLockServer();
  const empty = fresh.marshalState();
  t.equal(fresh.unmarshalState(state.subarray(0, state.length - 1)).ok, false, 'truncated');
  t.same(fresh.marshalState(), empty, 'a refused state leaves the old one');
});

// ---------------------------------------------------------------------------------------------
// Model-based tests.

/** The protocol's rules, written as plainly as possible (no bounds, so nothing is ever evicted). */
class ServerModel {
  readonly locks = new Map<
    string,
    { holder: { id: string; xid: number; token: number; sinceMs: number; handedOff: boolean } | undefined; waiters: Array<{ id: string; xid: number }> }
  >();
  readonly records = new Map<string, { aX: number; aS: number; rX: number; rS: number }>();
  nextToken = 1;

  acquire(lid: string, id: string, xid: number): number {
    if (xid < 1) return RPCERR;
    const record = this.records.get(`${id}/${lid}`);
    if (record && xid === record.aX) {
      const held = this.locks.get(lid)?.holder;
      if (held?.id === id && held.xid === xid) held.handedOff = false; // the answer tells it of the hand-off
      return record.aS;
    }
    if (record && xid < record.aX) return RPCERR;
    let lock = this.locks.get(lid);
    if (!lock) this.locks.set(lid, (lock = { holder: undefined, waiters: [] }));
    let status: number;
    if (!lock.holder || lock.holder.id === id) {
      lock.waiters = lock.waiters.filter((w) => w.id !== id);
      lock.holder = { id, xid, token: this.nextToken++, sinceMs: 0, handedOff: false };
      status = OK;
    } else {
      const waiter = lock.waiters.find((w) => w.id === id);
      if (waiter) waiter.xid = xid;
      else lock.waiters.push({ id, xid });
      status = RETRY;
    }
    const r = record ?? { aX: 0, aS: 0, rX: 0, rS: 0 };
    r.aX = xid;
    r.aS = status;
    this.records.set(`${id}/${lid}`, r);
    return status;
  }

  release(lid: string, id: string, xid: number): number {
    if (xid < 1) return RPCERR;
    const record = this.records.get(`${id}/${lid}`);
    if (!record) return NOENT;
    if (xid === record.rX) return record.rS;
    if (xid < record.rX) return RPCERR;
    const lock = this.locks.get(lid);
    let status: number = NOENT;
    if (lock?.holder?.id === id && lock.holder.xid === xid) {
      lock.holder = undefined;
      // FIFO hand-off: the first waiter gets it in the same request; its waiting attempt is now OK.
      const first = lock.waiters.shift();
      if (first !== undefined) {
        lock.holder = { id: first.id, xid: first.xid, token: this.nextToken++, sinceMs: 0, handedOff: true };
        this.records.get(`${first.id}/${lid}`)!.aS = OK;
      }
      status = OK;
    }
    record.rX = xid;
    record.rS = status;
    return status;
  }

  notices(): Notice[] {
    const out: Notice[] = [];
    for (const lid of [...this.locks.keys()].sort()) {
      const lock = this.locks.get(lid)!;
      const first = lock.waiters[0];
      if (lock.holder?.handedOff) out.push({ kind: 'grant', to: lock.holder.id, lid, xid: lock.holder.xid, token: lock.holder.token });
      if (first === undefined) continue;
      out.push(lock.holder ? { kind: 'revoke', to: lock.holder.id, lid, xid: lock.holder.xid, token: 0 } : { kind: 'retry', to: first.id, lid, xid: first.xid, token: 0 });
    }
    return out;
  }
}

type Op =
  | { readonly type: 'acquire' | 'release'; readonly lid: string; readonly id: string; readonly xid: number }
  | { readonly type: 'replay' }
  | { readonly type: 'roundtrip' }
  | { readonly type: 'junk'; readonly proc: number; readonly bytes: Uint8Array };

const IDS = ['a', 'b', 'c'];
const LIDS = ['1', '2', '3'];

function opArbitrary(ids: readonly string[], lids: readonly string[], xidMax: number): fc.Arbitrary<Op> {
  const request = fc.record({
    type: fc.constantFrom<'acquire' | 'release'>('acquire', 'release'),
    lid: fc.constantFrom(...lids),
    id: fc.constantFrom(...ids),
    xid: fc.integer({ min: 0, max: xidMax }),
  });
  return fc.oneof(
    { weight: 10, arbitrary: request },
    { weight: 2, arbitrary: fc.constant<Op>({ type: 'replay' }) },
    { weight: 1, arbitrary: fc.constant<Op>({ type: 'roundtrip' }) },
    {
      weight: 1,
      arbitrary: fc.record({
        type: fc.constant<'junk'>('junk'),
        proc: fc.constantFrom(CacheProc.ACQUIRE, CacheProc.RELEASE, CacheProc.STAT, 0, 0x8001),
        bytes: fc.uint8Array({ maxLength: 40 }),
      }),
    },
  );
}

function run(server: CachingLockServer, op: Extract<Op, { type: 'acquire' | 'release' }>): number {
  const proc = op.type === 'acquire' ? CacheProc.ACQUIRE : CacheProc.RELEASE;
  return server.execute(proc, rawLockRequest(op.lid, op.id, op.xid)).status;
}

t.test('CachingLockServer behaves like the model (fast-check)', async (t) => {
  fc.assert(
    fc.property(fc.array(opArbitrary(IDS, LIDS, 12), { minLength: 20, maxLength: 120 }), (ops) => {
      let server = new CachingLockServer();
      const model = new ServerModel();
      let last: Extract<Op, { type: 'acquire' | 'release' }> | undefined;
      let lastStatus = -1;
      for (const op of ops) {
        switch (op.type) {
          case 'acquire':
          case 'release': {
            const status = run(server, op);
            const expected = op.type === 'acquire' ? model.acquire(op.lid, op.id, op.xid) : model.release(op.lid, op.id, op.xid);
            if (status !== expected) throw new Error(`${JSON.stringify(op)}: server ${status}, model ${expected}`);
            last = op;
            lastStatus = status;
            break;
          }
          case 'replay': {
            if (last === undefined) break;
            // A duplicate of the previous request: same answer, and it changes nothing.
            const before = server.marshalState();
            const status = run(server, last);
            if (status !== lastStatus) throw new Error(`replay of ${JSON.stringify(last)}: ${status}, first ${lastStatus}`);
            if (Buffer.compare(before, server.marshalState()) !== 0) throw new Error(`replay of ${JSON.stringify(last)} changed the state`);
            break;
          }
          case 'roundtrip': {
            const copy = clone(server);
            if (Buffer.compare(copy.marshalState(), server.marshalState()) !== 0) throw new Error('round-trip changed the bytes');
            server = copy;
            break;
          }
          case 'junk': {
            const before = server.marshalState();
            const result = server.execute(op.proc, op.bytes);
            if (![OK, RETRY, NOENT, IOERR, RPCERR].includes(result.status as 0)) throw new Error(`junk status ${result.status}`);
            // Junk that happens to decode is a real request; otherwise nothing may change.
            if (result.status === RPCERR && Buffer.compare(before, server.marshalState()) !== 0) throw new Error('RPCERR with an effect');
            if (Buffer.compare(before, server.marshalState()) !== 0) {
              // Bring the model along: the bytes were a valid request.
              const decoded = decodeCacheLockRequest(op.bytes);
              if (!decoded.ok || (op.proc !== CacheProc.ACQUIRE && op.proc !== CacheProc.RELEASE)) throw new Error('junk changed the state');
              const { lid, id, xid } = decoded.value;
              if (op.proc === CacheProc.ACQUIRE) model.acquire(lid, id, xid);
              else model.release(lid, id, xid);
            }
            break;
          }
        }
        server.invariants();
        const notices = server.pendingNotices();
        const expectedNotices = model.notices();
        if (JSON.stringify(notices) !== JSON.stringify(expectedNotices)) {
          throw new Error(`notices ${JSON.stringify(notices)}, model ${JSON.stringify(expectedNotices)}`);
        }
        for (const lid of LIDS) {
          if (JSON.stringify(server.holderOf(lid)) !== JSON.stringify(model.locks.get(lid)?.holder)) throw new Error(`holder of ${lid} differs`);
        }
      }
    }),
    { numRuns: 400 },
  );
  t.pass('server matches the model');
});

const TINY: CachingLockServerLimits = { maxLocks: 2, maxIdleLocks: 1, maxWaitersPerLock: 1, maxClients: 2, maxLocksPerClient: 2 };

t.test('with tiny bounds: invariants, duplicates, fresh xids never stale, round-trips behave identically', async (t) => {
  const ids = ['a', 'b', 'c', 'd'];
  const lids = ['1', '2', '3', '4'];
  fc.assert(
    fc.property(
      fc.array(fc.record({ type: fc.constantFrom<'acquire' | 'release'>('acquire', 'release'), lid: fc.constantFrom(...lids), id: fc.constantFrom(...ids), fresh: fc.boolean() }), { minLength: 20, maxLength: 100 }),
      fc.nat({ max: 100 }),
      (steps, cut) => {
        const server = new CachingLockServer(TINY);
        const nextXid = new Map<string, number>(); // per client, like a real client's counter
        const lastAcquire = new Map<string, number>(); // id/lid → xid of the last acquire
        const requests: Array<Extract<Op, { type: 'acquire' | 'release' }>> = [];
        const fresh: boolean[] = [];
        for (const step of steps) {
          let xid: number;
          const isFresh = step.type === 'acquire' && (step.fresh || !lastAcquire.has(`${step.id}/${step.lid}`));
          fresh.push(isFresh);
          if (isFresh) {
            xid = (nextXid.get(step.id) ?? 0) + 1;
            nextXid.set(step.id, xid);
            lastAcquire.set(`${step.id}/${step.lid}`, xid);
          } else {
            xid = lastAcquire.get(`${step.id}/${step.lid}`) ?? 1;
          }
          requests.push({ type: step.type, lid: step.lid, id: step.id, xid });
        }
        let copy: CachingLockServer | undefined;
        requests.forEach((op, i) => {
          if (i === cut) copy = clone(server);
          const status = run(server, op);
          const isFresh = fresh[i]!;
          if (isFresh && status === RPCERR) throw new Error(`fresh acquire ${JSON.stringify(op)} answered RPCERR`);
          if (isFresh && status === OK) {
            const holder = server.holderOf(op.lid);
            if (holder?.id !== op.id || holder.xid !== op.xid) throw new Error('OK but not the holder');
          }
          const before = server.marshalState();
          if (run(server, op) !== status) throw new Error(`duplicate of ${JSON.stringify(op)} answered differently`);
          if (Buffer.compare(before, server.marshalState()) !== 0) throw new Error(`duplicate of ${JSON.stringify(op)} changed the state`);
          server.invariants();
          if (copy !== undefined) {
            // The copy made by state transfer must behave exactly like the original.
            const copyStatus = run(copy, op);
            run(copy, op);
            if (copyStatus !== status) throw new Error(`copy answered ${copyStatus}, original ${status}`);
            if (Buffer.compare(copy.marshalState(), server.marshalState()) !== 0) throw new Error('copy state diverged');
            if (JSON.stringify(copy.pendingNotices()) !== JSON.stringify(server.pendingNotices())) throw new Error('copy notices diverged');
          }
        });
      },
    ),
    { numRuns: 400 },
  );
  t.pass('ok');
});

t.test('random bytes never make execute or unmarshalState throw', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0x9000 }), fc.uint8Array({ maxLength: 64 }), (proc, bytes) => {
      const server = new CachingLockServer();
      const result = server.execute(proc, bytes);
      if (!Number.isInteger(result.status) || result.status < 0) throw new Error('bad status');
      server.invariants();
      // A state that decodes has passed the invariants inside unmarshalState.
      new CachingLockServer().unmarshalState(bytes);
    }),
    { numRuns: 2000 },
  );
  t.pass('ok');
});

t.test('corrupted and truncated states are refused or decode to a valid table, never throw', async (t) => {
  const server = new CachingLockServer(TINY);
  acquire(server, 1, 'a', 1);
  acquire(server, 1, 'b', 1);
  acquire(server, 2, 'b', 2);
  release(server, 2, 'b', 2);
  acquire(server, 3, 'a', 3);
  const state = server.marshalState();
  fc.assert(
    fc.property(
      fc.array(fc.record({ at: fc.nat({ max: state.length - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }),
      fc.nat({ max: state.length }),
      (flips, length) => {
        const bytes = state.slice(0, length);
        for (const { at, value } of flips) if (at < bytes.length) bytes[at] = value;
        const target = new CachingLockServer(TINY);
        const result = target.unmarshalState(bytes); // invariants() runs inside on success
        if (result.ok) {
          // A state that decodes must also keep working.
          acquire(target, 1, 'c', 9);
          release(target, 1, 'a', 1);
          target.invariants();
        }
      },
    ),
    { numRuns: 3000 },
  );
  t.pass('ok');
});

t.test('fencing tokens increase per lock across grants, hand-offs and state transfer; tryacquire never queues', async (t) => {
  let s = new CachingLockServer();
  const tokens: number[] = [];
  const grant = (id: string, xid: number): void => {
    const result = s.execute(CacheProc.ACQUIRE, encodeCacheLockRequest({ lid: 'orders', id, xid }));
    t.equal(result.status, OK);
    const token = decodeTokenReply(result.reply);
    t.ok(token.ok);
    if (token.ok) tokens.push(token.value);
  };
  grant('a', 1);
  t.equal(s.execute(CacheProc.TRY_ACQUIRE, encodeCacheLockRequest({ lid: 'orders', id: 'b', xid: 1 })).status, RETRY, 'taken: a try is refused');
  t.same(s.waitersOf('orders'), [], '...and not queued');
  t.equal(s.execute(CacheProc.ACQUIRE, encodeCacheLockRequest({ lid: 'orders', id: 'b', xid: 2 })).status, RETRY);
  t.equal(release(s, 'orders', 'a', 1), OK);
  tokens.push(s.holderOf('orders')!.token); // handed to b
  s = clone(s); // a state transfer (a new primary, a restarted replica) keeps the counter
  t.equal(release(s, 'orders', 'b', 2), OK);
  const tryResult = s.execute(CacheProc.TRY_ACQUIRE, encodeCacheLockRequest({ lid: 'orders', id: 'c', xid: 1 }));
  t.equal(tryResult.status, OK, 'free: a try gets it');
  const tryToken = decodeTokenReply(tryResult.reply);
  if (tryToken.ok) tokens.push(tryToken.value);
  t.equal(release(s, 'orders', 'c', 1), OK);
  grant('a', 3);
  t.equal(tokens.length, 4);
  for (let i = 1; i < tokens.length; i++) t.ok(tokens[i]! > tokens[i - 1]!, `token ${i} (${tokens[i]}) > token ${i - 1} (${tokens[i - 1]})`);
  s.invariants();
});

t.test('lock names: any UTF-8 string of 1–256 bytes; anything else is refused without effect', async (t) => {
  const s = new CachingLockServer();
  t.equal(acquire(s, 'zámek/訂單 🔒', 'a', 1), OK);
  t.has(s.holderOf('zámek/訂單 🔒'), { id: 'a', xid: 1 });
  t.equal(acquire(s, 'x'.repeat(256), 'a', 2), OK, '256 bytes is fine');
  const before = s.marshalState();
  t.equal(s.execute(CacheProc.ACQUIRE, rawLockRequest('x'.repeat(257), 'a', 3)).status, RPCERR, '257 bytes');
  t.equal(s.execute(CacheProc.ACQUIRE, rawLockRequest('', 'a', 3)).status, RPCERR, 'empty');
  t.equal(s.execute(CacheProc.TRY_ACQUIRE, new Uint8Array([0, 0, 0, 9, 1])).status, RPCERR, 'truncated');
  t.same(s.marshalState(), before, 'no effect');
  t.same(clone(s).marshalState(), before, 'non-ASCII names survive state transfer');
});

t.test('a state naming one idle lock twice, or one client record twice, is refused', async (t) => {
  const server = new CachingLockServer();
  for (const [lid, xid] of [['lock-a', 1], ['lock-b', 2]] as const) {
    t.equal(acquire(server, lid, 'c', xid), LockStatus.OK);
    t.equal(release(server, lid, 'c', xid), LockStatus.OK);
  }
  const bytes = server.marshalState();
  const name = new TextEncoder().encode('lock-b');
  const at = (from: number): number => {
    for (let i = from; i + name.length <= bytes.length; i++) if (name.every((b, j) => bytes[i + j] === b)) return i;
    return -1;
  };
  const inIdle = at(0); // no busy lock: the first mention is the idle list's
  const inRecords = at(inIdle + 1);
  t.ok(inIdle > 0 && inRecords > inIdle, 'both mentions found');
  t.ok(new CachingLockServer().unmarshalState(bytes).ok, 'the state as marshalled is accepted');
  for (const [where, offset] of [['idle lock', inIdle], ['client record', inRecords]] as const) {
    const forged = bytes.slice();
    forged[offset + name.length - 1] = 'a'.charCodeAt(0); // lock-b → lock-a
    const outcome = new CachingLockServer().unmarshalState(forged);
    t.notOk(outcome.ok, `a repeated ${where} is refused`);
    if (!outcome.ok) t.match(outcome.reason, /twice/);
  }
});
