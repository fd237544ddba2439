/**
 * The thin async host of the primary's core (rsm/primary.ts): it turns client invokes, log
 * writes, RPC outcomes, timers and the tasks that need the pipeline quiesced into the core's
 * events, and carries out the actions the core returns. RsmNode serves the request path through
 * it. Its obligations:
 *
 * 1. Carry out a step's actions in order, and all of them before the next event is fed: an event
 *    that arrives meanwhile (an invoke from a listener of an execution, say) waits behind them.
 *    So an `execute` has moved our commit point before a `send` or `noticeCommit` after it reads
 *    it, and a batch is sent before its own log write starts (the longer path first).
 * 2. Feed every outcome back as exactly one event: `written` once the log write of an
 *    `appendLog` is durable or has failed (a failed write is already fatal: the write queue);
 *    `sent` once per backup of a `send`, with the time it took; `noticed` once per backup of a
 *    `noticeCommit`; `quiesceEnded` once the task of a `runQuiesced` has settled, after its
 *    caller has been given the result.
 * 3. Keep one timer per kind on the injected clock: `setTimer` replaces it, `cancelTimer` and a
 *    stop cancel it; each fires `timerFired` at most once. `pumpAfterRead` feeds `pumpDue` on a
 *    microtask, once the delivery of the current read is done.
 * 4. Answer every client through its WaitingRequest, once, with the reply the core gives (for an
 *    `execute` as the primary: OK with the service's status and result, in entry order).
 * 5. A throw while carrying out an action or feeding an event (the core's own assertion) is a
 *    bug: it is passed to `fatal`, never out of an RPC handler or a promise callback.
 * 6. Check `invariants()` after every event when asked to (the simulator and the tests do).
 */
