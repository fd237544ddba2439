/**
 * The backup's side of the request path: invokebatch (and the lab's invoke, as a batch of one) and
 * commit on a replica that is not the primary.
 *
 * 1. A malformed batch (batchProblem: empty, oversized, not consecutive viewstamps of one view)
 *    is ERR.
 * 2. The commit point it carries (the primary's last executed viewstamp: every member holds every
 *    request up to it) is applied: the host executes, in order, the requests it holds up to there
 *    (executeCommitted; nothing while in a view change or as the primary). For a batch it
 *    accepts, right after its log write started (step 3), so the fsync overlaps the execution.
 * 3. The accept rule (invoke-rule.ts, classifyBatch) decides, from the replica's position (in a
 *    view change, primary, the viewstamp it expects, the last one it holds):
 *    - accept: the host holds the batch: logs it in one write (sync) and keeps its requests
 *      until a commit point reaches them (ERR instead if that would hold more than
 *      AWAITING_COMMIT_MAX beyond the commit point). Once the write is durable, if this delivery executed
 *      anything, breakpoint 1 is passed (a backup dies right after executing); then OK;
 *    - duplicate (the batch held last, again): OK again without holding it twice, once it is
 *      durable here. The primary resends a batch when an acknowledgement did not reach it (the
 *      RPC call timed out, so the at-most-once table may have forgotten it), and only this
 *      replica can tell it already holds it. A viewstamp is stamped once, into one batch, so the
 *      duplicate carries the same requests; its last one is compared anyway, a mismatch is ERR;
 *    - reject: ERR.
 * 4. A batch that overtook the ones before it (the primary keeps several in flight, and a lost
 *    message is retransmitted later) is held for at most GAP_WAIT_MS instead of failing the whole
 *    pipeline: while this replica serves the batch's view as a backup, the gap is within the
 *    pipeline's reach, and fewer than GAP_WAITERS_MAX are held. The rule is applied again each
 *    time the replica moves (`moved`: it held a batch, a view committed, it stopped).
 * 5. commit (the commit point alone, sent by an idle primary): from the primary of our committed
 *    view while we serve it as a backup, step 2, then breakpoint 1 if anything executed; OK.
 *    Otherwise ERR.
 *
 * Every decision and state change happens before the first await after the decision, so two
 * deliveries of one batch cannot both hold it.
 */
import type { Timer } from '../lib/env.js';
import type { HandlerReply } from '../lib/rpc.js';
import { logger } from '../lib/log.js';
import { batchProblem, classifyBatch, isWellFormed, type InvokeDecision } from './invoke-rule.js';
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
/**
 * Most requests a backup holds beyond the commit point it has heard. A primary stamps at most
 * PIPELINE_DEPTH batches beyond its own commit point, and each batch it sends carries that point,
 * so it never comes near this; a batch that would exceed it (from a sender that is not a working
 * primary) is ERR, and memory stays bounded.
 */
export const AWAITING_COMMIT_MAX = 2 * PIPELINE_DEPTH * BATCH_REQUESTS_MAX;

/** The backup's side reads only these of the replica's view (so it can be tested on its own). */
export interface BackupHost extends Pick<ReplicaView, 'me' | 'clock' | 'isStopped' | 'inViewChange' | 'primary' | 'vidCommit'> {
  /** The viewstamp this backup expects next (myvs). */
  readonly expected: Viewstamp;
  /** The viewstamp of the last request it holds: logged, executed or waiting for the commit point. */
  readonly lastHeld: Viewstamp;
  /** The request held at `lastHeld`, when known (unknown after a state transfer). */
  readonly lastHeldRequest: LogEntry | undefined;
  /** How many requests it holds beyond the commit point (at most AWAITING_COMMIT_MAX). */
  readonly awaitingCommit: number;
  /** Resolves once every write begun so far is durable. */
  readonly durable: Promise<void>;
  /** Takes an accepted batch: moves the expected viewstamp past it and logs it; resolves once the log write is durable. */
  holdBatch(entries: readonly LogEntry[]): Promise<void>;
  /** Executes, in order, the held requests up to `committed`; how many. Nothing in a view change or on the primary. */
  executeCommitted(committed: Viewstamp): number;
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

  /** The replica moved (held a batch, committed a view, resynchronises, stopped): batches waiting for a gap look again. */
  moved(): void {
    this.movement.notify();
  }

