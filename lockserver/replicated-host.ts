/**
 * The replicated caching lock service on one RSM replica (the `lock_server MASTER ME` body).
 *
 * The replica's RsmNode runs a `CachingLockServer` as its StateMachine: clients reach it only
 * through the RSM (`RsmClient` + `rsmConnection`), and every replica executes the same requests in
 * the same viewstamp order. What the RSM does not do is send the revoke and retry notices the lock
 * table implies; this host runs a `Notifier` for that on every replica, sending only while the
 * node is primary (`node.isPrimary`: primary of the committed view and not in a view change).
 *
 * Driver obligations of the Notifier (cache-host.ts), met here:
 * 1. poke after every request executed here (`onExecuted`) and after a state transfer
 *    (`onStateInstalled`);
 * 2. on every view commit, synchronised view and primary flip, forget what was sent and pass again
 *    (`resendAll`): nobody knows whether the old primary sent its notices (or whether they
 *    arrived), so the new primary resends every pending one at once;
 * 3. stop it before the endpoint closes (`close`).
 *
 * The lease ticker (when `invoke` is given): sessions expire only when a request executes (the
 * state machine has no clock), so every `tickMs` the primary checks whether sessions exist and
 * nothing executed here since the last check; then it sends one `tick` request through the RSM
 * (`invoke`, like any client request), which moves the table's clock and expires what is due.
 * At most one tick is in flight; backups never tick.
 *
 * Keepalive coalescing (also with `invoke`): clients send `sessionkeepalive` RPCs to the primary's
 * host; every keepalive that arrives while a batch is in flight waits for the next one, and each
 * batch (≤ 1,000 sessions) is ONE replicated keepalive request. Batches start at most once per
 * `keepaliveWindowMs` (default 100 ms): after a quiet spell a keepalive goes at once, but one that
 * arrives within the window of the last batch's start waits for its end, so any number of idle
 * clients costs at most ten replicated keepalives a second (a keepalive has a third of a TTL,
 * ≥ 333 ms, to be answered; up to 100 ms of it is well spent on sharing). Each waiting RPC is answered with its session's status once the batch executed. A backup,
 * or a host with MAX_PENDING_KEEPALIVES waiting, answers KEEPALIVE_NOT_PRIMARY at once.
 *
 * Host code: I/O through the replica's RpcEndpoint (notices leave from the main port), time from
 * the injected Clock.
 */
import type { Clock } from '../lib/env.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { RsmNode } from '../rsm/node.js';
import { logger } from '../lib/log.js';
import type { Timer } from '../lib/env.js';
import { Notifier, type LockStateMachine } from './cache-host.js';
import type { HandlerReply } from '../lib/rpc.js';
import {
  CacheProc,
  KEEPALIVE_NOT_PRIMARY,
  LockStatus,
  MAX_KEEPALIVE_SESSIONS,
  decodeKeepaliveReply,
  encodeKeepaliveRequest,
  sessionProtocol,
  type KeepaliveEntry,
} from './cache-protocol.js';

/** Keepalives waiting for the next batch at most; beyond it clients are sent to the RSM path. */
export const MAX_PENDING_KEEPALIVES = 10_000;

const log = logger('lockserver:ticker');

export const DEFAULT_TICK_MS = 1_000;

/** What the host needs of a replica: its primary flag and its listeners. */
export type ReplicaEvents = Pick<RsmNode, 'isPrimary' | 'onViewChange' | 'onPrimaryChange' | 'onExecuted' | 'onStateInstalled'>;

export interface ReplicatedLockHostOptions {
  /** The started (or about to start) replica whose StateMachine is `stateMachine`. */
  readonly node: ReplicaEvents;
  /** The replica's main endpoint: notices go out from it. */
  readonly rpc: RpcEndpoint;
  readonly clock: Clock;
  /** The same object the node executes requests on. */
  readonly stateMachine: LockStateMachine;
  readonly noticeResendMs?: number;
  readonly maxOutstandingNotices?: number;
  readonly noticeCallTimeoutMs?: number;
  /** Sends a request through the RSM (an RsmClient's invoke): enables the lease ticker. */
  readonly invoke?: (proc: number, request: Uint8Array) => Promise<{ readonly status: number; readonly reply: Uint8Array }>;
  /** The ticker's period (ms). Default 1000. */
  readonly tickMs?: number;
  /** Sessions alive in the table (CachingLockServer.sessionCount): the ticker runs only then. */
  readonly sessionCount?: () => number;
  /** Shortest time between the starts of two keepalive batches (ms). Default 100. */
  readonly keepaliveWindowMs?: number;
}

export const DEFAULT_KEEPALIVE_WINDOW_MS = 100;

export class ReplicatedLockHost {
  readonly notifier: Notifier;
  /** View and primary changes that restarted the notices (for tests and statistics). */
  restarts = 0;
  private readonly unsubscribe: Array<() => void> = [];
  /** Ticks sent (statistics, tests). */
  ticks = 0;
  private tickTimer: Timer | undefined;
  private executedSinceTick = false;
  private tickInFlight = false;
  private closed = false;
  /** Replicated keepalive requests sent for batches, and the keepalives they carried. */
  keepaliveBatches = 0;
  keepalivesBatched = 0;
  private readonly pendingKeepalives: Array<{ entry: KeepaliveEntry; resolve: (reply: HandlerReply<number>) => void }> = [];
  private batchInFlight = false;
  private batchTimer: Timer | undefined;
  /** Clock time the last batch started; the next starts `keepaliveWindowMs` after it at the earliest. */
  private lastBatchAt = Number.NEGATIVE_INFINITY;
  private readonly clock: Clock;
  private readonly keepaliveWindowMs: number;

