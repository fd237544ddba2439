/**
 * config (the lab's config): the view manager of one node. It owns the acceptor and the proposer,
 * knows the current view (vid = the highest decided instance, members = its value), detects
 * failures with heartbeats and proposes the next view: the current one minus a failed node
 * (`remove`) or plus a joiner (`add`, called by the RSM on the primary).
 *
 * Views are committed in order and reported upward through `commitListener(vid, members)` once
 * the commit is durable; a node that learns several views at once reports only the newest.
 *
 * Differences from the lab (see paxos/README.md): a node that hears of a newer view catches up by
 * asking the node that knows it (no view change needed); a decide for a future instance is
 * ignored, not fatal; the proposer's round is persisted.
 */
import { assert } from '../lib/assert.js';
import { sleep } from '../lib/clock.js';
import type { Env, Storage } from '../lib/env.js';
import { logger } from '../lib/log.js';
import type { RpcClient, RpcEndpoint } from '../lib/rpc.js';
import { Acceptor } from './acceptor.js';
import { doneLine, type PaxosLogSink } from './log-sink.js';
import { PROPOSAL_ZERO, PaxosStatus, acceptreq, decidereq, heartbeat, preparereq, type PrepareRes } from './messages.js';
import { Proposer } from './proposer.js';
import { PaxosStore, clusterCheck } from './store.js';
import {
  decodeView,
  encodeView,
  firstViewValue,
  isValidNodeId,
  isValidViewValue,
  smallestNodeId,
  type HistoryEntry,
} from './view.js';

const log = logger('paxos:config');

export interface ConfigTiming {
  /** Time between heartbeat rounds. */
  heartbeatIntervalMs: number;
  /**
   * Deadline of one heartbeat RPC: a member that has not answered for this long is taken for
   * failed. The heartbeat is retransmitted every `heartbeatRetransmitMs(timing)` meanwhile, so
   * only a long silence counts, never a few lost messages. A refused or reset connection fails it
   * at once (the process is gone): that, not this deadline, is what finds a crashed member fast.
   */
  heartbeatTimeoutMs: number;
  /** Deadline of each prepare, accept, decide and catch-up RPC. */
  paxosTimeoutMs: number;
  /**
   * The designated remover (the smallest member of the view other than the failed one) proposes a
   * removal at once; any other detector waits this long, plus a random 0..removeJitterMsMax, and
   * proposes only if the view is still the same: so proposers do not duel, yet a removal still
   * happens when the designated one is gone too or may not remove (its removal gate is closed).
   */
  removeBackoffMs: number;
  /** The random part of a non-designated detector's wait (from the injected PRNG). */
  removeJitterMsMax: number;
}

export const defaultConfigTiming: ConfigTiming = {
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 1000,
  paxosTimeoutMs: 1000,
  removeBackoffMs: 1000,
  removeJitterMsMax: 200,
};

/**
 * How often a heartbeat is retransmitted inside its deadline: at least ten tries, and at least two
 * per interval. With 10 % of messages lost each way (RPC_LOSSY=10) one try fails about one time in
 * five, so ten independent tries all fail about once in ten million: lossy links do not remove
 * members, a silent member is still found after `heartbeatTimeoutMs`.
 */
export function heartbeatRetransmitMs(timing: Pick<ConfigTiming, 'heartbeatIntervalMs' | 'heartbeatTimeoutMs'>): number {
  return Math.max(1, Math.floor(Math.min(timing.heartbeatIntervalMs / 2, timing.heartbeatTimeoutMs / 10)));
}

/** Catch-up learns at most this many views per call (it is called again when still behind). */
export const CATCH_UP_STEPS_MAX = 10_000;

/** At most this many peers are remembered as refused (each is logged once); more are refused unlogged. */
export const REFUSED_PEERS_MAX = 256;

/** Where config reads this node's cluster id: the replica host's ClusterIdentity, or the stored one. */
export interface ClusterIdSource {
  /** The cluster id, "" while unknown. */
  readonly cluster: string;
}

