/**
 * The caching lock client's cache, as a synchronous state machine: events in, actions out, no
 * awaits, no clock, no I/O. `CachingLockClient` (cache-client.ts) feeds it events from local
 * callers, server replies, callbacks and timers, and carries out the actions it returns, in order.
 *
 * Per lock the cache is in one of five states (lockserver/README.md ("The caching lock service") has the diagram):
 *
 * | state     | meaning                                                     | RPC outstanding |
 * |-----------|-------------------------------------------------------------|-----------------|
 * | none      | not cached                                                  | —               |
 * | acquiring | an acquire attempt (xid) runs: sent, or waiting to re-ask   | maybe           |
 * | free      | cached (granted under xid), no local caller holds it        | no              |
 * | locked    | cached, held by exactly one local caller                    | no              |
 * | releasing | giving it back: release(xid) sent or waiting to be resent   | maybe           |
 *
 * Rules:
 * 1. At most one tracked RPC (acquire or release; orphan releases are untracked) is outstanding
 *    per lock, and a lock is asked for only while local callers wait for it (an attempt, once
 *    started, continues until granted even if its callers give up, so that the server's state and
 *    ours never disagree for long).
 * 2. Each new acquire attempt takes a fresh xid from the client's counter; the release of a hold
 *    carries the xid of the attempt that got it. An RPC that failed without an answer (outcome
 *    unknown) is resent with the *same* xid, so the server's duplicate suppression answers it.
 * 3. Local callers are served from the cache, first come first served. A cached lock goes back to
 *    the server only after a revoke (or at close): as soon as no local caller holds it, callers
 *    that arrive meanwhile wait and acquire it again afterwards. When some do, the release (an
 *    untracked orphan) and the new attempt are sent together, release first, rather than the
 *    attempt after the release's reply: the remote waiters still go first, and the hand-off to
 *    the next holder costs one replication round instead of two. A caller that arrives after the
 *    release went out is treated alike: the release in flight becomes the orphan and the attempt
 *    follows it at once. One exception: when an acquire
 *    is answered IOERR (the server is out of room, and the locks we cache count against its
 *    bounds), every cached lock no local caller uses goes back too, and if any did, the attempt
 *    is renewed at once, behind those releases.
 * 4. Callbacks carry xids: a revoke for another hold and a retry for another attempt are stale and
 *    ignored, except a revoke of a hold we certainly do not have (see `revoke`), which we release.
 *    A callback may overtake the reply it follows (a revoke before the OK, a retry before the
 *    RETRY); the cache remembers it and acts on the reply.
 * 5. After RETRY the cache waits for retry, and re-asks after the retry timer in case the retry
 *    was lost; after IOERR/RPCERR (no effect) it re-asks on the timer (after IOERR at once when
 *    rule 3 gave cached locks back); after an RPC failure it resends on the timer.
 *
 * Every event returns the actions to carry out, in order; the host must call `retryTimerFired`
 * exactly once for each `startRetryTimer` (it may do so late). Protocol code: no clock, no
 * randomness and no timers of its own here; time arrives only as events from the host.
 */
import { assert, assertNever, maybe } from '../lib/assert.js';
import { LockStatus } from './cache-protocol.js';

export type CacheState = 'none' | 'acquiring' | 'free' | 'locked' | 'releasing';

