/**
 * The primary's side of the request path as a synchronous core: client invokes admitted into the
 * pipeline (rsm/pipeline.ts), batches stamped and replicated with group commit, executed in
 * viewstamp order once every member holds them, a stalled pipeline recovered, and the tasks that
 * need it quiesced run one at a time. Events in, actions out: it does no I/O, sets no timer and
 * never awaits. Its host (PrimaryHost, rsm/primary-host.ts) feeds it the invokes, the outcome of
 * every log write, send, commit notice and quiesced task, and each timer, and carries out the
 * actions it returns, in order.
 *
 * 1. invoked: BUSY in a view change or once stopped, NOTPRIMARY off the primary, BUSY beyond the
 *    pipeline's bounds; otherwise the request waits. An idle pipeline stamps once the read that
 *    brought it has been delivered (`pumpAfterRead`, then `pumpDue`), a busy one after the rest of
 *    the turn's input (the `pump` timer).
 * 2. pump: while fewer than PIPELINE_DEPTH batches are pending and as many first rounds run, and
 *    no task holds the pipeline quiesced, stamp the waiting requests into a batch at the next
 *    viewstamp (`setNext`, `stamped`) and start its first round.
 * 3. A first round is group commit: one `send` of the batch to every backup of the view and our
 *    own `appendLog` (sync), at once. Right after the first backup's answer, `passHooks`
 *    (partition 1, breakpoint 1). A backup's ERR may mean the batch overtook the one before it
 *    (a retransmission reordered them): once that one's first round has ended with the backup's
 *    acknowledgement, the batch is sent to it once more.
 * 4. advance, after every acknowledgement and at the end of our write: `execute` every batch at
 *    the head that every member holds durably, in order (the host answers its clients). The
 *    backups learn the new commit point (our last executed) from the next batch; if none is
 *    pending once COMMIT_IDLE_MS have passed, from a `noticeCommit`, sent again after syncRetryMs
 *    while any backup missed it and we stay idle in the view.
 * 5. A first round that ends with its batch still lacking an acknowledgement stalls the pipeline:
 *    BUSY to the clients of every pending batch, and a recovery round, queued behind the tasks
 *    that quiesce the pipeline, resends the pending batches in order; it is retried after
 *    syncRetryMs until every one is executed, or a view change settles them (`settle`).
 * 6. quiesce(task): the tasks that need no batch half-way (a recovery round, the primary's
 *    transferreq answers, a view change's drain) queue; the one at the head holds the pipeline
 *    (no round starts) and is granted (`runQuiesced`) once every running round has ended. The
 *    next is granted when it ends (`quiesceEnded`), and the pipeline pumps again when none is
 *    left.
 *
 * Every action with an outcome names what it is for (a batch and its round, a notice, a task),
 * and each outcome is fed back once. The host fills in our commit point when it carries out a
 * `send` or `noticeCommit`: the executions before it in the same step have moved it. The one
 * clock the core sees is the replica's stamp time (`stampTime`), a read of the replica like its
 * next viewstamp. `invariants()` holds after every step.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { HandlerReply } from '../lib/rpc.js';
import type { Config } from '../paxos/config.js';
import { successor } from './invoke-rule.js';
import type { RsmBatchEvent, RsmTiming } from './node.js';
import { describeBatch, isComplete, lastOf, Pipeline, PIPELINE_DEPTH, type PendingBatch, type WaitingRequest } from './pipeline.js';
import { RsmClientStatus, RsmStatus, type Viewstamp } from './protocol.js';
import type { ReplicaView } from './replica-view.js';

const log = logger('rsm');

const EMPTY = new Uint8Array(0);
export const BUSY_REPLY: HandlerReply<Uint8Array> = { status: RsmClientStatus.BUSY, result: EMPTY };
export const NOTPRIMARY_REPLY: HandlerReply<Uint8Array> = { status: RsmClientStatus.NOTPRIMARY, result: EMPTY };

/**
 * Retransmission of an invokebatch. A backup acknowledges after one synced write (under a
 * millisecond on loopback, more on a slow disk), and the in-order pipeline stalls behind any lost
 * batch, so the first resend comes soon: RESEND_ACK_FACTOR times the backup's fastest recent
 * acknowledgement (noteAck), at least INVOKE_RETRANSMIT_MS. On a fast disk that is 5 ms (under
 * RPC_LOSSY=5 it doubled bench (b)'s 32-client throughput against a fixed 15 ms; lossless runs did
 * not move), and a slow disk is not flooded with copies of batches it is still writing.
 */
