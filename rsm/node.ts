/**
 * The RSM node (the lab's rsm class), for now its membership shell: view commits and primary
 * choice, the recovery loop that gets a node outside the current view admitted (joinreq), the
 * `members` call of clients, and the test-control hooks (breakpoints, partitions). Request
 * execution (invoke) and state transfer extend this class later: they hook into `syncView`, use
 * `myvs`/`lastMyvs`, and call `breakpoint1()` and `partition1()` from the request path.
 *
 * Everything on the node's main port goes through one RpcEndpoint (paxos, heartbeat, rsm, later
 * the lock service). The test-control protocol is served on a separate endpoint (port ME+1), so a
 * self-partition does not cut the tester off.
 */
import { assert } from '../lib/assert.js';
import { sleep } from '../lib/clock.js';
import type { Env, Storage } from '../lib/env.js';
import { logger } from '../lib/log.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import { Config, defaultConfigTiming, type ConfigTiming } from '../paxos/config.js';
import type { PaxosLogSink } from '../paxos/log-sink.js';
import { historyProblem, isValidNodeId, type HistoryEntry } from '../paxos/view.js';
import { PrimaryTracker, joinCandidates } from './membership.js';
import {
  RsmClientStatus,
  RsmStatus,
  RsmTestStatus,
  VIEWSTAMP_ZERO,
  rsmClientProtocol,
  rsmProtocol,
  rsmTestProtocol,
  type JoinRes,
  type Viewstamp,
} from './protocol.js';

const log = logger('rsm');

export interface RsmTiming extends ConfigTiming {
  /** Wait between join attempts (the lab: 5 s). */
  joinRetryMs: number;
  /** Deadline of one joinreq; it covers the Paxos round the primary runs to admit us. */
  joinTimeoutMs: number;
  /** Wait before retrying a view synchronisation that failed without a view change. */
  syncRetryMs: number;
}

export const defaultRsmTiming: RsmTiming = {
  ...defaultConfigTiming,
  joinRetryMs: 1000,
  joinTimeoutMs: 10_000,
  syncRetryMs: 1000,
};

export interface RsmNodeOptions {
  /** This node's id: a bare port ("3772") or host:port. */
  readonly me: string;
  /** The MASTER argument: the first node (creates view 1) and whom a joiner asks first. */
  readonly master: string;
  readonly env: Env;
  /** The node's one endpoint on its main port. */
  readonly rpc: RpcEndpoint;
  readonly storage: Storage;
  readonly logSink: PaxosLogSink;
  /** Breakpoint exit: print the message and exit (host) or crash the node (simulator). */
  readonly die: (message: string) => void;
  /** Maps a node id to its network address (default: the id itself). */
  readonly addressOf?: (id: string) => string;
  /** Unexpected errors of background loops (default: rethrow, crashing the process). */
  readonly onFatal?: (error: unknown) => void;
  readonly timing?: Partial<RsmTiming>;
}

/** A one-shot wake-up for a loop waiting on "something changed". */
class Wakeup {
  private waiters: Array<() => void> = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}

export class RsmNode {
  readonly me: string;
  readonly master: string;
  readonly config: Config;
  readonly timing: RsmTiming;

  /** Who this node believes is primary: the MASTER argument until it knows a view. */
  protected primaryId: string;
  /** The newest view committed to the RSM. */
  protected vidCommitted = 0;
  /** The view whose synchronisation is running (or last ran). */
  protected vidInsync = 0;
  /** True from a view commit until the view is synchronised; the RSM then answers BUSY. */
  protected inViewChange = true;
  /** Next viewstamp to assign (primary) or expected (backup). */
  protected myvs: Viewstamp = { vid: 0, seqno: 1 };
  /** Viewstamp of the last executed request. */
  protected lastMyvs: Viewstamp = VIEWSTAMP_ZERO;

  // Test flags (rsm_tester): breakpoints 1 and 2, and the partition hook.
  protected break1 = false;
  protected break2 = false;
  protected dopartition = false;
  protected partitioned = false;

