/**
 * A cluster of RSM nodes inside one SimWorld: each node has its own clock owner and PRNG stream,
 * its SimNetwork address is its id (control endpoint at id+1), its storage lives on a shared
 * SimDisk, and its Paxos log goes to an in-memory sink that outlives incarnations, as a file does.
 * A PaxosChecker watches every log.
 *
 * crash(id) = stop the node's code, cancel its timers, close its endpoints, crash its storage
 * (losing unsynced writes). restart(id) = reopen from the disk and start again; a node outside
 * the current view rejoins through its master.
 *
 * runUntil and runFor call every live replica's `invariants()` (rsm/node.ts) before the first
 * event and after every event they run (SimWorld checks its predicate there, once microtasks are
 * drained: between events). The first violation stops the world: it is recorded in
 * `invariantViolations` with the virtual time and the event number, and then thrown as an
 * AssertionError ('throw', the default, for tests that do not look) or left for the caller to
 * report ('record', rsm_sim: a violation of the run, like the other checkers' findings).
 */
import { AssertionError } from '../../lib/assert.js';
import { RpcEndpoint, type RpcOptions } from '../../lib/rpc.js';
import { SimDisk, SimNetwork, SimWorld, simEnv, type SimWorldOptions } from '../../lib/sim/index.js';
import { MemoryLogSink, type PaxosLogSink } from '../../paxos/log-sink.js';
import { KEY_CLUSTER, putClusterId } from '../../paxos/store.js';
import { RsmNode, type RsmTiming } from '../../rsm/node.js';
import { compareViewstamp, describeViewstamp } from '../../rsm/protocol.js';
import type { StateMachine } from '../../rsm/state-machine.js';
import { PaxosChecker } from './checkers.js';

export interface SimClusterOptions {
  readonly seed: number | string;
  /** Node ids (bare ports, spaced by 2 so each has a control port id+1). */
  readonly ids: readonly string[];
  readonly timing?: Partial<RsmTiming>;
  readonly rpcOptions?: Partial<RpcOptions>;
  readonly world?: SimWorldOptions;
  /** Virtual ms each synced storage write takes to become durable, or per node (default 0: at once; SimStorage). */
  readonly storageSyncMs?: number | ((id: string) => number);
  /** A fresh state machine for each incarnation of a node (default: the node's EmptyStateMachine). */
  readonly stateMachine?: (id: string) => StateMachine;
  /** Called with each new incarnation before it starts (attach listeners and checkers here). */
  readonly onNodeStart?: (id: string, node: RsmNode, incarnation: number) => void;
  /**
   * This cluster's id, stored (`paxos/cluster`) in each node's storage before its first start, as
   * the replica host's ClusterIdentity would have (the first node draws it, joiners adopt it).
   * Default: none, every node's id is unknown ("") and no message is ever refused.
   */
  readonly clusterId?: string;
  /**
   * Run in the world and on the network of another SimCluster (its nodes can reach ours), with a
   * disk and a checker of our own. `seed` and `world` are then ignored. Ids may repeat the other
   * cluster's (a node of another cluster on the same address), but not run at the same time.
   */
  readonly shareWith?: SimCluster;
  /**
   * What runUntil/runFor do with a replica invariant that fails after an event: 'throw' (default:
   * they reject with an AssertionError), 'record' (they stop and resolve false; the caller reports
   * `invariantViolations`), 'off' (no check; only for measuring its cost).
   */
  readonly replicaInvariants?: 'throw' | 'record' | 'off';
}

/** What the cluster keeps per node id, across incarnations. */
export interface SimNodeSlot {
  readonly id: string;
  /** The node's Paxos log (a file in the real world): survives crashes. */
  readonly log: MemoryLogSink;
  /** The running incarnation, or undefined while crashed or not started. */
  node: RsmNode | undefined;
  rpc: RpcEndpoint | undefined;
  control: RpcEndpoint | undefined;
  /** Incarnations started so far. */
  starts: number;
  /** Messages passed to `die` (breakpoints that fired). */
  readonly deaths: string[];
  /** The running incarnation's state machine (undefined while down, or with the default machine). */
  stateMachine: StateMachine | undefined;
}

