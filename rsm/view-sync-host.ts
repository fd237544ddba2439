/**
 * The thin async host of the synchronisation core (rsm/view-sync.ts): it turns the recovery
 * loop's runs, transferreq and transferdonereq deliveries, RPC outcomes, pauses, durability and
 * the serving primary's timer into the core's events, and carries out the actions the core
 * returns. RsmNode synchronises each view and answers both requests through it. Its obligations:
 *
 * 1. Start one run at a time (`sync`), and resolve it with the core's `finish`; number every
 *    delivery once and answer it with the one `reply` the core gives it. A transferreq reaches the
 *    core only once every write begun before it is durable (only durable state is shipped).
 * 2. Carry out a step's actions in order, and all of them before the next event is fed: an event
 *    that arrives meanwhile (from a listener of an execution, say) waits behind them. Those with
 *    an outcome (askBackup, pull, report, pause, fetch, installState, awaitDurable, quiesce,
 *    resync) feed it back as exactly one event, tagged as the action was. If the action throws or
 *    rejects, the run (or the delivery) rejects with that error after the core is told
 *    (`failed`, `answerFailed`): the recovery loop reports it as fatal, as every storage failure
 *    is. A throw while feeding an outcome (the core's own assertion) does the same.
 * 3. Keep one timer: `setTimer` replaces it, `finish` cancels it; each fires `timerFired` at most
 *    once, on the injected clock.
 * 4. Tell the core when the replica moves outside a step (`wake`: a view committed, it stopped),
 *    and check `invariants()` after every event when asked to (the simulator and the tests do).
 */
import { assert } from '../lib/assert.js';
import type { Clock, Timer } from '../lib/env.js';
import type { HandlerReply, RpcEndpoint } from '../lib/rpc.js';
import { EventQueue, feedOutcome } from './outcome.js';
import { rsmProtocol, type TransferRes, type Viewstamp } from './protocol.js';
import type { BackupSyncPhase, PrimarySyncPhase } from './replica-status.js';
import type { LogEntry } from './replica-store.js';
import { fetchTransfer } from './state-transfer.js';
import { ViewSync, type SyncDelivery, type SyncReply, type ViewSyncAction, type ViewSyncPosition } from './view-sync.js';

/** What carrying out the core's actions takes from the replica, beyond its position. */
export interface ViewSyncEffects extends ViewSyncPosition {
  readonly rpc: RpcEndpoint;
  readonly clock: Clock;
  /** The network address of replica `id`. */
  addressOf(id: string): string;
  /** Resolves once every write begun so far is durable. */
  readonly durable: Promise<void>;
  /** Resolves once every write queued so far, and any merged into it, is durable. */
  drained(): Promise<void>;
  /** Enters a phase of the synchronisation of `vid` (ignored if the status moved on). */
  enter(vid: number, phase: PrimarySyncPhase | BackupSyncPhase): void;
  /** Runs `task` with the primary's pipeline quiesced, inside its quiesce queue. */
  quiesced<T>(task: () => Promise<T>): Promise<T>;
  /** A backup will install our state: its acknowledgements of our pending batches no longer count. */
  forgetAcknowledgements(backup: string): void;
  stall(why: string): void;
  /** A backup serving its view synchronises it again. */
  resync(): void;
  /** Executes and logs the entries that follow our last (a transfer of entries). */
  executeEntries(entries: readonly LogEntry[]): void;
  /** Replaces the state; false (unchanged) if the bytes do not decode. */
  installState(state: Uint8Array, last: Viewstamp, from: string, vid: number): boolean;
  /** The wait before transfer step `attempt` + 1; false if the replica stopped meanwhile. */
  transferPause(attempt: number): Promise<boolean>;
}

type Settle<T> = { resolve(value: T): void; reject(error: unknown): void };
type AnyReply = HandlerReply<TransferRes> | HandlerReply<number>;

export class ViewSyncHost {
  readonly core: ViewSync;
  private lastDelivery: SyncDelivery = 0;
  private readonly answers = new Map<SyncDelivery, Settle<AnyReply>>();
  /** The running run's settlement (obligation 1). */
  private running: Settle<boolean> | undefined;
  private timer: Timer | undefined;
  /** The events to feed, in order (obligation 2). */
  private readonly queue: EventQueue<ViewSyncAction>;

