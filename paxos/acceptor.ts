/**
 * The Paxos acceptor, one per node, working on one instance at a time: instanceH + 1, the instance
 * after the highest one decided here. Decided instances form a history 1..instanceH with no hole,
 * ever.
 *
 * Each handler is a synchronous step (`step*`) that checks the request, updates the in-memory
 * state and says what to persist, followed by the durable write (PaxosStore: `sync: true`, in
 * order) and only then the reply. A reply that changes nothing still waits for the writes before
 * it (`flushed`), so no reply ever reveals state that a crash could take back.
 *
 * Expected conditions (a stale or future instance, a low proposal number, a bad value from the
 * network) are answered with a refusal and a debug line "<handler>: ignoring (<reason>)"; they
 * never throw.
 */
import { assert } from '../lib/assert.js';
import type { StorageOp } from '../lib/env.js';
import { logger } from '../lib/log.js';
import { acceptedLine, doneLine, propseenLine, type PaxosLogSink } from './log-sink.js';
import {
  PROPOSAL_ZERO,
  compareProposal,
  describeProposal,
  type AcceptArgs,
  type DecideArgs,
  type PrepareArgs,
  type PrepareRes,
  type ProposalNumber,
} from './messages.js';
import {
  PaxosStore,
  delAccepted,
  delPromised,
  putAccepted,
  putDecided,
  putPromised,
  type PaxosDurableState,
} from './store.js';
import { historyProblem, type HistoryEntry } from './view.js';

const log = logger('paxos:acceptor');

// The acceptor ignores the sender's cluster id: config's gate checks it before a message gets here.
type PrepareIn = Omit<PrepareArgs, 'cluster'>;
type AcceptIn = Omit<AcceptArgs, 'cluster'>;
type DecideIn = Omit<DecideArgs, 'cluster'>;

export interface AcceptorOptions {
  readonly me: string;
  readonly store: PaxosStore;
  readonly logSink: PaxosLogSink;
  /** Whether a value may be accepted or committed (config: "is it a view?"). */
  readonly isValidValue: (value: string) => boolean;
  /**
   * This node's cluster id ("" while unknown), recorded with every view it decides (default: "").
   * The acceptor does not check senders' ids: config refuses other clusters before a message
   * reaches it.
   */
  readonly cluster?: () => string;
}

/** What a synchronous step decided to persist; the lines go to the log after the write. */
interface Persist {
  readonly ops: StorageOp[];
  readonly lines: string[];
}

export class Acceptor {
  private readonly me: string;
  private readonly store: PaxosStore;
  private readonly logSink: PaxosLogSink;
  private readonly isValidValue: (value: string) => boolean;
  private readonly clusterNow: () => string;

  /** Decided values 1..instanceH. Invariant: keys are exactly 1..instanceH. */
  private decided = new Map<number, string>();
  private instanceHighest = 0;
  /** The cluster each decided view was decided in ("" unknown then, undefined an old record). */
  private decidedCluster = new Map<number, string | undefined>();
  /** The promise for instanceH + 1 (PROPOSAL_ZERO: none). Reset by every commit. */
  private promisedN: ProposalNumber = PROPOSAL_ZERO;
  /** The proposal accepted in instanceH + 1, if any. Invariant: accepted.n ≤ promised. */
  private acceptedProposal: { readonly n: ProposalNumber; readonly v: string } | undefined;
  /** The highest round seen in any prepare or accept, for the local proposer's next number. */
  private highestSeen = 0;

  /** Called after each commit (and adoption) is durable and logged, in instance order. */
  onCommit: (instance: number, value: string) => void = () => {};
  /** Called when a request shows that others decided instances we have not (we are behind). */
  onBehind: (src: string, instance: number) => void = () => {};

  private constructor(options: AcceptorOptions) {
    this.me = options.me;
    this.store = options.store;
    this.logSink = options.logSink;
    this.isValidValue = options.isValidValue;
    this.clusterNow = options.cluster ?? (() => '');
  }