  /**
   * invokebatch: the status to answer (steps 1-4 above). `committed` is the commit point the
   * batch carries (for the lab's invoke, its own viewstamp: executed on receipt).
   */
  async receive(entries: readonly BatchEntry[], committed: Viewstamp): Promise<HandlerReply<number>> {
    const host = this.host;
    const err = { status: RsmStatus.ERR, result: 0 };
    const problem = batchProblem(entries) ?? (isWellFormed(committed) ? undefined : `malformed commit point ${describeViewstamp(committed)}`);
    if (problem !== undefined) {
      log('%s invokebatch: ignoring a malformed batch (%s)', host.me, problem);
      return err;
    }
    // The commit point is applied whatever the batch turns out to be; for an accepted batch only
    // once its log write has started, so the fsync overlaps the execution. Executing changes
    // neither the viewstamp expected nor the last one held, so the order does not change the rule.
    let executed = 0;
    const first = entries[0]!;
    const last = entries[entries.length - 1]!;
    const span = entries.length === 1 ? describeViewstamp(first.vs) : `${describeViewstamp(first.vs)}..${last.vs.seqno}`;
    const classify = (): InvokeDecision =>
      classifyBatch({ inViewChange: host.inViewChange, isPrimary: host.primary === host.me, expected: host.expected, last: host.lastHeld }, first.vs, last.vs);
    let decision = classify();
    if (decision.action === 'reject' && this.gapMayFill(first.vs, false)) {
      executed += host.executeCommitted(committed);
      decision = await this.waitForGap(first.vs, classify);
    }
    // From here on, every decision and state change comes before the first await.
    if (decision.action !== 'accept') executed += host.executeCommitted(committed);
    switch (decision.action) {
      case 'reject':
        log('%s invokebatch %s: ignoring (%s)', host.me, span, decision.reason);
        return err;
      case 'duplicate': {
        // Unknown after a state transfer: the installed state already reflects the request at
        // `lastHeld`, and a viewstamp is given to one request only, so it is this one.
        const held = host.lastHeldRequest;
        if (held !== undefined && (held.proc !== last.proc || !sameBytes(held.request, last.req))) {
          log('%s invokebatch %s: ignoring (a different request than the one held at %s)', host.me, span, describeViewstamp(last.vs));
          return err;
        }
        log('%s invokebatch %s: the batch held last, again; acknowledging it again', host.me, span);
        await host.durable;
        return { status: host.isStopped ? RsmStatus.ERR : RsmStatus.OK, result: 0 };
      }
      case 'accept': {
        if (host.awaitingCommit + entries.length > AWAITING_COMMIT_MAX) {
          executed += host.executeCommitted(committed);
          if (host.awaitingCommit + entries.length > AWAITING_COMMIT_MAX) {
            log('%s invokebatch %s: ignoring (%d requests already held beyond the commit point %s, at most %d)', host.me, span, host.awaitingCommit, describeViewstamp(committed), AWAITING_COMMIT_MAX);
            return err;
          }
        }
        const logged: LogEntry[] = entries.map(({ vs, timeMs, proc, req }) => ({ vs, timeMs, proc, request: req.slice() }));
        const written = host.holdBatch(logged);
        executed += host.executeCommitted(committed); // for the lab's invoke, this very batch
        // Acknowledge only once it is durable here: the primary counts on every backup keeping it.
        await written;
        if (host.isStopped) return err;
        if (executed > 0) host.breakpoint1();
        return { status: RsmStatus.OK, result: 0 };
      }
    }
  }

  /** commit: the primary's commit point alone (step 5 above). */
  commit(vid: number, committed: Viewstamp): HandlerReply<number> {
    const host = this.host;
    const problem = !isWellFormed(committed)
      ? 'a malformed commit point'
      : host.primary === host.me
        ? 'I am the primary'
        : host.isStopped || host.inViewChange || vid !== host.vidCommit
          ? 'not serving that view as a backup'
          : undefined;
    if (problem !== undefined) {
      log('%s commit %s in view %d: ignoring (%s)', host.me, describeViewstamp(committed), vid, problem);
      return { status: RsmStatus.ERR, result: 0 };
    }
    if (host.executeCommitted(committed) > 0) host.breakpoint1();
    return { status: RsmStatus.OK, result: 0 };
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
