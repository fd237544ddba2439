/**
 * The Paxos proposer: runs one instance at a time among a given set of nodes (the members of the
 * current view), in three phases: prepare, accept, decide. See paxos/README.md for the steps.
 *
 * The local acceptor is called directly (the same durable path as over RPC); other nodes over the
 * node's one RpcEndpoint, in parallel, each call bounded by `rpcTimeoutMs`. Each phase moves on as
 * soon as a majority has answered yes (or, for prepare, someone answered oldinstance), without
 * waiting out a dead node's timeout; late answers are ignored. Calls to a node that restarted
 * rebind and resend at once (RPC_OLDSRV is not a lost vote).
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { Acceptor } from './acceptor.js';
import {
  PaxosStatus,
  acceptreq,
  compareProposal,
  decidereq,
  describeProposal,
  preparereq,
  type AcceptArgs,
  type DecideArgs,
  type PrepareArgs,
  type PrepareRes,
  type ProposalNumber,
} from './messages.js';
import { putProposerN, type PaxosStore } from './store.js';

const log = logger('paxos:proposer');

export interface ProposerOptions {
  readonly me: string;
  readonly acceptor: Acceptor;
  readonly store: PaxosStore;
  readonly rpc: RpcEndpoint;
  /** Maps a node id to its network address. */
  readonly addressOf: (id: string) => string;
  readonly rpcTimeoutMs: number;
  /** The highest round this node proposed with before (restored from storage). */
  readonly lastN: number;
  /** Breakpoint exit: the host prints and exits; the simulator crashes the node. */
  readonly die: (message: string) => void;
  readonly isValidValue: (value: string) => boolean;
  /** This node's cluster id ("" while unknown), sent in every prepare, accept and decide. */
  readonly cluster: () => string;
  /**
   * `node` answered CLUSTER_MISMATCH: it is in another cluster. Its answer counted as no vote;
   * config reports it upward.
   */
  readonly onClusterMismatch: (node: string) => void;
  /** `node` answered normally (OK or ERR): any earlier mismatch of it is over. */
  readonly onAnswered?: (node: string) => void;
}

/** Refusal hints at or above this are ignored (no peer can make us exhaust the u32 rounds). */
export const REFUSAL_HINT_MAX = 2 ** 31;

/** A majority of `count` nodes. */
export function majority(count: number): number {
  return Math.floor(count / 2) + 1;
}

export class Proposer {
  private running = false;
  private lastN: number;
  /** The highest promise a refusal told us about: the next round must exceed it. */
  private refusedN = 0;
  /** Breakpoint 1: die after a prepare majority, before any accept is sent (rsm_tester "3"). */
  private break1 = false;
  /** Breakpoint 2: die after an accept majority, before any decide is sent (rsm_tester "4"). */
  private break2 = false;
  private stopped = false;