  /**
   * Builds an acceptor from the durable state, and rewrites the text log from it so the log
   * mirrors exactly what survived.
   */
  static restore(options: AcceptorOptions, state: PaxosDurableState): Acceptor {
    const acceptor = new Acceptor(options);
    const problem = state.decided.length === 0 ? undefined : historyProblem(state.decided);
    assert(problem === undefined, `restored paxos history is broken: ${problem}`);
    for (const entry of state.decided) {
      acceptor.decided.set(entry.instance, entry.value);
      acceptor.decidedCluster.set(entry.instance, entry.cluster);
    }
    acceptor.instanceHighest = state.decided.length;
    const next = acceptor.instanceHighest + 1;
    // A commit deletes the promise and the accepted proposal in the same batch, so what survives
    // always belongs to the open instance.
    if (state.promised !== undefined) {
      assert(state.promised.instance === next, `restored promise for instance ${state.promised.instance}, open is ${next}`);
      acceptor.promisedN = state.promised.n;
    }
    if (state.accepted !== undefined) {
      assert(state.accepted.instance === next, `restored accept for instance ${state.accepted.instance}, open is ${next}`);
      assert(compareProposal(state.accepted.n, acceptor.promisedN) <= 0, 'restored accept above the promise');
      acceptor.acceptedProposal = { n: state.accepted.n, v: state.accepted.v };
    }
    acceptor.highestSeen = Math.max(acceptor.promisedN.n, state.proposerN);
    acceptor.logSink.replace(acceptor.logLines());
    acceptor.invariants();
    return acceptor;
  }

  // ---------------------------------------------------------------------------------------------
  // Read-only views of the state.

  get instanceH(): number {
    return this.instanceHighest;
  }

  get promised(): ProposalNumber {
    return this.promisedN;
  }

  get accepted(): { readonly n: ProposalNumber; readonly v: string } | undefined {
    return this.acceptedProposal;
  }

  get highestSeenN(): number {
    return this.highestSeen;
  }

  /** The decided value of `instance`, or undefined if it is not decided here. */
  value(instance: number): string | undefined {
    return this.decided.get(instance);
  }

  /**
   * The cluster id recorded with decided view `instance`: the id this node had when it decided it
   * ("" if it knew none then); undefined when the instance is not decided or the record predates
   * cluster ids.
   */
  clusterOf(instance: number): string | undefined {
    return this.decidedCluster.get(instance);
  }

  /** The decided history 1..instanceH. */
  history(): HistoryEntry[] {
    const entries: HistoryEntry[] = [];
    for (let i = 1; i <= this.instanceHighest; i++) entries.push({ instance: i, value: this.decided.get(i)! });
    return entries;
  }

  /** Resolves once every change made so far is durable. */
  flushed(): Promise<void> {
    return this.store.flushed();
  }

  /** The text log that mirrors the current state. */
  logLines(): string[] {
    const lines = this.history().map((entry) => doneLine(entry.instance, entry.value));
    if (this.promisedN.n > 0) lines.push(propseenLine(this.promisedN));
    if (this.acceptedProposal !== undefined) lines.push(acceptedLine(this.acceptedProposal.n, this.acceptedProposal.v));
    return lines;
  }

  invariants(): void {
    assert(this.decided.size === this.instanceHighest, 'decided map size differs from instanceH');
    assert(this.instanceHighest === 0 || this.decided.has(this.instanceHighest), 'instanceH not decided');
    if (this.acceptedProposal !== undefined) {
      assert(compareProposal(this.acceptedProposal.n, this.promisedN) <= 0, 'accepted above promised');
      assert(this.acceptedProposal.n.n > 0, 'accepted proposal 0');
    }
    assert(this.highestSeen >= this.promisedN.n, 'highestSeen below promised');
  }

  // ---------------------------------------------------------------------------------------------
  // Handlers: a synchronous step, then the durable write, then the reply.

