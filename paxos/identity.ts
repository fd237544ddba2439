/**
 * Cluster identity and quorum visibility, for the replica host (rsm/replica-process.ts). Both use
 * only the injected environment (clock, randomness, RPC endpoint, storage).
 *
 * Cluster identity (the record is `paxos/cluster` in paxos/store.ts):
 *
 * 1. On open, a node that has no cluster id and is the cluster's first node draws one from the
 *    injected Random and writes it (`sync`) before it answers anyone. Any other node without an
 *    id has "" (unknown) until it adopts the id of the first peer that tells it one.
 * 2. Every node answers `clusterid(src, cluster)` with its own id: OK when the ids are equal or
 *    either is unknown, ERR when they differ; a refusal is logged with this node's data directory.
 * 3. Before the replica starts, the host asks the first node and the members of its last view
 *    (`checkPeers`). A peer with another id → the node refuses to start (CLUSTER_MISMATCH, the
 *    message names the data directory), having written nothing. A peer with the same id, or an
 *    unknown node's first answer (which it adopts), confirms the node.
 * 4. If no peer answered, the host keeps asking once per probe interval until one does (step 3's
 *    rules; a mismatch found then stops the node).
 *
 * Quorum visibility (`QuorumWatch`): once per probe interval the host asks every other member of
 * the current view `clusterid` (a cheap liveness probe that also re-checks the identity) and
 * records since when each member has not answered. Fewer than a majority reachable, self
 * included, is "no quorum": the watch logs `no quorum: view 4 {3772,3776}; 3772 unreachable since
 * 12:01:07` when that starts or changes, and `quorum regained: …` when it ends, and serves it as
 * the `quorum` procedure on the control port.
 */