  /** `checkInvariants`: call the core's invariants() after every event (the simulator and tests). */
  constructor(
    private readonly effects: ViewSyncEffects,
    private readonly checkInvariants = false,
  ) {
    this.core = new ViewSync(effects);
    this.queue = new EventQueue(
      (action) => this.carryOut(action),
      () => {
        if (this.checkInvariants) this.core.invariants();
      },
    );
  }

  /** Synchronises view `vid` (the committed one, its pipeline quiesced); resolves whether it is now synchronised. */
  sync(vid: number): Promise<boolean> {
    assert(this.running === undefined, `a synchronisation of view ${vid} started while one runs`);
    return new Promise((resolve, reject) => {
      this.running = { resolve, reject };
      this.guarded(() => this.step(() => this.core.start(vid)));
    });
  }

  /** Something a run depends on changed outside a step (a newer view, a stop). */
  wake(): void {
    this.guarded(() => this.step(() => this.core.moved()));
  }

  /** transferreq(src, last, vid). */
  async answerTransfer(src: string, last: Viewstamp, vid: number): Promise<HandlerReply<TransferRes>> {
    await this.effects.drained();
    return (await this.deliver((delivery) => this.core.answerTransfer(delivery, { src, last, vid }))) as HandlerReply<TransferRes>;
  }

  /** transferdonereq(m, vid). */
  async answerTransferDone(m: string, vid: number): Promise<HandlerReply<number>> {
    return (await this.deliver((delivery) => this.core.answerTransferDone(delivery, { m, vid }))) as HandlerReply<number>;
  }

  invariants(): void {
    this.core.invariants();
    if (this.queue.draining) return;
    assert(this.answers.size === this.core.answering, `${this.answers.size} deliveries unanswered, the core waits on ${this.core.answering}`);
    assert(this.core.running === (this.running !== undefined), `a synchronisation ${this.core.running ? '' : 'not '}under way in the core, ${this.running === undefined ? 'none' : 'one'} in the host`);
  }

  /** While the primary serves its synchronisation (rsm/view-sync.ts, ViewSync.servingInvariants). */
  servingInvariants(backups: readonly string[], last: Viewstamp, me: string): void {
    this.core.servingInvariants(backups, last, me);
  }

  private deliver(event: (delivery: SyncDelivery) => ViewSyncAction[]): Promise<AnyReply> {
    const delivery = ++this.lastDelivery;
    return new Promise((resolve, reject) => {
      this.answers.set(delivery, { resolve, reject });
      try {
        this.step(() => event(delivery));
      } catch (error) {
        this.failDelivery(delivery, error);
      }
    });
  }

  /** Feeds `event` (after any queued before it) and carries out its actions (obligation 2). After a throw (a bug: the run or delivery it came from rejects), the events still queued are fed at the next step. */
  private step(event: () => ViewSyncAction[]): void {
    this.queue.feed(event);
  }

  /** Runs an action's outcome into the core: `then` on success; if it failed, or feeding it threw, the run fails. */
  private outcome<T>(run: number, work: () => Promise<T>, then: (value: T) => ViewSyncAction[]): void {
    feedOutcome(
      work,
      (value) => this.step(() => then(value)),
      (error) => {
        this.core.failed(run);
        this.failRun(error);
      },
    );
  }

  /** Runs `feed`; a throw (a failed assertion, that is a bug) ends the run under way with that error. */
  private guarded(feed: () => void): void {
    try {
      feed();
    } catch (error) {
      this.core.failed();
      this.failRun(error);
    }
  }

  private failRun(error: unknown): void {
    this.cancelTimer();
    const running = this.running;
    this.running = undefined;
    running?.reject(error);
  }

  private failDelivery(delivery: SyncDelivery, error: unknown): void {
    this.core.answerFailed(delivery);
    const answer = this.answers.get(delivery);
    this.answers.delete(delivery);
    answer?.reject(error);
  }