import { assert } from '../lib/assert.js';
import type { Timer } from '../lib/env.js';
import { logger } from '../lib/log.js';
import type { HandlerReply } from '../lib/rpc.js';
import type { RsmBatchEvent } from './node.js';
import { EventQueue, feedOutcome } from './outcome.js';
import { invokeQueueRequestsMax, type PendingBatch, type Pipeline } from './pipeline.js';
import { BUSY_REPLY, Primary, INVOKE_RETRANSMIT_MS_MAX, TIMERS, type PrimaryAction, type PrimaryPosition, type PrimaryTimer, type QuiesceTask, type SendReply, type SendRound } from './primary.js';
import { describeViewstamp, encodeInvokeReply, RsmClientStatus, RsmStatus, rsmProtocol, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';
import type { ReplicaView } from './replica-view.js';
import type { ExecuteResult } from './state-machine.js';

const log = logger('rsm');

/** What carrying out the primary core's actions takes from the replica, beyond its position. */
export interface PrimaryEffects extends ReplicaView, PrimaryPosition {
  readonly config: ReplicaView['config'];
  readonly timing: ReplicaView['timing'];
  /** Moves the viewstamp the next batch is stamped at (myvs). */
  setNext(next: Viewstamp): void;
  /** Tells the listeners a batch was stamped. */
  batchStamped(event: RsmBatchEvent): void;
  /** Starts the log write of `entries` (sync); resolves once durable. */
  appendLog(entries: readonly LogEntry[]): Promise<void>;
  /** Executes a batch taken off the pipeline, in viewstamp order; the results in batch order. */
  executeBatch(batch: PendingBatch, role: 'primary' | 'backup'): ExecuteResult[];
  partition1(): void;
  breakpoint1(): void;
  fatal(error: unknown): void;
}

type Settle<T> = { resolve(value: T): void; reject(error: unknown): void };

interface Task {
  readonly run: () => unknown;
  readonly settle: Settle<unknown>;
}

export class PrimaryHost {
  readonly core: Primary;
  private readonly timers = new Map<PrimaryTimer, Timer>();
  private lastTask: QuiesceTask = 0;
  private readonly tasks = new Map<QuiesceTask, Task>();
  /** The events to feed, in order (obligation 1). */
  private readonly queue: EventQueue<PrimaryAction>;

  /** `checkInvariants`: call the core's invariants() after every event (the simulator and tests). */
  constructor(
    private readonly effects: PrimaryEffects,
    checkInvariants = false,
  ) {
    this.core = new Primary(effects, invokeQueueRequestsMax(effects.rpc.options.maxConcurrentHandlers));
    this.queue = new EventQueue(
      (action) => this.carryOut(action),
      () => {
        if (checkInvariants) this.core.invariants();
      },
    );
  }

  /** The waiting requests and pending batches (read only: the core changes them). */
  get pipeline(): Pipeline {
    return this.core.pipeline;
  }

  /** A client invoke on the primary: resolves to its reply (BUSY, NOTPRIMARY, or OK once committed and executed). */
  invoke(proc: number, request: Uint8Array): Promise<HandlerReply<Uint8Array>> {
    return new Promise((resolve) => {
      // The request is copied: the core keeps it past this read, whose buffer is reused.
      this.step(() => this.core.invoked({ proc, request: request.slice(), answer: resolve }));
    });
  }

  /** Runs `task` with the pipeline quiesced, once every quiesced task before it has ended (a recovery round, a transfer, a view change's drain). */
  quiesced<T>(task: () => T | Promise<T>): Promise<T> {
    const id = ++this.lastTask;
    return new Promise<T>((resolve, reject) => {
      this.tasks.set(id, { run: task, settle: { resolve: resolve as (value: unknown) => void, reject } });
      this.step(() => this.core.quiesce(id));
    });
  }

  /** Some pending batch lacks an acknowledgement, or a backup will install our state. */
  stall(why: string): void {
    this.step(() => this.core.stall(why));
  }

  /** `backup` installs our state: its acknowledgements of the pending batches no longer count. */
  forget(backup: string): void {
    this.step(() => this.core.forget(backup));
  }

  /** A view change takes every pending batch (the pipeline quiesced): executed from our log, nobody answered OK. */
  settle(): void {
    this.step(() => this.core.settle());
  }

  /** The replica stopped: no timer fires, and every client still waiting gets BUSY. */
  stop(): void {
    this.step(() => this.core.stop());
  }

  invariants(): void {
    this.core.invariants();
    if (this.queue.draining) return;
    // The messages are built only when a check fails: this runs after every simulated event.
    const core = this.core;
    for (const timer of TIMERS) {
      if (this.timers.has(timer) !== core.timers.has(timer)) assert(false, `${this.effects.me}: the ${timer} timer is ${this.timers.has(timer) ? '' : 'not '}set here, ${core.timers.has(timer) ? '' : 'not '}in the core`);
    }
    if (this.tasks.size !== core.tasksQueued) assert(false, `${this.effects.me}: ${this.tasks.size} quiesced tasks here, ${core.tasksQueued} in the core`);
  }

  /** Feeds `event` (after any queued before it) and carries out its actions (obligation 1); a throw goes to fatal (obligation 5). */
  private step(event: () => PrimaryAction[]): void {
    try {
      this.queue.feed(event);
    } catch (error) {
      this.effects.fatal(error);
    }
  }

  private carryOut(action: PrimaryAction): void {
    const effects = this.effects;
    switch (action.kind) {
      case 'answer':
        for (const request of action.requests) request.answer(action.reply);
        return;
      case 'setNext':
        return effects.setNext(action.next);
      case 'stamped':
        return effects.batchStamped(action.event);
      case 'send':
        return this.send(action.round, action.batch, action.to);
      case 'appendLog': {
        const batch = action.batch;
        feedOutcome(
          () => effects.appendLog(batch.entries),
          () => this.step(() => this.core.written(batch, true)),
          () => this.step(() => this.core.written(batch, false)), // fatal already (the write queue)
        );
        return;
      }
      case 'passHooks':
        effects.partition1();
        effects.breakpoint1();
        return;
      case 'execute': {
        let results: ExecuteResult[];
        try {
          results = effects.executeBatch(action.batch, action.role);
        } catch (error) {
          // A bug (obligation 5), and fatal; its clients still get an answer (obligation 4).
          for (const request of action.requests) request.answer(BUSY_REPLY);
          throw error;
        }
        action.requests.forEach((request, i) => request.answer({ status: RsmClientStatus.OK, result: encodeInvokeReply(results[i]!) }));
        return;
      }
      case 'pumpAfterRead':
        queueMicrotask(() => this.step(() => this.core.pumpDue()));
        return;
      case 'setTimer': {
        const timer = action.timer;
        this.timers.get(timer)?.cancel();
        this.timers.set(
          timer,
          effects.clock.setTimer(action.ms, () => {
            this.timers.delete(timer);
            this.step(() => this.core.timerFired(timer));
          }),
        );
        return;
      }
      case 'cancelTimer':
        this.timers.get(action.timer)?.cancel();
        this.timers.delete(action.timer);
        return;
      case 'noticeCommit':
        return this.noticeCommit(action.notice, action.vid, action.backups);
      case 'runQuiesced':
        return this.runQuiesced(action.task);
    }
  }

  /**
   * One invokebatch per backup, the commit point read now (obligation 1). Every client of the
   * batch waits on this call, so a lost or delayed message is retried soon (a backup answers after
   * one synced write), not after the endpoint's 50 ms.
   */
  private send(round: SendRound, batch: PendingBatch, to: readonly { readonly backup: string; readonly resendMs: number }[]): void {
    const effects = this.effects;
    const args = { entries: batch.entries.map(({ vs, timeMs, proc, request }) => ({ vs, timeMs, proc, req: request })), committed: effects.last };
    for (const { backup, resendMs } of to) {
      const sentAt = effects.clock.now();
      feedOutcome(
        () => effects.rpc.call(effects.addressOf(backup), rsmProtocol.invokebatch, args, { timeoutMs: effects.timing.invokeTimeoutMs, retransmitMs: resendMs, retransmitMsMax: INVOKE_RETRANSMIT_MS_MAX }),
        (reply) => {
          const outcome: SendReply = reply.ok ? { ok: true, status: reply.status } : { ok: false, code: reply.error.code };
          this.step(() => this.core.sent(round, batch, backup, outcome, effects.clock.now() - sentAt));
        },
        (error) => effects.fatal(error),
      );
    }
  }

  private noticeCommit(notice: number, vid: number, backups: readonly string[]): void {
    const effects = this.effects;
    const args = { vid, committed: effects.last };
    for (const backup of backups) {
      feedOutcome(
        () => effects.rpc.call(effects.addressOf(backup), rsmProtocol.commit, args, { timeoutMs: effects.timing.invokeTimeoutMs }),
        (reply) => {
          const ok = reply.ok && reply.status === RsmStatus.OK;
          if (!ok) log('%s commit %s to %s: %s', effects.me, describeViewstamp(args.committed), backup, reply.ok ? `status ${reply.status}` : reply.error.code);
          this.step(() => this.core.noticed(notice, backup, ok));
        },
        (error) => effects.fatal(error),
      );
    }
  }

  /** Runs a granted task outside this step; its caller gets the result before the core hears it ended (obligation 2). */
  private runQuiesced(id: QuiesceTask): void {
    const task = this.tasks.get(id);
    assert(task !== undefined, `${this.effects.me}: quiesced task ${id} granted, but unknown`);
    const ended = (): void => {
      this.tasks.delete(id);
      this.step(() => this.core.quiesceEnded(id));
    };
    Promise.resolve()
      .then(task.run)
      .then(
        (value) => {
          task.settle.resolve(value);
          ended();
        },
        (error: unknown) => {
          task.settle.reject(error);
          ended();
        },
      );
  }
}
