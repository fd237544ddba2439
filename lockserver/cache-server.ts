/**
 * The caching lock server as a replicated-state-machine service: a deterministic `StateMachine`
 * with no clock, no randomness and no I/O, whose `execute` runs to completion. The same class runs
 * unreplicated behind `CachingLockHost` (lockserver/cache-host.ts) and, later, on every replica of
 * the RSM. lockserver/README.md ("The caching lock service") gives the protocol; this header gives the table's rules.
 *
 * State:
 * - per lock: the holder {id, xid} or none, and an ordered list of waiters {id, xid} (each client
 *   at most once). A lock with a holder or a waiter is *busy*; a lock with neither is *idle* and
 *   only remembered for its grant count (stat), least recently released first.
 * - per client id and lock: the last acquire xid with the status it was answered, and the last
 *   release xid with its status (the duplicate-suppression records), plus per client the highest
 *   xid of records it has forgotten (`forgottenXid`).
 *
 * Duplicate suppression (DESIGN.md: the RPC layer's at-most-once does not span primaries, and a
 * resent request may already have run):
 * - a request whose xid equals the remembered one (acquire: last acquire xid; release: last release
 *   xid) is answered with the remembered status and is **not** executed again;
 * - an older xid (or, with no record for that lock, an xid ≤ the client's `forgottenXid`) is a
 *   late duplicate: answered RPCERR, without effect;
 * - a newer xid is executed and becomes the remembered one.
 *
 * acquire(lid, id, xid):
 * - lock free → granted to (id, xid), removed from the waiters, OK;
 * - held by (id, older xid) → the client asks again for a lock the table says it holds: it lost
 *   track of that hold, or the release it sent just before this acquire was lost (a client asks
 *   again only after its release was answered or sent); the hold moves to the new xid, OK;
 * - held by another → queued once (a client already queued keeps its place and its entry takes the
 *   new xid), RETRY.
 * release(lid, id, xid): only by the holder with its xid → the lock is free, OK; otherwise NOENT,
 * without effect.
 *
 * Notices are a pure function of the state (`pendingNotices`): for each lock with waiters, a
 * revoke to the holder (with its xid) or, if it is free, a retry to the first waiter (with its xid).
 * The host sends them (on the primary only) until they disappear from the state.
 *
 * Pressure: cached locks count against `maxLocks` and `maxClients`, and nobody revokes a lock that
 * nobody waits for. So when an acquire is refused for want of a busy-lock slot or a client slot,
 * the table is *under pressure*: until there is room again (checked after every request), every
 * held lock without waiters is revoked too, and clients give back those they do not use.
 *
 * Sessions and leases (opt-in per client id: a client that never sends keepalive has no session
 * and its locks never expire, as in the classic lab protocol):
 * - keepalive(entries) opens or renews the session of each id: its deadline becomes the stamped
 *   time + its TTL. An id whose session expired or ended is answered SESSION_EXPIRED, without effect.
 * - Time is `context.timeMs`, stamped by the primary; it is comparable only within one `vid`. The
 *   table keeps (clockVid, clockMs): within a view clockMs = max(clockMs, timeMs) (never backwards);
 *   at the first request of another vid every session counts as renewed at that moment (grace:
 *   deadline = timeMs + TTL), so a new primary's clock can never make a lease end early.
 * - Before every request executes, each session whose deadline ≤ clockMs expires: every lock it
 *   holds (cached or used, the table cannot tell) goes to its first waiter (grant notice, as a
 *   release does), its waiting entries are dropped, its client entry is forgotten, and its id is
 *   remembered as ended (bounded by maxClients, oldest forgotten first). Requests from an ended id
 *   (acquire, tryacquire, release, keepalive) answer SESSION_EXPIRED without effect.
 * - endsession(id) does the same at once (a client's close()).
 *
 * Errors: malformed request bytes, an unknown procedure, a bad lock id or an xid of 0 → RPCERR;
 * a bound reached → IOERR, deterministically, leaving holders and waiters unchanged (the answer is
 * recorded when there was room for the record; it may put the table under pressure; see
 * `CachingLockServerLimits`).
 * Nothing in `execute` or `unmarshalState` throws on bad input; a thrown AssertionError is a bug.
 */
import { assert } from '../lib/assert.js';
import { Reader, Writer } from '../lib/codec.js';
import type { ExecuteContext, ExecuteResult, StateMachine } from '../rsm/state-machine.js';
import {
  CacheProc,
  LockStatus,
  MAX_CLIENT_ID_BYTES,
  decodeCacheLockRequest,
  decodeCacheStatRequest,
  MAX_LOCK_NAME_BYTES,
  encodeI32Reply,
  encodeLockInspection,
  encodeTokenReply,
  decodeKeepaliveRequest,
  decodeEndSessionRequest,
  encodeKeepaliveReply,
  isSessionTtl,
  MIN_SESSION_TTL_MS,
  MAX_SESSION_TTL_MS,
  isLockName,
  isXid,
  type CacheLockArgs,
  type Notice,
} from './cache-protocol.js';
import { IdleLocks } from './idle-locks.js';

/**
 * Bounds of the table. Replicas must all use the same limits (they decide answers, so they are
 * part of determinism); `marshalState` records them and `unmarshalState` refuses a mismatch.
 */