/** What a refused message is answered with: nothing about this node's state. */
const REFUSED_PREPARE: PrepareRes = Object.freeze({ oldinstance: false, accept: false, n_a: PROPOSAL_ZERO, v_a: '' });

export interface ConfigOptions {
  /** This node's id (a bare port or host:port). */
  readonly me: string;
  /** The first node: it creates view 1 = {first} when its storage is empty. */
  readonly first: string;
  readonly env: Env;
  /** The node's one RPC endpoint on its main port; config registers paxos and heartbeat on it. */
  readonly rpc: RpcEndpoint;
  readonly storage: Storage;
  readonly logSink: PaxosLogSink;
  /** Breakpoint exit: the host prints the message and exits; the simulator crashes the node. */
  readonly die: (message: string) => void;
  /** Maps a node id to its network address (default: the id itself). */
  readonly addressOf?: (id: string) => string;
  /** Called when a background loop fails with an unexpected error (default: rethrow, crashing). */
  readonly onFatal?: (error: unknown) => void;
  readonly timing?: Partial<ConfigTiming>;
}

type HeartbeatOutcome = 'ok' | 'failure' | 'viewerr' | 'behind';

export class Config {
  readonly me: string;
  readonly first: string;
  readonly timing: ConfigTiming;
  readonly acceptor: Acceptor;
  readonly proposer: Proposer;
  /** Called after each durable commit (or adoption) with the new vid and its members. */
  commitListener: (vid: number, members: readonly string[]) => void = () => {};
  /**
   * Asked before a failure detected by heartbeats leads to proposing a removal; false means this
   * node does not propose it (others may). The RSM closes it while this node does not hold the
   * replicated state (see rsm/README.md, "Who may remove a member"). Default: always open.
   */
  removalGate: () => boolean = () => true;
  /**
   * A node of another cluster (or one with a malformed cluster field) sent a Paxos message or a
   * heartbeat, and was refused. Called once per peer until it sends an acceptable message again
   * (default: the debug log). The host prints it.
   */
  clusterRefusalListener: (line: string) => void = (line) => log('%s %s', this.me, line);
  /**
   * A peer answered one of our Paxos messages or heartbeats CLUSTER_MISMATCH: it is in another
   * cluster, and counted as failed for that round. Called once per peer until it answers normally
   * again (default: nothing). The host checks the peer's id and stops if it is this node that is
   * in the wrong place (see identity.ts, `QuorumWatch.peerMismatch`).
   */
  clusterMismatchListener: (peer: string) => void = () => {};

  private readonly env: Env;
  private readonly rpc: RpcEndpoint;
  private readonly store: PaxosStore;
  private readonly addressOf: (id: string) => string;
  private readonly onFatal: (error: unknown) => void;
  /** The view value decoded last by members(), with its members (see there). */
  private lastDecoded: { readonly value: string; readonly members: readonly string[] } | undefined;
  /** Heartbeat clients by member id; replaced after OLDSRV/FORGOTTEN, dropped for ex-members. */
  private readonly heartbeatClients = new Map<string, RpcClient>();
  /** Where the cluster id comes from (shared with the acceptor and the proposer). */
  private readonly clusterRef: { source: ClusterIdSource };
  /** Senders refused as another cluster's, already logged (bounded by REFUSED_PEERS_MAX). */
  private readonly refusedPeers = new Set<string>();
  /** Peers that refused us as another cluster's, already reported (bounded by REFUSED_PEERS_MAX). */
  private readonly mismatchedPeers = new Set<string>();
  private catchingUp = false;
  private started = false;
  private stopped = false;
  private readonly stopController = new AbortController();

