/**
 * The backup's side of the request path, as a synchronous core: invokebatch (and the lab's
 * invoke, as a batch of one) and commit on a replica that is not the primary. Events in, actions
 * out: it does no I/O, reads no clock, sets no timer and never awaits. Its host (BackupHost,
 * rsm/backup-host.ts) feeds it the deliveries, the outcome of each log write and each timer, and
 * carries out the actions it returns, in order.
 *
 * 1. A malformed batch (batchProblem: empty, oversized, not consecutive viewstamps of one view)
 *    or commit point is ERR.
 * 2. The commit point a batch carries (the primary's last executed viewstamp: every member holds
 *    every request up to it) is applied: `execute` runs, in order, the requests the replica holds
 *    up to there (nothing while in a view change, as the primary or once stopped). For a batch it
 *    accepts, right after its `hold`, so the fsync overlaps the execution.
 * 3. The accept rule (invoke-rule.ts, classifyBatch) decides, from the replica's position (in a
 *    view change, primary, the viewstamp it expects, the last one it holds):
 *    - accept: `hold` the batch: the host logs it in one write (sync) and keeps its requests until
 *      a commit point reaches them (ERR instead if that would hold more than AWAITING_COMMIT_MAX
 *      beyond the commit point). Once the host reports the write `written`, and every write begun
 *      before it: if this delivery executed anything, `breakpoint1` (a backup dies right after
 *      executing); then OK. Acknowledgements go in the order their writes began, since each one
 *      covers every batch before it. A write that failed is ERR, and so is everything after it;
 *    - duplicate (the batch held last, again): OK again without holding it twice, once every
 *      write begun so far is durable here (`awaitDurable`, then `written`). The primary resends a
 *      batch when an acknowledgement did not reach it (the RPC call timed out, so the at-most-once
 *      table may have forgotten it), and only this replica can tell it already holds it. A
 *      viewstamp is stamped once, into one batch, so the duplicate carries the same requests; its
 *      last one is compared anyway, a mismatch is ERR;
 *    - reject: ERR.
 * 4. A batch that overtook the ones before it (the primary keeps several in flight, and a lost
 *    message is retransmitted later) waits for at most GAP_WAIT_MS (`setGapTimer`) instead of
 *    failing the whole pipeline: while this replica serves the batch's view as a backup, the gap
 *    is within the pipeline's reach, and fewer than GAP_WAITERS_MAX wait. The rule is applied
 *    again each time the replica moves (`moved`: it held a batch, a view committed, it
 *    resynchronises, it stopped), and once more when its timer fires (a gap still is ERR).
 * 5. commit (the commit point alone, sent by an idle primary): from the primary of our committed
 *    view while we serve it as a backup, step 2, then breakpoint 1 if anything executed; OK.
 *    Otherwise ERR.
 *
 * Each step decides at most one delivery against the position it reads at its start, and the
 * actions it returns change that position only when the host carries them out. So a step that
 * leaves batches waiting after a decision that may have moved the replica ends with `recheck`:
 * the host calls `moved` once it has carried out everything before it, and the next waiting batch
 * is decided against the position as it is then. Every delivery is answered by exactly one
 * `reply`. `invariants()` holds after every step.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import { batchProblem, classifyBatch, isWellFormed, type InvokeDecision } from './invoke-rule.js';
import { PIPELINE_DEPTH } from './pipeline.js';
import { BATCH_REQUESTS_MAX, compareViewstamp, describeViewstamp, RsmStatus, type BatchEntry, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';
import type { ReplicaView } from './replica-view.js';

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

/** What the core reads of its replica: where it stands, nothing else (no clock, no I/O). */
export interface BackupPosition extends Pick<ReplicaView, 'me' | 'isStopped' | 'inViewChange' | 'primary' | 'vidCommit'> {
  /** The viewstamp this backup expects next (myvs). */
  readonly expected: Viewstamp;
  /** The viewstamp of the last request it holds: logged, executed or waiting for the commit point. */
  readonly lastHeld: Viewstamp;
  /** The request held at `lastHeld`, when known (unknown after a state transfer). */
  readonly lastHeldRequest: LogEntry | undefined;
  /** How many requests it holds beyond the commit point (at most AWAITING_COMMIT_MAX). */
  readonly awaitingCommit: number;
  /**
   * How many of those `execute(committed)` would run now: the ones at or before `committed`; none
   * in a view change, as the primary or once stopped.
   */
  executable(committed: Viewstamp): number;
}

/** A delivery: one invokebatch, invoke or commit being answered; numbered by the host, never reused. */
export type Delivery = number;

