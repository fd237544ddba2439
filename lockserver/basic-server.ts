/**
 * The basic (lab 1, non-caching) lock server: one in-memory lock table behind three RPCs.
 *
 * acquire blocks — its handler awaits — until the lock is granted to the caller. That is what the
 * lab-1 protocol asks for and the RPC layer allows: a retransmission of an acquire that is still
 * waiting is classified INPROGRESS and answered by the original execution's reply. The blocking
 * style is also this service's main limit (see README.md): a waiter cannot be withdrawn, so a
 * client that gives up on an acquire may still be granted the lock later.
 *
 * The table itself (BasicLockTable) is synchronous: inputs in, outcomes out, no awaits, no clock,
 * no randomness. The server is the thin async shell that turns "queued" into a pending reply.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { HandlerReply, RpcEndpoint } from '../lib/rpc.js';
import { LockStatus, formatLockId, lockProtocol, type LockArgs } from './protocol.js';

const log = logger('lockserver');

export interface BasicLockLimits {
  /**
   * Acquires waiting in all queues together; beyond it acquire answers RETRY at once. Every waiter
   * is an RPC handler that stays running, so this must stay below the endpoint's
   * `maxConcurrentHandlers`, with room to spare for releases: if waiters took every handler slot,
   * the release that would wake them could not run.
   */
  readonly maxWaiters: number;
  /** Locks held at once; an acquire of a further free lock answers RETRY. */
  readonly maxHeldLocks: number;
  /**
   * Free locks whose grant count (for stat) is remembered. Beyond it the least recently released
   * one is forgotten and its count restarts at 0.
   */
  readonly maxIdleLocks: number;
}

export const DEFAULT_MAX_HELD_LOCKS = 100_000;
export const DEFAULT_MAX_IDLE_LOCKS = 100_000;

/** Half the endpoint's handler slots may wait; the other half serve releases and stats. */
export function defaultBasicLockLimits(maxConcurrentHandlers: number): BasicLockLimits {
  return {
    maxWaiters: Math.floor(maxConcurrentHandlers / 2),
    maxHeldLocks: DEFAULT_MAX_HELD_LOCKS,
    maxIdleLocks: DEFAULT_MAX_IDLE_LOCKS,
  };
}

export type AcquireOutcome =
  | 'granted' // the caller holds the lock now
  | 'queued' // the caller waits; a later release returns its token
  | 'full'; // a bound was reached; nothing changed

export type ReleaseOutcome<Token> =
  | { readonly released: false } // the caller is not the holder; nothing changed
  | { readonly released: true; readonly granted?: Token }; // freed, or handed to the waiter `granted`

interface Waiter<Token> {
  readonly clt: number;
  readonly token: Token;
}

interface HeldLock<Token> {
  holder: number;
  /** Acquires granted on this lock so far, this one included. */
  granted: number;
  /** FIFO. A plain array: the queue length is bounded by maxWaiters. */
  readonly waiters: Array<Waiter<Token>>;
}

/**
 * The lock table: per lock a holder (a client id) and a FIFO queue of waiters, each carrying an
 * opaque token that a release hands back when it grants the lock to that waiter.
 *
 * Identity is the client id only, as in the lab: two callers sharing one client id exclude each
 * other (the holder's own second acquire waits like anyone's, locks are not reentrant), and either
 * may release the other's hold.
 */
export class BasicLockTable<Token> {
  private readonly held = new Map<number, HeldLock<Token>>();
  /** Free locks → grant count, least recently released first (Map order). */
  private readonly idle = new Map<number, number>();
  private waiting = 0;

  constructor(readonly limits: BasicLockLimits) {
    assert(Number.isInteger(limits.maxWaiters) && limits.maxWaiters >= 0, 'maxWaiters must be an integer ≥ 0');
    assert(Number.isInteger(limits.maxHeldLocks) && limits.maxHeldLocks >= 1, 'maxHeldLocks must be an integer ≥ 1');
    assert(Number.isInteger(limits.maxIdleLocks) && limits.maxIdleLocks >= 0, 'maxIdleLocks must be an integer ≥ 0');
  }

  acquire(clt: number, lid: number, token: Token): AcquireOutcome {
    const lock = this.held.get(lid);
    if (lock === undefined) {
      if (this.held.size >= this.limits.maxHeldLocks) return 'full';
      const granted = (this.idle.get(lid) ?? 0) + 1;
      this.idle.delete(lid);
      this.held.set(lid, { holder: clt, granted, waiters: [] });
      return 'granted';
    }
    if (this.waiting >= this.limits.maxWaiters) return 'full';
    lock.waiters.push({ clt, token });
    this.waiting++;
    return 'queued';
  }

