/**
 * The thin async host of the join core (rsm/join.ts): it turns the recovery loop's attempts,
 * joinreq deliveries and the outcomes of RPC calls and config's rounds into the core's events, and
 * carries out the actions the core returns. RsmNode joins and answers joinreq through it. Its
 * obligations:
 *
 * 1. Start one attempt at a time (`attempt`), and resolve it at the core's `finish`, after its
 *    pause; number every joinreq delivery once and answer it with the one `reply` the core gives.
 * 2. Carry out a step's actions in order; those with an outcome (ask, adoptHistory, catchUp,
 *    commitNewest, add, flush) feed it back as exactly one event, `failed` if the action threw or
 *    rejected, in which case the attempt rejects (or the delivery's RPC handler throws) with that
 *    error, as config's storage failures do everywhere else. A throw while feeding an outcome (the
 *    core's own assertion) rejects them the same way.
 * 3. Check `invariants()` after every event when asked to (the simulator and the tests do).
 */
import { assert } from '../lib/assert.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { Config } from '../paxos/config.js';
import { Join, type JoinAction, type JoinDelivery, type JoinPosition, type JoinReply } from './join.js';
import { feedOutcome } from './outcome.js';
import { rsmProtocol, type JoinRes } from './protocol.js';

/** What carrying out the core's actions takes from the replica, beyond its position. */
export interface JoinEffects extends JoinPosition {
  readonly rpc: RpcEndpoint;
  readonly config: JoinPosition['config'] & Pick<Config, 'adoptHistory' | 'catchUp' | 'add' | 'flushed' | 'reportClusterMismatch'>;
  /** The network address of replica `id`. */
  addressOf(id: string): string;
  /** Commits config's newest view to the replica, if newer than its committed one. */
  commitNewest(): void;
  /** Sleeps on the replica's clock; false if it stopped meanwhile. */
  pause(ms: number): Promise<boolean>;
}

type Answer = { resolve(answer: { status: number; result: JoinRes }): void; reject(error: unknown): void };

export class JoinHost {
  readonly core: Join;
  private lastDelivery: JoinDelivery = 0;
  private readonly answers = new Map<JoinDelivery, Answer>();
  /** The running attempt's settlement (obligation 1). */
  private attemptDone: { resolve(): void; reject(error: unknown): void } | undefined;

  /** `checkInvariants`: call the core's invariants() after every event (the simulator and tests). */
  constructor(
    private readonly effects: JoinEffects,
    private readonly checkInvariants = false,
  ) {
    this.core = new Join(effects);
  }

  /** One attempt to be admitted; resolves once it is over (after its pause, if any). */
  attempt(): Promise<void> {
    assert(this.attemptDone === undefined, 'a join attempt started while one runs');
    return new Promise((resolve, reject) => {
      this.attemptDone = { resolve, reject };
      this.step(() => this.core.start());
    });
  }

  /** The admitting side: the answer to joinreq(src, cluster). */
  answer(src: string, cluster: string): Promise<{ status: number; result: JoinRes }> {
    const delivery = ++this.lastDelivery;
    return new Promise((resolve, reject) => {
      this.answers.set(delivery, { resolve, reject });
      this.step(() => this.core.answer(delivery, src, cluster));
    });
  }

  invariants(): void {
    this.core.invariants();
    assert(this.answers.size === this.core.admitting, `${this.answers.size} joinreq deliveries unanswered, the core tracks ${this.core.admitting}`);
    // The host's attempt outlives the core's by the pause after `finish`, never the other way.
    assert(!this.core.attempting || this.attemptDone !== undefined, 'a join attempt under way in the core without one in the host');
  }

  private step(event: () => JoinAction[]): void {
    const actions = event();
    if (this.checkInvariants) this.core.invariants();
    for (const action of actions) this.carryOut(action);
  }

  /** Runs `action`'s outcome into the core: `then` on success; `fail` if it failed, or feeding it threw. */
  private outcome<T>(work: () => Promise<T>, then: (value: T) => JoinAction[], delivery?: JoinDelivery): void {
    feedOutcome(
      work,
      (value) => this.step(() => then(value)),
      (error) => this.fail(error, delivery),
    );
  }

  /** The core forgets the attempt (or delivery), which rejects with `error`. */
  private fail(error: unknown, delivery?: JoinDelivery): void {
    try {
      this.step(() => this.core.failed(delivery));
    } catch {
      // The core threw already (feeding the outcome) and may not know the attempt any more:
      // `error` is the one passed on.
    }
    if (delivery === undefined) {
      const done = this.attemptDone;
      this.attemptDone = undefined;
      done?.reject(error);
      return;
    }
    const answer = this.answers.get(delivery);
    this.answers.delete(delivery);
    answer?.reject(error);
  }

  private carryOut(action: JoinAction): void {
    const effects = this.effects;
    switch (action.kind) {
      case 'ask':
        this.outcome(
          () => effects.rpc.call(effects.addressOf(action.target), rsmProtocol.joinreq, action.args, { timeoutMs: action.timeoutMs }),
          (reply) => this.core.answered(reply as JoinReply),
        );
        return;
      case 'reportClusterMismatch':
        effects.config.reportClusterMismatch(action.peer);
        return;
      case 'adoptHistory':
        this.outcome(
          () => effects.config.adoptHistory(action.history),
          () => this.core.adopted(),
        );
        return;
      case 'catchUp':
        this.outcome(
          () => effects.config.catchUp(action.from),
          () => this.core.caughtUp(),
        );
        return;
      case 'commitNewest':
        // Synchronous: its outcome is fed once every action before it is carried out.
        effects.commitNewest();
        this.step(() => this.core.committed());
        return;
      case 'finish': {
        const done = this.attemptDone;
        assert(done !== undefined, 'a join attempt finished that the host did not start');
        const settle = () => {
          this.attemptDone = undefined;
          done.resolve();
        };
        if (action.pauseMs > 0) void effects.pause(action.pauseMs).then(settle, settle);
        else settle();
        return;
      }
      case 'add':
        this.outcome(
          () => effects.config.add(action.src, action.vid),
          () => this.core.added(action.delivery),
          action.delivery,
        );
        return;
      case 'flush':
        this.outcome(
          () => effects.config.flushed(),
          () => this.core.flushed(action.delivery),
          action.delivery,
        );
        return;
      case 'reply': {
        const answer = this.answers.get(action.delivery);
        assert(answer !== undefined, `reply to joinreq delivery ${action.delivery}, which is answered already or unknown`);
        this.answers.delete(action.delivery);
        answer.resolve({ status: action.status, result: action.result });
        return;
      }
    }
  }
}
