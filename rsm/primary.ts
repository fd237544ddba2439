/**
 * The primary's side of the request path: client invokes admitted into the pipeline, batches
 * stamped and replicated with group commit, executed in viewstamp order once every member holds
 * them, a stalled pipeline recovered. The pipeline's state and rules are the synchronous core in
 * rsm/pipeline.ts; this class runs its rounds and answers the clients it hands back.
 *
 * 1. invoke: BUSY in a view change, NOTPRIMARY off the primary, BUSY beyond the pipeline's bounds;
 *    otherwise the request waits. An idle pipeline stamps once the read that brought it has been
 *    delivered, a busy one after the rest of the turn's input (pump).
 * 2. pump: while fewer than PIPELINE_DEPTH batches are pending and as many rounds run, stamp the
 *    waiting requests into a batch at the next viewstamp and start its first round.
 * 3. firstRound: our log write (sync) and one invokebatch to each backup of the view, at once
 *    (group commit); right after the first backup's answer, the test hooks (partition 1,
 *    breakpoint 1).
 * 4. advance, after every acknowledgement and at the end of our write: execute every batch at the
 *    head that every member holds durably, in order, and answer its clients. The backups learn
 *    the new commit point (our last executed) from the next batch; if none is pending once
 *    COMMIT_IDLE_MS have passed, from a `commit` message.
 * 5. A batch that still lacks an acknowledgement once its sends ended stalls the pipeline: BUSY
 *    to the clients of every pending batch, and a recovery round (inside the invoke queue, the
 *    pipeline quiesced) resends the pending batches in order; retried after syncRetryMs until
 *    every one is executed, or a view change settles them.
 */