  private cancelTimer(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  private carryOut(action: ViewSyncAction): void {
    const effects = this.effects;
    const timeoutMs = effects.timing.transferTimeoutMs;
    switch (action.kind) {
      case 'enter':
        effects.enter(action.vid, action.phase);
        return;
      case 'askBackup':
        // resendOnOldServer: a backup that restarted since we last called it answers its first
        // call RPC_OLDSRV; asking its new instance at once saves a transfer pause on every rejoin
        // (a transferreq may run on both instances: it only reads, or restarts the backup's own
        // synchronisation, which the dead instance no longer has).
        this.outcome(
          action.run,
          () => effects.rpc.call(effects.addressOf(action.backup), rsmProtocol.transferreq, action.args, { timeoutMs, resendOnOldServer: true }),
          (reply) => this.core.answeredByBackup(action.run, action.backup, reply as SyncReply<TransferRes>),
        );
        return;
      case 'pull':
        this.outcome(
          action.run,
          () => effects.rpc.call(effects.addressOf(action.primary), rsmProtocol.transferreq, action.args, { timeoutMs }),
          (reply) => this.core.pulled(action.run, reply as SyncReply<TransferRes>),
        );
        return;
      case 'report':
        this.outcome(
          action.run,
          () => effects.rpc.call(effects.addressOf(action.primary), rsmProtocol.transferdonereq, action.args, { timeoutMs }),
          (reply) => this.core.reported(action.run, reply as SyncReply<number>),
        );
        return;
      case 'pause':
        this.outcome(
          action.run,
          () => effects.transferPause(action.attempt),
          (ok) => this.core.paused(action.run, ok, action.backup),
        );
        return;
      case 'fetch': {
        const { vid } = action;
        const source = {
          rpc: effects.rpc,
          address: effects.addressOf(action.from),
          src: effects.me,
          vid,
          timeoutMs,
          abandoned: () => effects.isStopped || effects.vidCommit !== vid,
        };
        this.outcome(
          action.run,
          () => fetchTransfer(source, action.answer),
          (fetched) => this.core.fetched(action.run, fetched),
        );
        return;
      }
      case 'installState': {
        const ok = effects.installState(action.state, action.last, action.from, action.vid);
        this.step(() => this.core.installed(action.run, ok));
        return;
      }
      case 'executeEntries':
        effects.executeEntries(action.entries);
        return;
      case 'awaitDurable':
        this.outcome(
          action.run,
          () => effects.durable,
          () => this.core.durable(action.run),
        );
        return;
      case 'setTimer': {
        this.cancelTimer();
        const { run } = action;
        this.timer = effects.clock.setTimer(action.ms, () => {
          this.timer = undefined;
          this.step(() => this.core.timerFired(run));
        });
        return;
      }
      case 'nudge':
        void effects.rpc.call(effects.addressOf(action.backup), rsmProtocol.transferreq, action.args, { timeoutMs });
        return;
      case 'finish': {
        this.cancelTimer();
        const running = this.running;
        assert(running !== undefined, `synchronisation run ${action.run} finished, which the host did not start`);
        this.running = undefined;
        running.resolve(action.synced);
        return;
      }
      case 'quiesce': {
        const { delivery } = action;
        effects
          .quiesced(async () => {
            await effects.drained();
            // Fed here, not queued: the answer must be made inside the quiesced section.
            assert(!this.queue.draining, `transferreq delivery ${delivery} quiesced in the middle of a step`);
            this.step(() => this.core.quiesced(delivery));
          })
          .catch((error: unknown) => this.failDelivery(delivery, error));
        return;
      }
      case 'forgetAcknowledgements':
        effects.forgetAcknowledgements(action.backup);
        return;
      case 'stall':
        effects.stall(action.why);
        return;
      case 'resync': {
        effects.resync();
        const { delivery } = action;
        this.step(() => this.core.resynced(delivery));
        return;
      }
      case 'reply': {
        const answer = this.answers.get(action.delivery);
        assert(answer !== undefined, `reply to delivery ${action.delivery}, which is answered already or unknown`);
        this.answers.delete(action.delivery);
        answer.resolve(action.reply);
        return;
      }
    }
  }
}