const INVOKE_RETRANSMIT_MS = 5;
export const INVOKE_RETRANSMIT_MS_MAX = 120;
const RESEND_ACK_FACTOR = 3;
/**
 * How long an idle primary waits before it sends its commit point on its own (`commit`). Any
 * batch sent meanwhile carries it. Short enough that an idle group's backups soon hold the state
 * the clients saw acknowledged, long enough that a client issuing requests back to back never
 * pays an extra message per request.
 */
export const COMMIT_IDLE_MS = 10;
/** Backups whose acknowledgement times are kept (more than any view has members), and how many of each. */
const ACK_TIMES_MAX = 64;
const ACK_SAMPLES = 16;

/** What the core reads of its replica: where it stands (no I/O). */
export interface PrimaryPosition extends Pick<ReplicaView, 'me' | 'isStopped' | 'inViewChange' | 'primary' | 'vidCommit'> {
  readonly config: Pick<Config, 'members'>;
  readonly timing: Pick<RsmTiming, 'syncRetryMs'>;
  /** The viewstamp the next batch is stamped at (myvs); `setNext` moves it. */
  readonly next: Viewstamp;
  /** The time to stamp on a batch now: whole ms, never running backwards. */
  stampTime(): number;
  /** The replica has started (its invariants differ before). */
  readonly started: boolean;
}

/** Which round a send belongs to: a batch's first round, or the recovery round. */
export type SendRound = 'first' | 'recovery';
/** The outcome of one invokebatch call, as the host's RPC call gives it. */
export type SendReply = { readonly ok: true; readonly status: number } | { readonly ok: false; readonly code: string };
/** A task run with the pipeline quiesced, numbered by the host. */
export type QuiesceTask = number;
/** A commit notice, numbered by the core. */
export type CommitNotice = number;
export type PrimaryTimer = 'pump' | 'commit' | 'retry';
export const TIMERS: readonly PrimaryTimer[] = ['pump', 'commit', 'retry'];

export type PrimaryAction =
  /** Answer each of `requests` with `reply`. */
  | { readonly kind: 'answer'; readonly requests: readonly WaitingRequest[]; readonly reply: HandlerReply<Uint8Array> }
  /** Move the replica's next viewstamp (myvs) past a stamped batch. */
  | { readonly kind: 'setNext'; readonly next: Viewstamp }
  /** Tell the listeners a batch was stamped. */
  | { readonly kind: 'stamped'; readonly event: RsmBatchEvent }
  /** invokebatch of `batch` (our commit point with it) to each of `to`, retransmitted after its resendMs; feed `sent` for each. */
  | { readonly kind: 'send'; readonly round: SendRound; readonly batch: PendingBatch; readonly to: readonly { readonly backup: string; readonly resendMs: number }[] }
  /** Log the batch's entries in one write (sync); feed `written`. */
  | { readonly kind: 'appendLog'; readonly batch: PendingBatch }
  /** The test hooks after a batch's first acknowledgement: partition 1, then breakpoint 1. */
  | { readonly kind: 'passHooks' }
  /**
   * Execute `batch`, taken off the pipeline, in viewstamp order. As the primary it is committed,
   * and `requests` (its clients, in entry order) are answered OK with the results; as a backup (a
   * view change settles it) nobody is answered and a checker does not count it as committed.
   */
  | { readonly kind: 'execute'; readonly batch: PendingBatch; readonly role: 'primary' | 'backup'; readonly requests: readonly WaitingRequest[] }
  /** Feed `pumpDue` once the delivery of the current read is done (a microtask). */
  | { readonly kind: 'pumpAfterRead' }
  /** Fire `timerFired(timer)` after `ms`, replacing that timer if set. */
  | { readonly kind: 'setTimer'; readonly timer: PrimaryTimer; readonly ms: number }
  | { readonly kind: 'cancelTimer'; readonly timer: PrimaryTimer }
  /** commit(vid, our commit point) to each of `backups`; feed `noticed` for each. */
  | { readonly kind: 'noticeCommit'; readonly notice: CommitNotice; readonly vid: number; readonly backups: readonly string[] }
  /** Run quiesced task `task` now; feed `quiesceEnded` once it has settled. */
  | { readonly kind: 'runQuiesced'; readonly task: QuiesceTask };

/** Where one backup's send of a first round stands. */
type FirstSend =
  | { readonly phase: 'sending' }
  /** It answered ERR; waiting for the first round of `previous` to end before sending once more. */
  | { readonly phase: 'waiting'; readonly previous: PendingBatch; readonly reply: SendReply }
  | { readonly phase: 'resending' };

/** A batch's first round: our write and one send per backup, all running until it ends. */
interface Round {
  readonly batch: PendingBatch;
  writing: boolean;
  readonly sends: Map<string, FirstSend>;
  hooksPassed: boolean;
}

