/**
 * The client side of a lock session (lease): opens it, renews it in the background, and decides
 * locally, before the service could, that it is lost. lockserver/README.md ("Sessions and leases")
 * gives the protocol; this header lists the host's steps.
 *
 * 1. `open()` sends keepalive(id, ttlMs) through the RSM client and waits for OK: the session
 *    exists at the service from then on (a refusal rejects: LOCK_SESSION_EXPIRED or LOCK_RPC_FAILED).
 * 2. `renewEveryMs` (TTL/3) after each answered renewal it sends one keepalive, never more than
 *    one at a time, so a healthy client costs one replicated keepalive per TTL/3. An attempt gets
 *    at most one period and never runs past the local deadline; one that fails (no answer, BUSY,
 *    an RPC error) is followed by the next after min(250 ms, TTL/12), so losses and a primary
 *    change cost retries, not the lease.
 * 3. Each keepalive remembers its send time S (local monotonic clock). When it is answered OK,
 *    the service renewed the lease at a moment ≥ S, so the service cannot expire it before S + TTL
 *    of *its* clock; the local deadline becomes max(deadline, S + TTL − margin), margin =
 *    TTL/10 + 100 ms, which covers clock-rate drift between the two clocks up to 10 %.
 * 4. When the local deadline passes without a renewal, or any answer says SESSION_EXPIRED, the
 *    session is lost: `onLost` runs once (the owner marks every held lock lost and forgets its
 *    cache), and nothing more is sent.
 *    With `viaPrimary` a keepalive goes first as one plain RPC to the primary's host, which
 *    batches many clients' keepalives into one replicated request; without an answer from there,
 *    through the RSM as above.
 * 5. `end()` stops renewing and sends endsession(id): the service frees whatever is still held.
 *
 * Host code: time and timers from the injected Clock only.
 */
import type { Clock, Timer } from '../lib/env.js';
import { logger } from '../lib/log.js';
import type { RsmClient } from '../rsm/client.js';
import { CacheProc, LockStatus, decodeKeepaliveReply, encodeEndSessionRequest, encodeKeepaliveRequest } from './cache-protocol.js';
import { LockError } from './protocol.js';

const log = logger('lockclient:session');

/** The primary's keepalive batch gets at most this long before the RSM path is tried. */
const VIA_PRIMARY_MAX_MS = 1000;

/** After a failed renewal attempt the next one follows this soon (or TTL/12 when shorter). */
const RENEW_RETRY_MS_MAX = 250;

/** The local deadline's margin below the service's: TTL/10 + 100 ms (see the header, step 3). */
export function sessionMarginMs(ttlMs: number): number {
  return Math.floor(ttlMs / 10) + 100;
}

export interface SessionKeeperOptions {
  readonly rsm: Pick<RsmClient, 'invoke'>;
  readonly clock: Clock;
  /** The session (client) id. */
  readonly id: string;
  readonly ttlMs: number;
  /**
   * Optional fast path: send the keepalive as a plain RPC to the primary's host, which batches
   * (replicated-host.ts). Resolves with the session's status, or undefined to use the RSM path.
   */
  readonly viaPrimary?: (entry: { id: string; ttlMs: number }, timeoutMs: number) => Promise<number | undefined>;
  /** Runs once when the session is lost; `reason` explains why. */
  readonly onLost: (reason: LockError) => void;
}

export class SessionKeeper {
  readonly renewEveryMs: number;
  readonly marginMs: number;
  /** Keepalives sent (for tests and the benchmark). */
  keepalivesSent = 0;
  private deadline = 0;
  private renewTimer: Timer | undefined;
  private deadlineTimer: Timer | undefined;
  private inFlight = false;
  private state: 'new' | 'open' | 'lost' | 'ended' = 'new';

  constructor(private readonly options: SessionKeeperOptions) {
    this.renewEveryMs = Math.max(1, Math.floor(options.ttlMs / 3));
    this.marginMs = sessionMarginMs(options.ttlMs);
  }

  /** Whether the session is lost (expired, or not renewed in time). */
  get isLost(): boolean {
    return this.state === 'lost';
  }

  /** The local deadline (Clock time): the session counts as lost from then on unless renewed. */
  get localDeadline(): number {
    return this.deadline;
  }

  async open(timeoutMs: number): Promise<void> {
    const sentAt = this.options.clock.now();
    const status = await this.keepalive(timeoutMs);
    if (status !== LockStatus.OK) {
      this.state = 'lost';
      throw new LockError('LOCK_SESSION_EXPIRED', `session ${this.options.id}: the service refused to open it (status ${status})`);
    }
    this.state = 'open';
    this.renewed(sentAt);
    this.armRenew();
  }

  /** Stops renewing and ends the session at the service (best effort within `timeoutMs`). */
  async end(timeoutMs: number): Promise<void> {
    if (this.state === 'lost' || this.state === 'ended') return;
    this.state = 'ended';
    this.stopTimers();
    try {
      await this.options.rsm.invoke(CacheProc.END_SESSION, encodeEndSessionRequest(this.options.id), { timeoutMs });
    } catch (error) {
      log('%s: endsession failed: %s (the lease will expire)', this.options.id, (error as Error).message);
    }
  }