  private constructor(options: ConfigOptions, store: PaxosStore, acceptor: Acceptor, proposer: Proposer, clusterRef: { source: ClusterIdSource }) {
    this.me = options.me;
    this.clusterRef = clusterRef;
    this.first = options.first;
    this.env = options.env;
    this.rpc = options.rpc;
    this.store = store;
    this.acceptor = acceptor;
    this.proposer = proposer;
    this.addressOf = options.addressOf ?? ((id) => id);
    this.onFatal = options.onFatal ?? rethrowLater;
    this.timing = { ...defaultConfigTiming, ...options.timing };
    for (const [name, value] of Object.entries(this.timing)) {
      assert(Number.isFinite(value) && value >= 0, `config timing ${name} must be ≥ 0, got ${value}`);
    }
  }

  /**
   * Restores the node from storage, creates view 1 if this is the first node starting fresh, and
   * registers the paxos and heartbeat handlers. Heartbeats start with `start()`.
   */
  static async open(options: ConfigOptions): Promise<Config> {
    assert(isValidNodeId(options.me), `bad node id ${JSON.stringify(options.me)}`);
    assert(isValidNodeId(options.first), `bad first node id ${JSON.stringify(options.first)}`);
    const store = new PaxosStore(options.storage);
    const state = await store.load();
    // Until the host hands over its ClusterIdentity, the stored id (the host wrote it, if known,
    // before opening config; the simulator writes it before starting a node).
    const clusterRef: { source: ClusterIdSource } = { source: { cluster: state.clusterId ?? '' } };
    const cluster = (): string => clusterRef.source.cluster;
    // The proposer reports through config, which exists only after it.
    let config: Config | undefined;
    const acceptor = Acceptor.restore({ me: options.me, store, logSink: options.logSink, isValidValue: isValidViewValue, cluster }, state);
    const timing = { ...defaultConfigTiming, ...options.timing };
    const proposer = new Proposer({
      me: options.me,
      acceptor,
      store,
      rpc: options.rpc,
      addressOf: options.addressOf ?? ((id) => id),
      rpcTimeoutMs: timing.paxosTimeoutMs,
      lastN: state.proposerN,
      die: options.die,
      isValidValue: isValidViewValue,
      cluster,
      onClusterMismatch: (node) => config?.peerRefusedUs(node),
      onAnswered: (node) => config?.peerAnswered(node),
    });
    config = new Config(options, store, acceptor, proposer, clusterRef);
    acceptor.onCommit = (instance, value) => config.onAcceptorCommit(instance, value);
    acceptor.onBehind = (src) => config.catchUpInBackground(src);
    if (options.me === options.first && acceptor.instanceH === 0) {
      // View 1 is never proposed: the first node writes it (its bare id) when it starts fresh.
      const created = await acceptor.commit(1, firstViewValue(options.me));
      assert(created, 'could not create view 1');
    }
    config.registerHandlers();
    return config;
  }

  // ---------------------------------------------------------------------------------------------
  // Cluster identity.

  /** This node's cluster id, "" while unknown; sent in every Paxos message and heartbeat. */
  get cluster(): string {
    return this.clusterRef.source.cluster;
  }

  /**
   * From now on reads the cluster id from `source` (the replica host's ClusterIdentity, so an id
   * adopted after open is used at once). Its id must be the stored one, or unknown so far.
   */
  useClusterIdentity(source: ClusterIdSource): void {
    const current = this.cluster;
    assert(current === '' || source.cluster === current, `cluster identity ${source.cluster} differs from the stored ${current}`);
    this.clusterRef.source = source;
  }

  /** The cluster id recorded with decided view `vid` ("" unknown then, undefined old record or undecided). */
  viewCluster(vid: number = this.vid): string | undefined {
    return this.acceptor.clusterOf(vid);
  }

  // ---------------------------------------------------------------------------------------------
  // Views.

  /** The current view id: the highest instance decided here (0 before any). */
  get vid(): number {
    return this.acceptor.instanceH;
  }

  /** The members of view `vid` (default: the current one) in join order; empty if unknown. */
  members(vid: number = this.vid): string[] {
    const value = this.acceptor.value(vid);
    if (value === undefined) return [];
    // The RSM asks for the members of its view several times per replicated batch; a decided
    // value never changes, so the last one decoded is kept (decoding showed in its profile).
    if (this.lastDecoded?.value !== value) {
      const members = decodeView(value);
      assert(members !== undefined, `decided value of view ${vid} is not a view`);
      this.lastDecoded = { value, members };
    }
    return [...this.lastDecoded.members];
  }

