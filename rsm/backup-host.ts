/**
 * The thin async host of the backup's synchronous core (rsm/backup.ts): it turns RPC deliveries,
 * log writes and timers into the core's events, and carries out the actions the core returns.
 * RsmNode answers invokebatch, invoke and commit through it. Its obligations:
 *
 * 1. Number every delivery (invokebatch, invoke, commit) once, and answer its RPC with the one
 *    `reply` the core gives it; commit is answered before `commit()` returns.
 * 2. Carry out actions one at a time, in the order the core returned them, and all of a step's
 *    actions before the next event is fed: an event that arrives while actions are being carried
 *    out (from an execution's listener, say) waits behind them. `recheck` feeds `moved()` when it
 *    comes up, before anything waiting, so the core reads the position with every action before
 *    it carried out.
 * 3. Persist before answering: `hold` starts the synced log write of the batch, and only its
 *    outcome, fed back as exactly one event (`written` once durable, `writeFailed` otherwise),
 *    lets the core answer; `awaitDurable` does the same with every write begun so far.
 * 4. Timers: each `setGapTimer` fires `gapTimerFired` at most once, on the injected clock, unless
 *    its `cancelGapTimer` came first.
 * 5. Tell the core when the replica moves outside a step (`moved`: a view committed, it
 *    resynchronises, it stopped), and check `invariants()` after every event when asked to (the
 *    simulator and the tests do).
 */
import { assert } from '../lib/assert.js';
import type { Clock, Timer } from '../lib/env.js';
import type { HandlerReply } from '../lib/rpc.js';
import { Backup, type BackupAction, type BackupPosition, type Delivery } from './backup.js';
import type { BatchEntry, Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';

/** What carrying out the core's actions takes from the replica, beyond its position. */
export interface BackupEffects extends BackupPosition {
  readonly clock: Clock;
  /** Resolves once every write begun so far is durable (rejects if one of them failed). */
  readonly durable: Promise<void>;
  /** Takes an accepted batch: expects the viewstamp after it and logs it; settles once the write is durable or failed. */
  holdBatch(entries: readonly LogEntry[]): Promise<void>;
  /** Executes, in order, the held requests up to `committed` (as many as `executable(committed)` said). */
  executeCommitted(committed: Viewstamp): void;
  breakpoint1(): void;
}

/** An event waiting in the host's queue for the actions before it to be carried out. */
interface QueuedEvent {
  readonly kind: 'event';
  readonly event: () => BackupAction[];
}

export class BackupHost {
  readonly core: Backup;
  private lastDelivery: Delivery = 0;
  private readonly answers = new Map<Delivery, (reply: HandlerReply<number>) => void>();
  private readonly gapTimers = new Map<Delivery, Timer>();
  /** The actions to carry out and the events to feed, in order (obligation 2). */
  private readonly queue: Array<BackupAction | QueuedEvent> = [];
  private draining = false;

  /** `checkInvariants`: call the core's invariants() after every event (the simulator and tests). */
  constructor(
    private readonly effects: BackupEffects,
    private readonly checkInvariants = false,
  ) {
    this.core = new Backup(effects);
  }

  get heldForGap(): number {
    return this.core.heldForGap;
  }

  /** invokebatch (and the lab's invoke, a batch of one with its own viewstamp as commit point). */
  receive(entries: readonly BatchEntry[], committed: Viewstamp): Promise<HandlerReply<number>> {
    const delivery = ++this.lastDelivery;
    return new Promise((resolve) => {
      this.answers.set(delivery, resolve);
      this.step(() => this.core.receive(delivery, entries, committed));
    });
  }

  /** commit: answered at once. */
  commit(vid: number, committed: Viewstamp): HandlerReply<number> {
    const delivery = ++this.lastDelivery;
    let answer: HandlerReply<number> | undefined;
    this.answers.set(delivery, (reply) => (answer = reply));
    this.step(() => this.core.commit(delivery, vid, committed));
    assert(answer !== undefined, `commit delivery ${delivery} not answered at once`);
    return answer;
  }

  /** The replica moved outside a step: batches waiting for a gap look again. */
  moved(): void {
    this.step(() => this.core.moved());
  }

  /** Checks the core's invariants and that the host's timers and answers match it. */
  invariants(): void {
    this.core.invariants();
    // Mid-step, a timer may be set or cancelled after the core's change; between events they agree.
    if (!this.draining) {
      assert(this.gapTimers.size === this.core.heldForGap, `${this.gapTimers.size} gap timers for ${this.core.heldForGap} waiting batches`);
      assert(this.answers.size === this.core.heldForGap + this.core.awaitingWrite, `${this.answers.size} deliveries unanswered, the core tracks ${this.core.heldForGap + this.core.awaitingWrite}`);
    }
  }

  /** Feeds one event to the core and carries out its actions, and those of any event queued meanwhile (obligation 2). */
  private step(event: () => BackupAction[]): void {
    this.queue.push({ kind: 'event', event });
    if (this.draining) return; // an event from inside an action (an execution's listener, say) waits its turn
    this.draining = true;
    try {
      for (let item = this.queue.shift(); item !== undefined; item = this.queue.shift()) {
        if (item.kind !== 'event') {
          this.carryOut(item);
          continue;
        }
        // Its actions go first: all of them are carried out before the next event is fed.
        this.queue.unshift(...item.event());
        if (this.checkInvariants) this.core.invariants();
      }
    } finally {
      this.draining = false;
    }
    if (this.checkInvariants) this.invariants();
  }

  private carryOut(action: BackupAction): void {
    switch (action.kind) {
      case 'execute':
        this.effects.executeCommitted(action.committed);
        return;
      case 'hold': {
        const delivery = action.delivery;
        this.effects.holdBatch(action.entries).then(
          () => this.step(() => this.core.written(delivery)),
          () => this.step(() => this.core.writeFailed(delivery)),
        );
        return;
      }
      case 'awaitDurable': {
        const delivery = action.delivery;
        this.effects.durable.then(
          () => this.step(() => this.core.written(delivery)),
          () => this.step(() => this.core.writeFailed(delivery)),
        );
        return;
      }
      case 'setGapTimer': {
        const delivery = action.delivery;
        assert(!this.gapTimers.has(delivery), `a second gap timer for delivery ${delivery}`);
        this.gapTimers.set(
          delivery,
          this.effects.clock.setTimer(action.ms, () => {
            if (!this.gapTimers.delete(delivery)) return;
            this.step(() => this.core.gapTimerFired(delivery));
          }),
        );
        return;
      }
      case 'cancelGapTimer':
        this.gapTimers.get(action.delivery)?.cancel();
        this.gapTimers.delete(action.delivery);
        return;
      case 'recheck':
        // The core's last action of its step: `moved` is fed now that every action before it is
        // carried out, ahead of anything queued behind.
        this.queue.unshift({ kind: 'event', event: () => this.core.moved() });
        return;
      case 'breakpoint1':
        this.effects.breakpoint1();
        return;
      case 'reply': {
        const answer = this.answers.get(action.delivery);
        assert(answer !== undefined, `reply to delivery ${action.delivery}, which is answered already or unknown`);
        this.answers.delete(action.delivery);
        answer({ status: action.status, result: 0 });
        return;
      }
    }
  }
}