export type ClientAction<Token> =
  /**
   * Send acquire(lid, xid) to the server (tryacquire when `tryOnly`: the server does not queue
   * it); report with acquireReplied or acquireFailed.
   */
  | { readonly type: 'sendAcquire'; readonly lid: string; readonly xid: number; readonly tryOnly?: true }
  /**
   * Send release(lid, xid); report with releaseReplied or releaseFailed. An `orphan` release gives
   * back a hold the cache does not track: one it never had (see `revoke`), or one it just let go
   * to ask again at once (rule 3). Its outcome needs no report, and it is not resent.
   */
  | { readonly type: 'sendRelease'; readonly lid: string; readonly xid: number; readonly orphan?: true }
  /** The local caller `token` now holds `lid`, under the hold's fencing token. */
  | { readonly type: 'grantLocal'; readonly lid: string; readonly token: Token; readonly fencingToken: number }
  /** The local caller `token` will not get `lid`: the client is closing, or (busy) a try found it taken. */
  | { readonly type: 'failLocal'; readonly lid: string; readonly token: Token; readonly reason: 'closed' | 'busy' }
  /** Call retryTimerFired(lid) after the retry interval. */
  | { readonly type: 'startRetryTimer'; readonly lid: string };

interface CachedLock<Token> {
  state: CacheState;
  /** acquiring: the attempt's xid; free/locked/releasing: the xid of the hold. 0 in none. */
  xid: number;
  /** An acquire (acquiring) or release (releasing) for `xid` is in flight. */
  outstanding: boolean;
  /** The last RPC for `xid` failed without an answer: the timer resends it with the same xid. */
  resend: boolean;
  /** acquiring: a retry for `xid` came before the RETRY reply: re-ask as soon as it comes. */
  retried: boolean;
  /** The server wants this hold back (in acquiring: the revoke came before the OK reply). */
  revoked: boolean;
  /** A retry timer is running for this lock (at most one). */
  timerArmed: boolean;
  /** locked: the local caller holding it. */
  holder: Token | undefined;
  /** Local callers waiting, first come first served. */
  readonly waiters: Token[];
  /** The waiters that only try (tryAcquire): they fail instead of waiting for another attempt. */
  readonly tryWaiters: Set<Token>;
  /** acquiring: the attempt is a tryacquire (the server does not queue it). */
  tryOnly: boolean;
  /** free/locked/releasing: the fencing token of the hold (0 otherwise). */
  fencingToken: number;
}

export interface CachingLockClientCoreOptions {
  /** The first xid this client uses (≥ 1). Default 1. */
  readonly firstXid?: number;
}

export class CachingLockClientCore<Token> {
  private readonly locks = new Map<string, CachedLock<Token>>();
  private nextXid: number;
  private closed = false;

  constructor(options: CachingLockClientCoreOptions = {}) {
    this.nextXid = options.firstXid ?? 1;
    assert(Number.isSafeInteger(this.nextXid) && this.nextXid >= 1, `firstXid must be a safe integer ≥ 1, got ${this.nextXid}`);
  }

  // -------------------------------------------------------------------------------------------
  // Queries

  stateOf(lid: string): CacheState {
    return this.locks.get(lid)?.state ?? 'none';
  }

  /** The xid of the current attempt or hold of `lid` (0 when none). */
  xidOf(lid: string): number {
    return this.locks.get(lid)?.xid ?? 0;
  }

  /** The fencing token of the cached hold of `lid` (0 when none). */
  fencingTokenOf(lid: string): number {
    const lock = this.locks.get(lid);
    return lock === undefined || lock.state === 'none' || lock.state === 'acquiring' ? 0 : lock.fencingToken;
  }

  /** Whether a local caller holds `lid` (so that `localRelease` is legal). */
  isLocallyHeld(lid: string): boolean {
    return this.locks.get(lid)?.state === 'locked';
  }

  /** The local caller holding `lid`, if any. */
  localHolderOf(lid: string): Token | undefined {
    return this.locks.get(lid)?.holder;
  }

  /** Local callers waiting for `lid`. */
  waitingOn(lid: string): number {
    return this.locks.get(lid)?.waiters.length ?? 0;
  }