  async onPrepare(args: PrepareIn): Promise<PrepareRes> {
    const { reply, persist } = this.stepPrepare(args);
    if (persist !== undefined) await this.persist(persist);
    else await this.store.flushed();
    return reply;
  }

  async onAccept(args: AcceptIn): Promise<boolean> {
    const { reply, persist } = this.stepAccept(args);
    if (persist !== undefined) await this.persist(persist);
    else await this.store.flushed();
    return reply;
  }

  async onDecide(args: DecideIn): Promise<number> {
    if (args.instance !== this.instanceHighest + 1) {
      if (args.instance <= this.instanceHighest) {
        log('%s decidereq: ignoring (instance %d already decided)', this.me, args.instance);
      } else {
        // The lab aborts here; we only note that we are behind and let catch-up fill the gap.
        log('%s decidereq: ignoring (instance %d ahead of open instance %d)', this.me, args.instance, this.instanceHighest + 1);
        this.onBehind(args.src, args.instance);
      }
      await this.store.flushed();
      return 0;
    }
    await this.commit(args.instance, args.v);
    return 0;
  }

  stepPrepare(args: PrepareIn): { reply: PrepareRes; persist?: Persist } {
    const refuse: PrepareRes = { oldinstance: false, accept: false, n_a: PROPOSAL_ZERO, v_a: '' };
    if (args.instance === 0) {
      log('%s preparereq: ignoring (instance 0)', this.me);
      return { reply: refuse };
    }
    if (args.instance <= this.instanceHighest) {
      // Already decided: answer with the value whatever n is. This is how lagging nodes learn.
      const value = this.decided.get(args.instance);
      assert(value !== undefined, `instance ${args.instance} ≤ instanceH but not decided`);
      return { reply: { oldinstance: true, accept: false, n_a: PROPOSAL_ZERO, v_a: value } };
    }
    if (args.instance > this.instanceHighest + 1) {
      log('%s preparereq: ignoring (instance %d ahead of open instance %d: we are behind)', this.me, args.instance, this.instanceHighest + 1);
      this.onBehind(args.src, args.instance);
      return { reply: refuse };
    }
    this.highestSeen = Math.max(this.highestSeen, args.n.n);
    if (compareProposal(args.n, this.promisedN) <= 0) {
      if (args.n.n > 0) log('%s preparereq: ignoring (%s ≤ promised %s)', this.me, describeProposal(args.n), describeProposal(this.promisedN));
      // Our extension: a refusal carries the promise in n_a, so the proposer can outbid it at once.
      return { reply: { ...refuse, n_a: this.promisedN } };
    }
    this.promisedN = args.n;
    const accepted = this.acceptedProposal;
    const reply: PrepareRes = {
      oldinstance: false,
      accept: true,
      n_a: accepted?.n ?? PROPOSAL_ZERO,
      v_a: accepted?.v ?? '',
    };
    this.invariants();
    return {
      reply,
      persist: { ops: [putPromised({ instance: args.instance, n: args.n })], lines: [propseenLine(args.n)] },
    };
  }

