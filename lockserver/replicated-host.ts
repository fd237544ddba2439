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
 * Host code: I/O through the replica's RpcEndpoint (notices leave from the main port), time from
 * the injected Clock.
 */
import type { Clock } from '../lib/env.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { RsmNode } from '../rsm/node.js';
import { Notifier, type LockStateMachine } from './cache-host.js';

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
}

export class ReplicatedLockHost {
  readonly notifier: Notifier;
  /** View and primary changes that restarted the notices (for tests and statistics). */
  restarts = 0;
  private readonly unsubscribe: Array<() => void> = [];

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
      node.onExecuted(() => this.notifier.poke()),
      node.onStateInstalled(() => this.notifier.poke()),
    );
    // Whatever happened before we subscribed (a restored state, a view already ready).
    this.notifier.resendAll();
  }

  /** Stops the notifier and unsubscribes. The node and the endpoint stay the caller's. */
  close(): void {
    for (const off of this.unsubscribe.splice(0)) off();
    this.notifier.stop();
  }
}