/** The recovery round: the pending batches as it began, resent one after the other. */
interface Recovery {
  readonly batches: readonly PendingBatch[];
  index: number;
  /** Backups that did not answer at all: skipped for the rest of the round. */
  readonly unreachable: Set<string>;
  /** Backups whose send of batches[index] has not answered yet. */
  readonly outstanding: Set<string>;
}

/** A holder of the quiesce queue. */
type Holder = { readonly kind: 'recovery' } | { readonly kind: 'task'; readonly task: QuiesceTask };

interface NoticeState {
  readonly vid: number;
  readonly backups: readonly string[];
  unanswered: number;
  failed: boolean;
}

export class Primary {
  /** The waiting requests and pending batches. */
  readonly pipeline: Pipeline;
  /** First rounds running, by batch: at most PIPELINE_DEPTH. */
  private readonly rounds = new Map<PendingBatch, Round>();
  /** The quiesce queue (step 6): its head holds the pipeline; `granted` once it runs. */
  private readonly holders: Holder[] = [];
  /** Recovery rounds among the holders: at most one. */
  private recoveries = 0;
  private granted = false;
  private recovery: Recovery | undefined;
  /** The last ACK_SAMPLES times (ms) from sending an invokebatch to a backup to its OK, per backup. */
  private readonly ackMsOf = new Map<string, number[]>();
  /** The timers set, and for the commit timer the notice it sends. */
  private readonly timersSet = new Set<PrimaryTimer>();
  private commitDue: { readonly vid: number; readonly backups: readonly string[]; readonly ms: number } | undefined;
  private pumpQueued = false;
  private lastNotice: CommitNotice = 0;
  private readonly notices = new Map<CommitNotice, NoticeState>();

  constructor(
    private readonly position: PrimaryPosition,
    requestsMax: number,
  ) {
    this.pipeline = new Pipeline(requestsMax);
  }

  /** Timers the core has set and not seen fire or cancelled (the host keeps the same ones). */
  get timers(): ReadonlySet<PrimaryTimer> {
    return this.timersSet;
  }

  /** A recovery round is queued or running. */
  get recoveryQueued(): boolean {
    return this.recoveries > 0;
  }

  /** Quiesced tasks queued or running (those the host numbered). */
  get tasksQueued(): number {
    return this.holders.length - this.recoveries;
  }

  // ---- events ----

  /** A client invoke on the primary (step 1); `request.answer` is called by the host only. */
  invoked(request: WaitingRequest): PrimaryAction[] {
    const p = this.position;
    if (p.isStopped || p.inViewChange) return [answer([request], BUSY_REPLY)];
    if (p.primary !== p.me) return [answer([request], NOTPRIMARY_REPLY)];
    if (!this.pipeline.admit(request)) {
      log('%s invoke: BUSY (%d requests unanswered, %d bytes waiting)', p.me, this.pipeline.unanswered(), this.pipeline.waitingBytes);
      return [answer([request], BUSY_REPLY)];
    }
    // An idle pipeline stamps once the rest of this read is delivered (a microtask): requests
    // that came in one segment share a batch (a lock client's release and its next acquire,
    // written together, then cost one round and one fsync per replica instead of two). A busy
    // one stamps after the rest of this turn's input (a zero-delay timer runs after the pending
    // I/O): requests that arrived together on many connections then share one batch instead
    // of one small batch each, which costs CPU.
    const actions: PrimaryAction[] = [];
    if (this.pipeline.batches.length === 0) {
      if (!this.pumpQueued) {
        this.pumpQueued = true;
        actions.push({ kind: 'pumpAfterRead' });
      }
    } else if (!this.timersSet.has('pump')) {
      this.setTimer(actions, 'pump', 0);
    }
    return actions;
  }

  /** The read that brought an invoke has been delivered (`pumpAfterRead`). */
  pumpDue(): PrimaryAction[] {
    this.pumpQueued = false;
    return this.collect((actions) => this.pump(actions));
  }

  timerFired(timer: PrimaryTimer): PrimaryAction[] {
    assert(this.timersSet.has(timer), `${this.position.me}: the ${timer} timer fired, but it is not set`);
    this.timersSet.delete(timer);
    return this.collect((actions) => {
      if (timer === 'pump') this.pump(actions);
      else if (timer === 'retry') {
        if (this.pipeline.stalled) this.queueRecovery(actions);
      } else this.commitTimerFired(actions);
    });
  }

  /** Our log write of `batch` ended: durable (`ok`), or failed (the write queue has made that fatal). */
  written(batch: PendingBatch, ok: boolean): PrimaryAction[] {
    const round = this.rounds.get(batch);
    assert(round !== undefined && round.writing, `${this.position.me}: a log write of ${describeBatch(batch)} ended outside its first round`);
    round.writing = false;
    return this.collect((actions) => {
      if (ok) {
        this.pipeline.markDurable(batch);
        this.advance(actions);
      }
      this.endRoundIfDone(actions, round);
    });
  }