export type BackupAction =
  /** Execute, in order, the held requests up to `committed` (as BackupPosition.executable counts them). */
  | { readonly kind: 'execute'; readonly committed: Viewstamp }
  /**
   * Hold an accepted batch: expect the viewstamp after it, log it in one synced write and keep its
   * requests until a commit point reaches them. Report `written(delivery)` once the write is
   * durable, or `writeFailed(delivery)`.
   */
  | { readonly kind: 'hold'; readonly delivery: Delivery; readonly entries: readonly LogEntry[] }
  /** Report `written(delivery)` once every write begun so far is durable (`writeFailed` if one failed). */
  | { readonly kind: 'awaitDurable'; readonly delivery: Delivery }
  /** Report `gapTimerFired(delivery)` after `ms`, once, unless a cancelGapTimer for it comes first. */
  | { readonly kind: 'setGapTimer'; readonly delivery: Delivery; readonly ms: number }
  | { readonly kind: 'cancelGapTimer'; readonly delivery: Delivery }
  /** Call `moved()` once every action before this one is carried out (always the last of a step). */
  | { readonly kind: 'recheck' }
  | { readonly kind: 'breakpoint1' }
  /** Answer the delivery (exactly once per delivery). */
  | { readonly kind: 'reply'; readonly delivery: Delivery; readonly status: number };

/** A batch that overtook the ones before it, waiting for the gap to fill (step 4). */
interface Waiting {
  readonly entries: readonly BatchEntry[];
  readonly committed: Viewstamp;
  /** Requests its commit point executed before it began to wait. */
  readonly executed: number;
}

/** A delivery answered once a write is durable (accepted: its own; duplicate: every one so far). */
interface Acknowledging {
  /** Requests this delivery's commit point executed (breakpoint 1 follows if any). */
  readonly executed: number;
  /** Its write was reported: durable, or failed. */
  outcome: 'pending' | 'written' | 'failed';
}

export class Backup {
  /** Batches waiting for a gap (at most GAP_WAITERS_MAX), in arrival order. */
  private readonly waiting = new Map<Delivery, Waiting>();
  /**
   * Deliveries waiting for a write to be durable before their answer, in the order their writes
   * began. They are answered in that order: an acknowledgement covers every batch before it (the
   * primary counts it so), so a batch is not acknowledged before the ones held earlier are durable,
   * whatever order the host reports the writes in.
   */
  private readonly acknowledging = new Map<Delivery, Acknowledging>();
  /** A log write failed: the log may lack a batch, so nothing held after it is acknowledged. */
  private writeLost = false;

  constructor(private readonly position: BackupPosition) {}

  /** How many batches wait for a gap. */
  get heldForGap(): number {
    return this.waiting.size;
  }

  /** How many deliveries wait for a write to be durable. */
  get awaitingWrite(): number {
    return this.acknowledging.size;
  }

  /**
   * invokebatch `delivery` (steps 1-4 above). `committed` is the commit point the batch carries
   * (for the lab's invoke, its own viewstamp: executed on receipt).
   */
  receive(delivery: Delivery, entries: readonly BatchEntry[], committed: Viewstamp): BackupAction[] {
    assert(!this.waiting.has(delivery) && !this.acknowledging.has(delivery), `invokebatch delivery ${delivery} received twice`);
    const actions: BackupAction[] = [];
    const problem = batchProblem(entries) ?? (isWellFormed(committed) ? undefined : `malformed commit point ${describeViewstamp(committed)}`);
    if (problem !== undefined) {
      log('%s invokebatch: ignoring a malformed batch (%s)', this.position.me, problem);
      actions.push(reply(delivery, RsmStatus.ERR));
      return actions;
    }
    const decision = this.classify(entries);
    if (decision.action === 'reject' && this.gapMayFill(entries[0]!.vs, false)) {
      // The commit point is applied while the batch waits; executing moves neither the viewstamp
      // expected nor the last one held, so it does not change the rule.
      const executed = this.executeCommitted(committed, actions);
      this.waiting.set(delivery, { entries, committed, executed });
      actions.push({ kind: 'setGapTimer', delivery, ms: GAP_WAIT_MS });
      return actions;
    }
    this.decide(delivery, entries, committed, decision, 0, actions);
    // A hold moves the replica: a batch waiting for this one may go next.
    if (decision.action === 'accept' && this.waiting.size > 0) actions.push({ kind: 'recheck' });
    return actions;
  }