  protected readonly env: Env;
  protected readonly rpc: RpcEndpoint;
  protected readonly die: (message: string) => void;
  protected readonly addressOf: (id: string) => string;
  private readonly onFatal: (error: unknown) => void;
  private readonly primaries = new PrimaryTracker();
  private readonly viewCommitted = new Wakeup();
  private readonly stopController = new AbortController();
  private joinAttempts = 0;
  private started = false;
  private stopped = false;

  protected constructor(options: RsmNodeOptions, config: Config) {
    assert(isValidNodeId(options.master), `bad master id ${JSON.stringify(options.master)}`);
    this.me = options.me;
    this.master = options.master;
    this.config = config;
    this.env = options.env;
    this.rpc = options.rpc;
    this.die = options.die;
    this.addressOf = options.addressOf ?? ((id) => id);
    this.onFatal = options.onFatal ?? ((error) => queueMicrotask(() => { throw error; }));
    this.timing = { ...defaultRsmTiming, ...options.timing };
    this.primaryId = options.master;
  }

  /** Restores the node (Paxos state from storage) and registers its handlers; `start()` runs it. */
  static async open(options: RsmNodeOptions): Promise<RsmNode> {
    const config = await Config.open(RsmNode.configOptions(options));
    const node = new RsmNode(options, config);
    node.registerHandlers();
    return node;
  }