  isMember(node: string, vid: number = this.vid): boolean {
    return this.members(vid).includes(node);
  }

  /** The decided history 1..vid. */
  history(): HistoryEntry[] {
    return this.acceptor.history();
  }

  /** The history as the text log's `done` lines (what a joiner's log is replaced with). */
  historyLines(): string[] {
    return this.history().map((entry) => doneLine(entry.instance, entry.value));
  }

  /** Resolves once every Paxos change made so far is durable. */
  flushed(): Promise<void> {
    return this.acceptor.flushed();
  }

  // ---------------------------------------------------------------------------------------------
  // View changes.

  /**
   * Proposes view vid+1 = current members + `node` (the RSM primary admitting a joiner). Only if
   * `vid` is still the current view. Resolves whether `node` is a member afterwards.
   */
  async add(node: string, vid: number): Promise<boolean> {
    assert(isValidNodeId(node), `add: bad node id ${JSON.stringify(node)}`);
    if (vid !== this.vid) {
      log('%s add %s: ignoring (view %d is not current %d)', this.me, node, vid, this.vid);
      return false;
    }
    const members = this.members(vid);
    if (members.includes(node)) return true;
    if (!members.includes(this.me)) {
      log('%s add %s: ignoring (not a member of view %d)', this.me, node, vid);
      return false;
    }
    await this.proposer.run(vid + 1, members, encodeView([...members, node]));
    return this.isMember(node);
  }

  /** Proposes view vid+1 = current members − `node`. Resolves whether `node` is gone afterwards. */
  async remove(node: string): Promise<boolean> {
    const vid = this.vid;
    const members = this.members(vid);
    if (!members.includes(node)) return true;
    if (node === this.me || members.length < 2 || !members.includes(this.me)) {
      log('%s remove %s: ignoring (cannot remove myself or from a view I am not in)', this.me, node);
      return false;
    }
    await this.proposer.run(
      vid + 1,
      members,
      encodeView(members.filter((member) => member !== node)),
    );
    return !this.isMember(node);
  }

  /** rsm_tester breakpoints 3 and 4: arm proposer breakpoint 1 or 2. */
  breakpoint(b: 3 | 4): void {
    this.proposer.breakpoint(b);
  }

  /** Disarms the proposer breakpoints (simulator liveness phases). */
  disarmBreakpoints(): void {
    this.proposer.disarmBreakpoints();
  }

  /**
   * Replaces this node's history with a newer one (a joiner adopting the primary's). The log is
   * replaced too. Resolves whether it was adopted.
   */
  async adoptHistory(entries: readonly HistoryEntry[]): Promise<boolean> {
    return this.acceptor.replaceHistory(entries);
  }

  /**
   * Asks every other member of the current view for its vid (one heartbeat each, in parallel,
   * within `timeoutMs`) and catches up from one that knows a newer view. A replica restarting
   * into the view it had synchronised as primary calls this before it serves, so it does not act
   * as primary of a view the cluster has left. Resolves true when some member knows a newer view
   * (learned here, or by a catch-up already running).
   */
  async learnNewerView(timeoutMs: number): Promise<boolean> {
    const vid = this.vid;
    const others = this.members(vid).filter((member) => member !== this.me);
    const answers = await Promise.all(
      others.map(async (target) => {
        const reply = await this.rpc.call(this.addressOf(target), heartbeat, { me: this.me, cluster: this.cluster, vid }, { timeoutMs, resendOnOldServer: true });
        if (!reply.ok || !this.isNormalAnswer(target, 'heartbeat', reply.status)) return undefined;
        return reply.result > vid ? target : undefined;
      }),
    );
    const ahead = answers.find((target) => target !== undefined);
    if (ahead === undefined || this.stopped) return false;
    log('%s learnNewerView: %s knows a view after %d; catching up', this.me, ahead, vid);
    await this.catchUp(ahead);
    return true;
  }