  release(clt: number, lid: number): ReleaseOutcome<Token> {
    const lock = this.held.get(lid);
    if (lock === undefined || lock.holder !== clt) return { released: false };
    const next = lock.waiters.shift();
    if (next === undefined) {
      this.held.delete(lid);
      this.rememberIdle(lid, lock.granted);
      return { released: true };
    }
    // Hand-off: the lock never becomes free, so nobody can slip in ahead of the queue.
    this.waiting--;
    lock.holder = next.clt;
    lock.granted++;
    return { released: true, granted: next.token };
  }

  /** Acquires granted on `lid` (0 for a lock never seen, or forgotten while idle). */
  grants(lid: number): number {
    return this.held.get(lid)?.granted ?? this.idle.get(lid) ?? 0;
  }

  holder(lid: number): number | undefined {
    return this.held.get(lid)?.holder;
  }

  /** Waiters in all queues. */
  get waiters(): number {
    return this.waiting;
  }

  /** Checks the table's invariants; a violation is a programmer error (crash). */
  invariants(): void {
    let waiting = 0;
    for (const [lid, lock] of this.held) {
      assert(!this.idle.has(lid), `lock ${lid} both held and idle`);
      assert(lock.granted >= 1, `lock ${lid} held without a grant`);
      waiting += lock.waiters.length;
    }
    assert(waiting === this.waiting, `waiter count ${this.waiting} but queues hold ${waiting}`);
    assert(this.waiting <= this.limits.maxWaiters, 'more waiters than maxWaiters');
    assert(this.held.size <= this.limits.maxHeldLocks, 'more held locks than maxHeldLocks');
    assert(this.idle.size <= this.limits.maxIdleLocks, 'more idle locks than maxIdleLocks');
  }

  private rememberIdle(lid: number, granted: number): void {
    this.idle.set(lid, granted);
    if (this.idle.size > this.limits.maxIdleLocks) {
      const oldest = this.idle.keys().next().value as number;
      this.idle.delete(oldest);
    }
  }
}

const I32_MAX = 0x7fff_ffff;

/** The lab-1 lock server: registers acquire, release and stat on `rpc`. */
export class BasicLockServer {
  readonly table: BasicLockTable<() => void>;

  constructor(rpc: RpcEndpoint, limits: Partial<BasicLockLimits> = {}) {
    const maxHandlers = rpc.options.maxConcurrentHandlers;
    this.table = new BasicLockTable({ ...defaultBasicLockLimits(maxHandlers), ...limits });
    assert(
      this.table.limits.maxWaiters < maxHandlers,
      `maxWaiters (${this.table.limits.maxWaiters}) must be below the endpoint's maxConcurrentHandlers (${maxHandlers})`,
    );
    rpc.handle(lockProtocol.acquire, (args) => this.onAcquire(args));
    rpc.handle(lockProtocol.release, (args) => this.onRelease(args));
    rpc.handle(lockProtocol.stat, (args) => this.onStat(args));
  }

  private onAcquire({ clt, lid }: LockArgs): HandlerReply<number> | Promise<HandlerReply<number>> {
    let grant!: () => void;
    const granted = new Promise<void>((resolve) => (grant = resolve));
    const outcome = this.table.acquire(clt, lid, grant);
    switch (outcome) {
      case 'granted':
        return reply(LockStatus.OK);
      case 'full':
        log('acquire %s by %d: answering RETRY (table full, %d waiters)', formatLockId(lid), clt, this.table.waiters);
        return reply(LockStatus.RETRY);
      case 'queued':
        return granted.then(() => reply(LockStatus.OK));
    }
  }

  private onRelease({ clt, lid }: LockArgs): HandlerReply<number> {
    const outcome = this.table.release(clt, lid);
    if (!outcome.released) {
      log('release %s by %d: ignoring (holder is %s)', formatLockId(lid), clt, this.table.holder(lid) ?? 'nobody');
      return reply(LockStatus.NOENT);
    }
    outcome.granted?.();
    return reply(LockStatus.OK);
  }

  private onStat({ lid }: LockArgs): HandlerReply<number> {
    return reply(LockStatus.OK, Math.min(this.table.grants(lid), I32_MAX));
  }
}

function reply(status: LockStatus, result = 0): HandlerReply<number> {
  return { status, result };
}