  constructor(private readonly options: ProposerOptions) {
    assert(Number.isSafeInteger(options.lastN) && options.lastN >= 0, 'bad lastN');
    this.lastN = options.lastN;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Arms breakpoint 1 (b = 3) or 2 (b = 4), as the lab's proposer::breakpoint. */
  breakpoint(b: 3 | 4): void {
    if (b === 3) this.break1 = true;
    else this.break2 = true;
  }

  /** Disarms both breakpoints (simulator liveness phases). */
  disarmBreakpoints(): void {
    this.break1 = false;
    this.break2 = false;
  }

  stop(): void {
    this.stopped = true;
  }

  /**
   * Tries to get `value` decided in `instance` among `nodes`. Resolves true when a value (ours or
   * one adopted from an earlier accept) was decided and committed locally; false when it failed
   * for any reason (no majority, instance already decided, already running, stopped).
   */
  async run(instance: number, nodes: readonly string[], value: string): Promise<boolean> {
    if (this.running) {
      log('%s run: ignoring (already running)', this.options.me);
      return false;
    }
    assert(Number.isSafeInteger(instance) && instance >= 1, `bad instance ${instance}`);
    assert(instance <= this.options.acceptor.instanceH + 1, `instance ${instance} is beyond the open instance`);
    assert(nodes.length > 0, 'run with no nodes');
    assert(this.options.isValidValue(value), `proposing a non-view ${JSON.stringify(value)}`);
    this.running = true;
    try {
      return await this.runRound(instance, [...new Set(nodes)], value);
    } finally {
      this.running = false;
    }
  }

  private async runRound(instance: number, nodes: string[], value: string): Promise<boolean> {
    const { me, acceptor, store } = this.options;
    const needed = majority(nodes.length);
    const n: ProposalNumber = { n: Math.max(acceptor.highestSeenN, this.lastN, this.refusedN) + 1, m: me };
    assert(n.n <= 0xffff_ffff, 'proposal rounds exhausted');
    assert(n.n > this.lastN, 'proposal rounds must grow');
    // Persist the round before any prepare leaves, so a restarted proposer never reuses (n, me)
    // with another value.
    this.lastN = n.n;
    await store.write([putProposerN(n.n)]);
    if (this.stopped) return false;
    log('%s run: instance %d among [%s] with %s', me, instance, nodes.join(' '), describeProposal(n));

    // Phase 1: prepare. Enough: a majority of promises, or one oldinstance answer.
    const cluster = this.options.cluster();
    const prepareArgs: PrepareArgs = { src: me, cluster, instance, n };
    const prepared = await gather(
      nodes.map(async (node) => ({ node, reply: await this.prepareOne(node, prepareArgs) })),
      (answers) => answers.some(({ reply }) => reply?.oldinstance === true) || answers.filter(({ reply }) => reply?.accept === true).length >= needed,
    );
    if (this.stopped) return false;
    const old = prepared.find(({ reply }) => reply?.oldinstance === true);
    if (old !== undefined) {
      // Someone already decided this instance: learn the value (how lagging nodes catch up).
      const decided = old.reply!.v_a;
      log('%s run: instance %d already decided at %s', me, instance, old.node);
      if (acceptor.instanceH + 1 === instance && this.options.isValidValue(decided)) await acceptor.commit(instance, decided);
      return false;
    }
    const promisers: string[] = [];
    let highest: { n: ProposalNumber; v: string } | undefined;
    for (const { node, reply } of prepared) {
      if (reply !== undefined && !reply.accept && reply.n_a.n < REFUSAL_HINT_MAX) this.refusedN = Math.max(this.refusedN, reply.n_a.n);
      if (reply === undefined || !reply.accept) continue;
      promisers.push(node);
      if (reply.v_a !== '' && reply.n_a.n > 0 && (highest === undefined || compareProposal(reply.n_a, highest.n) > 0)) {
        highest = { n: reply.n_a, v: reply.v_a };
      }
    }
    if (promisers.length < needed) {
      log('%s run: no prepare majority for instance %d (%d of %d)', me, instance, promisers.length, nodes.length);
      return false;
    }
    // A value accepted by some promiser may already be chosen: the highest one must win.
    const chosen = highest !== undefined && this.options.isValidValue(highest.v) ? highest.v : value;
    if (chosen !== value) log('%s run: adopting %j accepted at %s', me, chosen, describeProposal(highest!.n));
    if (this.break1) {
      this.options.die('Dying at breakpoint 1!');
      if (this.stopped) return false;
    }

    // Phase 2: accept, to the promisers only.
    const acceptArgs: AcceptArgs = { src: me, cluster, instance, n, v: chosen };
    const accepted = await gather(
      promisers.map(async (node) => ({ node, ok: await this.acceptOne(node, acceptArgs) })),
      (answers) => answers.filter(({ ok }) => ok).length >= needed,
    );
    if (this.stopped) return false;
    const accepters = accepted.filter(({ ok }) => ok).map(({ node }) => node);
    if (accepters.length < needed) {
      log('%s run: no accept majority for instance %d (%d of %d)', me, instance, accepters.length, nodes.length);
      return false;
    }
    if (this.break2) {
      this.options.die('Dying at breakpoint 2!');
      if (this.stopped) return false;
    }

    // Phase 3: decide. The value is chosen; commit it here, then tell the accepters.
    if (acceptor.instanceH + 1 === instance) await acceptor.commit(instance, chosen);
    if (this.stopped) return false;
    assert(acceptor.instanceH >= instance, 'decided instance not committed locally');
    assert(acceptor.value(instance) === chosen, `instance ${instance} committed with another value than the chosen one`);
    const decideArgs: DecideArgs = { src: me, cluster, instance, v: chosen };
    // The other nodes (slow, or refused us) get the decide too, without being waited for: they
    // would learn it by catch-up anyway, this is sooner.
    for (const node of nodes) if (node !== me && !accepters.includes(node)) void this.decideOne(node, decideArgs);
    await Promise.all(accepters.filter((node) => node !== me).map((node) => this.decideOne(node, decideArgs)));
    return true;
  }

  private async prepareOne(node: string, args: PrepareArgs): Promise<PrepareRes | undefined> {
    if (node === this.options.me) return this.options.acceptor.onPrepare(args);
    const reply = await this.options.rpc.call(this.options.addressOf(node), preparereq, args, { timeoutMs: this.options.rpcTimeoutMs, resendOnOldServer: true });
    if (!reply.ok) {
      log('%s preparereq to %s failed: %s', this.options.me, node, reply.error.code);
      return undefined;
    }
    if (!this.answered(node, 'preparereq', reply.status)) return undefined;
    return reply.status === PaxosStatus.OK ? reply.result : undefined;
  }

  /**
   * Whether `node`'s reply status is a normal answer. CLUSTER_MISMATCH / CLUSTER_INVALID: the node
   * refused us as another cluster's; it is no vote, and a mismatch is reported.
   */
  private answered(node: string, what: string, status: number): boolean {
    if (status === PaxosStatus.CLUSTER_MISMATCH || status === PaxosStatus.CLUSTER_INVALID) {
      log('%s %s to %s refused: %s', this.options.me, what, node, status === PaxosStatus.CLUSTER_MISMATCH ? 'it is in another cluster' : 'our cluster id is invalid to it');
      if (status === PaxosStatus.CLUSTER_MISMATCH) this.options.onClusterMismatch(node);
      return false;
    }
    this.options.onAnswered?.(node);
    return true;
  }

  private async acceptOne(node: string, args: AcceptArgs): Promise<boolean> {
    if (node === this.options.me) return this.options.acceptor.onAccept(args);
    const reply = await this.options.rpc.call(this.options.addressOf(node), acceptreq, args, { timeoutMs: this.options.rpcTimeoutMs, resendOnOldServer: true });
    if (!reply.ok) {
      log('%s acceptreq to %s failed: %s', this.options.me, node, reply.error.code);
      return false;
    }
    if (!this.answered(node, 'acceptreq', reply.status)) return false;
    return reply.status === PaxosStatus.OK && reply.result;
  }

  private async decideOne(node: string, args: DecideArgs): Promise<void> {
    const reply = await this.options.rpc.call(this.options.addressOf(node), decidereq, args, { timeoutMs: this.options.rpcTimeoutMs, resendOnOldServer: true });
    if (!reply.ok) log('%s decidereq to %s failed: %s (it will learn by catch-up)', this.options.me, node, reply.error.code);
    else this.answered(node, 'decidereq', reply.status);
  }
}

/**
 * Resolves with the answers that have arrived once `enough(answers)` holds or every promise has
 * settled, whichever comes first; later answers are dropped. None of the promises may reject.
 */
export function gather<T>(promises: readonly Promise<T>[], enough: (answers: readonly T[]) => boolean): Promise<T[]> {
  return new Promise((resolve) => {
    const answers: T[] = [];
    let settled = 0;
    let done = false;
    if (promises.length === 0) return resolve(answers);
    for (const promise of promises) {
      void promise.then((answer) => {
        if (done) return;
        answers.push(answer);
        settled++;
        if (settled === promises.length || enough(answers)) {
          done = true;
          resolve([...answers]);
        }
      });
    }
  });
}
