/**
 * The synchronous core of one server of the primary/backup lock service: the lock table, the
 * duplicate memory (each clerk's latest request id and answer), and the server's mode. Events in,
 * decisions out, no I/O, no awaits; `invariants()` holds after every step. The async host
 * (server.ts) does the forwarding and the fault injection around it.
 *
 * Modes:
 *   primary-forwarding  the primary; every executed request is forwarded to the backup before the reply
 *   primary-alone       the primary after a forward failed: the backup is presumed dead, no more forwards
 *   backup              applies forwards; its first direct client request makes it take over
 *   backup-took-over    serves clients alone (the primary is presumed dead); refuses forwards
 *   deposed             a primary that learnt the backup took over: it answers nothing any more
 *
 * Why a backup takes over and refuses forwards: a clerk goes to the backup only when the primary did
 * not answer it. If the primary was merely slow, it must not go on serving with a table the backup no
 * longer follows, so its next forward is refused and it stops (deposed) instead of answering.
 */
import { assert } from '../../lib/assert.js';
import { PbStatus, isValidLockName, type PbForward, type PbOp, type PbRequest } from './protocol.js';

export type PbMode = 'primary-forwarding' | 'primary-alone' | 'backup' | 'backup-took-over' | 'deposed';
export type PbRole = 'primary' | 'backup';

export interface PbAnswer {
  readonly status: PbStatus;
  readonly result: boolean;
}

export type ClientDecision =
  | { readonly kind: 'reply'; readonly answer: PbAnswer }
  /** The host must forward this, then report the outcome with `forwardOutcome`. */
  | { readonly kind: 'forward'; readonly forward: PbForward };

export type ForwardOutcome = 'applied' | 'refused' | 'failed';

/** Default bound on the duplicate memory: clerks remembered (least recently active evicted). */
export const DEFAULT_MAX_CLERKS = 100_000;
/** Default bound on locks held at once; a Lock of a new name beyond it gets TABLE_FULL. */
export const DEFAULT_MAX_HELD_LOCKS = 1_000_000;

export interface PbLimits {
  readonly maxClerks: number;
  readonly maxHeldLocks: number;
}

interface Remembered {
  readonly seq: number;
  readonly result: boolean;
}

const answer = (status: PbStatus, result = false): ClientDecision => ({ kind: 'reply', answer: { status, result } });

export class PbLockCore {
  private currentMode: PbMode;
  private readonly held = new Set<string>();
  /** Per clerk, its latest executed request and answer. Map order is LRU order. */
  private readonly latest = new Map<number, Remembered>();
  /** The executed request whose forward the host is doing now (primary-forwarding only). */
  private pending: PbForward | undefined;
  /** Forwards whose result disagreed with what this backup computed (states diverged: a bug). */
  mismatches = 0;

  constructor(
    readonly role: PbRole,
    private readonly limits: PbLimits = { maxClerks: DEFAULT_MAX_CLERKS, maxHeldLocks: DEFAULT_MAX_HELD_LOCKS },
  ) {
    assert(Number.isInteger(limits.maxClerks) && limits.maxClerks >= 1, `maxClerks must be ≥ 1, got ${limits.maxClerks}`);
    assert(Number.isInteger(limits.maxHeldLocks) && limits.maxHeldLocks >= 1, `maxHeldLocks must be ≥ 1, got ${limits.maxHeldLocks}`);
    this.currentMode = role === 'primary' ? 'primary-forwarding' : 'backup';
  }

  get mode(): PbMode {
    return this.currentMode;
  }

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  get heldCount(): number {
    return this.held.size;
  }

  get clerksRemembered(): number {
    return this.latest.size;
  }

