/**
 * The primary's request pipeline as a synchronous core: the client invokes waiting for a batch,
 * and the batches stamped and not executed yet (pending), oldest first. It does no I/O, reads no
 * clock and never awaits; it decides, and its host (RsmNode) acts:
 *
 * 1. `admit` a client invoke, or refuse it (the caller answers BUSY) when the admitted and
 *    unanswered invokes or the waiting bytes are at their bound.
 * 2. While `canStamp`, `stamp` the next batch: the waiting requests, up to the batch bounds, get
 *    consecutive viewstamps from the one the host gives, and the batch is pending. The host logs
 *    it and sends it to each of its backups.
 * 3. Report each outcome: `markDurable` when our own log write of a batch is durable,
 *    `acknowledge` when a backup acknowledged it (which covers every batch before it: a backup
 *    takes batches in order), `forget` when a backup installs our state (it must get every
 *    pending batch again).
 * 4. After each report, `takeCommitted` until it returns nothing: each batch it hands over is
 *    held durably by every member of its view (the commit rule), and the host executes it and
 *    answers its clients, in viewstamp order.
 * 5. A batch that lacks an acknowledgement once its sends ended: `stall` stops stamping and hands
 *    over every client (the host answers them BUSY; they retry). A recovery round resends the
 *    pending batches and `resume`s once they are executed. A view change takes each pending batch
 *    with `takeHead` and executes it from the log without answering anybody.
 *
 * Clients are handed back to the host to answer (`takeWaiting`, `takeWaiters`, `takeClients`),
 * each exactly once. `invariants()` holds after every call.
 */