  /** Locks the cache has a record of (any state but a forgotten none). */
  lockIds(): string[] {
    return [...this.locks.keys()];
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Whether nothing is left to do: no lock in flight, waited for, or with a timer running. */
  get isQuiet(): boolean {
    for (const lock of this.locks.values()) {
      if (lock.state === 'acquiring' || lock.state === 'releasing' || lock.timerArmed || lock.waiters.length > 0) return false;
    }
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Events from local callers

  /** A local caller asks for `lid`; it is granted by a later grantLocal action (maybe at once). */
  localAcquire(lid: string, token: Token): Array<ClientAction<Token>> {
    assert(!this.closed, 'localAcquire after close');
    const lock = this.lockFor(lid);
    assert(!lock.waiters.includes(token) && lock.holder !== token, `caller already waits for or holds ${lid}`);
    lock.waiters.push(token);
    const actions: Array<ClientAction<Token>> = [];
    this.advance(lid, lock, actions);
    return actions;
  }

  /**
   * A local caller wants `lid` only if it can have it without waiting for anyone: granted at once
   * from the cache (free and not revoked), after one tryacquire when not cached, and failed
   * ('busy') otherwise — when a local caller holds it, another attempt runs, or the server wants
   * it back (remote waiters go first).
   */
  localTryAcquire(lid: string, token: Token): Array<ClientAction<Token>> {
    assert(!this.closed, 'localTryAcquire after close');
    const lock = this.lockFor(lid);
    assert(!lock.waiters.includes(token) && lock.holder !== token, `caller already waits for or holds ${lid}`);
    const actions: Array<ClientAction<Token>> = [];
    if (lock.state === 'free' && !lock.revoked && lock.waiters.length === 0) {
      lock.waiters.push(token);
      this.grantNext(lid, lock, actions);
    } else if (lock.state === 'none' && lock.waiters.length === 0) {
      lock.waiters.push(token);
      lock.tryWaiters.add(token);
      lock.state = 'acquiring';
      lock.xid = this.nextXid++;
      lock.retried = false;
      lock.revoked = false;
      lock.tryOnly = true;
      this.send(lid, lock, 'sendAcquire', actions);
    } else {
      actions.push({ type: 'failLocal', lid, token, reason: 'busy' });
    }
    this.forgetIfDone(lid, lock);
    return actions;
  }

  /** The local holder gives `lid` back. The caller must check `isLocallyHeld` first. */
  localRelease(lid: string): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    assert(lock?.state === 'locked', `localRelease of ${lid} in state ${lock?.state ?? 'none'}`);
    lock.state = 'free';
    lock.holder = undefined;
    const actions: Array<ClientAction<Token>> = [];
    this.advance(lid, lock, actions);
    return actions;
  }

  /**
   * A waiting caller gives up (abort, timeout). Returns whether it was still waiting; if not, it
   * was already granted (or never asked) and must release as usual.
   */
  localAbandon(lid: string, token: Token): boolean {
    const lock = this.locks.get(lid);
    const at = lock?.waiters.indexOf(token) ?? -1;
    if (lock === undefined || at < 0) return false;
    lock.waiters.splice(at, 1);
    lock.tryWaiters.delete(token);
    // The attempt, if any, goes on (rule 1); a free lock simply stays cached.
    this.forgetIfDone(lid, lock);
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Events from the server

  acquireReplied(lid: string, xid: number, status: number, fencingToken = 0): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'acquiring' || lock.xid !== xid || !lock.outstanding) return actions; // stale or duplicate reply
    lock.outstanding = false;
    switch (status) {
      case LockStatus.OK: {
        this.obtained(lid, lock, fencingToken, actions);
        break;
      }
      case LockStatus.RETRY:
        if (lock.tryOnly) {
          // Taken, and the server did not queue us: the callers that only tried fail; callers
          // that came meanwhile and want to wait get an ordinary attempt.
          this.failTries(lid, lock, actions);
          lock.tryOnly = false;
          lock.retried = false;
          lock.state = 'none';
          lock.xid = 0;
          this.advance(lid, lock, actions);
        } else if (lock.retried) {
          this.reAsk(lid, lock, actions); // the retry overtook this reply
        } else {
          this.armTimer(lid, lock, actions);
        }
        break;
      default:
        // IOERR (a bound at the server), RPCERR (refused as stale or malformed), anything else:
        // the request had no effect. Re-ask with a fresh xid after the retry interval.
        lock.retried = false;
        lock.revoked = false;
        if (lock.tryOnly) {
          // No effect at the server: a try fails now (it promised not to wait); waiting callers
          // go on with an ordinary attempt.
          this.failTries(lid, lock, actions);
          lock.tryOnly = false;
        }
        // The server is out of room, possibly because of the locks we cache (its bounds count
        // them, and nobody may want them, so no revoke would come): give the unused ones back.
        // If that freed any, ask again at once, right behind those releases (the primary orders
        // them first, and their records become evictable); otherwise after the retry interval.
        if (status === LockStatus.IOERR && this.shedFreeLocks(actions) > 0 && lock.waiters.length > 0 && !this.closed) this.startAttempt(lid, lock, actions);
        else this.armTimer(lid, lock, actions);
        break;
    }
    this.forgetIfDone(lid, lock);
    return actions;
  }