  constructor(options: ReplicatedLockHostOptions) {
    const { node, stateMachine } = options;
    this.clock = options.clock;
    this.keepaliveWindowMs = options.keepaliveWindowMs ?? DEFAULT_KEEPALIVE_WINDOW_MS;
    this.notifier = new Notifier({
      rpc: options.rpc,
      clock: options.clock,
      pendingNotices: () => stateMachine.pendingNotices(),
      isPrimary: () => node.isPrimary,
      ...(options.noticeResendMs === undefined ? {} : { noticeResendMs: options.noticeResendMs }),
      ...(options.maxOutstandingNotices === undefined ? {} : { maxOutstanding: options.maxOutstandingNotices }),
      ...(options.noticeCallTimeoutMs === undefined ? {} : { callTimeoutMs: options.noticeCallTimeoutMs }),
    });
    const restart = (): void => {
      this.restarts++;
      this.notifier.resendAll();
    };
    this.unsubscribe.push(
      node.onViewChange(restart),
      node.onPrimaryChange(restart),
      node.onExecuted(() => {
        this.executedSinceTick = true;
        this.notifier.poke();
      }),
      node.onStateInstalled(() => this.notifier.poke()),
    );
    // Whatever happened before we subscribed (a restored state, a view already ready).
    this.notifier.resendAll();
    const invoke = options.invoke;
    if (invoke !== undefined) {
      options.rpc.handle(sessionProtocol.keepalive, (entry) => {
        if (this.closed || !node.isPrimary || this.pendingKeepalives.length >= MAX_PENDING_KEEPALIVES) return { status: KEEPALIVE_NOT_PRIMARY, result: 0 };
        return new Promise<HandlerReply<number>>((resolve) => {
          this.pendingKeepalives.push({ entry, resolve });
          this.flushKeepalives(invoke);
        });
      });
      const tickMs = options.tickMs ?? DEFAULT_TICK_MS;
      const sessions = options.sessionCount ?? (() => 1);
      const arm = (): void => {
        if (this.closed) return;
        this.tickTimer = options.clock.setTimer(tickMs, () => {
          arm();
          const idle = !this.executedSinceTick;
          this.executedSinceTick = false;
          if (!idle || this.tickInFlight || !node.isPrimary || sessions() === 0) return;
          this.tickInFlight = true;
          this.ticks++;
          invoke(CacheProc.TICK, new Uint8Array(0)).then(
            () => (this.tickInFlight = false),
            (error: unknown) => {
              this.tickInFlight = false;
              log('tick failed: %s', (error as Error)?.message ?? String(error));
            },
          );
        });
      };
      arm();
    }
  }

  private flushKeepalives(invoke: NonNullable<ReplicatedLockHostOptions['invoke']>): void {
    if (this.closed || this.batchInFlight || this.batchTimer !== undefined || this.pendingKeepalives.length === 0) return;
    const waitMs = this.lastBatchAt + this.keepaliveWindowMs - this.clock.now();
    if (waitMs > 0) {
      this.batchTimer = this.clock.setTimer(waitMs, () => {
        this.batchTimer = undefined;
        this.flushKeepalives(invoke);
      });
      return;
    }
    this.lastBatchAt = this.clock.now();
    const batch = this.pendingKeepalives.splice(0, MAX_KEEPALIVE_SESSIONS);
    this.batchInFlight = true;
    this.keepaliveBatches++;
    this.keepalivesBatched += batch.length;
    const answerAll = (statusOf: (i: number) => HandlerReply<number>): void => batch.forEach((waiting, i) => waiting.resolve(statusOf(i)));
    invoke(CacheProc.KEEPALIVE, encodeKeepaliveRequest(batch.map((w) => w.entry))).then(
      (answer) => {
        const each = decodeKeepaliveReply(answer.reply);
        if (answer.status !== LockStatus.OK || !each.ok || each.value.length !== batch.length) answerAll(() => ({ status: KEEPALIVE_NOT_PRIMARY, result: 0 }));
        else answerAll((i) => ({ status: LockStatus.OK, result: each.value[i]! }));
      },
      (error: unknown) => {
        log('keepalive batch failed: %s', (error as Error)?.message ?? String(error));
        answerAll(() => ({ status: KEEPALIVE_NOT_PRIMARY, result: 0 }));
      },
    ).finally(() => {
      this.batchInFlight = false;
      this.flushKeepalives(invoke);
    });
  }

  /** Stops the notifier and unsubscribes. The node and the endpoint stay the caller's. */
  close(): void {
    this.closed = true;
    this.tickTimer?.cancel();
    this.batchTimer?.cancel();
    this.batchTimer = undefined;
    for (const waiting of this.pendingKeepalives.splice(0)) waiting.resolve({ status: KEEPALIVE_NOT_PRIMARY, result: 0 });
    for (const off of this.unsubscribe.splice(0)) off();
    this.notifier.stop();
  }
}