  protected static configOptions(options: RsmNodeOptions): Parameters<typeof Config.open>[0] {
    return {
      me: options.me,
      first: options.master,
      env: options.env,
      rpc: options.rpc,
      storage: options.storage,
      logSink: options.logSink,
      die: options.die,
      ...(options.addressOf === undefined ? {} : { addressOf: options.addressOf }),
      ...(options.onFatal === undefined ? {} : { onFatal: options.onFatal }),
      ...(options.timing === undefined ? {} : { timing: options.timing }),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // State for callers and tests.

  get primary(): string {
    return this.primaryId;
  }

  get vidCommit(): number {
    return this.vidCommitted;
  }

  get isInViewChange(): boolean {
    return this.inViewChange;
  }

  /** The lab's amiprimary(): primary of the committed view and not in a view change. */
  get isPrimary(): boolean {
    return this.primaryId === this.me && !this.inViewChange;
  }

  get isPartitioned(): boolean {
    return this.partitioned;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Members of the committed view with the primary appended last (the client `members` reply). */
  membersWithPrimary(): string[] {
    return [...this.config.members(this.vidCommitted), this.primaryId];
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle.

  start(): void {
    assert(!this.started, 'rsm node started twice');
    this.started = true;
    this.config.commitListener = (vid) => this.commitChange(vid);
    if (this.config.vid > 0) this.commitChange(this.config.vid);
    this.config.start();
    void this.recoveryLoop().catch((error) => this.fatal(error));
  }

  /** Stops at once, as a crash: no goodbye messages, no view change of our own making. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.config.stop();
    this.stopController.abort(new Error('rsm node stopped'));
    this.viewCommitted.notify();
  }

  // ---------------------------------------------------------------------------------------------
  // View commits.

  /**
   * The upcall from config when view `vid` is committed (durably). Ignored unless newer than the
   * committed view. Enters a view change, picks the primary, wakes the recovery loop and, if this
   * node is a member of the new view, passes rsm breakpoint 2.
   */
  commitChange(vid: number): void {
    if (this.stopped) return;
    if (vid <= this.vidCommitted) {
      log('%s commitChange: ignoring (view %d, committed %d)', this.me, vid, this.vidCommitted);
      return;
    }
    assert(vid <= this.config.vid, `commitChange(${vid}) beyond config's view ${this.config.vid}`);
    const members = this.config.members(vid);
    assert(members.length > 0, `commitChange: view ${vid} has no members`);
    this.vidCommitted = vid;
    this.inViewChange = true;
    this.primaryId = this.primaries.primaryOf(vid, (v) => this.config.members(v));
    log('%s commitChange: view %d [%s], primary %s', this.me, vid, members.join(' '), this.primaryId);
    this.viewCommitted.notify();
    if (members.includes(this.me)) this.breakpoint2();
  }

  // ---------------------------------------------------------------------------------------------
  // Recovery: join when outside the view, then synchronise each new view.

  private async recoveryLoop(): Promise<void> {
    while (!this.stopped) {
      if (!this.config.isMember(this.me, this.vidCommitted)) {
        await this.joinOnce();
        continue;
      }
      const vid = this.vidCommitted;
      this.vidInsync = vid;
      const synced = await this.syncView(vid);
      if (this.stopped) return;
      if (this.vidCommitted !== vid) continue; // a newer view arrived meanwhile: start over
      if (!synced) {
        if (!(await this.pause(this.timing.syncRetryMs))) return;
        continue;
      }
      this.myvs = { vid, seqno: 1 };
      this.inViewChange = false;
      log('%s recovery: view %d ready (primary %s)', this.me, vid, this.primaryId);
      const next = this.viewCommitted.wait();
      if (this.vidCommitted === vid && !this.stopped) await next;
    }
  }

  /**
   * Brings this node's state in line for view `vid` (later: state transfer between the primary
   * and the backups). The membership shell has no state to move.
   */
  protected async syncView(_vid: number): Promise<boolean> {
    return true;
  }

  /**
   * One attempt to be admitted: joinreq to the next candidate. On OK adopt the returned history
   * (which replaces our log) and commit its newest view. On failure wait `joinRetryMs`; if the
   * candidate answered (BUSY), first learn from it any views we missed, so the next attempt goes
   * to the right primary.
   */
  private async joinOnce(): Promise<void> {
    const candidates = joinCandidates(this.me, this.primaryId, this.master, this.knownViews());
    if (candidates.length === 0) {
      log('%s join: nobody to ask', this.me);
      await this.pause(this.timing.joinRetryMs);
      return;
    }
    // The believed primary first; rotate through the others while asking fails.
    const target = candidates[this.joinAttempts % candidates.length]!;
    this.joinAttempts++;
    log('%s join: asking %s (view %d)', this.me, target, this.vidCommitted);
    const reply = await this.rpc.call(
      this.addressOf(target),
      rsmProtocol.joinreq,
      { src: this.me, last: this.lastMyvs },
      { timeoutMs: this.timing.joinTimeoutMs },
    );
    if (this.stopped) return;
    if (reply.ok && reply.status === RsmStatus.OK) {
      if (await this.adoptJoinReply(target, reply.result)) {
        this.joinAttempts = 0;
        return;
      }
    } else if (reply.ok) {
      log('%s join: %s answered status %d', this.me, target, reply.status);
      const primaryBefore = this.primaryId;
      await this.config.catchUp(target);
      if (this.stopped) return;
      if (this.config.vid > this.vidCommitted) this.commitChange(this.config.vid);
      // A busy primary (mid view change) is still the one to ask; after learning of another
      // primary, ask that one first.
      if (target === this.primaryId || this.primaryId !== primaryBefore) this.joinAttempts = 0;
    } else {
      log('%s join: %s failed: %s', this.me, target, reply.error.code);
    }
    await this.pause(this.timing.joinRetryMs);
  }

  /** Adopts the history of a joinreq OK; resolves whether we are now a member. */
  private async adoptJoinReply(from: string, result: JoinRes): Promise<boolean> {
    const problem = historyProblem(result.history);
    if (problem !== undefined) {
      log('%s join: ignoring (bad history from %s: %s)', this.me, from, problem);
      return false;
    }
    if (result.history.length > this.config.vid) {
      await this.config.adoptHistory(result.history);
      if (this.stopped) return false;
    } else {
      // Our own history is at least as new: nothing to adopt (the admitting node lags behind us).
      log('%s join: not adopting (history of %d views, ours %d)', this.me, result.history.length, this.config.vid);
    }
    if (this.config.vid > this.vidCommitted) this.commitChange(this.config.vid);
    return this.config.isMember(this.me, this.vidCommitted);
  }

  private knownViews(): string[][] {
    const views: string[][] = [];
    for (let vid = 1; vid <= this.config.vid; vid++) views.push(this.config.members(vid));
    return views;
  }

  /** Sleeps on the node's clock; resolves false if the node stopped meanwhile. */
  private async pause(ms: number): Promise<boolean> {
    try {
      await sleep(this.env.clock, ms, this.stopController.signal);
      return !this.stopped;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Handlers on the main port.

  protected registerHandlers(): void {
    this.rpc.handle(rsmClientProtocol.members, () => ({ status: RsmClientStatus.OK, result: this.membersWithPrimary() }));
    this.rpc.handle(rsmProtocol.joinreq, (args) => this.onJoinReq(args.src));
  }

  /**
   * joinreq(src) on the node asked to admit `src`: a member already gets OK with the history;
   * a non-primary answers BUSY; the primary runs config.add and answers OK with the history if
   * `src` is a member afterwards, else BUSY. The history is sent only once durable here.
   */
  private async onJoinReq(src: string): Promise<{ status: number; result: JoinRes }> {
    const busy = { status: RsmStatus.BUSY, result: { history: [] } };
    if (!isValidNodeId(src) || src === this.me) {
      log('%s joinreq: ignoring (bad joiner id %j)', this.me, src);
      return { status: RsmStatus.ERR, result: { history: [] } };
    }
    if (!this.config.isMember(src, this.vidCommitted)) {
      if (this.primaryId !== this.me || !this.config.isMember(this.me, this.vidCommitted)) {
        log('%s joinreq from %s: ignoring (not primary; primary is %s)', this.me, src, this.primaryId);
        return busy;
      }
      await this.config.add(src, this.vidCommitted);
      if (this.stopped || !this.config.isMember(src, this.config.vid)) return busy;
    }
    await this.config.flushed();
    return { status: RsmStatus.OK, result: { history: this.config.history() } };
  }

  // ---------------------------------------------------------------------------------------------
  // Test control (rsm_tester, rsm_ctl), served on port ME+1.

  /** Registers net_repair and breakpoint on the control endpoint (a separate RpcEndpoint). */
  registerControl(control: RpcEndpoint): void {
    assert(control !== this.rpc, 'the control protocol needs its own endpoint');
    control.handle(rsmTestProtocol.breakpoint, (args) => ({ status: this.breakpoint(args.b), result: 0 }));
    control.handle(rsmTestProtocol.net_repair, (args) => ({ status: this.netRepair(args.heal), result: 0 }));
  }

  /** breakpoint b: 1 and 2 arm the rsm breakpoints, 3 and 4 the Paxos ones; others are ERR. */
  breakpoint(b: number): number {
    log('%s breakpoint %d', this.me, b);
    switch (b) {
      case 1:
        this.break1 = true;
        return RsmTestStatus.OK;
      case 2:
        this.break2 = true;
        return RsmTestStatus.OK;
      case 3:
      case 4:
        this.config.breakpoint(b);
        return RsmTestStatus.OK;
      default:
        return RsmTestStatus.ERR;
    }
  }

  /**
   * net_repair: heal = 1 reconnects at once; heal = 0 only arms a partition, which takes effect at
   * the next `partition1()` (on the primary's request path). Anything else is ERR.
   */
  netRepair(heal: number): number {
    log('%s net_repair %d', this.me, heal);
    if (heal === 1) {
      this.rpc.setReachable(true);
      this.partitioned = false;
      this.dopartition = false;
      return RsmTestStatus.OK;
    }
    if (heal === 0) {
      this.dopartition = true;
      return RsmTestStatus.OK;
    }
    return RsmTestStatus.ERR;
  }

  /** Cuts this node off if a partition is armed (called from the primary's request path). */
  partition1(): void {
    if (!this.dopartition) return;
    log('%s partition1: cutting the network', this.me);
    this.rpc.setReachable(false);
    this.dopartition = false;
    this.partitioned = true;
  }

  /** rsm breakpoint 1 (called mid-request by the invoke paths). */
  breakpoint1(): void {
    if (this.break1) this.die('Dying at breakpoint 1 in rsm!');
  }

  /** rsm breakpoint 2: fires when this node commits a view it is a member of. */
  protected breakpoint2(): void {
    if (this.break2) this.die('Dying at breakpoint 2 in rsm!');
  }

  private fatal(error: unknown): void {
    if (this.stopped) return;
    this.onFatal(error);
  }
}

/** Re-exported for hosts that only import the RSM. */
export type { HistoryEntry };
