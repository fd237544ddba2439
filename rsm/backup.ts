/**
 * The backup's side of the request path: invokebatch (and the lab's invoke, as a batch of one)
 * on a replica that is not the primary.
 *
 * 1. A malformed batch (batchProblem: empty, oversized, not consecutive viewstamps of one view)
 *    is ERR.
 * 2. Otherwise the accept rule (invoke-rule.ts, classifyBatch) decides, from the replica's
 *    position (in a view change, primary, the viewstamp it expects, its last executed):
 *    - execute: the host logs the batch in one write (sync), executes every entry in order
 *      while the fsync runs, and once it is durable passes breakpoint 1 (a backup dies right
 *      after executing); then OK;
 *    - duplicate (the batch executed last, again): OK again without executing, once it is
 *      durable here. The primary resends a batch when an acknowledgement did not reach it (the
 *      RPC call timed out, so the at-most-once table may have forgotten it), and only this
 *      replica can tell it already ran. A viewstamp is stamped once, into one batch, so the
 *      duplicate carries the same requests; its last one is compared anyway, a mismatch is ERR;
 *    - reject: ERR.
 * 3. A batch that overtook the ones before it (the primary keeps several in flight, and a lost
 *    message is retransmitted later) is held for at most GAP_WAIT_MS instead of failing the whole
 *    pipeline: while this replica serves the batch's view as a backup, the gap is within the
 *    pipeline's reach, and fewer than GAP_WAITERS_MAX are held. The rule is applied again each
 *    time the replica moves (`moved`: it executed a batch, a view committed, it stopped).
 *
 * Every decision and state change happens before the first await after the decision, so two
 * deliveries of one batch cannot both execute it.
 */