  /** The invokebatch of `batch` to `backup` answered (`elapsedMs` after it was sent). */
  sent(round: SendRound, batch: PendingBatch, backup: string, reply: SendReply, elapsedMs: number): PrimaryAction[] {
    if (isOk(reply)) this.noteAck(backup, elapsedMs);
    return this.collect((actions) => (round === 'first' ? this.firstSent(actions, batch, backup, reply) : this.recoverySent(actions, batch, backup, reply)));
  }

  /** A commit(vid, …) of notice `notice` to `backup` answered OK (`ok`), or not. */
  noticed(notice: CommitNotice, backup: string, ok: boolean): PrimaryAction[] {
    const state = this.notices.get(notice);
    assert(state !== undefined && state.unanswered > 0 && state.backups.includes(backup), `${this.position.me}: an answer of ${backup} to commit notice ${notice}, which is not waiting for it`);
    if (!ok) state.failed = true;
    if (--state.unanswered > 0) return [];
    this.notices.delete(notice);
    // With no batch coming, nothing else tells a backup that missed it what is committed: it
    // would stay behind until the next request. Try again, to every backup, after syncRetryMs,
    // while this primary stays idle in the view (the timer's checks).
    return this.collect((actions) => {
      if (state.failed) this.noticeCommitWhenIdle(actions, state.vid, state.backups, this.position.timing.syncRetryMs);
    });
  }

  /** Asks to run task `task` with the pipeline quiesced (step 6). */
  quiesce(task: QuiesceTask): PrimaryAction[] {
    assert(!this.holders.some((holder) => holder.kind === 'task' && holder.task === task), `${this.position.me}: quiesced task ${task} queued twice`);
    this.holders.push({ kind: 'task', task });
    return this.collect((actions) => this.grantHead(actions));
  }

  /** Quiesced task `task`, granted by `runQuiesced`, has settled. */
  quiesceEnded(task: QuiesceTask): PrimaryAction[] {
    const head = this.holders[0];
    assert(this.granted && head?.kind === 'task' && head.task === task, `${this.position.me}: quiesced task ${task} ended, but it was not running`);
    return this.collect((actions) => this.releaseHead(actions));
  }

  /**
   * Some pending batch lacks an acknowledgement, or a backup will install our state: stop
   * stamping, BUSY to the clients of every pending batch (they retry; the service recognises the
   * retries), and queue a recovery round. The pipeline never runs past a gap, so replicas never
   * diverge inside a view.
   */
  stall(why: string): PrimaryAction[] {
    return this.collect((actions) => this.stallNow(actions, why));
  }

  /** `backup` installs our state: its acknowledgements of the pending batches no longer count. */
  forget(backup: string): PrimaryAction[] {
    this.pipeline.forget(backup);
    return [];
  }

