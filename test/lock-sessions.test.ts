import t from 'tap';
import { encode } from '../lib/codec.js';
import {
  CacheProc,
  LockStatus,
  decodeKeepaliveReply,
  decodeTokenReply,
  encodeCacheLockRequest,
  encodeEndSessionRequest,
  encodeKeepaliveRequest,
  type KeepaliveEntry,
} from '../lockserver/cache-protocol.js';
import { CachingLockServer } from '../lockserver/cache-server.js';
import type { ExecuteContext } from '../rsm/state-machine.js';

const { OK, RETRY, RPCERR, SESSION_EXPIRED } = LockStatus;
const TTL = 2_000;

function at(vid: number, timeMs: number): ExecuteContext {
  return { vid, seqno: 0, timeMs };
}

function acquire(s: CachingLockServer, lid: string, id: string, xid: number, ctx: ExecuteContext): { status: number; token: number } {
  const r = s.execute(CacheProc.ACQUIRE, encodeCacheLockRequest({ lid, id, xid }), ctx);
  const token = decodeTokenReply(r.reply);
  return { status: r.status, token: token.ok ? token.value : -1 };
}

function release(s: CachingLockServer, lid: string, id: string, xid: number, ctx: ExecuteContext): number {
  return s.execute(CacheProc.RELEASE, encodeCacheLockRequest({ lid, id, xid }), ctx).status;
}

function keepalive(s: CachingLockServer, entries: KeepaliveEntry[], ctx: ExecuteContext): { status: number; each: number[] } {
  const r = s.execute(CacheProc.KEEPALIVE, encodeKeepaliveRequest(entries), ctx);
  const each = decodeKeepaliveReply(r.reply);
  return { status: r.status, each: each.ok ? each.value : [] };
}

function check(t: { same(found: unknown, wanted: unknown, message: string): unknown }, s: CachingLockServer): void {
  s.invariants();
  const copy = new CachingLockServer(s.limits);
  t.same(copy.unmarshalState(s.marshalState()), { ok: true }, 'state round-trips');
  t.same(copy.marshalState(), s.marshalState(), 'same bytes after the round trip');
}

t.test('expiry hands a held lock to the first waiter, with a grant notice and a higher token', async (t) => {
  const s = new CachingLockServer();
  t.same(keepalive(s, [{ id: 'A', ttlMs: TTL }, { id: 'B', ttlMs: TTL }, { id: 'C', ttlMs: TTL }], at(1, 1_000)), { status: OK, each: [OK, OK, OK] });
  const held = acquire(s, 'x', 'A', 1, at(1, 1_000));
  t.equal(held.status, OK);
  t.equal(acquire(s, 'x', 'B', 1, at(1, 1_100)).status, RETRY);
  t.equal(acquire(s, 'x', 'C', 1, at(1, 1_200)).status, RETRY);
  // B and C renew; A does not. A's deadline is 1000 + 2000 = 3000.
  t.same(keepalive(s, [{ id: 'B', ttlMs: TTL }, { id: 'C', ttlMs: TTL }], at(1, 2_900)).each, [OK, OK]);
  t.equal(s.holderOf('x')?.id, 'A', 'not yet expired at 2900');
  t.same(keepalive(s, [{ id: 'B', ttlMs: TTL }, { id: 'C', ttlMs: TTL }], at(1, 3_000)).each, [OK, OK]);
  t.equal(s.holderOf('x')?.id, 'B', 'A expired at its deadline: the first waiter holds it');
  t.ok(s.holderOf('x')!.token > held.token, 'the new grant has a higher token');
  t.same(s.waitersOf('x').map((w) => w.id), ['C']);
  t.ok(s.pendingNotices().some((n) => n.kind === 'grant' && n.to === 'B' && n.lid === 'x'), 'B is owed a grant notice');
  t.ok(s.hasEnded('A'));
  t.equal(s.expiredCount, 1);
  // A learns it is over, and its requests have no effect.
  t.same(keepalive(s, [{ id: 'A', ttlMs: TTL }], at(1, 3_100)).each, [SESSION_EXPIRED]);
  t.equal(acquire(s, 'x', 'A', 2, at(1, 3_100)).status, SESSION_EXPIRED);
  t.equal(release(s, 'x', 'A', 1, at(1, 3_100)), SESSION_EXPIRED);
  t.equal(s.holderOf('x')?.id, 'B');
  check(t, s);
});

t.test('expiry frees every lock of the session, drops its waits, and leaves a lock without waiters idle', async (t) => {
  const s = new CachingLockServer();
  keepalive(s, [{ id: 'A', ttlMs: TTL }, { id: 'B', ttlMs: 5_000 }], at(3, 0));
  t.equal(acquire(s, 'cached', 'A', 1, at(3, 10)).status, OK); // cached by A, nobody waits
  t.equal(acquire(s, 'b', 'B', 1, at(3, 10)).status, OK);
  t.equal(acquire(s, 'b', 'A', 2, at(3, 20)).status, RETRY); // A waits on b
  acquire(s, 'other', 'B', 2, at(3, 2_500)); // time flows through B's requests; A expires
  t.equal(s.holderOf('cached'), undefined, 'the cached lock is free');
  t.same(s.waitersOf('b'), [], 'A no longer waits');
  t.equal(s.holderOf('b')?.id, 'B');
  t.equal(acquire(s, 'cached', 'B', 3, at(3, 2_600)).status, OK, 'another session gets it at once');
  check(t, s);
});