  /** commit `delivery`: the primary's commit point alone (step 5 above). */
  commit(delivery: Delivery, vid: number, committed: Viewstamp): BackupAction[] {
    const position = this.position;
    const problem = !isWellFormed(committed)
      ? 'a malformed commit point'
      : position.primary === position.me
        ? 'I am the primary'
        : position.isStopped || position.inViewChange || vid !== position.vidCommit
          ? 'not serving that view as a backup'
          : undefined;
    if (problem !== undefined) {
      log('%s commit %s in view %d: ignoring (%s)', position.me, describeViewstamp(committed), vid, problem);
      return [reply(delivery, RsmStatus.ERR)];
    }
    const actions: BackupAction[] = [];
    if (this.executeCommitted(committed, actions) > 0) actions.push({ kind: 'breakpoint1' });
    actions.push(reply(delivery, RsmStatus.OK));
    return actions;
  }

  /**
   * The replica moved (held a batch, committed a view, resynchronises, stopped), or a `recheck`
   * came due: the first waiting batch the rule now decides is decided (step 4).
   */
  moved(): BackupAction[] {
    for (const [delivery, waiting] of this.waiting) {
      const decision = this.classify(waiting.entries);
      if (decision.action === 'reject' && this.gapMayFill(waiting.entries[0]!.vs, true)) continue;
      return this.stopWaiting(delivery, waiting, decision, [{ kind: 'cancelGapTimer', delivery }]);
    }
    return [];
  }

  /** The gap wait of `delivery` is over: the rule's answer now, whatever it is. */
  gapTimerFired(delivery: Delivery): BackupAction[] {
    const waiting = this.waiting.get(delivery);
    if (waiting === undefined) return []; // decided already; its cancelGapTimer came too late
    return this.stopWaiting(delivery, waiting, this.classify(waiting.entries), []);
  }

  /** The write `delivery` waited for is durable. */
  written(delivery: Delivery): BackupAction[] {
    return this.reported(delivery, 'written');
  }

  /** The write `delivery` waited for failed: it is not durable, so it is not acknowledged. */
  writeFailed(delivery: Delivery): BackupAction[] {
    log('%s invokebatch: not acknowledging (the log write failed)', this.position.me);
    return this.reported(delivery, 'failed');
  }

  /** Checks the core's own state; a violation is a bug (AssertionError). */
  invariants(): void {
    assert(this.waiting.size <= GAP_WAITERS_MAX, `${this.waiting.size} batches wait for a gap (at most ${GAP_WAITERS_MAX})`);
    for (const [delivery, waiting] of this.waiting) {
      assert(!this.acknowledging.has(delivery), `delivery ${delivery} both waits for a gap and for a write`);
      assert(batchProblem(waiting.entries) === undefined, `delivery ${delivery} waits with a malformed batch`);
      assert(isWellFormed(waiting.committed), `delivery ${delivery} waits with a malformed commit point`);
      assert(waiting.executed >= 0, `delivery ${delivery} executed ${waiting.executed} requests`);
    }
    // Answered in order: the oldest acknowledgement still tracked waits for its own write.
    const oldest = this.acknowledging.values().next();
    assert(oldest.done === true || oldest.value.outcome === 'pending', 'the oldest acknowledgement has its write reported but is not answered');
  }

  /** Records a write's outcome, then answers, in order, every delivery whose write and all earlier ones are reported. */
  private reported(delivery: Delivery, outcome: 'written' | 'failed'): BackupAction[] {
    const acknowledging = this.acknowledging.get(delivery);
    assert(acknowledging !== undefined && acknowledging.outcome === 'pending', `${outcome}: delivery ${delivery} waits for no write`);
    acknowledging.outcome = outcome;
    const actions: BackupAction[] = [];
    for (const [next, head] of this.acknowledging) {
      if (head.outcome === 'pending') break;
      this.acknowledging.delete(next);
      if (head.outcome === 'failed') this.writeLost = true;
      // Stopped meanwhile: a crash, and the primary must not count on us.
      if (this.writeLost || this.position.isStopped) {
        actions.push(reply(next, RsmStatus.ERR));
        continue;
      }
      if (head.executed > 0) actions.push({ kind: 'breakpoint1' });
      actions.push(reply(next, RsmStatus.OK));
    }
    return actions;
  }

  private classify(entries: readonly BatchEntry[]): InvokeDecision {
    const position = this.position;
    const first = entries[0]!.vs;
    const last = entries[entries.length - 1]!.vs;
    return classifyBatch({ inViewChange: position.inViewChange, isPrimary: position.primary === position.me, expected: position.expected, last: position.lastHeld }, first, last);
  }