/** Ids like the tester's: ports spaced by 2 from `base`. */
export function portIds(count: number, base = 3772): string[] {
  return Array.from({ length: count }, (_, i) => String(base + 2 * i));
}

/** The control endpoint address of a simulated node: its port + 1. */
export function simControlAddress(id: string): string {
  return String(Number(id) + 1);
}

export class SimCluster {
  readonly world: SimWorld;
  readonly network: SimNetwork;
  readonly disk: SimDisk;
  readonly checker: PaxosChecker;
  readonly ids: readonly string[];
  readonly slots = new Map<string, SimNodeSlot>();
  /** Unexpected errors from node loops; any entry fails a run. */
  readonly fatalErrors: Array<{ node: string; error: unknown }> = [];
  /**
   * The first failed replica invariant (one entry per replica that failed at that step); the world
   * runs no event after it. Empty while every check passed.
   */
  readonly invariantViolations: string[] = [];
  /** Steps at which every live replica's invariants() was checked (before a run and after each event). */
  invariantChecks = 0;
  /** Sees every line appended to any node's log, after the checker (fault injection hooks in here). */
  lineListener: (id: string, line: string) => void = () => {};
  private readonly timing: Partial<RsmTiming>;
  private readonly storageSyncMsOf: (id: string) => number;
  private readonly rpcOptions: Partial<RpcOptions>;
  private readonly stateMachineOf: ((id: string) => StateMachine) | undefined;
  private readonly onNodeStart: ((id: string, node: RsmNode, incarnation: number) => void) | undefined;
  private readonly clusterId: string | undefined;
  private readonly replicaInvariants: 'throw' | 'record' | 'off';

  constructor(options: SimClusterOptions) {
    this.world = options.shareWith?.world ?? new SimWorld(options.seed, options.world);
    this.network = options.shareWith?.network ?? new SimNetwork(this.world);
    this.clusterId = options.clusterId;
    this.disk = new SimDisk(this.world);
    const syncMs = options.storageSyncMs ?? 0;
    this.storageSyncMsOf = typeof syncMs === 'number' ? () => syncMs : syncMs;
    this.checker = new PaxosChecker(() => this.world.now());
    this.ids = [...options.ids];
    this.timing = options.timing ?? {};
    this.rpcOptions = options.rpcOptions ?? {};
    this.stateMachineOf = options.stateMachine;
    this.onNodeStart = options.onNodeStart;
    this.replicaInvariants = options.replicaInvariants ?? 'throw';
    for (const id of this.ids) {
      this.slots.set(id, { id, log: new MemoryLogSink(), node: undefined, rpc: undefined, control: undefined, starts: 0, deaths: [], stateMachine: undefined });
    }
  }

  slot(id: string): SimNodeSlot {
    const slot = this.slots.get(id);
    if (slot === undefined) throw new Error(`SimCluster: unknown node ${id}`);
    return slot;
  }

  node(id: string): RsmNode | undefined {
    return this.slot(id).node;
  }

  isUp(id: string): boolean {
    return this.slot(id).node !== undefined;
  }

  upIds(): string[] {
    return this.ids.filter((id) => this.isUp(id));
  }