export interface CachingLockServerLimits {
  /** Busy locks (held or waited on). An acquire that would make one more busy answers IOERR (pressure). */
  readonly maxLocks: number;
  /** Idle locks whose grant count is remembered; beyond it the least recently freed is forgotten. */
  readonly maxIdleLocks: number;
  /** Waiters per lock; a further client's acquire answers IOERR (not queued). */
  readonly maxWaitersPerLock: number;
  /**
   * Client ids remembered. A new client beyond it evicts the least recently active client that
   * holds and waits on nothing; if every one does, its request answers IOERR (not executed; pressure).
   */
  readonly maxClients: number;
  /**
   * Duplicate-suppression records (locks) per client. A new one beyond it evicts that client's
   * least recently used record of a lock it neither holds nor waits on, raising its
   * `forgottenXid`; if there is none, the request answers IOERR (not executed).
   */
  readonly maxLocksPerClient: number;
}

export const defaultCachingLockServerLimits: CachingLockServerLimits = {
  maxLocks: 100_000,
  maxIdleLocks: 100_000,
  maxWaitersPerLock: 1_000,
  maxClients: 10_000,
  maxLocksPerClient: 1_000,
};

/** stat answers are i32s; a larger grant count is reported as this. */
const I32_MAX = 0x7fff_ffff;
/** "CLS3": the version tag of the marshalled state (CLS2 plus sessions). */
const STATE_MAGIC = 0x434c_5333;

/** A client's lease. */
interface Session {
  readonly ttlMs: number;
  /** Expires when the table's clock reaches this (clockMs of the current vid). */
  deadlineMs: number;
}

/** A waiting client: its id and the xid of its waiting attempt. */
interface Party {
  readonly id: string;
  readonly xid: number;
}

/** The holder of a lock. */
export interface Holder extends Party {
  /** The fencing token of this grant (the table's token counter when it was granted). */
  readonly token: number;
  /** The stamped time of the request that granted it (`ExecuteContext.timeMs`). */
  readonly sinceMs: number;
  /** Granted by a hand-off (a release) rather than by its own acquire: a grant notice is owed. */
  readonly handedOff: boolean;
}

interface BusyLock {
  holder: Holder | undefined;
  /** FIFO; each client id at most once; never contains the holder. */
  readonly waiters: Party[];
  /** Acquires granted on this lock so far (for stat). */
  grants: number;
}

/** What a client was last told about one lock. Xid 0 means "no such request yet". */
interface RequestRecord {
  acquireXid: number;
  acquireStatus: number;
  /** The token the acquire was answered with (OK), or that a hand-off gave it; 0 otherwise. */
  acquireToken: number;
  releaseXid: number;
  releaseStatus: number;
}

interface ClientEntry {
  /** Every xid ≤ this, on a lock without a record, belongs to a forgotten record: stale. */
  forgottenXid: number;
  /** Locks this client holds or waits on (derived; not marshalled). */
  active: number;
  /** lid → record, least recently used first (Map order). */
  readonly records: Map<string, RequestRecord>;
}

export class CachingLockServer implements StateMachine {
  readonly limits: CachingLockServerLimits;
  /** lid → busy lock, in the order they became busy. */
  private busy = new Map<string, BusyLock>();
  /** lid → grant count of idle locks, least recently freed first (flat: a replica may hold millions). */
  private idle = new IdleLocks();
  /** id → client, least recently active first. */
  private clients = new Map<string, ClientEntry>();
  /** Busy locks with at least one waiter: exactly the locks with a pending notice (derived). */
  private waited = new Set<string>();
  /** An acquire was refused for want of a lock or client slot, and there is still no room. */
  private pressure = false;
  /** The next fencing token: every grant of any lock takes one, so tokens increase per lock. */
  private nextToken = 1;
  /** Busy locks whose holder got them by a hand-off and is owed a grant notice (derived). */
  private handedOff = new Set<string>();
  /** The context of the request being executed. */
  private now: ExecuteContext = { vid: 0, seqno: 0, timeMs: 0 };
  /** The vid whose clock `clockMs` is in (0 before the first request, as for unreplicated hosts). */
  private clockVid = 0;
  /** The table's time: the highest stamped time seen in `clockVid`. */
  private clockMs = 0;
  /** id → lease, in the order they were opened. */
  private sessions = new Map<string, Session>();
  /** Ids whose session expired or ended, oldest first (at most maxClients). */
  private ended = new Set<string>();
  /** Sessions expired so far (statistics; not marshalled). */
  expiredCount = 0;