import { assert } from '../lib/assert.js';
import type { Timer } from '../lib/env.js';
import { logger } from '../lib/log.js';
import type { HandlerReply } from '../lib/rpc.js';
import { SerialQueue } from '../lib/serial-queue.js';
import { successor } from './invoke-rule.js';
import type { RsmBatchEvent } from './node.js';
import type { ReplicaView } from './replica-view.js';
import { describeBatch, invokeQueueRequestsMax, isComplete, lastOf, Pipeline, PIPELINE_DEPTH, type PendingBatch, type WaitingRequest } from './pipeline.js';
import { describeViewstamp, encodeInvokeReply, RsmClientStatus, RsmStatus, rsmProtocol, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';
import type { ExecuteResult } from './state-machine.js';

const log = logger('rsm');

const EMPTY = new Uint8Array(0);
export const BUSY_REPLY: HandlerReply<Uint8Array> = { status: RsmClientStatus.BUSY, result: EMPTY };
export const NOTPRIMARY_REPLY: HandlerReply<Uint8Array> = { status: RsmClientStatus.NOTPRIMARY, result: EMPTY };

function answerAll(requests: readonly WaitingRequest[], reply: HandlerReply<Uint8Array>): void {
  for (const request of requests) request.answer(reply);
}

/**
 * Retransmission of an invokebatch (see replicate). A backup acknowledges after one synced write
 * (under a millisecond on loopback, more on a slow disk), and the in-order pipeline stalls behind
 * any lost batch, so the first resend comes soon: RESEND_ACK_FACTOR times the backup's fastest
 * recent acknowledgement (noteAck), at least INVOKE_RETRANSMIT_MS. On a fast disk that is 5 ms (under
 * RPC_LOSSY=5 it doubled bench (b)'s 32-client throughput against a fixed 15 ms; lossless runs did
 * not move), and a slow disk is not flooded with copies of batches it is still writing.
 */
const INVOKE_RETRANSMIT_MS = 5;
const INVOKE_RETRANSMIT_MS_MAX = 120;
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
/** What the primary's side reads and does on the replica. */
export interface PrimaryHost extends ReplicaView {
  /** The viewstamp the next batch is stamped at (myvs), and moving it past a stamped batch. */
  readonly next: Viewstamp;
  setNext(next: Viewstamp): void;
  /** The time to stamp on a batch now: whole ms, never running backwards. */
  stampTime(): number;
  /** Tells the listeners a batch was stamped. */
  batchStamped(event: RsmBatchEvent): void;
  /** Starts the log write of `entries` (sync); resolves once durable. */
  appendLog(entries: readonly LogEntry[]): Promise<void>;
  /** Executes a committed batch taken off the head, in viewstamp order; the results in batch order. */
  executeBatch(batch: PendingBatch, role: 'primary'): ExecuteResult[];
  partition1(): void;
  breakpoint1(): void;
  fatal(error: unknown): void;
}

export class Primary {
  /**
   * Serialises the tasks that quiesce the primary's pipeline (the lab's invoke_mutex, now around
   * the pipeline rather than each request): recovery rounds, the primary's transferreq answers
   * and a view change's drain.
   */
  private readonly invokeQueue = new SerialQueue();
  /** The waiting requests and pending batches (rsm/pipeline.ts). */
  readonly pipeline: Pipeline;
  /** First rounds running (firstRound), at most PIPELINE_DEPTH, by batch. */
  private readonly rounds = new Map<PendingBatch, Promise<void>>();
  /** The last ACK_SAMPLES times (ms) from sending an invokebatch to a backup to its OK, per backup (firstResendMs). */
  private readonly ackMsOf = new Map<string, number[]>();
  /** A recovery round is queued in invokeQueue or running. */
  private recoveryQueued = false;
  /** Tasks that hold the pipeline quiesced (quiesce): no round starts meanwhile. */
  private quiescing = 0;
  /** Queues a recovery round while stalled when no client request comes to do it. */
  private pendingRetry: Timer | undefined;
  /** Runs pump after this turn's input (pumpSoon). */
  private pumpTimer: Timer | undefined;
  /** Runs pump once this read has been delivered (pumpAfterRead). */
  private pumpQueued = false;
  /** Sends the commit point to the backups once the pipeline stayed empty for COMMIT_IDLE_MS (noticeCommitWhenIdle). */
  private commitTimer: Timer | undefined;
  /** The wait commitTimer was set for: COMMIT_IDLE_MS, or syncRetryMs for a retry. */
  private commitTimerMs = 0;

  constructor(private readonly host: PrimaryHost) {
    this.pipeline = new Pipeline(invokeQueueRequestsMax(host.rpc.options.maxConcurrentHandlers));
  }

  /** Runs `task` inside the invoke queue with the pipeline quiesced (recovery rounds, transfers, a view change's drain). */
  quiesced<T>(task: () => T | Promise<T>): Promise<T> {
    return this.invokeQueue.run(() => this.quiesce(task));
  }

  /** The replica stopped: no timer fires, and every client still waiting gets BUSY. */
  stop(): void {
    this.pendingRetry?.cancel();
    this.pumpTimer?.cancel();
    this.pumpTimer = undefined;
    this.commitTimer?.cancel();
    this.commitTimer = undefined;
    answerAll(this.pipeline.takeClients(), BUSY_REPLY);
  }

  /** A view change settles the pending batches itself: no recovery round is timed any more. */
  cancelRetry(): void {
    this.pendingRetry?.cancel();
    this.pendingRetry = undefined;
  }

  /**
   * What ties the running rounds, timers and queue to the pipeline (called from the node's
   * invariants; `started`, `serving`: the replica's status):
   * - first rounds running at most PIPELINE_DEPTH (pump stops there), none before start;
   * - no commit notice timed once stopped;
   * - stalled while serving: a recovery round is queued or running, or its timer is set;
   * - waiting requests on a serving primary only while pump is due (its microtask or timer) or
   *   the pipeline is full or quiesced, so no request is stranded.
   */
  invariants(me: string, started: boolean, serving: boolean): void {
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const host = this.host;
    const pending = this.pipeline.batches;
    const stalled = this.pipeline.stalled;
    check(this.rounds.size <= PIPELINE_DEPTH, () => `${me}: ${this.rounds.size} rounds running (at most ${PIPELINE_DEPTH})`);
    if (stalled && !host.isStopped && serving) check(this.recoveryQueued || this.pendingRetry !== undefined, () => `${me}: stalled with no recovery round queued or timed`);
    if (!started) check(!stalled && this.rounds.size === 0, () => `${me}: stalled or rounds running before start()`);
    if (host.isStopped) check(this.commitTimer === undefined, () => `${me}: stopped with the commit notice timer set`);
    const waiting = this.pipeline.waitingCount;
    if (waiting > 0 && serving && host.primary === host.me) {
      check(this.pumpTimer !== undefined || this.pumpQueued || (!stalled && (this.quiescing > 0 || pending.length >= PIPELINE_DEPTH || this.rounds.size >= PIPELINE_DEPTH)), () => `${me}: ${waiting} requests waiting with ${pending.length} pending, ${this.rounds.size} rounds, quiescing ${this.quiescing}, stalled ${stalled}, pump timer ${this.pumpTimer !== undefined}, pump queued ${this.pumpQueued}`);
    }
  }

  /**
   * Client invoke on the primary: BUSY in a view change, NOTPRIMARY unless primary, BUSY when the
   * pipeline does not admit it (its bounds); otherwise the request waits for a batch (pump stamps
   * it when the pipeline has room), whose execution or stall answers it.
   */
  invoke(proc: number, request: Uint8Array): HandlerReply<Uint8Array> | Promise<HandlerReply<Uint8Array>> {
    const host = this.host;
    if (host.isStopped || host.inViewChange) return BUSY_REPLY;
    if (host.primary !== host.me) return NOTPRIMARY_REPLY;
    let answer: (reply: HandlerReply<Uint8Array>) => void = () => undefined;
    const replied = new Promise<HandlerReply<Uint8Array>>((resolve) => (answer = resolve));
    if (!this.pipeline.admit({ proc, request: request.slice(), answer })) {
      log('%s invoke: BUSY (%d requests unanswered, %d bytes waiting)', host.me, this.pipeline.unanswered(), this.pipeline.waitingBytes);
      return BUSY_REPLY;
    }
    // An idle pipeline stamps once the rest of this read is delivered (a microtask): requests
    // that came in one segment share a batch (a lock client's release and its next acquire,
    // written together, then cost one round and one fsync per replica instead of two). A busy
    // one stamps after the rest of this turn's input (a zero-delay timer runs after the pending
    // I/O): requests that arrived together on many connections then share one batch instead
    // of one small batch each, which costs CPU.
    if (this.pipeline.batches.length === 0) this.pumpAfterRead();
    else this.pumpSoon();
    return replied;
  }

  /**
   * Starts replication rounds for the waiting requests while the pipeline has room
   * (PIPELINE_DEPTH batches stamped and not executed, as many rounds running). Synchronous: it
   * stamps and launches; each round runs on its own (firstRound). In a view change every waiting
   * request gets BUSY, off the primary NOTPRIMARY; while stalled BUSY too, and a recovery round is
   * queued. While a task quiesces the pipeline, requests wait: it pumps when it is done.
   */
  private pump(): void {
    const host = this.host;
    if (this.pipeline.waitingCount === 0 || host.isStopped) return;
    if (host.inViewChange) return this.answerWaiting(BUSY_REPLY);
    if (host.primary !== host.me) return this.answerWaiting(NOTPRIMARY_REPLY);
    if (this.pipeline.stalled) {
      this.answerWaiting(BUSY_REPLY);
      return this.queueRecovery();
    }
    if (this.quiescing > 0) return;
    assert(host.next.vid === host.vidCommit, `primary of view ${host.vidCommit} stamping in view ${host.next.vid}`);
    while (this.pipeline.canStamp && this.rounds.size < PIPELINE_DEPTH) {
      const batch = this.stampBatch();
      const round: Promise<void> = this.firstRound(batch)
        .catch((error: unknown) => host.fatal(error))
        .finally(() => {
          this.rounds.delete(batch);
          this.pump();
        });
      this.rounds.set(batch, round);
    }
  }

  /** Runs pump once the caller's synchronous work (the delivery of one read) is done. */
  private pumpAfterRead(): void {
    const host = this.host;
    if (this.pumpQueued || host.isStopped) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  /** Runs pump once the I/O of this turn has been read (at most one such timer at a time). */
  private pumpSoon(): void {
    const host = this.host;
    if (this.pumpTimer !== undefined || host.isStopped) return;
    this.pumpTimer = host.clock.setTimer(0, () => {
      this.pumpTimer = undefined;
      this.pump();
    });
  }

  /** Answers every waiting client invoke with `reply` (a view change, a stall, a stop). */
  private answerWaiting(reply: HandlerReply<Uint8Array>): void {
    answerAll(this.pipeline.takeWaiting(), reply);
  }

  /**
   * The first round of a batch the primary just stamped (pump), one of up to PIPELINE_DEPTH
   * running at once:
   * 1. Group commit: append the batch to our log (one write, sync) and send it to every backup of
   *    the view (one invokebatch each) at once; right after the first backup's answer, pass
   *    partition1() and breakpoint1() (LAB.md §4.6).
   * 2. Each acknowledgement, and the end of our write, lets `advance` execute every batch at the
   *    head of the pipeline that every member now holds durably, in viewstamp order, and answer
   *    its clients OK with the service's status and reply.
   * 3. If, once every send has ended, some backup still lacks the batch: the pipeline stalls
   *    (BUSY to the clients of every pending batch; a recovery round resends them in order).
   */
  private async firstRound(batch: PendingBatch): Promise<void> {
    const host = this.host;
    // Group commit: our fsync runs while the backups do theirs. Nothing is answered before both
    // are done, so no client sees OK for a request some member could lose in a crash. A backup
    // may hold the batch before our log does; a primary restarted inside its view therefore
    // synchronises it again rather than stamping on from its own log (syncView). The sends go
    // first: the backups' path (a hop, their write, a hop back) is the longer one.
    const replicated = this.replicate(batch, true);
    const written = host.appendLog(batch.entries).then(
      () => {
        this.pipeline.markDurable(batch);
        this.advance();
      },
      () => undefined, // fatal already (the write queue)
    );
    await Promise.all([written, replicated]);
    if (host.isStopped) return this.answerBatch(batch, () => BUSY_REPLY);
    if (this.pipeline.includes(batch) && !isComplete(batch)) this.stall(`${describeBatch(batch)} lacks an acknowledgement`);
  }

  /**
   * Executes, in viewstamp order, every batch at the head of the pipeline that every member holds
   * durably (the commit rule), and answers its clients. Even in a view change that began
   * meanwhile (its synchronisation first quiesces the pipeline), executing keeps us equal to the
   * backups, and the batch is committed: the replies go.
   */
  private advance(): void {
    const host = this.host;
    let executed: PendingBatch | undefined;
    for (let batch = this.nextCommitted(); batch !== undefined; batch = this.nextCommitted()) {
      const results = host.executeBatch(batch, 'primary');
      this.answerBatch(batch, (i) => ({ status: RsmClientStatus.OK, result: encodeInvokeReply(results[i]!) }));
      executed = batch;
    }
    if (executed === undefined) return;
    this.pump();
    if (this.pipeline.batches.length === 0) this.noticeCommitWhenIdle(lastOf(executed).vid, executed.backups);
  }

  /**
   * The pipeline emptied after an execution: unless a batch is pending again by then (it carries
   * the commit point), tell the backups of view `vid` our commit point in COMMIT_IDLE_MS, so that
   * they execute what we answered. One call each; if any fails (lost, or refused by a backup in a
   * view change), the notice is sent again after syncRetryMs while we stay idle in the view, and
   * otherwise the next batch or a view change (which executes everything a backup holds) makes
   * it good.
   */
  private noticeCommitWhenIdle(vid: number, backups: readonly string[], delayMs = COMMIT_IDLE_MS): void {
    const host = this.host;
    if (host.isStopped || backups.length === 0) return;
    if (this.commitTimer !== undefined) {
      if (this.commitTimerMs <= delayMs) return; // due as soon or sooner; it sends whatever is executed then
      this.commitTimer.cancel(); // a retry's longer wait gives way to a fresh notice
    }
    this.commitTimerMs = delayMs;
    this.commitTimer = host.clock.setTimer(delayMs, () => {
      this.commitTimer = undefined;
      if (host.isStopped || host.inViewChange || host.primary !== host.me || host.vidCommit !== vid) return;
      if (this.pipeline.batches.length > 0) return; // the pending batch carries it
      const args = { vid, committed: host.last };
      let unanswered = backups.length;
      let failed = false;
      for (const backup of backups) {
        void host.rpc.call(host.addressOf(backup), rsmProtocol.commit, args, { timeoutMs: host.timing.invokeTimeoutMs }).then((reply) => {
          if (!reply.ok || reply.status !== RsmStatus.OK) {
            log('%s commit %s to %s: %s', host.me, describeViewstamp(args.committed), backup, reply.ok ? `status ${reply.status}` : reply.error.code);
            failed = true;
          }
          // With no batch coming, nothing else tells a backup that missed it what is committed:
          // it would stay behind until the next request. Try again, to every backup, after
          // syncRetryMs, while this primary stays idle in the view (the timer's checks).
          if (--unanswered === 0 && failed) this.noticeCommitWhenIdle(vid, backups, host.timing.syncRetryMs);
        });
      }
    });
  }

  /** The committed head batch, taken off the pipeline to execute (none once stopped). */
  private nextCommitted(): PendingBatch | undefined {
    const host = this.host;
    return host.isStopped ? undefined : this.pipeline.takeCommitted();
  }

  /**
   * Some pending batch lacks an acknowledgement once its sends ended: stop stamping, BUSY to the
   * clients of every pending batch (they retry; the service recognises the retries), and queue a
   * recovery round. The pipeline never runs past a gap, so replicas never diverge inside a view.
   */
  stall(why: string): void {
    const host = this.host;
    if (!this.pipeline.stalled) log('%s pipeline stalled: %s', host.me, why);
    answerAll(this.pipeline.stall(), BUSY_REPLY);
    this.queueRecovery();
  }

  /** Queues a recovery round (recover) unless one is queued or running. */
  private queueRecovery(): void {
    const host = this.host;
    if (this.recoveryQueued || host.isStopped) return;
    this.recoveryQueued = true;
    this.invokeQueue
      .run(() =>
        this.quiesce(async () => {
          try {
            await this.recover();
          } finally {
            this.recoveryQueued = false;
          }
        }),
      )
      .catch((error: unknown) => host.fatal(error));
  }

  /**
   * A recovery round (inside the invoke queue, with the pipeline quiesced): resend every pending
   * batch, in viewstamp order, to the backups that have not acknowledged it (a backup that did not
   * answer at all is skipped for the rest of the round), then execute what every member now holds.
   * When all of it is executed the pipeline runs again; otherwise the round is retried after
   * syncRetryMs, or when a client request comes. In a view change it does nothing: syncView
   * settles the pending batches.
   */
  private async recover(): Promise<void> {
    const host = this.host;
    if (host.isStopped || !this.pipeline.stalled || host.inViewChange) return;
    const unreachable = new Set<string>();
    for (const batch of [...this.pipeline.batches]) {
      await this.replicate(batch, false, unreachable);
      if (host.isStopped || host.inViewChange) return;
    }
    this.advance();
    if (this.pipeline.batches.length === 0) {
      this.pipeline.resume();
      log('%s pipeline: every pending batch executed, running again', host.me);
      return;
    }
    this.answerWaiting(BUSY_REPLY);
    this.schedulePendingRetry();
  }

  /**
   * Runs `task` with the pipeline quiesced: no new round starts (pump waits), and the task starts
   * once every running round has ended, so no batch is half-way (its write and sends done). Called
   * inside the invoke queue, so quiescing tasks run one at a time. Pumps afterwards.
   */
  private async quiesce<T>(task: () => T | Promise<T>): Promise<T> {
    this.quiescing++;
    try {
      while (this.rounds.size > 0) await Promise.all([...this.rounds.values()]);
      return await task();
    } finally {
      this.quiescing--;
      this.pump();
    }
  }

  /** Stamps the next batch of waiting requests at myvs and moves myvs past it (pump). */
  private stampBatch(): PendingBatch {
    const host = this.host;
    const first = host.next;
    const backups = host.config.members(first.vid).filter((member) => member !== host.me);
    const batch = this.pipeline.stamp(first, host.stampTime(), backups);
    host.setNext(successor(lastOf(batch)));
    let bytes = 0;
    for (const entry of batch.entries) bytes += entry.request.length;
    const behind = this.pipeline.batches.length - 1;
    host.batchStamped({ first, size: batch.entries.length, bytes, behind });
    return batch;
  }

  /** Answers the clients of `batch` (once: a later round that completes it answers nobody). */
  answerBatch(batch: PendingBatch, replyOf: (index: number) => HandlerReply<Uint8Array>): void {
    this.pipeline.takeWaiters(batch).forEach((request, i) => request.answer(replyOf(i)));
  }

  /**
   * While the pipeline is stalled, a recovery round is retried after syncRetryMs even if no client
   * request comes, so every stamped batch ends up executed everywhere (or settled by a view
   * change) and replicas do not stay batches apart.
   */
  private schedulePendingRetry(): void {
    const host = this.host;
    if (this.pendingRetry !== undefined || host.isStopped || !this.pipeline.stalled) return;
    this.pendingRetry = host.clock.setTimer(host.timing.syncRetryMs, () => {
      this.pendingRetry = undefined;
      if (this.pipeline.stalled) this.queueRecovery();
    });
  }

  /**
   * Sends `batch` to every backup of its view that has not acknowledged it (and is not in
   * `unreachable`), in parallel, one invokebatch each. An acknowledgement counts for the batches
   * before it too (Pipeline.acknowledge). In a first round, a backup's ERR may mean the batch
   * overtook the one before it (a retransmission reordered them): once that one's first round has
   * ended with the backup's acknowledgement, the batch is sent once more. A backup that did not
   * answer is added to `unreachable`.
   */
  private async replicate(batch: PendingBatch, firstTime: boolean, unreachable?: Set<string>): Promise<void> {
    const host = this.host;
    const backups = batch.backups.filter((member) => !batch.acked.has(member) && !(unreachable?.has(member) ?? false));
    let hooksPassed = !firstTime;
    const passHooks = (): void => {
      if (hooksPassed) return;
      hooksPassed = true;
      host.partition1();
      host.breakpoint1();
    };
    if (backups.length === 0) return passHooks();
    // The commit point travels with the batch: every member holds what we executed.
    const args = { entries: batch.entries.map(({ vs, timeMs, proc, request }) => ({ vs, timeMs, proc, req: request })), committed: host.last };
    // Every client of the batch waits on this call, so a lost or delayed message is retried soon
    // (a backup answers after one synced write), not after the endpoint's 50 ms.
    const send = async (backup: string) => {
      const sentAt = host.clock.now();
      const reply = await host.rpc.call(host.addressOf(backup), rsmProtocol.invokebatch, args, {
        timeoutMs: host.timing.invokeTimeoutMs,
        retransmitMs: this.firstResendMs(backup),
        retransmitMsMax: INVOKE_RETRANSMIT_MS_MAX,
      });
      if (reply.ok && reply.status === RsmStatus.OK) this.noteAck(backup, host.clock.now() - sentAt);
      return reply;
    };
    const stillLacks = (backup: string): boolean => !host.isStopped && this.pipeline.includes(batch) && !batch.acked.has(backup);
    await Promise.all(
      backups.map(async (backup) => {
        let reply = await send(backup);
        passHooks();
        if (firstTime && reply.ok && reply.status !== RsmStatus.OK && stillLacks(backup)) {
          const previous = this.pipeline.before(batch);
          if (previous !== undefined && !previous.acked.has(backup)) await this.rounds.get(previous);
          const caughtUp = previous === undefined || !this.pipeline.includes(previous) || previous.acked.has(backup);
          if (caughtUp && stillLacks(backup)) reply = await send(backup);
        }
        if (reply.ok && reply.status === RsmStatus.OK) return this.acknowledge(batch, backup);
        if (batch.acked.has(backup)) return; // a later batch's acknowledgement covered it
        if (!reply.ok) unreachable?.add(backup);
        log('%s invokebatch %s to %s failed: %s', host.me, describeBatch(batch), backup, reply.ok ? `status ${reply.status}` : reply.error.code);
      }),
    );
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

  /** `backup` acknowledged `batch` (and with it every batch before it): execute what is now committed. */
  private acknowledge(batch: PendingBatch, backup: string): void {
    this.pipeline.acknowledge(batch, backup);
    this.advance();
  }
}