  /**
   * Starts (or restarts) node `id` with MASTER `master` (default: the first id): opens its storage
   * from the disk, listens on its id and id+1, restores Paxos state and starts its loops.
   */
  async start(id: string, master: string = this.ids[0]!): Promise<RsmNode> {
    const slot = this.slot(id);
    if (slot.node !== undefined) throw new Error(`SimCluster.start: ${id} is already up`);
    if (this.world.isDown(id)) this.world.restart(id);
    slot.starts++;
    const env = simEnv(this.world, this.network, id);
    const storage = this.disk.open(id);
    if (this.clusterId !== undefined && (await storage.get(KEY_CLUSTER)) === undefined) {
      await storage.write([putClusterId(this.clusterId)], { sync: true });
    }
    const rpc = new RpcEndpoint(await env.network.listen(id), env.clock, env.random.fork(), this.rpcOptions);
    const control = new RpcEndpoint(await env.network.listen(simControlAddress(id)), env.clock, env.random.fork(), this.rpcOptions);
    const incarnation = slot.starts;
    const stateMachine = this.stateMachineOf?.(id);
    const node = await RsmNode.open({
      ...(stateMachine === undefined ? {} : { stateMachine }),
      me: id,
      master,
      env,
      rpc,
      storage,
      logSink: this.observedSink(slot),
      die: (message) => {
        slot.deaths.push(message);
        this.world.trace(`die ${id} ${message}`);
        if (slot.starts === incarnation && slot.node !== undefined) this.crash(id);
      },
      onFatal: (error) => this.fatalErrors.push({ node: id, error }),
      timing: this.timing,
    });
    node.registerControl(control);
    slot.node = node;
    slot.rpc = rpc;
    slot.control = control;
    slot.stateMachine = stateMachine;
    this.onNodeStart?.(id, node, incarnation);
    // From here on the node runs under the world's scheduler, which completes delayed syncs (its
    // restore above awaited its reads and writes outside it).
    storage.syncDelayMs = this.storageSyncMsOf(id);
    node.start();
    this.world.trace(`start ${id} master=${master} incarnation=${incarnation} vid=${node.config.vid}`);
    return node;
  }

  /** Crashes node `id` now: its code stops, its timers, endpoints and unsynced writes are gone. */
  crash(id: string): void {
    const slot = this.slot(id);
    const node = slot.node;
    if (node === undefined) throw new Error(`SimCluster.crash: ${id} is not up`);
    slot.node = undefined;
    slot.rpc = undefined;
    slot.control = undefined;
    slot.stateMachine = undefined;
    node.stop();
    this.world.crash(id);
  }

  /** Crash then start again (with `master`, default the first id). */
  async restart(id: string, master?: string): Promise<RsmNode> {
    if (this.isUp(id)) this.crash(id);
    return this.start(id, master);
  }

  /**
   * Runs until `predicate` holds or `limitMs` of virtual time passed; resolves whether it held.
   * Every live replica's invariants are checked before the first event and after each one; on a
   * violation the world stops at once (no further event runs, in this call or a later one) and
   * the call rejects ('throw') or resolves false ('record').
   */
  async runUntil(predicate: () => boolean, limitMs: number): Promise<boolean> {
    if (this.replicaInvariants === 'off') return this.world.runUntil(predicate, limitMs);
    const held = await this.world.runUntil(() => !this.checkReplicaInvariants() || predicate(), limitMs);
    if (this.invariantsOk) return held;
    if (this.replicaInvariants === 'throw') throw new AssertionError(this.invariantViolations.join('; '));
    return false;
  }

  async runFor(ms: number): Promise<void> {
    await this.runUntil(() => false, ms);
  }

  /** No replica invariant has failed. */
  get invariantsOk(): boolean {
    return this.invariantViolations.length === 0;
  }

  /**
   * Calls invariants() of every running incarnation, in id order, then checks the one rule that
   * spans replicas (commitPointHolds); records each failure with the virtual time and the number
   * of the event just run (world.eventsRun). Returns whether all hold, and false without checking
   * again once one has failed (the run is over).
   */
  checkReplicaInvariants(): boolean {
    if (!this.invariantsOk) return false;
    this.invariantChecks++;
    for (const slot of this.slots.values()) {
      const node = slot.node;
      if (node === undefined) continue;
      try {
        node.invariants();
      } catch (error) {
        // Anything thrown is a failure: an AssertionError is a broken invariant; another error a
        // bug in the check itself, which must not pass either.
        const what = error instanceof AssertionError ? error.message : `${(error as Error)?.name ?? 'error'} in invariants(): ${String((error as Error)?.stack ?? error)}`;
        this.invariantViolations.push(`t=${this.world.now()}ms after event ${this.world.eventsRun}: ${slot.id}#${slot.starts} ${what}`);
      }
    }
    const behind = this.commitPointHolds();
    if (behind !== undefined) this.invariantViolations.push(`t=${this.world.now()}ms after event ${this.world.eventsRun}: ${behind}`);
    return this.invariantsOk;
  }