  /** The acquire RPC failed without an answer: it may or may not have run at the server. */
  acquireFailed(lid: string, xid: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'acquiring' || lock.xid !== xid || !lock.outstanding) return actions;
    lock.outstanding = false;
    lock.resend = true;
    this.armTimer(lid, lock, actions);
    return actions;
  }

  releaseReplied(lid: string, xid: number, status: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'releasing' || lock.xid !== xid || !lock.outstanding) return actions; // stale, duplicate or orphan
    // OK: given back. Anything else (NOENT): the server says we did not hold it. Either way the
    // hold is gone; callers that arrived meanwhile start a new attempt.
    maybe(status !== LockStatus.OK);
    lock.outstanding = false;
    lock.state = 'none';
    lock.xid = 0;
    lock.fencingToken = 0;
    lock.revoked = false;
    this.advance(lid, lock, actions);
    return actions;
  }

  /** The release RPC failed without an answer: resend it (same xid) on the timer. */
  releaseFailed(lid: string, xid: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'releasing' || lock.xid !== xid || !lock.outstanding) return actions;
    lock.outstanding = false;
    lock.resend = true;
    this.armTimer(lid, lock, actions);
    return actions;
  }

  /**
   * The server asks for the hold (lid, xid) back. For our current hold: give it back once no local
   * caller holds it. For our current attempt (the revoke overtook the OK): remember it. For a hold
   * we certainly do not have — no attempt or hold of ours carries that xid, and xids are never
   * reused — the server's table disagrees with us (we lost a reply, or a restart): give it back
   * with an orphan release, which frees it only if the server really has (lid, us, xid).
   */
  revoke(lid: string, xid: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock !== undefined && lock.xid === xid && lock.state !== 'none') {
      if (lock.state === 'releasing' || lock.revoked) return actions; // already on its way back
      lock.revoked = true;
      if (lock.state === 'free') this.advance(lid, lock, actions);
      return actions;
    }
    // Orphan: xids below nextXid were all used, each for one attempt; the current one is handled
    // above. An xid we never issued is the server's mistake: ignore it.
    if (xid >= 1 && xid < this.nextXid) actions.push({ type: 'sendRelease', lid, xid, orphan: true });
    return actions;
  }

  /** The server says `lid` is free for the attempt `xid`: ask again now. */
  retry(lid: string, xid: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'acquiring' || lock.xid !== xid) return actions; // stale
    if (lock.outstanding) {
      lock.retried = true; // overtook the RETRY reply
      return actions;
    }
    // With `resend` the attempt's reply was lost; a retry for it tells us that reply was RETRY
    // (the server lists us as a waiter under this xid), so a fresh attempt is safe.
    lock.resend = false;
    this.reAsk(lid, lock, actions);
    return actions;
  }

  /**
   * The server handed `lid` to our waiting attempt `xid` (FIFO hand-off) with `fencingToken`: the
   * lock is ours now, without another round trip. The notice comes from the primary after the
   * hand-off executed on every member, so the table durably names (us, xid) the holder; our next
   * request on the lock (the release) ends the notice. The acquire of `xid` may still be in
   * flight: its late reply finds us no longer acquiring and is ignored, and a resend of it is a
   * duplicate the server answers from its record without effect. A grant for any other attempt,
   * or a repeat of this one for the hold we already have, is stale and ignored.
   */
  granted(lid: string, xid: number, fencingToken: number): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    if (lock?.state !== 'acquiring' || lock.xid !== xid) return actions; // stale or repeated
    lock.outstanding = false;
    lock.resend = false;
    if (lock.tryOnly) {
      // The server never queues a try, so it cannot hand a lock to one; should it, the lock is
      // still ours and goes to the callers that try (they asked for it) like an OK would.
      lock.tryWaiters.clear();
    }
    this.obtained(lid, lock, fencingToken, actions);
    return actions;
  }

  /** The timer of an earlier startRetryTimer(lid) ran out. */
  retryTimerFired(lid: string): Array<ClientAction<Token>> {
    const lock = this.locks.get(lid);
    const actions: Array<ClientAction<Token>> = [];
    assert(lock?.timerArmed === true, `retry timer of ${lid} fired but none was started`);
    lock.timerArmed = false;
    if (!lock.outstanding) {
      if (lock.state === 'acquiring') {
        if (lock.resend) this.send(lid, lock, 'sendAcquire', actions);
        else this.reAsk(lid, lock, actions);
      } else if (lock.state === 'releasing') {
        assert(lock.resend, `releasing ${lid} without an outstanding release`);
        this.send(lid, lock, 'sendRelease', actions);
      }
    }
    this.forgetIfDone(lid, lock);
    return actions;
  }

  /**
   * Closing: every waiting caller fails, every cached hold goes back to the server (a local holder
   * loses it), and no new attempt starts. Attempts whose outcome is still unknown finish (and go
   * back at once if granted) for as long as the host keeps delivering events.
   */
  close(): Array<ClientAction<Token>> {
    const actions: Array<ClientAction<Token>> = [];
    if (this.closed) return actions;
    this.closed = true;
    for (const [lid, lock] of this.locks) {
      for (const token of lock.waiters.splice(0)) actions.push({ type: 'failLocal', lid, token, reason: 'closed' });
      lock.tryWaiters.clear();
      if (lock.state === 'locked') {
        lock.state = 'free';
        lock.holder = undefined;
      }
      this.advance(lid, lock, actions);
    }
    return actions;
  }

  // -------------------------------------------------------------------------------------------
  // Invariants

  /** Checks every lock's invariants; a violation is a bug (AssertionError). */
  invariants(): void {
    for (const [lid, lock] of this.locks) {
      const where = `lock ${lid} (${lock.state})`;
      assert(lock.state !== 'locked' || lock.holder !== undefined, `${where}: locked without a holder`);
      assert(lock.state === 'locked' || lock.holder === undefined, `${where}: a holder but not locked`);
      assert(lock.holder === undefined || !lock.waiters.includes(lock.holder), `${where}: holder also waits`);
      assert(new Set(lock.waiters).size === lock.waiters.length, `${where}: a caller waits twice`);
      assert(!(lock.outstanding && lock.resend), `${where}: outstanding and waiting to resend`);
      assert(!lock.resend || lock.timerArmed || lock.outstanding, `${where}: resend without a timer`);
      assert(lock.xid < this.nextXid, `${where}: xid ${lock.xid} not issued yet`);
      for (const t of lock.tryWaiters) assert(lock.waiters.includes(t), `${where}: a try waiter not waiting`);
      assert(!lock.tryOnly || lock.state === 'acquiring', `${where}: a try outside acquiring`);
      switch (lock.state) {
        case 'none':
          assert(lock.xid === 0 && !lock.outstanding && !lock.resend && !lock.revoked, `${where}: leftovers`);
          assert(lock.waiters.length === 0 || this.closed, `${where}: callers wait but nothing is asked`);
          break;
        case 'acquiring':
          assert(lock.xid >= 1, `${where}: no xid`);
          assert(lock.outstanding || lock.timerArmed, `${where}: neither in flight nor timed`);
          break;
        case 'free':
          assert(lock.xid >= 1 && !lock.outstanding && !lock.resend && !lock.retried, `${where}: bad flags`);
          assert(!lock.revoked, `${where}: revoked but kept`);
          assert(lock.waiters.length === 0, `${where}: callers wait on a free cached lock`);
          assert(!this.closed, `${where}: cached after close`);
          break;
        case 'locked':
          assert(lock.xid >= 1 && !lock.outstanding && !lock.resend && !lock.retried, `${where}: bad flags`);
          break;
        case 'releasing':
          assert(lock.xid >= 1 && (lock.outstanding || lock.resend), `${where}: release neither in flight nor pending`);
          break;
        default:
          assertNever(lock.state);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Steps

  private lockFor(lid: string): CachedLock<Token> {
    let lock = this.locks.get(lid);
    if (lock === undefined) {
      lock = {
        state: 'none',
        xid: 0,
        outstanding: false,
        resend: false,
        retried: false,
        revoked: false,
        timerArmed: false,
        holder: undefined,
        waiters: [],
        tryWaiters: new Set(),
        tryOnly: false,
        fencingToken: 0,
      };
      this.locks.set(lid, lock);
    }
    return lock;
  }

  /** Makes whatever progress the lock's state allows, then forgets it if nothing is left. */
  private advance(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    switch (lock.state) {
      case 'none':
        if (lock.waiters.length > 0 && !this.closed) this.startAttempt(lid, lock, actions);
        break;
      case 'free':
        if (lock.revoked && !this.closed && lock.waiters.length > 0) {
          this.giveBackAndAskAgain(lid, lock, actions);
        } else if (lock.revoked || this.closed) {
          lock.state = 'releasing';
          lock.revoked = false;
          this.send(lid, lock, 'sendRelease', actions);
        } else if (lock.waiters.length > 0) {
          this.grantNext(lid, lock, actions);
        }
        break;
      case 'releasing':
        // A caller came while the hold is on its way back: ask again now, right behind the
        // release, instead of after its reply (rule 3's hand-back, one replication round).
        if (lock.waiters.length > 0 && !this.closed) this.giveBackAndAskAgain(lid, lock, actions);
        break;
      case 'acquiring':
      case 'locked':
        break; // waits for a reply, a callback, a timer or the local holder
      default:
        assertNever(lock.state);
    }
    this.forgetIfDone(lid, lock);
  }

  /**
   * Rule 3's hand-back when local callers still want the lock: the release and a new attempt go
   * out together, so the primary can order both in one replication round, and the next holder's
   * own release need not wait behind a round of ours. The release is an orphan (its outcome is
   * not needed): the hold is gone either way. From `releasing` (a caller came once the release
   * was out) the release in flight becomes that orphan: its reply or failure no longer matches
   * the state and is ignored. If the release is lost, the acquire finds us still holding under
   * the old xid and moves the hold to the new one (OK), a late copy of the release then frees
   * nothing, and the next revoke brings the hold back: no lock is held twice and none is left held.
   */
  private giveBackAndAskAgain(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    if (!(lock.state === 'releasing' && lock.outstanding)) actions.push({ type: 'sendRelease', lid, xid: lock.xid, orphan: true });
    lock.state = 'none';
    lock.xid = 0;
    lock.outstanding = false;
    lock.resend = false;
    lock.fencingToken = 0;
    lock.revoked = false;
    this.startAttempt(lid, lock, actions);
  }

  /** The current attempt got the lock (OK reply or grant notice). */
  private obtained(lid: string, lock: CachedLock<Token>, fencingToken: number, actions: Array<ClientAction<Token>>): void {
    lock.state = 'free';
    lock.retried = false;
    lock.tryOnly = false;
    lock.fencingToken = fencingToken;
    if (lock.revoked && lock.waiters.length > 0) {
      // Revoked before we saw the grant: serve one local caller first, or clients could pass
      // the lock back and forth without anyone using it.
      this.grantNext(lid, lock, actions);
    } else {
      this.advance(lid, lock, actions);
    }
  }

  /** Fails every waiter that only tried (tryAcquire). */
  private failTries(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    for (const token of lock.tryWaiters) {
      const at = lock.waiters.indexOf(token);
      if (at >= 0) lock.waiters.splice(at, 1);
      actions.push({ type: 'failLocal', lid, token, reason: 'busy' });
    }
    lock.tryWaiters.clear();
  }

  /** Gives back every cached lock no local caller holds or waits for (rule 3's exception); returns how many. */
  private shedFreeLocks(actions: Array<ClientAction<Token>>): number {
    let shed = 0;
    for (const [lid, lock] of this.locks) {
      if (lock.state !== 'free') continue;
      assert(lock.waiters.length === 0, `free ${lid} with waiters`);
      lock.revoked = true;
      this.advance(lid, lock, actions);
      shed++;
    }
    return shed;
  }

  /** A new attempt: a fresh xid and an acquire. */
  private startAttempt(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    assert(lock.state === 'none' || (lock.state === 'acquiring' && !lock.outstanding && !lock.resend), `new attempt on ${lid} in ${lock.state}`);
    lock.state = 'acquiring';
    lock.xid = this.nextXid++;
    lock.retried = false;
    lock.revoked = false;
    lock.tryOnly = false;
    this.send(lid, lock, 'sendAcquire', actions);
  }

  /** The attempt had no effect (RETRY, IOERR, …): a new one, unless the client is closing. */
  private reAsk(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    if (this.closed) this.giveUpAttempt(lid, lock, actions);
    else this.startAttempt(lid, lock, actions);
  }

  /** After close: an attempt that had no effect is not renewed. */
  private giveUpAttempt(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    lock.state = 'none';
    lock.xid = 0;
    lock.retried = false;
    lock.revoked = false;
    lock.tryOnly = false;
    this.advance(lid, lock, actions);
  }

  private send(lid: string, lock: CachedLock<Token>, type: 'sendAcquire' | 'sendRelease', actions: Array<ClientAction<Token>>): void {
    assert(!lock.outstanding, `second outstanding RPC for ${lid}`);
    lock.outstanding = true;
    lock.resend = false;
    if (type === 'sendAcquire' && lock.tryOnly) actions.push({ type, lid, xid: lock.xid, tryOnly: true });
    else actions.push({ type, lid, xid: lock.xid });
  }

  private grantNext(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    assert(lock.state === 'free' && lock.holder === undefined, `grant of ${lid} in ${lock.state}`);
    const token = lock.waiters.shift();
    assert(token !== undefined, `grant of ${lid} without a waiter`);
    lock.state = 'locked';
    lock.holder = token;
    lock.tryWaiters.delete(token);
    actions.push({ type: 'grantLocal', lid, token, fencingToken: lock.fencingToken });
  }

  private armTimer(lid: string, lock: CachedLock<Token>, actions: Array<ClientAction<Token>>): void {
    if (lock.timerArmed) return; // the running one will do
    lock.timerArmed = true;
    actions.push({ type: 'startRetryTimer', lid });
  }

  /** Drops the record of a lock that is not cached, not asked for and not timed: memory stays bounded. */
  private forgetIfDone(lid: string, lock: CachedLock<Token>): void {
    if (lock.state === 'none' && lock.waiters.length === 0 && !lock.timerArmed) this.locks.delete(lid);
  }
}
