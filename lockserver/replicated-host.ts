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
 * Host code: I/O through the replica's RpcEndpoint (notices leave from the main port), time from
 * the injected Clock.
 */
import type { Clock } from '../lib/env.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { RsmNode } from '../rsm/node.js';
import { logger } from '../lib/log.js';
import type { Timer } from '../lib/env.js';
import { Notifier, type LockStateMachine } from './cache-host.js';
import { CacheProc } from './cache-protocol.js';

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
  readonly invoke?: (proc: number, request: Uint8Array) => Promise<unknown>;
  /** The ticker's period (ms). Default 1000. */
  readonly tickMs?: number;
  /** Sessions alive in the table (CachingLockServer.sessionCount): the ticker runs only then. */
  readonly sessionCount?: () => number;
}

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

  constructor(options: ReplicatedLockHostOptions) {
    const { node, stateMachine } = options;
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

  /** Stops the notifier and unsubscribes. The node and the endpoint stay the caller's. */
  close(): void {
    this.closed = true;
    this.tickTimer?.cancel();
    for (const off of this.unsubscribe.splice(0)) off();
    this.notifier.stop();
  }
}