  /** commitPointBreach over the running incarnations. */
  private commitPointHolds(): string | undefined {
    const running = new Map<string, ReplicaPosition>();
    for (const slot of this.slots.values()) if (slot.node !== undefined) running.set(`${slot.id}#${slot.starts}`, slot.node);
    return commitPointBreach(running);
  }

  /**
   * True when every listed node is up, has committed the same view, is out of its view change,
   * and that view's members are exactly the listed nodes.
   */
  converged(ids: readonly string[] = this.ids): boolean {
    let vid: number | undefined;
    for (const id of ids) {
      const node = this.slot(id).node;
      if (node === undefined || node.isInViewChange) return false;
      if (vid === undefined) vid = node.vidCommit;
      else if (node.vidCommit !== vid) return false;
    }
    if (vid === undefined || vid === 0) return false;
    const members = this.slot(ids[0]!).node!.config.members(vid);
    return members.length === ids.length && ids.every((id) => members.includes(id));
  }

  /** Feeds the checker with every node's current acceptor history (call at the end of a run). */
  checkHistories(): void {
    for (const slot of this.slots.values()) {
      if (slot.node !== undefined) this.checker.checkHistory(slot.id, slot.node.config.history());
    }
  }

  /** A short description of every node, for failure messages. */
  describe(): string {
    return this.ids
      .map((id) => {
        const node = this.slot(id).node;
        if (node === undefined) return `${id}: down`;
        const members = node.config.members(node.vidCommit).join(' ');
        return `${id}: vid ${node.vidCommit}/${node.config.vid} [${members}] primary ${node.primary}${node.isInViewChange ? ' (view change)' : ''}`;
      })
      .join('; ');
  }

  private observedSink(slot: SimNodeSlot): PaxosLogSink {
    return {
      append: (line) => {
        slot.log.append(line);
        this.checker.observeAppend(slot.id, line);
        this.lineListener(slot.id, line);
      },
      replace: (lines) => {
        slot.log.replace(lines);
        this.checker.observeReplace(slot.id, lines);
      },
    };
  }
}

/** What commitPointBreach reads of a replica. */
export type ReplicaPosition = Pick<RsmNode, 'me' | 'isStopped' | 'isInViewChange' | 'isPrimary' | 'primary' | 'vidCommit' | 'lastExecuted' | 'lastRestored'>;

/**
 * The commit point, across replicas (`replicas` by a name for the message): a backup serving a
 * view executes only what the primary serving the same view has executed (it learns the commit
 * point from it), so it is never ahead of it. Two things let a replica execute what it merely
 * holds: a view change (neither is serving then) and a restart, which replays the whole log (a
 * backup restarted inside its view may then be ahead, but only by what it replayed). A
 * description of the first breach, or undefined.
 */
export function commitPointBreach(replicas: ReadonlyMap<string, ReplicaPosition>): string | undefined {
  const serving = (node: ReplicaPosition): boolean => !node.isStopped && !node.isInViewChange;
  const byId = new Map<string, ReplicaPosition>();
  for (const node of replicas.values()) if (serving(node)) byId.set(node.me, node);
  for (const [name, backup] of replicas) {
    if (!serving(backup) || backup.isPrimary) continue;
    const primary = byId.get(backup.primary);
    if (primary === undefined || !primary.isPrimary || primary.vidCommit !== backup.vidCommit) continue;
    if (compareViewstamp(backup.lastExecuted, primary.lastExecuted) > 0 && compareViewstamp(backup.lastExecuted, backup.lastRestored) > 0) {
      return `backup ${name} executed up to ${describeViewstamp(backup.lastExecuted)}, beyond its primary ${backup.primary} (${describeViewstamp(primary.lastExecuted)}) in view ${backup.vidCommit}`;
    }
  }
  return undefined;
}