  /** Stops without telling the service (the session expires there). */
  stop(): void {
    if (this.state === 'open' || this.state === 'new') this.state = 'ended';
    this.stopTimers();
  }

  /** One keepalive within `timeoutMs` in all: the primary's batch first, then the RSM path. */
  private async keepalive(timeoutMs: number): Promise<number> {
    this.keepalivesSent++;
    const started = this.options.clock.now();
    if (this.options.viaPrimary !== undefined) {
      // Bounded to a share of the deadline: a dead or former primary must not use it all up and
      // leave nothing for the RSM path, which finds the new primary (lost sessions under fail-over).
      const share = Math.min(VIA_PRIMARY_MAX_MS, Math.floor(timeoutMs / 2));
      const status = await this.options.viaPrimary({ id: this.options.id, ttlMs: this.options.ttlMs }, share).catch(() => undefined);
      if (status !== undefined) return status;
    }
    const remaining = Math.max(1, timeoutMs - (this.options.clock.now() - started));
    let answer: { status: number; reply: Uint8Array };
    try {
      answer = await this.options.rsm.invoke(CacheProc.KEEPALIVE, encodeKeepaliveRequest([{ id: this.options.id, ttlMs: this.options.ttlMs }]), { timeoutMs: remaining });
    } catch (error) {
      throw new LockError('LOCK_RPC_FAILED', `keepalive of session ${this.options.id}: ${(error as Error).message}`, { cause: error });
    }
    const each = decodeKeepaliveReply(answer.reply);
    if (answer.status !== LockStatus.OK || !each.ok || each.value.length !== 1) return answer.status === LockStatus.OK ? LockStatus.RPCERR : answer.status;
    return each.value[0]!;
  }

  private renewed(sentAt: number): void {
    this.deadline = Math.max(this.deadline, sentAt + this.options.ttlMs - this.marginMs);
    this.deadlineTimer?.cancel();
    const wait = Math.max(0, this.deadline - this.options.clock.now());
    this.deadlineTimer = this.options.clock.setTimer(wait, () => this.checkDeadline());
  }

  private checkDeadline(): void {
    if (this.state !== 'open') return;
    const left = this.deadline - this.options.clock.now();
    if (left > 0) {
      this.deadlineTimer = this.options.clock.setTimer(left, () => this.checkDeadline());
      return;
    }
    this.lose(new LockError('LOCK_LOST', `session ${this.options.id}: not renewed within its TTL of ${this.options.ttlMs} ms (less a ${this.marginMs} ms margin)`));
  }

  private armRenew(delayMs = this.renewEveryMs): void {
    this.renewTimer = this.options.clock.setTimer(delayMs, () => this.renewNow());
  }

  /**
   * One renewal attempt; the next is armed when it ends (so at most one is in flight): a renewal
   * period later after OK, or soon after a failure, so a lost message, a BUSY during a view change
   * or a dead primary costs one retry delay and not a whole period of the lease.
   */
  private renewNow(): void {
    if (this.state !== 'open' || this.inFlight) return;
    const sentAt = this.options.clock.now();
    // The deadline may have passed while this process was paused: check before trusting anything.
    this.checkDeadline();
    if (this.state !== 'open') return;
    this.inFlight = true;
    // At most one renewal period per attempt, and never past the local deadline (an answer after
    // it is of no use): a keepalive stuck on a dead primary gives way to the next attempt.
    const budgetMs = Math.max(1, Math.min(this.renewEveryMs, this.deadline - sentAt));
    const retryMs = Math.max(1, Math.min(RENEW_RETRY_MS_MAX, Math.floor(this.renewEveryMs / 4)));
    this.keepalive(budgetMs).then(
      (status) => {
        this.inFlight = false;
        if (this.state !== 'open') return;
        if (status === LockStatus.OK) {
          this.renewed(sentAt);
          this.armRenew();
        } else if (status === LockStatus.SESSION_EXPIRED) {
          this.lose(new LockError('LOCK_LOST', `session ${this.options.id} expired at the service`));
        } else {
          log('%s: keepalive answered %d; retrying in %d ms', this.options.id, status, retryMs);
          this.armRenew(retryMs);
        }
      },
      (error: unknown) => {
        this.inFlight = false;
        log('%s: %s; retrying in %d ms', this.options.id, (error as Error).message, retryMs);
        if (this.state === 'open') this.armRenew(retryMs);
      },
    );
  }

  /** The service said the session is over (an acquire or release answered SESSION_EXPIRED). */
  expiredAtService(): void {
    if (this.state === 'open') this.lose(new LockError('LOCK_LOST', `session ${this.options.id} expired at the service`));
  }

  private lose(reason: LockError): void {
    if (this.state !== 'open') return;
    this.state = 'lost';
    this.stopTimers();
    log('%s: %s', this.options.id, reason.message);
    this.options.onLost(reason);
  }

  private stopTimers(): void {
    this.renewTimer?.cancel();
    this.deadlineTimer?.cancel();
  }
}