import type { Timer } from '../lib/env.js';
import type { HandlerReply } from '../lib/rpc.js';
import { logger } from '../lib/log.js';
import { batchProblem, classifyBatch, type InvokeDecision } from './invoke-rule.js';
import { PIPELINE_DEPTH } from './pipeline.js';
import { BATCH_REQUESTS_MAX, describeViewstamp, RsmStatus, type BatchEntry, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';
import type { ReplicaView } from './replica-view.js';
import { Wakeup } from './wakeup.js';

const log = logger('rsm');

/**
 * How long a backup holds a batch that overtook the ones before it, and how many it holds at once
 * (beyond either: ERR, and the primary resends). The primary retransmits a lost batch within
 * INVOKE_RETRANSMIT_MS_MAX, so the gap usually fills long before.
 */
export const GAP_WAIT_MS = 250;
export const GAP_WAITERS_MAX = 2 * PIPELINE_DEPTH;

/** What the backup's path reads and does on the replica. */
/** The backup's side reads only these of the replica's view (so it can be tested on its own). */
export interface BackupHost extends Pick<ReplicaView, 'me' | 'clock' | 'isStopped' | 'inViewChange' | 'primary' | 'last'> {
  /** The viewstamp this backup expects next (myvs). */
  readonly expected: Viewstamp;
  /** The request executed at `last`, when known (unknown after a state transfer). */
  readonly lastRequest: LogEntry | undefined;
  /** Resolves once every write begun so far is durable. */
  readonly durable: Promise<void>;
  /** Takes an accepted batch: moves the expected viewstamp past it, logs and executes it; resolves once the log write is durable. */
  executeBatch(entries: readonly LogEntry[]): Promise<void>;
  breakpoint1(): void;
}

export class Backup {
  /** Batches held for a gap before them (at most GAP_WAITERS_MAX). */
  private held = 0;
  private readonly movement = new Wakeup();

  constructor(private readonly host: BackupHost) {}

  get heldForGap(): number {
    return this.held;
  }

  /** The replica moved (executed a batch, committed a view, resynchronises, stopped): held batches look again. */
  moved(): void {
    this.movement.notify();
  }

  /** invokebatch: the status to answer (steps 1-3 above). */
  async receive(entries: readonly BatchEntry[]): Promise<HandlerReply<number>> {
    const host = this.host;
    const err = { status: RsmStatus.ERR, result: 0 };
    const problem = batchProblem(entries);
    if (problem !== undefined) {
      log('%s invokebatch: ignoring a malformed batch (%s)', host.me, problem);
      return err;
    }
    const first = entries[0]!;
    const last = entries[entries.length - 1]!;
    const span = entries.length === 1 ? describeViewstamp(first.vs) : `${describeViewstamp(first.vs)}..${last.vs.seqno}`;
    const classify = (): InvokeDecision =>
      classifyBatch({ inViewChange: host.inViewChange, isPrimary: host.primary === host.me, expected: host.expected, last: host.last }, first.vs, last.vs);
    let decision = classify();
    if (decision.action === 'reject' && this.gapMayFill(first.vs, false)) decision = await this.waitForGap(first.vs, classify);
    // From here on, every decision and state change comes before the first await.
    switch (decision.action) {
      case 'reject':
        log('%s invokebatch %s: ignoring (%s)', host.me, span, decision.reason);
        return err;
      case 'duplicate': {
        // Unknown after a state transfer: the installed state already reflects the request at
        // `last`, and a viewstamp is given to one request only, so it is this one.
        const executed = host.lastRequest;
        if (executed !== undefined && (executed.proc !== last.proc || !sameBytes(executed.request, last.req))) {
          log('%s invokebatch %s: ignoring (a different request than the one executed at %s)', host.me, span, describeViewstamp(last.vs));
          return err;
        }
        log('%s invokebatch %s: the batch executed last, again; acknowledging it again', host.me, span);
        await host.durable;
        return { status: host.isStopped ? RsmStatus.ERR : RsmStatus.OK, result: 0 };
      }
      case 'execute': {
        const logged: LogEntry[] = entries.map(({ vs, timeMs, proc, req }) => ({ vs, timeMs, proc, request: req.slice() }));
        // Acknowledge only once it is durable here: the primary counts on every backup keeping it.
        await host.executeBatch(logged);
        if (host.isStopped) return err;
        host.breakpoint1();
        return { status: RsmStatus.OK, result: 0 };
      }
    }
  }

  /**
   * Whether a batch starting at `first`, beyond the viewstamp this backup expects, may be held
   * until the batches before it arrive: a backup serving the batch's view, a gap of at most the
   * pipeline's reach (PIPELINE_DEPTH full batches), and, for a new one, fewer than
   * GAP_WAITERS_MAX already held.
   */
  private gapMayFill(first: Viewstamp, alreadyHeld: boolean): boolean {
    const host = this.host;
    if (host.isStopped || host.inViewChange || host.primary === host.me) return false;
    const expected = host.expected;
    if (first.vid !== expected.vid || first.seqno <= expected.seqno) return false;
    if (first.seqno - expected.seqno > PIPELINE_DEPTH * BATCH_REQUESTS_MAX) return false;
    return alreadyHeld || this.held < GAP_WAITERS_MAX;
  }

  /**
   * Holds a batch that arrived before the batches ahead of it for at most GAP_WAIT_MS, re-applying
   * the accept rule each time this backup moves. Resolves the decision to act on at once:
   * execute once the gap has filled, otherwise the rule's own answer (a gap still is ERR, as
   * without the wait).
   */
  private async waitForGap(first: Viewstamp, classify: () => InvokeDecision): Promise<InvokeDecision> {
    const clock = this.host.clock;
    this.held++;
    const deadline = clock.now() + GAP_WAIT_MS;
    try {
      for (;;) {
        const remaining = deadline - clock.now();
        if (remaining <= 0) return classify();
        let timer: Timer | undefined;
        await new Promise<void>((resolve) => {
          timer = clock.setTimer(remaining, resolve);
          void this.movement.wait().then(resolve);
        });
        timer?.cancel();
        const decision = classify();
        if (decision.action !== 'reject' || !this.gapMayFill(first, true)) return decision;
      }
    } finally {
      this.held--;
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