import { assert } from '../lib/assert.js';
import type { HandlerReply } from '../lib/rpc.js';
import { batchProblem, successor } from './invoke-rule.js';
import { BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, describeViewstamp, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';

/**
 * Batches stamped and not yet executed, at most. Two keep every replica's disk busy (one batch's
 * fsync while the next is sent and queued behind it); more mostly split the same requests into
 * smaller batches.
 */
export const PIPELINE_DEPTH = 4;

/**
 * Client invokes admitted on the primary and not answered yet (waiting, or in a pending batch), at
 * most; and bytes of the waiting ones, at most (beyond either bound: BUSY, and the client backs
 * off). Memory stays bounded while the backups or the disk are slow. Each admitted invoke is a
 * running RPC handler, and the endpoint refuses every request (heartbeats, Paxos, replica traffic
 * included) beyond its maxConcurrentHandlers, so the requests bound is also at most half of
 * those (500 by default): the other half stays free for the protocol.
 */
export const INVOKE_QUEUE_REQUESTS_MAX = 4096;
export const INVOKE_QUEUE_BYTES_MAX = 32 * 1024 * 1024;

/** The admission bound for an endpoint (see INVOKE_QUEUE_REQUESTS_MAX). */
export function invokeQueueRequestsMax(maxConcurrentHandlers: number): number {
  return Math.max(1, Math.min(INVOKE_QUEUE_REQUESTS_MAX, Math.floor(maxConcurrentHandlers / 2)));
}

/** A client invoke on the primary, waiting for a batch or in a pending one. */
export interface WaitingRequest {
  readonly proc: number;
  readonly request: Uint8Array;
  /** Called by the host, once, with the reply (the core never calls it). */
  readonly answer: (reply: HandlerReply<Uint8Array>) => void;
}

/**
 * A batch stamped and not executed yet, because some member does not hold it durably yet:
 * consecutive viewstamps of one view. It is the unit of replication: logged in one write, sent in
 * one invokebatch, executed whole.
 */
export interface PendingBatch {
  readonly entries: readonly LogEntry[];
  /** The other members of its view (fixed when it is stamped: a view's members never change). */
  readonly backups: readonly string[];
  /** Backups that acknowledged it (or a batch after it). */
  readonly acked: Set<string>;
  /** Our own log write of it is durable. */
  durableHere: boolean;
  /** Its clients, until they are handed to the host to answer (all at once). */
  waiters: WaitingRequest[];
}

export function firstOf(batch: PendingBatch): Viewstamp {
  return batch.entries[0]!.vs;
}

export function lastOf(batch: PendingBatch): Viewstamp {
  return batch.entries[batch.entries.length - 1]!.vs;
}

export function describeBatch(batch: PendingBatch): string {
  const first = firstOf(batch);
  return batch.entries.length === 1 ? describeViewstamp(first) : `${describeViewstamp(first)}..${lastOf(batch).seqno}`;
}

/** Every member of its view holds the batch durably: our log and every backup's acknowledgement. */
export function isComplete(batch: PendingBatch): boolean {
  return batch.durableHere && batch.backups.every((backup) => batch.acked.has(backup));
}

export class Pipeline {
  private waiting: WaitingRequest[] = [];
  private bytesWaiting = 0;
  private pending: PendingBatch[] = [];
  private isStalled = false;

  constructor(
    private readonly requestsMax: number,
    private readonly bytesMax = INVOKE_QUEUE_BYTES_MAX,
  ) {
    assert(Number.isSafeInteger(requestsMax) && requestsMax >= 1, `pipeline admission bound ${requestsMax}`);
  }

  /** The pending batches, oldest first. */
  get batches(): readonly PendingBatch[] {
    return this.pending;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  get waitingBytes(): number {
    return this.bytesWaiting;
  }

  /** A batch lacked an acknowledgement: nothing is stamped until a recovery round resumes. */
  get stalled(): boolean {
    return this.isStalled;
  }

  /** Client invokes admitted and not answered yet: waiting, or in a pending batch. */
  unanswered(): number {
    let count = this.waiting.length;
    for (const batch of this.pending) count += batch.waiters.length;
    return count;
  }

  /** Admits a client invoke to wait for a batch; false when a bound is reached (answer BUSY). */
  admit(request: WaitingRequest): boolean {
    if (this.unanswered() >= this.requestsMax || this.bytesWaiting + request.request.length > this.bytesMax) return false;
    this.waiting.push(request);
    this.bytesWaiting += request.request.length;
    return true;
  }

  /** Requests are waiting, the pipeline has room and is not stalled. */
  get canStamp(): boolean {
    return this.waiting.length > 0 && this.pending.length < PIPELINE_DEPTH && !this.isStalled;
  }

  /**
   * Stamps the next batch from the waiting requests (at most BATCH_REQUESTS_MAX of them and
   * BATCH_BYTES_MAX bytes, one even if larger), with consecutive viewstamps from `first`, all at
   * `timeMs`, and makes it pending. `first` must follow the last pending batch (or be the host's
   * next viewstamp when none is pending); the host's next is then successor(lastOf(batch)).
   */
  stamp(first: Viewstamp, timeMs: number, backups: readonly string[]): PendingBatch {
    assert(this.canStamp, `stamping with ${this.waiting.length} waiting, ${this.pending.length} pending, stalled ${this.isStalled}`);
    const previous = this.pending[this.pending.length - 1];
    if (previous !== undefined) {
      const expected = successor(lastOf(previous));
      assert(first.vid === expected.vid && first.seqno === expected.seqno, `stamping at ${describeViewstamp(first)} after ${describeBatch(previous)}`);
    }
    const waiters: WaitingRequest[] = [];
    let bytes = 0;
    for (const request of this.waiting) {
      if (waiters.length >= BATCH_REQUESTS_MAX) break;
      if (waiters.length > 0 && bytes + request.request.length > BATCH_BYTES_MAX) break;
      waiters.push(request);
      bytes += request.request.length;
    }
    this.waiting = this.waiting.slice(waiters.length);
    this.bytesWaiting -= bytes;
    const entries: LogEntry[] = [];
    let vs = first;
    for (const request of waiters) {
      entries.push({ vs, timeMs, proc: request.proc, request: request.request });
      vs = successor(vs);
    }
    const batch: PendingBatch = { entries, backups: [...backups], acked: new Set(), durableHere: false, waiters };
    this.pending.push(batch);
    return batch;
  }

  /** Whether `batch` is still pending (not executed, nor taken by a view change). */
  includes(batch: PendingBatch): boolean {
    return this.pending.includes(batch);
  }

  /** The pending batch right before `batch`, if any. */
  before(batch: PendingBatch): PendingBatch | undefined {
    const index = this.pending.indexOf(batch);
    return index > 0 ? this.pending[index - 1] : undefined;
  }

  /** Our own log write of `batch` is durable. */
  markDurable(batch: PendingBatch): void {
    batch.durableHere = true;
  }

  /**
   * `backup` acknowledged `batch`: it holds it durably, and with it every batch before it (a
   * backup executes only the batch that follows its last, and acknowledges it once its log write,
   * queued after the earlier ones, is durable). Nothing for a batch no longer pending.
   */
  acknowledge(batch: PendingBatch, backup: string): void {
    const index = this.pending.indexOf(batch);
    for (let i = 0; i <= index; i++) this.pending[i]!.acked.add(backup);
  }

  /** `backup` installs our state, dropping what it held beyond it: its acknowledgements no longer count. */
  forget(backup: string): void {
    for (const batch of this.pending) batch.acked.delete(backup);
  }

  /** The head batch if every member holds it durably (the host executes it next), taken off the pipeline. */
  takeCommitted(): PendingBatch | undefined {
    const head = this.pending[0];
    if (head === undefined || !isComplete(head)) return undefined;
    return this.pending.shift();
  }

  /** The head batch, committed or not (a view change executes it from the log). */
  takeHead(): PendingBatch | undefined {
    return this.pending.shift();
  }

  /** The waiting requests, handed over to be answered. */
  takeWaiting(): WaitingRequest[] {
    const waiting = this.waiting;
    this.waiting = [];
    this.bytesWaiting = 0;
    return waiting;
  }

  /** The clients of `batch`, handed over to be answered (none once they were). */
  takeWaiters(batch: PendingBatch): WaitingRequest[] {
    const waiters = batch.waiters;
    batch.waiters = [];
    return waiters;
  }

  /** Every unanswered client: of the pending batches (oldest first), then the waiting ones. */
  takeClients(): WaitingRequest[] {
    const clients: WaitingRequest[] = [];
    for (const batch of this.pending) clients.push(...this.takeWaiters(batch));
    clients.push(...this.takeWaiting());
    return clients;
  }

  /** A batch lacks an acknowledgement: stop stamping; every client is handed over (answer BUSY). */
  stall(): WaitingRequest[] {
    this.isStalled = true;
    return this.takeClients();
  }

  /** Stamping may go on: the pending batches were executed (a recovery round) or settled (a view change). */
  resume(): void {
    this.isStalled = false;
  }

  /**
   * The pipeline's own rules, given the host's last executed viewstamp and its next one to stamp:
   * at most PIPELINE_DEPTH pending batches, each well formed and stamped at one time, consecutive
   * from `last` without a gap, all of one view, `next` right after the last; a later batch's
   * acknowledgement counts for the ones before it; a batch's clients are all there or all
   * answered; the admission bounds hold and the waiting bytes add up. `who` starts each message.
   */
  invariants(last: Viewstamp, next: Viewstamp, who = 'pipeline invariants'): void {
    // The messages are built only when a check fails: this runs after every simulated event.
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const me = who;
    const vs = describeViewstamp;
    const follows = (after: Viewstamp, prev: Viewstamp): boolean =>
      after.vid === prev.vid ? after.seqno === prev.seqno + 1 : after.vid > prev.vid && after.seqno === 1;
    const pending = this.pending;
    check(pending.length <= PIPELINE_DEPTH, () => `${me}: ${pending.length} pending batches (at most ${PIPELINE_DEPTH})`);
    let previousEnd = last;
    pending.forEach((batch, i) => {
      const entries = batch.entries;
      const problem = batchProblem(entries.map((entry) => ({ vs: entry.vs, req: entry.request })));
      check(problem === undefined, () => `${me}: pending batch malformed: ${problem}`);
      const span = describeBatch(batch);
      const timeMs = entries[0]!.timeMs;
      check(entries.every((entry) => entry.timeMs === timeMs), () => `${me}: pending batch ${span} stamped at several times`);
      const after = previousEnd;
      check(follows(firstOf(batch), after), () => `${me}: pending batch ${span} does not follow ${vs(after)} (the last executed or the batch before it)`);
      check(firstOf(batch).vid === firstOf(pending[0]!).vid, () => `${me}: pending batches of several views (${describeBatch(pending[0]!)}, ${span})`);
      for (const backup of batch.acked) check(batch.backups.includes(backup), () => `${me}: pending batch ${span} acknowledged by ${backup}, not one of its backups [${batch.backups.join(' ')}]`);
      check(batch.waiters.length === 0 || batch.waiters.length === entries.length, () => `${me}: pending batch ${span} of ${entries.length} entries has ${batch.waiters.length} waiting clients`);
      if (i > 0) {
        for (const backup of batch.acked) check(pending[i - 1]!.acked.has(backup), () => `${me}: ${backup} acknowledged ${span} but not the batch before it`);
      }
      previousEnd = lastOf(batch);
    });
    if (pending.length > 0) check(follows(next, previousEnd) && next.vid === previousEnd.vid, () => `${me}: next ${vs(next)} is not right after the last pending batch (ending at ${vs(previousEnd)})`);
    let bytes = 0;
    for (const request of this.waiting) bytes += request.request.length;
    check(bytes === this.bytesWaiting, () => `${me}: waitingBytes ${this.bytesWaiting}, but the ${this.waiting.length} waiting requests hold ${bytes}`);
    check(this.unanswered() <= this.requestsMax && this.bytesWaiting <= this.bytesMax, () => `${me}: ${this.unanswered()} requests unanswered (bound ${this.requestsMax}) and ${this.bytesWaiting} bytes waiting (bound ${this.bytesMax})`);
  }
}