  stepAccept(args: AcceptIn): { reply: boolean; persist?: Persist } {
    if (args.instance <= this.instanceHighest) {
      log('%s acceptreq: ignoring (instance %d already decided)', this.me, args.instance);
      return { reply: false };
    }
    if (args.instance > this.instanceHighest + 1) {
      log('%s acceptreq: ignoring (instance %d ahead of open instance %d: we are behind)', this.me, args.instance, this.instanceHighest + 1);
      this.onBehind(args.src, args.instance);
      return { reply: false };
    }
    if (args.n.n === 0) {
      log('%s acceptreq: ignoring (proposal round 0)', this.me);
      return { reply: false };
    }
    if (!this.isValidValue(args.v)) {
      log('%s acceptreq: ignoring (invalid value %j)', this.me, args.v);
      return { reply: false };
    }
    this.highestSeen = Math.max(this.highestSeen, args.n.n);
    if (compareProposal(args.n, this.promisedN) < 0) {
      log('%s acceptreq: ignoring (%s < promised %s)', this.me, describeProposal(args.n), describeProposal(this.promisedN));
      return { reply: false };
    }
    // Accepting n also promises n: nothing below it may be accepted afterwards.
    this.promisedN = args.n;
    this.acceptedProposal = { n: args.n, v: args.v };
    this.invariants();
    return {
      reply: true,
      persist: {
        ops: [putPromised({ instance: args.instance, n: args.n }), putAccepted({ instance: args.instance, n: args.n, v: args.v })],
        lines: [acceptedLine(args.n, args.v)],
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Learning decided values.

  /**
   * Records `value` as decided in `instance`, which must be the open instance (instanceH + 1);
   * anything else is refused (returns false) so the history never gets a hole. Resolves true once
   * the commit is durable, logged and upcalled. The caller guarantees the value was chosen.
   */
  async commit(instance: number, value: string): Promise<boolean> {
    if (instance !== this.instanceHighest + 1) {
      log('%s commit: ignoring (instance %d, open instance is %d)', this.me, instance, this.instanceHighest + 1);
      await this.store.flushed();
      return false;
    }
    if (!this.isValidValue(value)) {
      log('%s commit: ignoring (invalid value %j)', this.me, value);
      await this.store.flushed();
      return false;
    }
    const cluster = this.clusterNow();
    this.decided.set(instance, value);
    this.decidedCluster.set(instance, cluster);
    this.instanceHighest = instance;
    this.promisedN = PROPOSAL_ZERO;
    this.acceptedProposal = undefined;
    this.invariants();
    // One atomic batch: the decided value (with its cluster), and the end of the promise and
    // accept it supersedes.
    await this.store.write([putDecided(instance, value, cluster), delPromised, delAccepted], () => {
      this.logSink.append(doneLine(instance, value));
      this.onCommit(instance, value);
    });
    return true;
  }

  /**
   * Replaces the whole history with `entries` (a joiner adopting the primary's history), if they
   * are a valid history longer than ours; otherwise refuses. Our own history must be a prefix of
   * it: two different values for one instance would break agreement, so that is asserted. The
   * text log is replaced by `done` lines for the adopted history.
   */
  async replaceHistory(entries: readonly HistoryEntry[]): Promise<boolean> {
    const problem = historyProblem(entries);
    if (problem !== undefined) {
      log('%s replaceHistory: ignoring (%s)', this.me, problem);
      return false;
    }
    if (entries.length <= this.instanceHighest) {
      log('%s replaceHistory: ignoring (history of %d views is not newer than ours, %d)', this.me, entries.length, this.instanceHighest);
      return false;
    }
    for (let i = 1; i <= this.instanceHighest; i++) {
      assert(this.decided.get(i) === entries[i - 1]!.value, `adopted history differs from ours at instance ${i}`);
    }
    const ops: StorageOp[] = [delPromised, delAccepted];
    const cluster = this.clusterNow();
    this.decided = new Map();
    this.decidedCluster = new Map();
    for (const entry of entries) {
      this.decided.set(entry.instance, entry.value);
      this.decidedCluster.set(entry.instance, cluster);
      ops.push(putDecided(entry.instance, entry.value, cluster));
    }
    this.instanceHighest = entries.length;
    this.promisedN = PROPOSAL_ZERO;
    this.acceptedProposal = undefined;
    this.invariants();
    const last = entries[entries.length - 1]!;
    await this.store.write(ops, () => {
      this.logSink.replace(entries.map((entry) => doneLine(entry.instance, entry.value)));
      this.onCommit(last.instance, last.value);
    });
    return true;
  }

  private persist(persist: Persist): Promise<void> {
    return this.store.write(persist.ops, () => {
      for (const line of persist.lines) this.logSink.append(line);
    });
  }
}