import type { Clock, Storage } from '../lib/env.js';
import { ViewstampError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import type { RpcClient, RpcEndpoint } from '../lib/rpc.js';
import { PaxosStatus, clusterid, type QuorumRes } from './messages.js';
import { KEY_CLUSTER, drawClusterId, isValidClusterId, putClusterId, readNodeIdentity } from './store.js';

const log = logger('paxos:identity');

/** Deadline of one identity or liveness probe. */
export const IDENTITY_PROBE_TIMEOUT_MS = 500;

export type PeerAnswer =
  | { readonly kind: 'same' }
  | { readonly kind: 'adopted'; readonly cluster: string }
  | { readonly kind: 'unknown' } // the peer knows no id either
  | { readonly kind: 'mismatch'; readonly cluster: string }
  | { readonly kind: 'unreachable'; readonly code: string };

export interface ClusterIdentityOptions {
  readonly me: string;
  readonly first: string;
  readonly storage: Storage;
  readonly random: { int(n: number): number };
  readonly rpc: RpcEndpoint;
  /** Where this node's durable state lives, for messages ("logs/data/3772"). */
  readonly dataPath: string;
  readonly addressOf?: (id: string) => string;
  /** Where refusals and adoptions are reported (default: the debug log). */
  readonly say?: (line: string) => void;
}

export class ClusterIdentity {
  private id: string;
  private readonly options: ClusterIdentityOptions;
  private readonly addressOf: (id: string) => string;
  private readonly say: (line: string) => void;
  /** Probe clients by peer id; bounded by the members ever probed (a view's size). */
  private readonly clients = new Map<string, RpcClient>();
  /** Whether the id was drawn by this open (a new cluster). */
  readonly drewId: boolean;

  private constructor(options: ClusterIdentityOptions, id: string, drewId: boolean) {
    this.options = options;
    this.id = id;
    this.drewId = drewId;
    this.addressOf = options.addressOf ?? ((node) => node);
    this.say = options.say ?? ((line) => log('%s', line));
  }

  /** Step 1: reads the id, drawing and storing one on the first node that has none. */
  static async open(options: ClusterIdentityOptions): Promise<ClusterIdentity> {
    const stored = (await readNodeIdentity(options.storage)).clusterId;
    if (stored !== undefined) return new ClusterIdentity(options, stored, false);
    if (options.me !== options.first) return new ClusterIdentity(options, '', false);
    const drawn = drawClusterId(options.random);
    await options.storage.write([putClusterId(drawn)], { sync: true });
    return new ClusterIdentity(options, drawn, true);
  }

  /** This node's cluster id, "" while unknown. */
  get cluster(): string {
    return this.id;
  }

  /** Step 2: registers the `clusterid` handler on the node's main endpoint. */
  register(rpc: RpcEndpoint): void {
    rpc.handle(clusterid, (args) => {
      if (this.id === '' || args.cluster === '' || args.cluster === this.id) return { status: PaxosStatus.OK, result: this.id };
      this.say(
        `refusing ${args.src}: it is in cluster ${args.cluster}, this node (data directory ${this.options.dataPath}) is in cluster ${this.id}`,
      );
      return { status: PaxosStatus.ERR, result: this.id };
    });
  }

  /** Asks one peer for its id; adopts it when this node has none. Never throws. */
  async ask(peer: string, timeoutMs = IDENTITY_PROBE_TIMEOUT_MS): Promise<PeerAnswer> {
    // Our own client per peer (not the endpoint's shared cache, which other callers use).
    let client = this.clients.get(peer);
    if (client === undefined || client.isClosed) {
      client = this.options.rpc.newClient(this.addressOf(peer));
      this.clients.set(peer, client);
    }
    // A steady pace of tries (as heartbeats), so a few lost messages do not read as "unreachable".
    const retransmitMs = Math.max(1, Math.floor(timeoutMs / 10));
    const reply = await client.call(clusterid, { src: this.options.me, cluster: this.id }, { timeoutMs, retransmitMs, retransmitMsMax: retransmitMs });
    if (!reply.ok) {
      const code = reply.error.code;
      // A restarted peer is alive but a new server instance: the next probe uses a new client.
      if (code === 'RPC_OLDSRV' || code === 'RPC_FORGOTTEN') {
        client.close();
        this.clients.delete(peer);
      }
      return { kind: 'unreachable', code };
    }
    const theirs = reply.result;
    if (theirs === '' || !isValidClusterId(theirs)) return { kind: 'unknown' };
    if (this.id === theirs) return { kind: 'same' };
    if (this.id !== '') return { kind: 'mismatch', cluster: theirs };
    await this.adopt(theirs, peer);
    return { kind: 'adopted', cluster: theirs };
  }

  /**
   * Step 3: asks `peers` in parallel. Throws CLUSTER_MISMATCH when one is in another cluster.
   * Resolves whether some peer confirmed (or gave) this node's id.
   */
  async checkPeers(peers: readonly string[], timeoutMs = IDENTITY_PROBE_TIMEOUT_MS): Promise<boolean> {
    const targets = [...new Set(peers)].filter((peer) => peer !== this.options.me);
    const answers = await Promise.all(targets.map(async (peer) => ({ peer, answer: await this.ask(peer, timeoutMs) })));
    const mismatch = answers.find((a) => a.answer.kind === 'mismatch');
    if (mismatch !== undefined && mismatch.answer.kind === 'mismatch') {
      throw new ViewstampError(
        'CLUSTER_MISMATCH',
        `data directory ${this.options.dataPath} belongs to cluster ${this.id}, but ${mismatch.peer} is in cluster ${mismatch.answer.cluster}; ` +
          `refusing to start (nothing was changed: point RSM_DATA_DIR at this cluster's data directory, or move ${this.options.dataPath} away to join as a new node)`,
      );
    }
    return answers.some((a) => a.answer.kind === 'same' || a.answer.kind === 'adopted');
  }

  private async adopt(cluster: string, from: string): Promise<void> {
    if (this.id !== '') return;
    await this.options.storage.write([putClusterId(cluster)], { sync: true });
    this.id = cluster;
    this.say(`adopted cluster id ${cluster} from ${from} (stored in ${this.options.dataPath}, key ${KEY_CLUSTER})`);
  }
}

// -----------------------------------------------------------------------------------------------
// Quorum visibility.

export interface QuorumView {
  readonly vid: number;
  readonly members: readonly string[];
}

/** "12:01:07" in UTC, from a wall-clock time in ms since the Unix epoch. */
export function clockText(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(11, 19);
}

/**
 * The synchronous core of the quorum watch: probe results in, a QuorumRes and the log line to
 * print (when the verdict changed) out.
 */
export class QuorumTracker {
  private readonly downSince = new Map<string, number>();
  /** Probe rounds in a row each member has not answered. */
  private readonly misses = new Map<string, number>();
  private lastLine = '';
  private current: QuorumRes = { vid: 0, members: [], reachable: [], unreachableSince: [], quorum: true };

  /**
   * @param missesToDown probe rounds in a row a member must miss before it counts as unreachable
   *   (1: at once), so one unlucky round on a lossy network does not report "no quorum".
   */
  constructor(
    private readonly me: string,
    private readonly missesToDown = 1,
  ) {}

  /** Records one probe round of `view` at wall time `nowMs`; returns a line when the verdict changed. */
  record(view: QuorumView, answered: ReadonlySet<string>, nowMs: number): string | undefined {
    const members = [...view.members];
    for (const node of [...this.downSince.keys()]) if (!members.includes(node) || answered.has(node)) this.downSince.delete(node);
    for (const node of [...this.misses.keys()]) if (!members.includes(node)) this.misses.delete(node);
    for (const node of members) this.misses.set(node, node === this.me || answered.has(node) ? 0 : (this.misses.get(node) ?? 0) + 1);
    const reachable = members.filter((node) => (this.misses.get(node) ?? 0) < this.missesToDown);
    const unreachable = members.filter((node) => !reachable.includes(node));
    // Since the first missed round, not the round that made it count.
    for (const node of members) if (node !== this.me && !answered.has(node) && !this.downSince.has(node)) this.downSince.set(node, nowMs);
    const isMember = members.includes(this.me);
    const quorum = !isMember || members.length === 0 || reachable.length >= Math.floor(members.length / 2) + 1;
    this.current = {
      vid: view.vid,
      members,
      reachable,
      unreachableSince: unreachable.map((node) => `${node}@${this.downSince.get(node)}`),
      quorum,
    };
    const line = quorum ? (this.lastLine.startsWith('no quorum') ? `quorum regained: view ${view.vid} {${reachable.join(',')}} reachable` : '') : describeNoQuorum(this.current);
    if (line === this.lastLine || (line === '' && this.lastLine === '')) return undefined;
    this.lastLine = line;
    return line === '' ? undefined : line;
  }

  get status(): QuorumRes {
    return this.current;
  }
}

/** `no quorum: view 4 {3772,3776}; 3772 unreachable since 12:01:07` (or '' when there is quorum). */
export function describeNoQuorum(res: QuorumRes, nameOf: (id: string) => string = (id) => id): string {
  if (res.quorum) return '';
  const since = res.unreachableSince
    .map((entry) => {
      const at = entry.lastIndexOf('@');
      return `${nameOf(entry.slice(0, at))} unreachable since ${clockText(Number(entry.slice(at + 1)))}`;
    })
    .join(', ');
  return `no quorum: view ${res.vid} {${res.members.map(nameOf).join(',')}}; ${since}`;
}

export interface QuorumWatchOptions {
  readonly me: string;
  readonly identity: ClusterIdentity;
  readonly clock: Clock;
  /**
   * Wall-clock ms since the Unix epoch, only to print "unreachable since 12:01:07" for people;
   * never used to decide anything. The process host passes the real wall clock.
   */
  readonly wallNow: () => number;
  readonly view: () => QuorumView;
  readonly intervalMs: number;
  /** See `QuorumTracker`; default 1. */
  readonly missesToDown?: number;
  readonly say: (line: string) => void;
  /** A peer turned out to be in another cluster (step 4): the host stops the node. */
  readonly onMismatch: (error: ViewstampError) => void;
}

/** The probe loop (host side): one round per interval until `stop`. */
export class QuorumWatch {
  readonly tracker: QuorumTracker;
  private stopped = false;
  private timer: { cancel(): void } | undefined;
  private confirmed: boolean;
  /** Peers whose mismatch (reported by config) is being checked now; bounded by the view. */
  private readonly checking = new Set<string>();

  constructor(private readonly options: QuorumWatchOptions, confirmed: boolean) {
    this.tracker = new QuorumTracker(options.me, options.missesToDown ?? 1);
    this.confirmed = confirmed;
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /**
   * Config's report: `peer` refused one of this node's Paxos messages or heartbeats as another
   * cluster's (CLUSTER_MISMATCH). The same rule as a mismatch found by a probe: a node that no
   * peer of its own cluster has confirmed yet asks `peer` for its id (`checkPeers`) and, if the
   * ids differ, stops through `onMismatch` with the message naming its data directory; a
   * confirmed node keeps running (the peer is the one in the wrong place) and says so once per
   * report. Config counts the peer as failed meanwhile. Never throws.
   */
  async peerMismatch(peer: string): Promise<void> {
    if (this.stopped || this.checking.has(peer) || peer === this.options.me) return;
    if (this.confirmed) {
      this.options.say(`${peer} refused this node as another cluster's (this node is in cluster ${this.options.identity.cluster}); treating it as failed`);
      return;
    }
    this.checking.add(peer);
    try {
      if (await this.options.identity.checkPeers([peer])) this.confirmed = true;
    } catch (error) {
      if (this.stopped) return;
      this.stop();
      this.options.onMismatch(error as ViewstampError);
    } finally {
      this.checking.delete(peer);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.options.clock.setTimer(this.options.intervalMs, () => void this.round());
  }

  private async round(): Promise<void> {
    if (this.stopped) return;
    const view = this.options.view();
    const peers = view.members.filter((node) => node !== this.options.me);
    const answers = await Promise.all(peers.map(async (peer) => ({ peer, answer: await this.options.identity.ask(peer) })));
    if (this.stopped) return;
    const mismatch = answers.find((a) => a.answer.kind === 'mismatch');
    if (mismatch !== undefined && !this.confirmed) {
      try {
        await this.options.identity.checkPeers([mismatch.peer]);
      } catch (error) {
        this.stop();
        this.options.onMismatch(error as ViewstampError);
        return;
      }
    }
    if (answers.some((a) => a.answer.kind === 'same' || a.answer.kind === 'adopted')) this.confirmed = true;
    const answered = new Set(answers.filter((a) => a.answer.kind !== 'unreachable' && a.answer.kind !== 'mismatch').map((a) => a.peer));
    const line = this.tracker.record(view, answered, this.options.wallNow());
    if (line !== undefined) this.options.say(line);
    this.schedule();
  }
}