  private stopWaiting(delivery: Delivery, waiting: Waiting, decision: InvokeDecision, actions: BackupAction[]): BackupAction[] {
    this.waiting.delete(delivery);
    this.decide(delivery, waiting.entries, waiting.committed, decision, waiting.executed, actions);
    // One decision per step: it may have moved the replica (a hold, an execution), and the next
    // waiting batch is decided against the position once the host carried these actions out.
    if (this.waiting.size > 0) actions.push({ kind: 'recheck' });
    return actions;
  }

  /** Acts on the accept rule's decision for a delivery (steps 2 and 3). */
  private decide(delivery: Delivery, entries: readonly BatchEntry[], committed: Viewstamp, decision: InvokeDecision, executedBefore: number, actions: BackupAction[]): void {
    const position = this.position;
    const first = entries[0]!;
    const last = entries[entries.length - 1]!;
    const span = entries.length === 1 ? describeViewstamp(first.vs) : `${describeViewstamp(first.vs)}..${last.vs.seqno}`;
    switch (decision.action) {
      case 'reject':
        this.executeCommitted(committed, actions);
        log('%s invokebatch %s: ignoring (%s)', position.me, span, decision.reason);
        actions.push(reply(delivery, RsmStatus.ERR));
        return;
      case 'duplicate': {
        this.executeCommitted(committed, actions);
        // Unknown after a state transfer: the installed state already reflects the request at
        // `lastHeld`, and a viewstamp is given to one request only, so it is this one.
        const held = position.lastHeldRequest;
        if (held !== undefined && (held.proc !== last.proc || !sameBytes(held.request, last.req))) {
          log('%s invokebatch %s: ignoring (a different request than the one held at %s)', position.me, span, describeViewstamp(last.vs));
          actions.push(reply(delivery, RsmStatus.ERR));
          return;
        }
        log('%s invokebatch %s: the batch held last, again; acknowledging it again', position.me, span);
        this.acknowledging.set(delivery, { executed: 0, outcome: 'pending' });
        actions.push({ kind: 'awaitDurable', delivery });
        return;
      }
      case 'accept': {
        const before = position.executable(committed);
        if (position.awaitingCommit - before + entries.length > AWAITING_COMMIT_MAX) {
          this.executeCommitted(committed, actions);
          log('%s invokebatch %s: ignoring (%d requests already held beyond the commit point %s, at most %d)', position.me, span, position.awaitingCommit - before, describeViewstamp(committed), AWAITING_COMMIT_MAX);
          actions.push(reply(delivery, RsmStatus.ERR));
          return;
        }
        const logged: LogEntry[] = entries.map(({ vs, timeMs, proc, req }) => ({ vs, timeMs, proc, request: req.slice() }));
        actions.push({ kind: 'hold', delivery, entries: logged });
        // Accepting means serving as a backup (not in a view change, not the primary), so once held
        // the batch's own requests up to the commit point execute too (for the lab's invoke, this
        // very batch), unless the replica stopped.
        const own = position.isStopped ? 0 : entries.filter((entry) => compareViewstamp(entry.vs, committed) <= 0).length;
        if (before + own > 0) actions.push({ kind: 'execute', committed });
        // Acknowledged only once durable here: the primary counts on every backup keeping it.
        this.acknowledging.set(delivery, { executed: executedBefore + before + own, outcome: 'pending' });
        return;
      }
    }
  }

  /** Executes the held requests up to `committed`, if there are any; how many. */
  private executeCommitted(committed: Viewstamp, actions: BackupAction[]): number {
    const count = this.position.executable(committed);
    if (count > 0) actions.push({ kind: 'execute', committed });
    return count;
  }

  /**
   * Whether a batch starting at `first`, beyond the viewstamp this backup expects, may wait until
   * the batches before it arrive: a backup serving the batch's view, a gap of at most the
   * pipeline's reach (PIPELINE_DEPTH full batches), and, for a new one, fewer than
   * GAP_WAITERS_MAX already waiting.
   */
  private gapMayFill(first: Viewstamp, alreadyWaiting: boolean): boolean {
    const position = this.position;
    if (position.isStopped || position.inViewChange || position.primary === position.me) return false;
    const expected = position.expected;
    if (first.vid !== expected.vid || first.seqno <= expected.seqno) return false;
    if (first.seqno - expected.seqno > PIPELINE_DEPTH * BATCH_REQUESTS_MAX) return false;
    return alreadyWaiting || this.waiting.size < GAP_WAITERS_MAX;
  }
}

function reply(delivery: Delivery, status: number): BackupAction {
  return { kind: 'reply', delivery, status };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