t.test('a new vid rebases: every session counts as renewed when the new view starts (grace)', async (t) => {
  const s = new CachingLockServer();
  keepalive(s, [{ id: 'A', ttlMs: TTL }, { id: 'B', ttlMs: TTL }], at(1, 100_000));
  t.equal(acquire(s, 'x', 'A', 1, at(1, 100_000)).status, OK);
  t.equal(acquire(s, 'x', 'B', 1, at(1, 101_000)).status, RETRY);
  // A new primary whose clock origin is far ahead: without the rebase A would expire at once.
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(2, 900_000));
  t.equal(s.holderOf('x')?.id, 'A', 'A keeps its lock through the primary change');
  t.same(s.sessionOf('A'), { ttlMs: TTL, deadlineMs: 902_000 });
  // And one whose clock is behind: time restarts there too.
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(3, 5));
  t.same(s.sessionOf('A'), { ttlMs: TTL, deadlineMs: 2_005 });
  // Time never runs backwards within a view: an older stamp does not move the clock back.
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(3, 1_500));
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(3, 1_000));
  t.equal(s.clock.ms, 1_500);
  t.equal(s.holderOf('x')?.id, 'A');
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(3, 2_005));
  t.equal(s.holderOf('x')?.id, 'B', 'A expires a full TTL after the view started');
  check(t, s);
});

t.test('malformed session requests are refused with a status, without effect', async (t) => {
  const s = new CachingLockServer();
  const before = s.marshalState();
  t.equal(s.execute(CacheProc.KEEPALIVE, new Uint8Array([1, 2, 3]), at(1, 0)).status, RPCERR, 'garbage');
  t.equal(s.execute(CacheProc.KEEPALIVE, encodeKeepaliveRequest([]), at(1, 0)).status, RPCERR, 'no sessions');
  t.equal(s.execute(CacheProc.KEEPALIVE, encode((w) => w.u32(5_000)), at(1, 0)).status, RPCERR, 'a count beyond the bytes');
  t.equal(s.execute(CacheProc.END_SESSION, new Uint8Array([0, 0, 0, 0]), at(1, 0)).status, RPCERR, 'empty id');
  t.equal(s.execute(CacheProc.END_SESSION, new Uint8Array([9]), at(1, 0)).status, RPCERR, 'truncated');
  t.same(keepalive(s, [{ id: 'A', ttlMs: 10 }, { id: 'B', ttlMs: 400_000 }, { id: '', ttlMs: TTL }], at(1, 0)), { status: OK, each: [RPCERR, RPCERR, RPCERR] }, 'TTL out of range, empty id');
  t.equal(s.sessionCount, 0);
  s.invariants();
  t.equal(s.hasEnded('A') || s.hasEnded('B'), false, 'refused sessions are neither open nor ended');
  const after = new CachingLockServer();
  after.execute(CacheProc.STAT, new Uint8Array([0, 0, 0, 1, 0x31]), at(1, 0));
  t.same(s.marshalState(), after.marshalState(), 'the same state as after one harmless request at that time');
  t.ok(before.length > 0);
  const bad = s.marshalState().slice(0, -3);
  t.equal(new CachingLockServer().unmarshalState(bad).ok, false, 'a truncated state is refused');
});

t.test('endsession frees at once; tokens keep increasing across expiry and a new session', async (t) => {
  const s = new CachingLockServer();
  const tokens: number[] = [];
  let time = 0;
  for (let round = 0; round < 4; round++) {
    const id = `client-${round}`;
    keepalive(s, [{ id, ttlMs: TTL }], at(1, time));
    const got = acquire(s, 'x', id, 1, at(1, time));
    t.equal(got.status, OK, `${id} gets x`);
    tokens.push(got.token);
    if (round % 2 === 0) {
      time += TTL; // expires
    } else {
      t.equal(s.execute(CacheProc.END_SESSION, encodeEndSessionRequest(id), at(1, time)).status, OK);
      t.equal(s.holderOf('x'), undefined, 'ended: freed at once');
      t.ok(s.hasEnded(id));
    }
  }
  t.ok(tokens.every((tok, i) => i === 0 || tok > tokens[i - 1]!), `tokens increase: ${tokens.join(' ')}`);
  check(t, s);
});

t.test('clients without a session keep their locks (the classic protocol)', async (t) => {
  const s = new CachingLockServer();
  t.equal(acquire(s, 'x', 'legacy', 1, at(1, 0)).status, OK);
  keepalive(s, [{ id: 'A', ttlMs: TTL }], at(1, 0));
  keepalive(s, [{ id: 'B', ttlMs: TTL }], at(1, 1_000_000));
  t.equal(s.holderOf('x')?.id, 'legacy');
  t.ok(s.hasEnded('A'));
  check(t, s);
});

t.test('a tick only moves the clock, and that expires what is due', async (t) => {
  const s = new CachingLockServer();
  keepalive(s, [{ id: 'A', ttlMs: TTL }], at(1, 0));
  t.equal(acquire(s, 'x', 'A', 1, at(1, 0)).status, OK);
  t.equal(s.execute(CacheProc.TICK, new Uint8Array(0), at(1, 1_999)).status, OK);
  t.equal(s.holderOf('x')?.id, 'A');
  t.equal(s.execute(CacheProc.TICK, new Uint8Array(0), at(1, 2_000)).status, OK);
  t.equal(s.holderOf('x'), undefined, 'expired by the tick');
  t.equal(s.sessionCount, 0);
  check(t, s);
});