  /**
   * Learns views decided elsewhere by asking `from` for each instance after ours with
   * preparereq(instance, (0, "")): a node that decided it answers oldinstance and the value, and
   * the request changes nothing anywhere. Stops when `from` knows no more. One at a time.
   */
  async catchUp(from: string): Promise<void> {
    if (from === this.me || this.catchingUp || this.stopped) return;
    this.catchingUp = true;
    try {
      for (let step = 0; step < CATCH_UP_STEPS_MAX && !this.stopped; step++) {
        const instance = this.acceptor.instanceH + 1;
        const reply = await this.rpc.call(
          this.addressOf(from),
          preparereq,
          { src: this.me, cluster: this.cluster, instance, n: PROPOSAL_ZERO },
          { timeoutMs: this.timing.paxosTimeoutMs, resendOnOldServer: true },
        );
        if (this.stopped) return;
        if (!reply.ok || !this.isNormalAnswer(from, 'catch-up', reply.status)) return;
        if (reply.status !== PaxosStatus.OK || !reply.result.oldinstance) return;
        if (!isValidViewValue(reply.result.v_a)) {
          log('%s catchUp: ignoring (%s sent a non-view for instance %d)', this.me, from, instance);
          return;
        }
        if (this.acceptor.instanceH + 1 !== instance) continue; // learned meanwhile
        log('%s catchUp: instance %d from %s', this.me, instance, from);
        await this.acceptor.commit(instance, reply.result.v_a);
      }
    } finally {
      this.catchingUp = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle.

  /** Starts the heartbeat loop. */
  start(): void {
    assert(!this.started, 'config started twice');
    this.started = true;
    void this.heartbeatLoop().catch((error) => this.fatal(error));
  }

  /** Stops everything at once, as a crash would: no goodbye, pending work never completes. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.proposer.stop();
    this.store.stop();
    this.stopController.abort(new Error('config stopped'));
    for (const client of this.heartbeatClients.values()) client.close();
    this.heartbeatClients.clear();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  // ---------------------------------------------------------------------------------------------
  // Heartbeats and failure detection.

  private async heartbeatLoop(): Promise<void> {
    while (!this.stopped) {
      try {
        await sleep(this.env.clock, this.timing.heartbeatIntervalMs, this.stopController.signal);
      } catch {
        return; // stopped
      }
      await this.heartbeatRound();
    }
  }

  /**
   * One round: the smallest member pings every other member (in parallel) and takes the first
   * failure in view order; any other member pings the smallest. A failure leads, if the view did
   * not change meanwhile, to proposing the failed node's removal: at once by the designated
   * remover (`designatedRemover`), after `removeBackoffMs` + jitter by anyone else.
   */
  private async heartbeatRound(): Promise<void> {
    const vid = this.vid;
    const members = this.members(vid);
    if (!members.includes(this.me)) return;
    const smallest = smallestNodeId(members);
    const targets = smallest === this.me ? members.filter((member) => member !== this.me) : [smallest];
    const outcomes = await Promise.all(targets.map((target) => this.doHeartbeat(target, vid)));
    if (this.stopped) return;
    const failedAt = outcomes.findIndex((outcome) => outcome === 'failure' || outcome === 'viewerr');
    const failed = failedAt < 0 ? undefined : targets[failedAt];
    if (failed === undefined || this.vid !== vid) return;
    if (designatedRemover(members, failed) !== this.me) {
      const waitMs = this.timing.removeBackoffMs + this.env.random.int(this.timing.removeJitterMsMax + 1);
      log('%s heartbeat: %s failed; leaving its removal to %s for %d ms', this.me, failed, designatedRemover(members, failed), waitMs);
      try {
        await sleep(this.env.clock, waitMs, this.stopController.signal);
      } catch {
        return;
      }
    }
    if (this.vid !== vid || this.proposer.isRunning) return;
    if (!this.removalGate()) {
      log('%s heartbeat: not proposing to remove %s from view %d (the removal gate is closed)', this.me, failed, vid);
      return;
    }
    log('%s heartbeat: proposing to remove %s from view %d', this.me, failed, vid);
    await this.remove(failed);
  }

  private async doHeartbeat(target: string, vid: number): Promise<HeartbeatOutcome> {
    let client = this.heartbeatClients.get(target);
    if (client === undefined || client.isClosed) {
      client = this.rpc.newClient(this.addressOf(target));
      this.heartbeatClients.set(target, client);
    }
    const reply = await client.call(heartbeat, { me: this.me, cluster: this.cluster, vid }, {
      timeoutMs: this.timing.heartbeatTimeoutMs,
      // Many tries inside the deadline, so lost messages are not a failure.
      retransmitMs: heartbeatRetransmitMs(this.timing),
      retransmitMsMax: heartbeatRetransmitMs(this.timing),
    });
    if (!reply.ok) {
      const code = reply.error.code;
      if (code === 'RPC_OLDSRV' || code === 'RPC_FORGOTTEN') {
        // The target restarted (or forgot us): it is alive. Start afresh with a new client.
        client.close();
        if (this.heartbeatClients.get(target) === client) this.heartbeatClients.delete(target);
        return 'ok';
      }
      log('%s heartbeat to %s failed: %s', this.me, target, code);
      return 'failure';
    }
    // Refused as another cluster's: a failure of that member (it is no member of ours).
    if (!this.isNormalAnswer(target, 'heartbeat', reply.status)) return 'failure';
    const theirVid = reply.result;
    if (theirVid > vid) {
      // They know a newer view: learn it from them rather than removing anyone.
      void this.catchUp(target).catch((error) => this.fatal(error));
      return 'behind';
    }
    if (reply.status === PaxosStatus.OK) return 'ok';
    log('%s heartbeat to %s: view error (theirs %d, mine %d)', this.me, target, theirVid, vid);
    return 'viewerr';
  }

  private registerHandlers(): void {
    const { rpc, acceptor } = this;
    rpc.handle(preparereq, async (args) => this.refusal('preparereq', args.src, args.cluster, REFUSED_PREPARE) ?? { status: PaxosStatus.OK, result: await acceptor.onPrepare(args) });
    rpc.handle(acceptreq, async (args) => this.refusal('acceptreq', args.src, args.cluster, false) ?? { status: PaxosStatus.OK, result: await acceptor.onAccept(args) });
    rpc.handle(decidereq, async (args) => this.refusal('decidereq', args.src, args.cluster, 0) ?? { status: PaxosStatus.OK, result: await acceptor.onDecide(args) });
    rpc.handle(heartbeat, (args) => this.refusal('heartbeat', args.me, args.cluster, 0) ?? this.onHeartbeat(args.me, args.vid));
  }

  /**
   * The cluster gate in front of every Paxos and heartbeat handler: a sender whose cluster id is
   * known and differs from ours (both known) is answered CLUSTER_MISMATCH, a malformed id
   * CLUSTER_INVALID, with `empty` as the result; nothing else happens (no state change, no
   * catch-up, no durable write). Unknown ("") on either side passes. Undefined: go on.
   */
  private refusal<R>(message: string, src: string, cluster: string, empty: R): { status: number; result: R } | undefined {
    const mine = this.cluster;
    const verdict = clusterCheck(mine, cluster);
    if (verdict === 'ok') {
      if (this.refusedPeers.size > 0) this.refusedPeers.delete(src);
      return undefined;
    }
    if (!this.refusedPeers.has(src) && this.refusedPeers.size < REFUSED_PEERS_MAX) {
      this.refusedPeers.add(src);
      // Both fields come from the network: quote anything that is not a plain id (no line breaks in the log).
      const who = isValidNodeId(src) && /^[\x21-\x7e]+$/.test(src) ? src : JSON.stringify(src.slice(0, 80));
      this.clusterRefusalListener(
        verdict === 'mismatch'
          ? `refusing ${message} from ${who}: it is in cluster ${cluster}, this node is in cluster ${mine}`
          : `refusing ${message} from ${who}: malformed cluster id ${JSON.stringify(cluster.slice(0, 80))}`,
      );
    }
    return { status: verdict === 'mismatch' ? PaxosStatus.CLUSTER_MISMATCH : PaxosStatus.CLUSTER_INVALID, result: empty };
  }

  /**
   * Whether a reply status from `peer` is a normal answer (OK, ERR). A refusal as another
   * cluster's is not: a mismatch is reported once (`clusterMismatchListener`).
   */
  private isNormalAnswer(peer: string, what: string, status: number): boolean {
    if (status === PaxosStatus.CLUSTER_MISMATCH) {
      log('%s %s to %s refused: it is in another cluster', this.me, what, peer);
      this.peerRefusedUs(peer);
      return false;
    }
    if (status === PaxosStatus.CLUSTER_INVALID) {
      log('%s %s to %s refused: our cluster id %j is invalid to it', this.me, what, peer, this.cluster);
      return false;
    }
    this.peerAnswered(peer);
    return true;
  }

  /** The RSM's join found `peer` in another cluster: reported like a refusal of a Paxos message. */
  reportClusterMismatch(peer: string): void {
    this.peerRefusedUs(peer);
  }

  /** `peer` refused us as another cluster's (heartbeat, catch-up or the proposer). */
  private peerRefusedUs(peer: string): void {
    if (this.stopped || this.mismatchedPeers.has(peer) || this.mismatchedPeers.size >= REFUSED_PEERS_MAX) return;
    this.mismatchedPeers.add(peer);
    this.clusterMismatchListener(peer);
  }

  private peerAnswered(peer: string): void {
    if (this.mismatchedPeers.size > 0) this.mismatchedPeers.delete(peer);
  }

  /**
   * Heartbeat handler: replies with my vid; OK when the caller's view is mine or I am mid-Paxos
   * (the views may legitimately differ by one then). A caller with a newer view also gets OK, and
   * I catch up from it (the lab answers ERR and the caller removes me instead).
   */
  private onHeartbeat(caller: string, callerVid: number): { status: number; result: number } {
    const mine = this.vid;
    if (callerVid === mine || this.proposer.isRunning) return { status: PaxosStatus.OK, result: mine };
    if (callerVid > mine) {
      if (isValidNodeId(caller)) this.catchUpInBackground(caller);
      else log('%s heartbeat: ignoring catch-up (bad caller id)', this.me);
      return { status: PaxosStatus.OK, result: mine };
    }
    return { status: PaxosStatus.ERR, result: mine };
  }

  private catchUpInBackground(from: string): void {
    if (!isValidNodeId(from)) return;
    void this.catchUp(from).catch((error) => this.fatal(error));
  }

  /** The acceptor's upcall: a durable commit of view `instance`. */
  private onAcceptorCommit(instance: number, value: string): void {
    const members = decodeView(value);
    assert(members !== undefined, `committed a non-view ${JSON.stringify(value)}`);
    assert(instance <= this.vid, 'commit upcall beyond the current view');
    // Former members' heartbeat clients are of no more use.
    for (const [node, client] of this.heartbeatClients) {
      if (!members.includes(node)) {
        client.close();
        this.heartbeatClients.delete(node);
      }
    }
    this.commitListener(instance, members);
  }

  private fatal(error: unknown): void {
    if (this.stopped) return;
    this.onFatal(error);
  }
}

/**
 * Who proposes removing `failed` from a view with `members` without waiting: the smallest other
 * member. Every detector computes the same answer from the same view, so at most one proposes at
 * once; the others only after `removeBackoffMs`.
 */
export function designatedRemover(members: readonly string[], failed: string): string | undefined {
  const others = members.filter((member) => member !== failed);
  return others.length === 0 ? undefined : smallestNodeId(others);
}

function rethrowLater(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}