  /**
   * A view change, with the pipeline quiesced, takes every pending batch: each is executed from
   * our log without answering anybody (its clients get BUSY): it is in our log, so a restart
   * would replay it anyway, and the state must be what the log says. The synchronisation then
   * settles it (the newest state among the members wins). No recovery round is timed any more.
   */
  settle(): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    for (let batch = this.pipeline.takeHead(); batch !== undefined; batch = this.pipeline.takeHead()) {
      log('%s sync: executing the pending batch %s from my log', this.position.me, describeBatch(batch));
      actions.push(answer(this.pipeline.takeWaiters(batch), BUSY_REPLY));
      actions.push({ kind: 'execute', batch, role: 'backup', requests: [] });
    }
    this.pipeline.resume();
    this.cancelTimer(actions, 'retry');
    return actions;
  }

  /** The replica stopped: no timer fires, and every client still waiting gets BUSY. */
  stop(): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    for (const timer of TIMERS) this.cancelTimer(actions, timer);
    this.commitDue = undefined;
    actions.push(answer(this.pipeline.takeClients(), BUSY_REPLY));
    return actions;
  }

  /**
   * What ties the rounds, the quiesce queue and the timers to the pipeline:
   * - first rounds running at most PIPELINE_DEPTH, each still waiting on its write or a send, none
   *   before start, none while a quiesced task or the recovery round runs;
   * - a queued head that is not granted waits only for running rounds;
   * - stalled while serving: a recovery round is queued or running, or its timer is set;
   * - no commit notice timed once stopped;
   * - waiting requests on a serving primary only while pump is due (its microtask or timer) or
   *   the pipeline is full or quiesced, so no request is stranded.
   */
  invariants(): void {
    const p = this.position;
    const me = p.me;
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const stalled = this.pipeline.stalled;
    const serving = !p.inViewChange;
    check(this.rounds.size <= PIPELINE_DEPTH, () => `${me}: ${this.rounds.size} rounds running (at most ${PIPELINE_DEPTH})`);
    for (const round of this.rounds.values()) {
      check(round.writing || round.sends.size > 0, () => `${me}: the first round of ${describeBatch(round.batch)} waits on nothing`);
      for (const [backup, send] of round.sends) {
        check(round.batch.backups.includes(backup), () => `${me}: the first round of ${describeBatch(round.batch)} sends to ${backup}, not one of its backups`);
        if (send.phase === 'waiting') check(this.rounds.has(send.previous), () => `${me}: ${describeBatch(round.batch)} waits for a first round of ${describeBatch(send.previous)} that has ended`);
      }
    }
    if (this.granted) check(this.holders.length > 0 && this.rounds.size === 0, () => `${me}: a quiesced holder runs with ${this.holders.length} queued and ${this.rounds.size} rounds running`);
    else check(this.holders.length === 0 || this.rounds.size > 0, () => `${me}: ${this.holders.length} quiesced holders queued, none granted, no round running`);
    check(this.recovery === undefined || (this.granted && this.holders[0]?.kind === 'recovery'), () => `${me}: a recovery round runs outside the quiesce queue`);
    if (this.holders.length > 0) {
      let recoveries = 0;
      for (const holder of this.holders) if (holder.kind === 'recovery') recoveries++;
      check(recoveries === this.recoveries && recoveries <= 1, () => `${me}: ${recoveries} recovery rounds queued (counted ${this.recoveries}, at most 1)`);
    } else check(this.recoveries === 0, () => `${me}: ${this.recoveries} recovery rounds counted, none queued`);
    if (this.recovery !== undefined) {
      for (const backup of this.recovery.outstanding) check(this.recovery.batches[this.recovery.index]!.backups.includes(backup), () => `${me}: recovery sends to ${backup}, not a backup of its batch`);
    }
    if (stalled && !p.isStopped && serving) check(this.recoveryQueued || this.timersSet.has('retry'), () => `${me}: stalled with no recovery round queued or timed`);
    if (!p.started) check(!stalled && this.rounds.size === 0, () => `${me}: stalled or rounds running before start()`);
    if (p.isStopped) check(!this.timersSet.has('commit'), () => `${me}: stopped with the commit notice timer set`);
    check(this.timersSet.has('commit') === (this.commitDue !== undefined), () => `${me}: the commit timer is ${this.timersSet.has('commit') ? '' : 'not '}set, its notice ${this.commitDue === undefined ? 'unknown' : 'known'}`);
    const waiting = this.pipeline.waitingCount;
    const pending = this.pipeline.batches.length;
    if (waiting > 0 && serving && p.primary === me && !p.isStopped) {
      check(this.timersSet.has('pump') || this.pumpQueued || (!stalled && (this.holders.length > 0 || pending >= PIPELINE_DEPTH || this.rounds.size >= PIPELINE_DEPTH)), () => `${me}: ${waiting} requests waiting with ${pending} pending, ${this.rounds.size} rounds, ${this.holders.length} quiesced holders, stalled ${stalled}, pump timer ${this.timersSet.has('pump')}, pump queued ${this.pumpQueued}`);
    }
  }

  // ---- the rules ----

  private collect(work: (actions: PrimaryAction[]) => void): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    work(actions);
    return actions;
  }

  /**
   * Step 2. In a view change every waiting request gets BUSY, off the primary NOTPRIMARY; while
   * stalled BUSY too, and a recovery round is queued. While a task quiesces the pipeline,
   * requests wait: it pumps when the queue empties.
   */
  private pump(actions: PrimaryAction[]): void {
    const p = this.position;
    if (this.pipeline.waitingCount === 0 || p.isStopped) return;
    if (p.inViewChange) return void actions.push(answer(this.pipeline.takeWaiting(), BUSY_REPLY));
    if (p.primary !== p.me) return void actions.push(answer(this.pipeline.takeWaiting(), NOTPRIMARY_REPLY));
    if (this.pipeline.stalled) {
      actions.push(answer(this.pipeline.takeWaiting(), BUSY_REPLY));
      return this.queueRecovery(actions);
    }
    if (this.holders.length > 0) return;
    let next = p.next;
    assert(next.vid === p.vidCommit, `primary of view ${p.vidCommit} stamping in view ${next.vid}`);
    while (this.pipeline.canStamp && this.rounds.size < PIPELINE_DEPTH) {
      const backups = p.config.members(next.vid).filter((member) => member !== p.me);
      const batch = this.pipeline.stamp(next, p.stampTime(), backups);
      const first = next;
      next = successor(lastOf(batch));
      actions.push({ kind: 'setNext', next });
      let bytes = 0;
      for (const entry of batch.entries) bytes += entry.request.length;
      actions.push({ kind: 'stamped', event: { first, size: batch.entries.length, bytes, behind: this.pipeline.batches.length - 1 } });
      this.startRound(actions, batch);
    }
  }

  /**
   * Step 3. Group commit: our fsync runs while the backups do theirs. Nothing is answered before
   * both are done, so no client sees OK for a request some member could lose in a crash. A
   * backup may hold the batch before our log does; a primary restarted inside its view therefore
   * synchronises it again rather than stamping on from its own log (RsmNode.syncView). The sends
   * go first: the backups' path (a hop, their write, a hop back) is the longer one.
   */
  private startRound(actions: PrimaryAction[], batch: PendingBatch): void {
    const round: Round = { batch, writing: true, sends: new Map(), hooksPassed: false };
    this.rounds.set(batch, round);
    if (batch.backups.length === 0) {
      round.hooksPassed = true;
      actions.push({ kind: 'passHooks' });
    } else {
      for (const backup of batch.backups) round.sends.set(backup, { phase: 'sending' });
      actions.push({ kind: 'send', round: 'first', batch, to: batch.backups.map((backup) => ({ backup, resendMs: this.firstResendMs(backup) })) });
    }
    actions.push({ kind: 'appendLog', batch });
  }

  private firstSent(actions: PrimaryAction[], batch: PendingBatch, backup: string, reply: SendReply): void {
    const round = this.rounds.get(batch);
    const send = round?.sends.get(backup);
    assert(round !== undefined && send !== undefined && send.phase !== 'waiting', `${this.position.me}: an answer of ${backup} to ${describeBatch(batch)} outside its first round`);
    if (send.phase === 'sending') {
      if (!round.hooksPassed) {
        round.hooksPassed = true;
        actions.push({ kind: 'passHooks' });
      }
      if (reply.ok && reply.status !== RsmStatus.OK && this.stillLacks(batch, backup)) {
        const previous = this.pipeline.before(batch);
        if (previous !== undefined && !previous.acked.has(backup) && this.rounds.has(previous)) {
          round.sends.set(backup, { phase: 'waiting', previous, reply });
          return;
        }
        if (this.resendAfter(actions, round, backup, previous)) return;
      }
    }
    this.finishSend(actions, round, backup, reply);
  }

  /**
   * A backup answered a first round's batch ERR, and the round of the batch before it (if any)
   * has ended: if the backup holds that one now, and still lacks this one, send it once more.
   */
  private resendAfter(actions: PrimaryAction[], round: Round, backup: string, previous: PendingBatch | undefined): boolean {
    const caughtUp = previous === undefined || !this.pipeline.includes(previous) || previous.acked.has(backup);
    if (!caughtUp || !this.stillLacks(round.batch, backup)) return false;
    round.sends.set(backup, { phase: 'resending' });
    actions.push({ kind: 'send', round: 'first', batch: round.batch, to: [{ backup, resendMs: this.firstResendMs(backup) }] });
    return true;
  }

  private stillLacks(batch: PendingBatch, backup: string): boolean {
    return !this.position.isStopped && this.pipeline.includes(batch) && !batch.acked.has(backup);
  }

  /** A backup's last answer in a first round: an acknowledgement counts for the batches before it too. */
  private finishSend(actions: PrimaryAction[], round: Round, backup: string, reply: SendReply): void {
    round.sends.delete(backup);
    if (isOk(reply)) this.acknowledge(actions, round.batch, backup);
    else if (!round.batch.acked.has(backup)) logFailure(this.position.me, round.batch, backup, reply); // else a later batch's acknowledgement covered it
    this.endRoundIfDone(actions, round);
  }

  /**
   * A first round ends once our write and every send have: if its batch still lacks an
   * acknowledgement, the pipeline stalls (step 5). Sends waiting for it go on, and the pipeline
   * pumps, or the quiesce queue's head is granted.
   */
  private endRoundIfDone(actions: PrimaryAction[], round: Round): void {
    if (round.writing || round.sends.size > 0) return;
    const batch = round.batch;
    this.rounds.delete(batch);
    if (this.position.isStopped) actions.push(answer(this.pipeline.takeWaiters(batch), BUSY_REPLY));
    else if (this.pipeline.includes(batch) && !isComplete(batch)) this.stallNow(actions, `${describeBatch(batch)} lacks an acknowledgement`);
    for (const other of [...this.rounds.values()]) {
      for (const [backup, send] of [...other.sends]) {
        if (send.phase !== 'waiting' || send.previous !== batch) continue;
        if (!this.resendAfter(actions, other, backup, batch)) this.finishSend(actions, other, backup, send.reply);
      }
    }
    this.pump(actions);
    this.grantHead(actions);
  }

  /** `backup` acknowledged `batch` (and with it every batch before it): execute what is now committed. */
  private acknowledge(actions: PrimaryAction[], batch: PendingBatch, backup: string): void {
    this.pipeline.acknowledge(batch, backup);
    this.advance(actions);
  }

  /**
   * Step 4: executes, in viewstamp order, every batch at the head of the pipeline that every
   * member holds durably (the commit rule), and answers its clients. Even in a view change that
   * began meanwhile (its synchronisation first quiesces the pipeline), executing keeps us equal
   * to the backups, and the batch is committed: the replies go.
   */
  private advance(actions: PrimaryAction[]): void {
    if (this.position.isStopped) return;
    let executed: PendingBatch | undefined;
    for (let batch = this.pipeline.takeCommitted(); batch !== undefined; batch = this.pipeline.takeCommitted()) {
      actions.push({ kind: 'execute', batch, role: 'primary', requests: this.pipeline.takeWaiters(batch) });
      executed = batch;
    }
    if (executed === undefined) return;
    this.pump(actions);
    if (this.pipeline.batches.length === 0) this.noticeCommitWhenIdle(actions, lastOf(executed).vid, executed.backups, COMMIT_IDLE_MS);
  }

  /**
   * The pipeline emptied after an execution: unless a batch is pending again by then (it carries
   * the commit point), tell the backups of view `vid` our commit point after `delayMs`. A notice
   * due as soon or sooner covers this one; a retry's longer wait gives way to a fresh notice.
   */
  private noticeCommitWhenIdle(actions: PrimaryAction[], vid: number, backups: readonly string[], delayMs: number): void {
    if (this.position.isStopped || backups.length === 0) return;
    if (this.commitDue !== undefined && this.commitDue.ms <= delayMs) return;
    this.commitDue = { vid, backups, ms: delayMs };
    this.setTimer(actions, 'commit', delayMs);
  }

  private commitTimerFired(actions: PrimaryAction[]): void {
    const p = this.position;
    const due = this.commitDue;
    this.commitDue = undefined;
    assert(due !== undefined, `${p.me}: the commit timer fired with no notice due`);
    if (p.isStopped || p.inViewChange || p.primary !== p.me || p.vidCommit !== due.vid) return;
    if (this.pipeline.batches.length > 0) return; // the pending batch carries it
    const notice = ++this.lastNotice;
    this.notices.set(notice, { vid: due.vid, backups: due.backups, unanswered: due.backups.length, failed: false });
    actions.push({ kind: 'noticeCommit', notice, vid: due.vid, backups: due.backups });
  }

  private stallNow(actions: PrimaryAction[], why: string): void {
    if (!this.pipeline.stalled) log('%s pipeline stalled: %s', this.position.me, why);
    actions.push(answer(this.pipeline.stall(), BUSY_REPLY));
    this.queueRecovery(actions);
  }

  /** Queues a recovery round unless one is queued or running. */
  private queueRecovery(actions: PrimaryAction[]): void {
    if (this.recoveryQueued || this.position.isStopped) return;
    this.holders.push({ kind: 'recovery' });
    this.recoveries++;
    this.grantHead(actions);
  }

  /** Grants the queue's head once no first round runs (step 6). */
  private grantHead(actions: PrimaryAction[]): void {
    const head = this.holders[0];
    if (head === undefined || this.granted || this.rounds.size > 0) return;
    this.granted = true;
    if (head.kind === 'task') actions.push({ kind: 'runQuiesced', task: head.task });
    else this.startRecovery(actions);
  }

  /** The head ended: the next is granted, or, with none left, the pipeline pumps. */
  private releaseHead(actions: PrimaryAction[]): void {
    if (this.holders.shift()?.kind === 'recovery') this.recoveries--;
    this.granted = false;
    this.grantHead(actions);
    this.pump(actions);
  }

  /**
   * A recovery round (granted, so the pipeline is quiesced): resend every pending batch, in
   * viewstamp order, to the backups that have not acknowledged it (a backup that did not answer
   * at all is skipped for the rest of the round), then execute what every member now holds. When
   * all of it is executed the pipeline runs again; otherwise the round is retried after
   * syncRetryMs, or when a client request comes. In a view change it does nothing: the view's
   * synchronisation settles the pending batches.
   */
  private startRecovery(actions: PrimaryAction[]): void {
    const p = this.position;
    if (p.isStopped || !this.pipeline.stalled || p.inViewChange) return this.releaseHead(actions);
    this.recovery = { batches: [...this.pipeline.batches], index: 0, unreachable: new Set(), outstanding: new Set() };
    this.recoverFrom(actions, this.recovery);
  }

  /** Sends the recovery round's current batch, or, past the last, ends the round. */
  private recoverFrom(actions: PrimaryAction[], recovery: Recovery): void {
    const p = this.position;
    for (; recovery.index < recovery.batches.length; recovery.index++) {
      if (p.isStopped || p.inViewChange) return this.endRecovery(actions);
      const batch = recovery.batches[recovery.index]!;
      const to = batch.backups.filter((backup) => !batch.acked.has(backup) && !recovery.unreachable.has(backup));
      if (to.length === 0) continue;
      for (const backup of to) recovery.outstanding.add(backup);
      actions.push({ kind: 'send', round: 'recovery', batch, to: to.map((backup) => ({ backup, resendMs: this.firstResendMs(backup) })) });
      return;
    }
    if (p.isStopped || p.inViewChange) return this.endRecovery(actions);
    this.advance(actions);
    if (this.pipeline.batches.length === 0) {
      this.pipeline.resume();
      log('%s pipeline: every pending batch executed, running again', p.me);
    } else {
      actions.push(answer(this.pipeline.takeWaiting(), BUSY_REPLY));
      // Retried even if no client request comes, so every stamped batch ends up executed
      // everywhere (or settled by a view change) and replicas do not stay batches apart.
      if (!this.timersSet.has('retry') && !p.isStopped && this.pipeline.stalled) this.setTimer(actions, 'retry', p.timing.syncRetryMs);
    }
    this.endRecovery(actions);
  }

  private recoverySent(actions: PrimaryAction[], batch: PendingBatch, backup: string, reply: SendReply): void {
    const recovery = this.recovery;
    assert(recovery !== undefined && recovery.batches[recovery.index] === batch && recovery.outstanding.has(backup), `${this.position.me}: an answer of ${backup} to ${describeBatch(batch)} outside the recovery round`);
    recovery.outstanding.delete(backup);
    if (isOk(reply)) this.acknowledge(actions, batch, backup);
    else if (!batch.acked.has(backup)) {
      if (!reply.ok) recovery.unreachable.add(backup);
      logFailure(this.position.me, batch, backup, reply);
    }
    if (recovery.outstanding.size > 0) return;
    recovery.index++;
    this.recoverFrom(actions, recovery);
  }

  private endRecovery(actions: PrimaryAction[]): void {
    this.recovery = undefined;
    this.releaseHead(actions);
  }

  private setTimer(actions: PrimaryAction[], timer: PrimaryTimer, ms: number): void {
    this.timersSet.add(timer);
    actions.push({ kind: 'setTimer', timer, ms });
  }

  private cancelTimer(actions: PrimaryAction[], timer: PrimaryTimer): void {
    if (!this.timersSet.delete(timer)) return;
    if (timer === 'commit') this.commitDue = undefined;
    actions.push({ kind: 'cancelTimer', timer });
  }

  /** When to resend an invokebatch to `backup` first: a few of its recent fastest acknowledgements, bounded. */
  private firstResendMs(backup: string): number {
    const recent = this.ackMsOf.get(backup);
    const fastest = recent === undefined || recent.length === 0 ? 0 : Math.min(...recent);
    return Math.min(INVOKE_RETRANSMIT_MS_MAX, Math.max(INVOKE_RETRANSMIT_MS, Math.ceil(RESEND_ACK_FACTOR * fastest)));
  }

  /**
   * Records one acknowledgement time of `backup`. The resend time follows the fastest of the last
   * ACK_SAMPLES, not an average: under loss a sample also holds the resends it took, and an average
   * would lengthen the interval, then the samples, then the interval again; a slow disk makes every
   * sample slow, and the minimum with them.
   */
  private noteAck(backup: string, elapsedMs: number): void {
    let recent = this.ackMsOf.get(backup);
    if (recent === undefined) {
      // Bounded: a node meets few members; should many come and go, the figures start over.
      if (this.ackMsOf.size >= ACK_TIMES_MAX) this.ackMsOf.clear();
      recent = [];
      this.ackMsOf.set(backup, recent);
    }
    recent.push(Math.max(0, elapsedMs));
    if (recent.length > ACK_SAMPLES) recent.shift();
  }
}

function answer(requests: readonly WaitingRequest[], reply: HandlerReply<Uint8Array>): PrimaryAction {
  return { kind: 'answer', requests, reply };
}

function isOk(reply: SendReply): boolean {
  return reply.ok && reply.status === RsmStatus.OK;
}

function logFailure(me: string, batch: PendingBatch, backup: string, reply: SendReply): void {
  log('%s invokebatch %s to %s failed: %s', me, describeBatch(batch), backup, reply.ok ? `status ${reply.status}` : reply.code);
}