  constructor(limits: Partial<CachingLockServerLimits> = {}) {
    this.limits = { ...defaultCachingLockServerLimits, ...limits };
    for (const [name, value] of Object.entries(this.limits)) {
      assert(Number.isSafeInteger(value) && value >= 1, `CachingLockServer: ${name} must be an integer ≥ 1, got ${value}`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // StateMachine

  execute(proc: number, request: Uint8Array, context: ExecuteContext = { vid: 0, seqno: 0, timeMs: 0 }): ExecuteResult {
    this.now = context;
    this.advanceClock(context);
    const result = this.dispatch(proc, request);
    if (this.pressure && this.hasRoom()) this.pressure = false;
    return result;
  }

  private dispatch(proc: number, request: Uint8Array): ExecuteResult {
    switch (proc) {
      case CacheProc.ACQUIRE:
      case CacheProc.TRY_ACQUIRE: {
        const decoded = decodeCacheLockRequest(request);
        if (!decoded.ok) return tokenAnswer(LockStatus.RPCERR, 0);
        if (this.ended.has(decoded.value.id)) return tokenAnswer(LockStatus.SESSION_EXPIRED, 0);
        const { status, token } = this.onAcquire(decoded.value, proc === CacheProc.TRY_ACQUIRE);
        return tokenAnswer(status, token);
      }
      case CacheProc.RELEASE: {
        const decoded = decodeCacheLockRequest(request);
        if (!decoded.ok) return tokenAnswer(LockStatus.RPCERR, 0);
        if (this.ended.has(decoded.value.id)) return tokenAnswer(LockStatus.SESSION_EXPIRED, 0);
        const status = this.onRelease(decoded.value);
        return tokenAnswer(status, 0);
      }
      case CacheProc.KEEPALIVE: {
        const decoded = decodeKeepaliveRequest(request);
        if (!decoded.ok) return { status: LockStatus.RPCERR, reply: encodeKeepaliveReply([]) };
        return { status: LockStatus.OK, reply: encodeKeepaliveReply(decoded.value.map((e) => this.onKeepalive(e.id, e.ttlMs))) };
      }
      case CacheProc.TICK:
        return tokenAnswer(LockStatus.OK, 0); // the clock moved (advanceClock): that is all
      case CacheProc.END_SESSION: {
        const decoded = decodeEndSessionRequest(request);
        if (!decoded.ok) return tokenAnswer(LockStatus.RPCERR, 0);
        if (!this.ended.has(decoded.value)) this.endSession(decoded.value);
        return tokenAnswer(LockStatus.OK, 0);
      }
      case CacheProc.INSPECT: {
        const decoded = decodeCacheStatRequest(request);
        if (!decoded.ok) return answer(LockStatus.RPCERR);
        const lock = this.busy.get(decoded.value.lid);
        const h = lock?.holder;
        return {
          status: LockStatus.OK,
          reply: encodeLockInspection({
            holder: h === undefined ? undefined : { session: h.id, token: h.token, sinceMs: h.sinceMs },
            waiters: (lock?.waiters ?? []).map((w) => w.id),
            sessions: this.clients.size,
          }),
        };
      }
      case CacheProc.STAT: {
        const decoded = decodeCacheStatRequest(request);
        if (!decoded.ok) return answer(LockStatus.RPCERR);
        return answer(LockStatus.OK, Math.min(this.grantsOf(decoded.value.lid), I32_MAX));
      }
      default:
        return answer(LockStatus.RPCERR);
    }
  }

  marshalState(): Uint8Array {
    const w = new Writer(256);
    w.u32(STATE_MAGIC);
    const l = this.limits;
    w.u32(l.maxLocks).u32(l.maxIdleLocks).u32(l.maxWaitersPerLock).u32(l.maxClients).u32(l.maxLocksPerClient);
    w.bool(this.pressure);
    w.u64(this.nextToken);
    w.list([...this.busy], (w2, [lid, lock]) => {
      w2.string(lid).u64(lock.grants).bool(lock.holder !== undefined);
      const h = lock.holder;
      if (h !== undefined) w2.string(h.id).u64(h.xid).u64(h.token).u64(h.sinceMs).bool(h.handedOff);
      w2.list(lock.waiters, (w3, waiter) => w3.string(waiter.id).u64(waiter.xid));
    });
    this.idle.writeTo(w);
    w.list([...this.clients], (w2, [id, client]) => {
      w2.string(id).u64(client.forgottenXid);
      w2.list([...client.records], (w3, [lid, r]) => {
        w3.string(lid).u64(r.acquireXid).u8(r.acquireStatus).u64(r.acquireToken).u64(r.releaseXid).u8(r.releaseStatus);
      });
    });
    w.u64(this.clockVid).u64(this.clockMs);
    w.list([...this.sessions], (w2, [id, session]) => w2.string(id).u32(session.ttlMs).u64(session.deadlineMs));
    w.list([...this.ended], (w2, id) => w2.string(id));
    return w.finish();
  }

  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    const decoded = decodeState(state, this.limits);
    if (!decoded.ok) return decoded;
    this.busy = decoded.busy;
    this.idle = decoded.idle;
    this.clients = decoded.clients;
    this.waited = decoded.waited;
    this.pressure = decoded.pressure;
    this.nextToken = decoded.nextToken;
    this.clockVid = decoded.clockVid;
    this.clockMs = decoded.clockMs;
    this.sessions = decoded.sessions;
    this.ended = decoded.ended;
    this.handedOff = new Set([...decoded.busy].filter(([, lock]) => lock.holder?.handedOff === true).map(([lid]) => lid));
    // The idle table's own index check is skipped here: readFrom just built that index, and the
    // check rehashes every name (0.4 s at a million idle locks, on the path of a rejoin).
    this.tableInvariants();
    return { ok: true };
  }

  // -------------------------------------------------------------------------------------------
  // Queries (for hosts, checkers and tests)

  /**
   * What the server owes clients right now, ordered by lock id: a revoke to the holder of each
   * lock with waiters, or a retry to the first waiter of each such lock that is free.
   */
  pendingNotices(): Notice[] {
    const notices: Notice[] = [];
    // Under pressure every held lock is revoked, waited for or not (rare: only at the bounds).
    const lids = new Set(this.pressure ? this.busy.keys() : this.waited);
    for (const lid of this.handedOff) lids.add(lid);
    for (const lid of [...lids].sort(compareNames)) {
      const lock = this.busy.get(lid)!;
      const first = lock.waiters[0];
      const holder = lock.holder;
      if (holder !== undefined) {
        // The grant goes first: the new holder learns it holds the lock before it is asked back.
        if (holder.handedOff) notices.push({ kind: 'grant', to: holder.id, lid, xid: holder.xid, token: holder.token });
        if (lock.waiters.length > 0 || this.pressure) notices.push({ kind: 'revoke', to: holder.id, lid, xid: holder.xid, token: 0 });
      } else {
        assert(first !== undefined, `busy lock ${lid} with neither holder nor waiters`);
        notices.push({ kind: 'retry', to: first.id, lid, xid: first.xid, token: 0 });
      }
    }
    return notices;
  }

  /** The lease of `id` (undefined: no session, or expired), in the table's clock. */
  sessionOf(id: string): { ttlMs: number; deadlineMs: number } | undefined {
    const session = this.sessions.get(id);
    return session === undefined ? undefined : { ...session };
  }

  /** Whether the session of `id` expired or ended (its requests answer SESSION_EXPIRED). */
  hasEnded(id: string): boolean {
    return this.ended.has(id);
  }

  /** The table's clock: the vid it counts in and the latest stamped time there. */
  get clock(): { vid: number; ms: number } {
    return { vid: this.clockVid, ms: this.clockMs };
  }

  /** Sessions alive. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Whether the table is under pressure (see the header). */
  get isUnderPressure(): boolean {
    return this.pressure;
  }

  /** The holder of `lid`, or undefined when it is free. */
  holderOf(lid: string): Holder | undefined {
    const holder = this.busy.get(lid)?.holder;
    return holder === undefined ? undefined : { ...holder };
  }

  /** The waiters of `lid`, first first. */
  waitersOf(lid: string): Party[] {
    return (this.busy.get(lid)?.waiters ?? []).map((w) => ({ ...w }));
  }

  /** The token the next grant will carry. */
  get nextFencingToken(): number {
    return this.nextToken;
  }

  /** Acquires granted on `lid` (0 for a lock never granted, or forgotten while idle). */
  grantsOf(lid: string): number {
    return this.busy.get(lid)?.grants ?? this.idle.get(lid) ?? 0;
  }

  /** Sizes, for statistics and tests. */
  get sizes(): { busyLocks: number; idleLocks: number; clients: number; records: number } {
    let records = 0;
    for (const client of this.clients.values()) records += client.records.size;
    return { busyLocks: this.busy.size, idleLocks: this.idle.size, clients: this.clients.size, records };
  }

  /** Checks every invariant of the table; a violation is a bug (AssertionError). */
  invariants(): void {
    this.idle.invariants();
    this.tableInvariants();
  }

  /** The invariants that relate the locks, clients and sessions (all but IdleLocks' own). */
  private tableInvariants(): void {
    const l = this.limits;
    assert(this.busy.size <= l.maxLocks, 'more busy locks than maxLocks');
    assert(this.idle.size <= l.maxIdleLocks, 'more idle locks than maxIdleLocks');
    assert(this.clients.size <= l.maxClients, 'more clients than maxClients');
    const active = new Map<string, number>();
    const count = (id: string): void => void active.set(id, (active.get(id) ?? 0) + 1);
    for (const [lid, lock] of this.busy) {
      assert(isLockName(lid), `bad busy lock id ${lid}`);
      assert(!this.idle.has(lid), `lock ${lid} both busy and idle`);
      assert(lock.holder !== undefined || lock.waiters.length > 0, `busy lock ${lid} has neither holder nor waiters`);
      assert(lock.waiters.length <= l.maxWaitersPerLock, `lock ${lid} has too many waiters`);
      assert(this.waited.has(lid) === lock.waiters.length > 0, `waited set wrong for lock ${lid}`);
      const ids = new Set<string>();
      for (const party of lock.holder === undefined ? lock.waiters : [lock.holder, ...lock.waiters]) {
        assert(!ids.has(party.id), `client ${party.id} twice in lock ${lid}`);
        ids.add(party.id);
        count(party.id);
        // The hold or wait is the outcome of the client's last acquire of this lock.
        const record = this.clients.get(party.id)?.records.get(lid);
        assert(record !== undefined, `client ${party.id} in lock ${lid} without a record`);
        assert(record.acquireXid === party.xid, `client ${party.id} in lock ${lid} with xid ${party.xid}, record ${record.acquireXid}`);
        assert(record.acquireStatus === (party === lock.holder ? LockStatus.OK : LockStatus.RETRY), `record status of ${party.id} in lock ${lid}`);
      }
    }
    for (const lid of this.waited) assert(this.busy.has(lid), `waited lock ${lid} not busy`);
    for (const [lid, lock] of this.busy) {
      const h = lock.holder;
      assert(this.handedOff.has(lid) === (h?.handedOff === true), `handed-off set wrong for lock ${lid}`);
      if (h === undefined) continue;
      assert(h.token >= 1 && h.token < this.nextToken, `lock ${lid}: token ${h.token} not issued (next ${this.nextToken})`);
      assert(this.clients.get(h.id)?.records.get(lid)?.acquireToken === h.token, `lock ${lid}: holder's record has another token`);
    }
    for (const lid of this.handedOff) assert(this.busy.has(lid), `handed-off lock ${lid} not busy`);
    for (const [id, client] of this.clients) {
      assert(id.length > 0, 'empty client id');
      assert(client.records.size <= l.maxLocksPerClient, `client ${id} has too many records`);
      assert(client.active === (active.get(id) ?? 0), `client ${id} active count ${client.active}, table says ${active.get(id) ?? 0}`);
      for (const [lid, r] of client.records) {
        assert(isLockName(lid), `bad record lock id ${lid}`);
        assert(r.acquireXid > 0 || r.releaseXid > 0, `empty record ${id}/${lid}`);
      }
    }
    for (const id of active.keys()) assert(this.clients.has(id), `client ${id} in the lock table but not remembered`);
    for (const id of active.keys()) assert(!this.ended.has(id), `client ${id} holds or waits after its session ended`);
    assert(this.sessions.size <= l.maxClients && this.ended.size <= l.maxClients, 'too many sessions');
    for (const [id, session] of this.sessions) {
      assert(!this.ended.has(id), `session ${id} both alive and ended`);
      assert(isSessionTtl(session.ttlMs), `session ${id}: bad TTL ${session.ttlMs}`);
      assert(session.deadlineMs > this.clockMs && session.deadlineMs <= this.clockMs + session.ttlMs, `session ${id}: deadline ${session.deadlineMs} outside (${this.clockMs}, +TTL]`);
    }
    assert(!(this.pressure && this.hasRoom()), 'under pressure with room to spare');
  }

  // -------------------------------------------------------------------------------------------
  // Sessions

  /** The table's clock follows the stamped time (header: rebase at a new vid, never backwards), then expires leases. */
  private advanceClock(context: ExecuteContext): void {
    const stamped = Number.isSafeInteger(context.timeMs) && context.timeMs > 0 ? context.timeMs : 0;
    if (this.clockVid !== context.vid) {
      // A new view, maybe a new primary with another clock origin: every lease starts afresh now.
      this.clockVid = context.vid;
      this.clockMs = stamped;
      for (const session of this.sessions.values()) session.deadlineMs = this.clockMs + session.ttlMs;
      return;
    }
    this.clockMs = Math.max(this.clockMs, stamped);
    const due: string[] = [];
    for (const [id, session] of this.sessions) if (session.deadlineMs <= this.clockMs) due.push(id);
    for (const id of due) {
      this.expiredCount++;
      this.endSession(id);
    }
  }

  private onKeepalive(id: string, ttlMs: number): number {
    if (id.length === 0 || !isSessionTtl(ttlMs)) return LockStatus.RPCERR;
    if (this.ended.has(id)) return LockStatus.SESSION_EXPIRED;
    const session = this.sessions.get(id);
    if (session !== undefined) {
      // The TTL is fixed when the session opens; clockMs never decreases, so a renewal never
      // shortens a lease.
      session.deadlineMs = this.clockMs + session.ttlMs;
      return LockStatus.OK;
    }
    if (this.sessions.size >= this.limits.maxClients) return LockStatus.IOERR;
    this.sessions.set(id, { ttlMs, deadlineMs: this.clockMs + ttlMs });
    return LockStatus.OK;
  }

  /**
   * Ends the session of `id` (expiry or endsession): its holds go to their first waiters, its waits
   * are dropped, its client entry is forgotten, and the id is remembered as ended.
   */
  private endSession(id: string): void {
    this.sessions.delete(id);
    this.ended.delete(id);
    this.ended.add(id);
    if (this.ended.size > this.limits.maxClients) this.ended.delete(this.ended.values().next().value as string);
    const client = this.clients.get(id);
    if (client === undefined) return;
    if (client.active > 0) {
      for (const [lid, lock] of [...this.busy]) {
        if (lock.holder?.id === id) {
          lock.holder = undefined;
          this.handedOff.delete(lid);
          client.active--;
          this.handOff(lid, lock);
          continue;
        }
        const at = lock.waiters.findIndex((w) => w.id === id);
        if (at < 0) continue;
        this.removeWaiter(lid, lock, at);
        client.active--;
        if (lock.holder === undefined && lock.waiters.length === 0) this.makeIdle(lid, lock);
      }
    }
    assert(client.active === 0, `ended session ${id} still active`);
    this.clients.delete(id);
  }

  // -------------------------------------------------------------------------------------------
  // Handlers

  private onAcquire({ lid, id, xid }: CacheLockArgs, tryOnly: boolean): { status: number; token: number } {
    const existing = this.clients.get(id)?.records.get(lid);
    if (existing !== undefined) {
      if (xid === existing.acquireXid) {
        // A duplicate: not re-executed; it gets the recorded answer, token included. If a
        // hand-off granted this waiting attempt meanwhile, the answer is OK, and from it the
        // client learns of the grant: the grant notice is no longer owed.
        const lock = this.busy.get(lid);
        if (lock?.holder?.handedOff === true && lock.holder.id === id && lock.holder.xid === xid) {
          lock.holder = { ...lock.holder, handedOff: false };
          this.handedOff.delete(lid);
        }
        return { status: existing.acquireStatus, token: existing.acquireToken };
      }
      if (xid < existing.acquireXid) return { status: LockStatus.RPCERR, token: 0 }; // late duplicate of an older attempt
    } else if (xid <= (this.clients.get(id)?.forgottenXid ?? 0)) {
      return { status: LockStatus.RPCERR, token: 0 }; // late duplicate of a forgotten attempt
    }
    // Make room for the record first: a request that cannot be remembered must not run.
    const slot = this.recordSlot(id, lid);
    if (slot === undefined) return { status: LockStatus.IOERR, token: 0 };
    const { client, record } = slot;
    const status = this.acquireExecute(lid, id, xid, client, tryOnly);
    record.acquireXid = xid;
    record.acquireStatus = status; // an IOERR answer too: its duplicate must get IOERR again
    record.acquireToken = status === LockStatus.OK ? this.busy.get(lid)!.holder!.token : 0;
    return { status, token: record.acquireToken };
  }

  /** A new hold of `lid` by (id, xid) with the next token. */
  private grant(lid: string, lock: BusyLock, party: Party, handedOff: boolean): Holder {
    const holder: Holder = { id: party.id, xid: party.xid, token: this.nextToken++, sinceMs: this.now.timeMs, handedOff };
    lock.holder = holder;
    lock.grants++;
    if (handedOff) this.handedOff.add(lid);
    else this.handedOff.delete(lid);
    return holder;
  }

  private acquireExecute(lid: string, id: string, xid: number, client: ClientEntry, tryOnly: boolean): number {
    let lock = this.busy.get(lid);
    if (lock === undefined) {
      if (this.busy.size >= this.limits.maxLocks) {
        this.pressure = true;
        return LockStatus.IOERR;
      }
      lock = { holder: undefined, waiters: [], grants: this.idle.take(lid) ?? 0 };
      this.busy.set(lid, lock);
    }
    const holder = lock.holder;
    if (holder === undefined) {
      const at = lock.waiters.findIndex((w) => w.id === id);
      if (at >= 0) this.removeWaiter(lid, lock, at); // a waiter becoming the holder stays active
      else client.active++;
      this.grant(lid, lock, { id, xid }, false);
      return LockStatus.OK;
    }
    if (holder.id === id) {
      // The client has lost track of its hold (see the header); the hold moves to the new xid,
      // with a new token (the old one may be in use by a caller the client forgot).
      assert(holder.xid < xid, `re-acquire of ${lid} by ${id} with xid ${xid} ≤ held ${holder.xid}`);
      this.grant(lid, lock, { id, xid }, false);
      return LockStatus.OK;
    }
    const at = lock.waiters.findIndex((w) => w.id === id);
    if (at >= 0) {
      if (tryOnly) {
        // A try never waits: it leaves the queue (its earlier attempt is superseded by this xid).
        this.removeWaiter(lid, lock, at);
        client.active--;
        return LockStatus.RETRY;
      }
      lock.waiters[at] = { id, xid }; // keeps its place; notices now carry the new xid
      return LockStatus.RETRY;
    }
    if (tryOnly) {
      if (lock.waiters.length === 0 && lock.holder === undefined) this.makeIdle(lid, lock);
      return LockStatus.RETRY; // not queued
    }
    if (lock.waiters.length >= this.limits.maxWaitersPerLock) return LockStatus.IOERR;
    lock.waiters.push({ id, xid });
    this.waited.add(lid);
    client.active++;
    return LockStatus.RETRY;
  }

  private onRelease({ lid, id, xid }: CacheLockArgs): number {
    const client = this.clients.get(id);
    const record = client?.records.get(lid);
    if (client === undefined || record === undefined) {
      // Not the holder (a holder always has a record), so NOENT; nothing to remember, and a
      // duplicate gets the same answer. Below the forgotten watermark it is a late duplicate.
      return xid <= (client?.forgottenXid ?? 0) ? LockStatus.RPCERR : LockStatus.NOENT;
    }
    if (xid === record.releaseXid) return record.releaseStatus; // duplicate: not re-executed
    if (xid < record.releaseXid) return LockStatus.RPCERR; // late duplicate of an older release
    this.touch(id, client, lid, record);
    const lock = this.busy.get(lid);
    let status: number = LockStatus.NOENT;
    if (lock?.holder !== undefined && lock.holder.id === id && lock.holder.xid === xid) {
      lock.holder = undefined;
      this.handedOff.delete(lid);
      client.active--;
      this.handOff(lid, lock);
      status = LockStatus.OK;
    }
    record.releaseXid = xid;
    record.releaseStatus = status;
    return status;
  }

  /**
   * A lock just lost its holder: it goes straight to the first waiter (FIFO), in this same
   * request, and that waiter is owed a grant notice; without waiters it becomes idle. So the
   * client that released cannot win it back by asking again at once: it queues behind.
   */
  private handOff(lid: string, lock: BusyLock): void {
    assert(lock.holder === undefined, `hand-off of held lock ${lid}`);
    const first = lock.waiters[0];
    if (first === undefined) {
      this.makeIdle(lid, lock);
      return;
    }
    this.removeWaiter(lid, lock, 0); // stays active: it becomes the holder
    const holder = this.grant(lid, lock, first, true);
    const record = this.clients.get(first.id)?.records.get(lid);
    assert(record !== undefined && record.acquireXid === first.xid, `waiter ${first.id} of ${lid} without its record`);
    record.acquireStatus = LockStatus.OK; // its waiting attempt is now answered OK: duplicates agree
    record.acquireToken = holder.token;
  }

  // -------------------------------------------------------------------------------------------
  // Table maintenance

  /**
   * The client entry and record for (id, lid), created if need be and marked most recently used,
   * or undefined when a bound leaves no room (nothing evictable).
   */
  private recordSlot(id: string, lid: string): { client: ClientEntry; record: RequestRecord } | undefined {
    let client = this.clients.get(id);
    if (client === undefined) {
      if (this.clients.size >= this.limits.maxClients && !this.evictIdleClient()) {
        this.pressure = true;
        return undefined;
      }
      client = { forgottenXid: 0, active: 0, records: new Map() };
      this.clients.set(id, client);
    }
    let record = client.records.get(lid);
    if (record === undefined) {
      if (client.records.size >= this.limits.maxLocksPerClient && !this.evictRecord(id, client)) return undefined;
      record = { acquireXid: 0, acquireStatus: 0, acquireToken: 0, releaseXid: 0, releaseStatus: 0 };
      client.records.set(lid, record);
    }
    this.touch(id, client, lid, record);
    return { client, record };
  }

  /** Marks the client and its record as most recently used (Map order is the LRU order). */
  private touch(id: string, client: ClientEntry, lid: string, record: RequestRecord): void {
    this.clients.delete(id);
    this.clients.set(id, client);
    client.records.delete(lid);
    client.records.set(lid, record);
  }

  /** Whether a new lock and a new client would fit (the end of pressure). */
  private hasRoom(): boolean {
    if (this.busy.size >= this.limits.maxLocks) return false;
    if (this.clients.size < this.limits.maxClients) return true;
    for (const client of this.clients.values()) if (client.active === 0) return true;
    return false;
  }

  /** Forgets the least recently active client that holds and waits on nothing. */
  private evictIdleClient(): boolean {
    for (const [id, client] of this.clients) {
      if (client.active === 0) {
        this.clients.delete(id);
        return true;
      }
    }
    return false;
  }

  /** Forgets the client's least recently used record of a lock it neither holds nor waits on. */
  private evictRecord(id: string, client: ClientEntry): boolean {
    for (const [lid, record] of client.records) {
      if (this.isParty(id, lid)) continue;
      client.records.delete(lid);
      client.forgottenXid = Math.max(client.forgottenXid, record.acquireXid, record.releaseXid);
      return true;
    }
    return false;
  }

  private isParty(id: string, lid: string): boolean {
    const lock = this.busy.get(lid);
    if (lock === undefined) return false;
    return lock.holder?.id === id || lock.waiters.some((w) => w.id === id);
  }

  private removeWaiter(lid: string, lock: BusyLock, at: number): void {
    lock.waiters.splice(at, 1);
    if (lock.waiters.length === 0) this.waited.delete(lid);
  }

  private makeIdle(lid: string, lock: BusyLock): void {
    assert(lock.holder === undefined && lock.waiters.length === 0, `lock ${lid} is not idle`);
    this.busy.delete(lid);
    this.waited.delete(lid);
    this.handedOff.delete(lid);
    this.idle.add(lid, lock.grants);
    if (this.idle.size > this.limits.maxIdleLocks) this.idle.dropOldest();
  }
}

function answer(status: number, value = 0): ExecuteResult {
  return { status, reply: encodeI32Reply(value) };
}

function tokenAnswer(status: number, token: number): ExecuteResult {
  return { status, reply: encodeTokenReply(token) };
}

/** Lock names in a replica-independent order (code units; the same on every replica). */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// State decoding: bounded, validating, never throws.

type DecodedState =
  | {
      readonly ok: true;
      readonly busy: Map<string, BusyLock>;
      readonly idle: IdleLocks;
      readonly clients: Map<string, ClientEntry>;
      readonly waited: Set<string>;
      readonly pressure: boolean;
      readonly nextToken: number;
      readonly clockVid: number;
      readonly clockMs: number;
      readonly sessions: Map<string, Session>;
      readonly ended: Set<string>;
    }
  | { readonly ok: false; readonly reason: string };

const VALID_STATUSES = new Set<number>(Object.values(LockStatus));

function decodeState(bytes: Uint8Array, limits: CachingLockServerLimits): DecodedState {
  const r = new Reader(bytes);
  if (r.u32() !== STATE_MAGIC) return { ok: false, reason: r.error ?? 'not a caching lock server state' };
  const theirs = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32()];
  const ours = [limits.maxLocks, limits.maxIdleLocks, limits.maxWaitersPerLock, limits.maxClients, limits.maxLocksPerClient];
  if (r.error === undefined && theirs.some((v, i) => v !== ours[i])) {
    return { ok: false, reason: `limits differ: state has ${theirs.join('/')}, this server ${ours.join('/')}` };
  }
  const pressure = r.bool();
  const nextToken = r.u64();
  if (r.error === undefined && nextToken < 1) r.fail('token counter below 1');
  const busy = new Map<string, BusyLock>();
  const clients = new Map<string, ClientEntry>();
  const waited = new Set<string>();
  const party = (reader: Reader): Party => {
    const id = reader.string(MAX_CLIENT_ID_BYTES);
    const xid = reader.u64();
    if (id.length === 0) reader.fail('empty client id');
    if (!isXid(xid)) reader.fail(`bad xid ${xid}`);
    return { id, xid };
  };
  // The busy locks come first; the idle ones (IdleLocks.readFrom checks their names and that none
  // repeats) are then checked against them.
  const lockId = (reader: Reader): string => {
    const lid = reader.string(MAX_LOCK_NAME_BYTES);
    if (reader.error === undefined && !isLockName(lid)) reader.fail('bad lock name');
    if (busy.has(lid)) reader.fail(`lock ${lid} twice`);
    return lid;
  };
  // Smallest encodings: a busy lock 18 bytes, a party 12, an idle lock 13, a client 16, a record 31.
  r.list(
    (reader) => {
      const lid = lockId(reader);
      const grants = reader.u64();
      const holder: Holder | undefined = reader.bool()
        ? { ...party(reader), token: reader.u64(), sinceMs: reader.u64(), handedOff: reader.bool() }
        : undefined;
      if (holder !== undefined && (holder.token < 1 || holder.token >= nextToken)) reader.fail(`lock ${lid}: token ${holder.token} not issued`);
      const waiters = reader.list(party, 12, limits.maxWaitersPerLock);
      if (reader.error !== undefined) return;
      if (holder === undefined && waiters.length === 0) reader.fail(`busy lock ${lid} without holder or waiters`);
      const ids = new Set((holder === undefined ? waiters : [holder, ...waiters]).map((p) => p.id));
      if (ids.size !== waiters.length + (holder === undefined ? 0 : 1)) reader.fail(`a client twice in lock ${lid}`);
      busy.set(lid, { holder, waiters, grants });
      if (waiters.length > 0) waited.add(lid);
    },
    18,
    limits.maxLocks,
  );
  const idle = IdleLocks.readFrom(r, limits.maxIdleLocks);
  for (const lid of busy.keys()) if (idle.has(lid)) r.fail(`lock ${lid} both busy and idle`);
  r.list(
    (reader) => {
      const id = reader.string(MAX_CLIENT_ID_BYTES);
      const forgottenXid = reader.u64();
      if (id.length === 0) reader.fail('empty client id');
      if (clients.has(id)) reader.fail(`client ${id} twice`);
      const records = new Map<string, RequestRecord>();
      reader.list(
        (rr) => {
          const lid = rr.string(MAX_LOCK_NAME_BYTES);
          if (rr.error === undefined && !isLockName(lid)) rr.fail('bad lock name');
          const record = { acquireXid: rr.u64(), acquireStatus: rr.u8(), acquireToken: rr.u64(), releaseXid: rr.u64(), releaseStatus: rr.u8() };
          if (record.acquireXid === 0 && record.releaseXid === 0) rr.fail(`empty record ${id}/${lid}`);
          if (!VALID_STATUSES.has(record.acquireStatus) || !VALID_STATUSES.has(record.releaseStatus)) rr.fail(`bad status in ${id}/${lid}`);
          const before = records.size;
          records.set(lid, record);
          if (records.size === before) rr.fail(`record ${id}/${lid} twice`);
        },
        31,
        limits.maxLocksPerClient,
      );
      clients.set(id, { forgottenXid, active: 0, records });
    },
    16,
    limits.maxClients,
  );
  const clockVid = r.u64();
  const clockMs = r.u64();
  const sessions = new Map<string, Session>();
  r.list(
    (reader) => {
      const id = reader.string(MAX_CLIENT_ID_BYTES);
      const ttlMs = reader.u32();
      const deadlineMs = reader.u64();
      if (reader.error !== undefined) return;
      if (id.length === 0 || sessions.has(id)) reader.fail(`bad or repeated session ${id}`);
      if (ttlMs < MIN_SESSION_TTL_MS || ttlMs > MAX_SESSION_TTL_MS) reader.fail(`session ${id}: bad TTL ${ttlMs}`);
      if (deadlineMs <= clockMs || deadlineMs > clockMs + ttlMs) reader.fail(`session ${id}: deadline out of range`);
      sessions.set(id, { ttlMs, deadlineMs });
    },
    16,
    limits.maxClients,
  );
  const ended = new Set<string>();
  r.list(
    (reader) => {
      const id = reader.string(MAX_CLIENT_ID_BYTES);
      if (reader.error !== undefined) return;
      if (id.length === 0 || ended.has(id) || sessions.has(id)) reader.fail(`bad or repeated ended session ${id}`);
      ended.add(id);
    },
    4,
    limits.maxClients,
  );
  const done = r.finish(undefined);
  if (!done.ok) return done;

  // Cross-checks the bytes alone cannot express: every hold and wait is backed by its record.
  for (const [lid, lock] of busy) {
    if (!isLockName(lid)) return { ok: false, reason: `bad lock id ${lid}` };
    for (const p of lock.holder === undefined ? lock.waiters : [lock.holder, ...lock.waiters]) {
      const client = clients.get(p.id);
      const record = client?.records.get(lid);
      const expected = p === lock.holder ? LockStatus.OK : LockStatus.RETRY;
      const tokenOk = p !== lock.holder || record?.acquireToken === lock.holder.token;
      if (client === undefined || record === undefined || record.acquireXid !== p.xid || record.acquireStatus !== expected || !tokenOk) {
        return { ok: false, reason: `client ${p.id} in lock ${lid} without a matching record` };
      }
      client.active++;
      if (ended.has(p.id)) return { ok: false, reason: `client ${p.id} in lock ${lid} after its session ended` };
    }
  }
  if (pressure) {
    // Pressure ends as soon as there is room; a state claiming otherwise is inconsistent.
    const room = busy.size < limits.maxLocks && (clients.size < limits.maxClients || [...clients.values()].some((c) => c.active === 0));
    if (room) return { ok: false, reason: 'under pressure with room to spare' };
  }
  return { ok: true, busy, idle, clients, waited, pressure, nextToken, clockVid, clockMs, sessions, ended };
}