  /** A Lock or Unlock from a clerk. */
  clientRequest(op: PbOp, request: PbRequest): ClientDecision {
    assert(this.pending === undefined, 'clientRequest while a forward is pending (the host serialises requests)');
    if (this.currentMode === 'deposed') return answer(PbStatus.UNAVAILABLE);
    if (!isValidLockName(request.name)) return answer(PbStatus.BAD_NAME);
    const seen = this.latest.get(request.clerk);
    if (seen !== undefined && request.seq === seen.seq) return answer(PbStatus.OK, seen.result); // a retry: the original answer
    if (seen !== undefined && request.seq < seen.seq) return answer(PbStatus.STALE);
    if (op === 'lock' && !this.held.has(request.name) && this.held.size >= this.limits.maxHeldLocks) return answer(PbStatus.TABLE_FULL);
    if (this.currentMode === 'backup') this.currentMode = 'backup-took-over';
    const result = this.apply(op, request.name);
    this.remember(request.clerk, request.seq, result);
    if (this.currentMode === 'primary-forwarding') {
      this.pending = { ...request, op, result };
      return { kind: 'forward', forward: this.pending };
    }
    return answer(PbStatus.OK, result);
  }

  /** How the forward of the pending request ended; returns the answer for its clerk. */
  forwardOutcome(outcome: ForwardOutcome): PbAnswer {
    const pending = this.pending;
    assert(pending !== undefined && this.currentMode === 'primary-forwarding', 'forwardOutcome without a pending forward');
    this.pending = undefined;
    switch (outcome) {
      case 'applied':
        return { status: PbStatus.OK, result: pending.result };
      case 'failed':
        // The backup did not answer: presumed dead (fail-stop, no repair). Serve alone from now on.
        this.currentMode = 'primary-alone';
        return { status: PbStatus.OK, result: pending.result };
      case 'refused':
        // The backup took over: clerks now go there. This request never reached its table, so the
        // clerk must not get our answer; it retries at the backup, which executes it there.
        this.currentMode = 'deposed';
        return { status: PbStatus.UNAVAILABLE, result: false };
    }
  }

  /** A forward from the primary. */
  applyForward(forward: PbForward): PbStatus {
    if (this.currentMode !== 'backup') return PbStatus.NOT_BACKUP;
    if (!isValidLockName(forward.name)) return PbStatus.BAD_NAME;
    const seen = this.latest.get(forward.clerk);
    // Already applied (or older than what we have): never apply an operation twice.
    if (seen !== undefined && forward.seq <= seen.seq) return PbStatus.OK;
    // Same bound as the primary's: it only forwards Locks it could apply, so this means diverged limits.
    if (forward.op === 'lock' && !this.held.has(forward.name) && this.held.size >= this.limits.maxHeldLocks) return PbStatus.TABLE_FULL;
    const result = this.apply(forward.op, forward.name);
    if (result !== forward.result) this.mismatches++;
    // The primary's answer is the one its clerk may get: remember that one.
    this.remember(forward.clerk, forward.seq, forward.result);
    return PbStatus.OK;
  }

  invariants(): void {
    assert(this.latest.size <= this.limits.maxClerks, `duplicate memory holds ${this.latest.size} > ${this.limits.maxClerks} clerks`);
    assert(this.pending === undefined || this.currentMode === 'primary-forwarding', `pending forward in mode ${this.currentMode}`);
    const primaryModes: readonly PbMode[] = ['primary-forwarding', 'primary-alone', 'deposed'];
    assert(primaryModes.includes(this.currentMode) === (this.role === 'primary'), `mode ${this.currentMode} for a ${this.role}`);
    assert(this.held.size <= this.limits.maxHeldLocks, `${this.held.size} held locks > ${this.limits.maxHeldLocks}`);
    for (const name of this.held) assert(isValidLockName(name), `held lock with invalid name ${JSON.stringify(name)}`);
  }

  /** Lock → true and held if it was free; false if held. Unlock → true and free if held; else false. */
  private apply(op: PbOp, name: string): boolean {
    if (op === 'lock') {
      if (this.held.has(name)) return false;
      this.held.add(name);
      return true;
    }
    return this.held.delete(name);
  }

  private remember(clerk: number, seq: number, result: boolean): void {
    this.latest.delete(clerk); // re-inserted last: Map order doubles as LRU order
    this.latest.set(clerk, { seq, result });
    // A clerk evicted here loses duplicate detection for its latest request; it takes maxClerks
    // other clerks acting after it, far more than any one failure's window in practice.
    while (this.latest.size > this.limits.maxClerks) this.latest.delete(this.latest.keys().next().value as number);
  }
}
