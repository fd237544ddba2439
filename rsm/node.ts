/**
 * The RSM node (the lab's rsm class): one replica of a replicated state machine. It runs
 *
 * - membership: view commits from config and the primary of each view, `members` for clients,
 *   joins of nodes outside the view (`joinreq`, both sides the synchronous core in rsm/join.ts,
 *   driven by rsm/join-host.ts); its status, one value
 *   (rsm/replica-status.ts);
 * - the request path: on the primary (rsm/primary.ts), a pipeline of up to PIPELINE_DEPTH batches
 *   (whose state and rules are the synchronous core in rsm/pipeline.ts): client
 *   invokes wait in a bounded queue only while it is full; each batch stamps the waiting requests
 *   (up to the batch bounds) with consecutive viewstamps, is logged in one synced write while it
 *   is sent to every backup in one `invokebatch` each (group commit), and is executed and
 *   answered, in viewstamp order, once its own write and every backup's acknowledgement are in;
 *   a stalled pipeline is resent in order by a recovery round; the commit point (its last
 *   executed) travels on the next batch, or alone in `commit` once idle. On a backup, the accept
 *   rule (rsm/invoke-rule.ts) and a batch that overtook the one before it kept waiting are the
 *   synchronous core in rsm/backup.ts, driven by rsm/backup-host.ts; here, holding accepted
 *   batches and executing them as the commit point reaches them, or all at once when a view
 *   change begins;
 * - recovery after each view change: the primary collects the newest state among the view's
 *   members, then every backup pulls it (`transferreq`) and says so (`transferdonereq`); only then
 *   does the view serve requests (both sides in rsm/view-sync.ts; this class quiesces the
 *   pipeline first and installs what a transfer brings);
 * - durability: an operation log of stamped requests (each batch written with sync before a
 *   backup acknowledges it or the primary answers its clients) and a checkpoint of the state written now and
 *   then off the request path; a restarted replica replays checkpoint + log and resumes where it
 *   was;
 * - the test-control hooks (breakpoints 1 and 2, `partition1()`), kept in rsm/test-control.ts.
 *
 * The roles see the replica only through their host interfaces (PrimaryEffects, BackupEffects,
 * ViewSyncEffects, JoinEffects, TestControlHost), which this class builds in its constructor. As their
 * host, it keeps these obligations:
 *
 * 1. Persist before answering: nothing is acknowledged to a primary or answered to a client
 *    before the log write it depends on is durable here (appendLog resolves only then; the
 *    primary's answer waits for its own write and every backup's acknowledgement).
 * 2. One outcome per call: every RPC a role makes resolves exactly once (a reply, or an error
 *    after the endpoint's retransmissions), and the role acts on it once.
 * 3. Timers fire at most once, on the injected clock, and stop() cancels those still set.
 * 4. The status changes only through setStatus (replica-status.ts's advance), and a step of a
 *    synchronisation whose view is gone changes nothing.
 * 5. invariants() holds after every event: rsm_sim and the simulator tests call it on every live
 *    replica after each one, and it calls the roles' own (Pipeline, Primary, the backup, join and
 *    view-synchronisation cores and their hosts, HeldLog, SnapshotCache).
 *
 * The protocol, and where it differs from the lab, is described step by step in rsm/README.md.
 *
 * Everything on the node's main port goes through one RpcEndpoint (paxos, heartbeat, rsm and the
 * service's own procedures). The test-control protocol is served on a separate endpoint (port
 * ME+1), so a self-partition does not cut the tester off.
 */
import { assert } from '../lib/assert.js';
import { sleep } from '../lib/clock.js';
import type { Env, Storage, StorageOp } from '../lib/env.js';
import { ViewstampError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import type { HandlerReply, RpcEndpoint } from '../lib/rpc.js';
import { Config, defaultConfigTiming, type ConfigTiming } from '../paxos/config.js';
import type { PaxosLogSink } from '../paxos/log-sink.js';
import { isValidNodeId, type HistoryEntry } from '../paxos/view.js';
import { isWellFormed, nextExpected, successor } from './invoke-rule.js';
import { PrimaryTracker } from './membership.js';
import { JoinHost } from './join-host.js';
import { AWAITING_COMMIT_MAX, GAP_WAITERS_MAX } from './backup.js';
import { BackupHost } from './backup-host.js';
import { PrimaryHost } from './primary-host.js';
import { ViewSyncHost } from './view-sync-host.js';
import { withView, type ReplicaView } from './replica-view.js';
import { Wakeup } from './wakeup.js';
import { HeldLog } from './held-log.js';
import { SnapshotCache } from './snapshot-cache.js';
import { TestControl } from './test-control.js';
import { WriteQueue } from './write-queue.js';
import { describeBatch, firstOf, isComplete, type PendingBatch } from './pipeline.js';
import { chooseTransfer } from './state-transfer.js';
import {
  RsmClientStatus,
  RsmStatus,
  TRANSFER_CHUNK_BYTES,
  VIEWSTAMP_ZERO,
  compareViewstamp,
  describeViewstamp,
  rsmClientProtocol,
  rsmProtocol,
  type StatusRes,
  type TransferRes,
  type Viewstamp,
} from './protocol.js';
import {
  KEY_CHECKPOINT,
  KEY_SYNCED,
  checkpointDelayMs,
  LOG_PREFIX,
  decodeCheckpoint,
  decodeLogEntry,
  decodeSynced,
  encodeCheckpoint,
  encodeLogEntry,
  encodeSynced,
  logKey,
  logProblem,
  type LogEntry,
} from './replica-store.js';
import { EmptyStateMachine, type ExecuteResult, type StateMachine } from './state-machine.js';
import { advance, CREATED, describeStatus, isNormal, statusVid, type BackupSyncPhase, type PrimarySyncPhase, type ReplicaStatus, type StatusEvent } from './replica-status.js';

const log = logger('rsm');

export interface RsmTiming extends ConfigTiming {
  /** Wait between join attempts (the lab: 5 s). */
  joinRetryMs: number;
  /** Deadline of one joinreq; it covers the Paxos round the primary runs to admit us. */
  joinTimeoutMs: number;
  /** Wait before retrying a view synchronisation that failed without a view change. */
  syncRetryMs: number;
  /** Deadline of one internal invokebatch (primary → backup). Keep it well below the client's call timeout. */
  invokeTimeoutMs: number;
  /** Deadline of one transferreq or transferdonereq (the lab: 1 s). */
  transferTimeoutMs: number;
  /** Wait after a BUSY or failed transfer step before the next attempt. */
  transferRetryMs: number;
  /** A checkpoint is written once this many requests were logged since the last one. */
  checkpointEveryRequests: number;
  /** … or once the requests logged since the last one hold this many bytes. */
  checkpointEveryBytes: number;
  /**
   * A checkpoint keeps up to this many of the entries before it (and at most logRetainBytes of
   * their requests), so that a replica a little behind gets those entries instead of the state.
   */
  logRetainRequests: number;
  logRetainBytes: number;
  /** Bytes of state per transfer answer or chunk, at most TRANSFER_CHUNK_BYTES (small in the simulator, so chunking runs). */
  transferChunkBytes: number;
}

export const defaultRsmTiming: RsmTiming = {
  ...defaultConfigTiming,
  joinRetryMs: 1000,
  joinTimeoutMs: 10_000,
  syncRetryMs: 1000,
  invokeTimeoutMs: 1000,
  transferTimeoutMs: 1000,
  transferRetryMs: 100,
  checkpointEveryRequests: 4096,
  checkpointEveryBytes: 4 * 1024 * 1024,
  logRetainRequests: 4096,
  logRetainBytes: 4 * 1024 * 1024,
  transferChunkBytes: TRANSFER_CHUNK_BYTES,
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
  /**
   * The replicated service (default: an EmptyStateMachine, for membership-only nodes). It must be
   * fresh: a node starts with the service's initial state and gets the group's by state transfer.
   */
  readonly stateMachine?: StateMachine;
  /** Breakpoint exit: print the message and exit (host) or crash the node (simulator). */
  readonly die: (message: string) => void;
  /** Maps a node id to its network address (default: the id itself). */
  readonly addressOf?: (id: string) => string;
  /** Unexpected errors of background loops (default: rethrow, crashing the process). */
  readonly onFatal?: (error: unknown) => void;
  readonly timing?: Partial<RsmTiming>;
}

/** A view commit (`committed`: the view change starts) or the end of its synchronisation (`ready`). */
export interface RsmViewEvent {
  readonly vid: number;
  readonly members: readonly string[];
  readonly primary: string;
  readonly phase: 'committed' | 'ready';
}

/** One request executed by this replica. */
export interface RsmExecutedEvent {
  readonly vs: Viewstamp;
  readonly proc: number;
  readonly request: Uint8Array;
  readonly result: ExecuteResult;
  readonly role: 'primary' | 'backup';
}

/** This replica's state was replaced by another replica's (state transfer). */
export interface RsmStateInstalledEvent {
  /** The viewstamp of the last request reflected in the installed state. */
  readonly last: Viewstamp;
  /** The replica it came from. */
  readonly from: string;
  /** The view being synchronised. */
  readonly vid: number;
}

/** A batch the primary stamped (for statistics: the simulator counts batch sizes). */
export interface RsmBatchEvent {
  readonly first: Viewstamp;
  /** Requests in it (≤ BATCH_REQUESTS_MAX). */
  readonly size: number;
  /** Their request bytes. */
  readonly bytes: number;
  /** Batches this primary had stamped and not executed yet when it stamped this one (pipelining). */
  readonly behind: number;
}

/** A registry of listeners; a throwing listener is a fatal error of the node, not of the caller. */
class Listeners<E> {
  private readonly listeners = new Set<(event: E) => void>();

  add(listener: (event: E) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: E, onError: (error: unknown) => void): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        onError(error);
      }
    }
  }
}

const EMPTY = new Uint8Array(0);

export class RsmNode {
  readonly me: string;
  readonly master: string;
  readonly config: Config;
  readonly timing: RsmTiming;
  /** The replicated service. */
  readonly stateMachine: StateMachine;

  /** Who this node believes is primary: the MASTER argument until it knows a view. */
  protected primaryId: string;
  /** The newest view committed to the RSM. */
  protected vidCommitted = 0;
  /**
   * Where this replica is in its life (rsm/replica-status.ts): created, joining, syncing a view as
   * its primary or a backup (with the phase), normal, stopped. Changed only through setStatus.
   */
  private replicaStatus: ReplicaStatus = CREATED;
  /**
   * Next viewstamp to assign (primary) or expected (backup). Meaningful only outside a view change,
   * and then always in the committed view.
   */
  protected myvs: Viewstamp = { vid: 0, seqno: 1 };
  /**
   * Viewstamp of the last executed request: the state machine's state is the result of every
   * request up to it. Two replicas with the same lastMyvs have the same state (the checker in
   * tester/sim verifies it). Durable: the checkpoint's plus the log entries after it (replica-store.ts).
   */
  protected lastMyvs: Viewstamp = VIEWSTAMP_ZERO;

  /** The test-control hooks: breakpoints 1 and 2, the partition hook (rsm/test-control.ts). */
  private readonly testControl: TestControl;
  /** Both sides of a join (the core in rsm/join.ts, its host rsm/join-host.ts). */
  private readonly join: JoinHost;

  protected readonly env: Env;
  protected readonly rpc: RpcEndpoint;
  protected readonly storage: Storage;
  protected readonly die: (message: string) => void;
  protected readonly addressOf: (id: string) => string;
  private readonly onFatal: (error: unknown) => void;
  private readonly primaries = new PrimaryTracker();
  private readonly viewCommitted = new Wakeup();
  /** The backup's side of the request path (rsm/backup.ts's core in its host); told when this replica moves. */
  private readonly asBackup: BackupHost;
  private readonly stopController = new AbortController();
  /** The primary's side of the request path (rsm/primary.ts, its host rsm/primary-host.ts): the pipeline and its rounds. */
  private readonly asPrimary: PrimaryHost;
  /** Batches executed by this process (status; wraps at 2^32 as its wire field). */
  private batchesExecuted = 0;
  /** The request executed at lastMyvs, to answer its duplicate (unknown after a state transfer). */
  private lastRequest: LogEntry | undefined;
  /**
   * A backup's accepted requests beyond the primary's commit point it has heard: logged (the
   * write may still run), in viewstamp order right after lastMyvs, executed as the commit point
   * reaches them (rsm/backup.ts) or all at once when a view change begins. Empty on a primary.
   */
  private awaitingCommit: LogEntry[] = [];
  /** The log entries held (retained before the last checkpoint, or written since): rsm/held-log.ts. */
  private readonly heldLog = new HeldLog();
  /** The state being fetched in chunks from this replica, if any (rsm/snapshot-cache.ts). */
  private readonly snapshots: SnapshotCache;
  /** A checkpoint is due (its timer is set) or being written. */
  private checkpointDue = false;
  /** When the last periodic checkpoint's marshalling ended, and how long it took (our clock, ms). */
  private checkpointEndedAt = 0;
  private checkpointCostMs = 0;
  /** The time stamped on the last request this primary stamped (stamps never run backwards). */
  private lastStampMs = 0;
  /** The last view whose synchronisation this replica completed (durable; 0: none). */
  private syncedVid = 0;
  /** Whether open() found a durable record (the state was restored from storage). */
  private restored = false;
  /** The last viewstamp that restore replayed (VIEWSTAMP_ZERO: nothing restored). */
  private restoredLast: Viewstamp = VIEWSTAMP_ZERO;
  /** Our storage writes, in order, queued ones merged (rsm/write-queue.ts). */
  private readonly writes: WriteQueue;
  /** The synchronisation of a view, both sides of state transfer (the core in rsm/view-sync.ts, its host rsm/view-sync-host.ts). */
  private readonly viewSync: ViewSyncHost;
  /**
   * Set at start when this replica restarts inside the view it had finished synchronising: it
   * resumes that view from its durable record, without synchronising again (see syncView).
   */
  private resumeVid = 0;
  private wasPrimary = false;
  private readonly viewListeners = new Listeners<RsmViewEvent>();
  private readonly primaryListeners = new Listeners<boolean>();
  private readonly executedListeners = new Listeners<RsmExecutedEvent>();
  private readonly installedListeners = new Listeners<RsmStateInstalledEvent>();
  private readonly batchListeners = new Listeners<RsmBatchEvent>();

  protected constructor(options: RsmNodeOptions, config: Config) {
    assert(isValidNodeId(options.master), `bad master id ${JSON.stringify(options.master)}`);
    this.me = options.me;
    this.master = options.master;
    this.config = config;
    this.env = options.env;
    this.rpc = options.rpc;
    this.storage = options.storage;
    this.writes = new WriteQueue(this.storage, (error) => this.fatal(error));
    this.die = options.die;
    this.stateMachine = options.stateMachine ?? new EmptyStateMachine();
    this.addressOf = options.addressOf ?? ((id) => id);
    this.onFatal = options.onFatal ?? ((error) => queueMicrotask(() => { throw error; }));
    this.timing = { ...defaultRsmTiming, ...options.timing };
    this.snapshots = new SnapshotCache(this.env.clock, Math.max(1, Math.min(TRANSFER_CHUNK_BYTES, Math.floor(this.timing.transferChunkBytes))));
    this.primaryId = options.master;
    this.testControl = new TestControl({
      me: this.me,
      setReachable: (reachable) => this.rpc.setReachable(reachable),
      armPaxosBreakpoint: (b) => config.breakpoint(b),
      disarmPaxosBreakpoints: () => config.disarmBreakpoints(),
      die: (message) => this.die(message),
      status: () => this.status(),
    });
    // What every role sees of this replica, read live through getters; each role's host adds
    // its own members on top (rsm/replica-view.ts).
    const node = this;
    const view: ReplicaView = {
      me: this.me,
      config,
      rpc: this.rpc,
      clock: this.env.clock,
      timing: this.timing,
      addressOf: (id) => this.addressOf(id),
      get isStopped() {
        return node.stopped;
      },
      get inViewChange() {
        return node.inViewChange;
      },
      get primary() {
        return node.primaryId;
      },
      get vidCommit() {
        return node.vidCommitted;
      },
      get last() {
        return node.lastMyvs;
      },
    };
    this.join = new JoinHost(
      withView(view, {
        master: this.master,
        commitNewest: () => {
          if (this.config.vid > this.vidCommitted) this.commitChange(this.config.vid);
        },
        pause: (ms: number) => this.pause(ms),
      }),
    );
    this.asBackup = new BackupHost(
      withView(view, {
        get expected() {
          return node.myvs;
        },
        get lastHeld() {
          return node.backupLastHeld;
        },
        get lastHeldRequest() {
          return node.awaitingCommit.at(-1) ?? node.lastRequest;
        },
        get awaitingCommit() {
          return node.awaitingCommit.length;
        },
        get durable() {
          return node.writes.durable;
        },
        holdBatch: (entries: readonly LogEntry[]) => this.holdAsBackup(entries),
        executable: (committed: Viewstamp) => (this.mayExecuteHeld ? this.heldUpTo(committed) : 0),
        executeCommitted: (committed: Viewstamp) => {
          if (this.mayExecuteHeld) this.executeHeld(committed);
        },
        breakpoint1: () => this.breakpoint1(),
      }),
    );
    this.asPrimary = new PrimaryHost(
      withView(view, {
        get next() {
          return node.myvs;
        },
        get started() {
          return node.replicaStatus.kind !== 'created';
        },
        setNext: (next: Viewstamp) => {
          this.myvs = next;
        },
        stampTime: () => this.stampTime(),
        batchStamped: (event: RsmBatchEvent) => this.batchListeners.emit(event, (e) => this.fatal(e)),
        appendLog: (entries: readonly LogEntry[]) => this.appendLog(entries),
        executeBatch: (batch: PendingBatch, role: 'primary' | 'backup') => this.executeBatch(batch, role),
        partition1: () => this.partition1(),
        breakpoint1: () => this.breakpoint1(),
        fatal: (error: unknown) => this.fatal(error),
      }),
    );
    this.viewSync = new ViewSyncHost(
      withView(view, {
        get syncedVid() {
          return node.syncedVid;
        },
        get pendingBatches() {
          return node.asPrimary.pipeline.batches.length;
        },
        get durable() {
          return node.writes.durable;
        },
        drained: () => this.writes.drained(),
        enter: (vid: number, phase: PrimarySyncPhase | BackupSyncPhase) => this.setStatus({ kind: 'enter', vid, phase }),
        servingBackups: (vid: number) => this.servingBackups(vid),
        resync: () => this.resync(),
        quiesced: <T>(task: () => Promise<T>) => this.asPrimary.quiesced(task),
        forgetAcknowledgements: (backup: string) => this.asPrimary.forget(backup),
        stall: (why: string) => this.asPrimary.stall(why),
        transferFor: (theirs: Viewstamp, onlyIfNewer: boolean) => this.transferFor(theirs, onlyIfNewer),
        executeEntries: (entries: readonly LogEntry[]) => {
          for (const entry of entries) this.execute(entry, 'backup');
          void this.appendLog(entries);
        },
        installState: (state: Uint8Array, last: Viewstamp, from: string, vid: number) => this.installState(state, last, from, vid),
        transferPause: (attempt: number) => this.transferPause(attempt),
      }),
    );
  }

  /** Restores the node (Paxos state from storage) and registers its handlers; `start()` runs it. */
  static async open(options: RsmNodeOptions): Promise<RsmNode> {
    const config = await Config.open(RsmNode.configOptions(options));
    const node = new RsmNode(options, config);
    await node.restore();
    node.registerHandlers();
    return node;
  }

  /**
   * Restores the replica from storage: the checkpoint (service state and its last viewstamp),
   * then every log entry after it replayed in viewstamp order, and the last synchronised view.
   * Records that do not decode, or a log with a gap, are fatal (RSM_STATE_CORRUPT): starting over
   * with another state would silently lose what this replica acknowledged.
   */
  protected async restore(): Promise<void> {
    const corrupt = (why: string): never => {
      throw new ViewstampError('RSM_STATE_CORRUPT', `${this.me}: ${why}`);
    };
    const checkpointBytes = await this.storage.get(KEY_CHECKPOINT);
    const syncedBytes = await this.storage.get(KEY_SYNCED);
    const stored = await this.storage.list(LOG_PREFIX);
    if (checkpointBytes === undefined && syncedBytes === undefined && stored.length === 0) return;
    if (checkpointBytes !== undefined) {
      const checkpoint = decodeCheckpoint(checkpointBytes);
      if (!checkpoint.ok) corrupt(`unreadable checkpoint: ${checkpoint.reason}`);
      const { last, state } = (checkpoint as { value: { last: Viewstamp; state: Uint8Array } }).value;
      const installed = this.stateMachine.unmarshalState(state);
      if (!installed.ok) corrupt(`the service rejects its checkpoint: ${installed.reason}`);
      this.lastMyvs = last;
    }
    if (syncedBytes !== undefined) {
      const synced = decodeSynced(syncedBytes);
      if (!synced.ok) corrupt(`unreadable synchronised-view record: ${synced.reason}`);
      this.syncedVid = (synced as { value: number }).value;
    }
    const entries: Array<readonly [string, LogEntry]> = [];
    for (const [key, bytes] of stored) {
      const entry = decodeLogEntry(bytes);
      if (!entry.ok) corrupt(`unreadable log entry ${key}: ${entry.reason}`);
      entries.push([key, (entry as { value: LogEntry }).value]);
    }
    // A periodic checkpoint keeps the entry at its own viewstamp (the request executed last,
    // which a backup must recognise when the primary sends it again) and some before it, for
    // state transfer; the state already reflects them.
    let retained = 0;
    while (retained < entries.length && compareViewstamp(entries[retained]![1].vs, this.lastMyvs) <= 0) {
      const [key, entry] = entries[retained]!;
      if (key !== logKey(entry.vs)) corrupt(`log key ${key} holds entry ${describeViewstamp(entry.vs)}`);
      if (retained > 0 && compareViewstamp(entries[retained - 1]![1].vs, entry.vs) >= 0) corrupt(`log entry ${describeViewstamp(entry.vs)} out of order`);
      if (compareViewstamp(entry.vs, this.lastMyvs) === 0) this.lastRequest = entry;
      this.heldLog.add(entry, false);
      retained++;
    }
    entries.splice(0, retained);
    const problem = logProblem(this.lastMyvs, entries);
    if (problem !== undefined) corrupt(problem);
    for (const [, entry] of entries) {
      this.applyEntry(entry);
      this.heldLog.add(entry);
    }
    this.restored = true;
    this.restoredLast = this.lastMyvs;
    log('%s restored: last %s (%d log entries after the checkpoint), synchronised view %d', this.me, describeViewstamp(this.lastMyvs), entries.length, this.syncedVid);
  }

  /** Executes a logged request (replay at restore); no listeners are registered yet. */
  private applyEntry(entry: LogEntry): ExecuteResult {
    const result = this.stateMachine.execute(entry.proc, entry.request, { vid: entry.vs.vid, seqno: entry.vs.seqno, timeMs: entry.timeMs });
    assert(Number.isInteger(result.status) && result.status >= 0 && result.status <= 0x7fff_ffff, `service returned status ${result.status}`);
    this.lastMyvs = entry.vs;
    this.lastRequest = entry;
    return result;
  }

  /**
   * Appends a batch of stamped requests to the log: one storage write, with sync, so one fsync per
   * batch. The primary starts it together with the sends to its backups; a backup writes before it
   * acknowledges. The promise settles when it is durable.
   */
  private appendLog(entries: readonly LogEntry[]): Promise<void> {
    for (const entry of entries) this.heldLog.add(entry);
    const ops: StorageOp[] = entries.map((entry) => ({ type: 'put', key: logKey(entry.vs), value: encodeLogEntry(entry) }));
    const written = this.writes.write(ops, true);
    this.maybeScheduleCheckpoint();
    return written;
  }

  /**
   * Writes the last synchronised view (sync). Resolves once it is durable, never rejects (a failed
   * write is fatal already, in the write queue); only a primary waits for it (recoveryLoop).
   */
  private persistSynced(): Promise<void> {
    return this.writes.write([{ type: 'put', key: KEY_SYNCED, value: encodeSynced(this.syncedVid) }], true).catch(() => undefined);
  }

  /**
   * Writes a checkpoint of the state as it is now (at lastMyvs) in one batch with the deletion of
   * every log entry it covers. A state transfer writes one with sync (the installed state replaces
   * the log); the periodic one need not sync: if it is lost, the entries it would have deleted are
   * still there, and any later synced write makes it durable too. The periodic one keeps the entry
   * at `last` (the request executed last, to recognise its duplicate) and up to logRetainRequests
   * (and logRetainBytes) of the newest entries before it, for replicas a little behind (state
   * transfer sends them those instead of the state); an installed state drops every entry.
   */
  private writeCheckpoint(sync: boolean, state = this.stateMachine.marshalState(), installed = false): Promise<void> {
    const last = this.lastMyvs;
    const ops: StorageOp[] = [{ type: 'put', key: KEY_CHECKPOINT, value: encodeCheckpoint({ last, state }) }];
    const rule = { installed, retainRequests: this.timing.logRetainRequests, retainBytes: this.timing.logRetainBytes };
    for (const vs of this.heldLog.checkpoint(last, rule)) ops.push({ type: 'del', key: logKey(vs) });
    return this.writes.write(ops, sync);
  }

  /**
   * Every checkpointEveryRequests requests (or checkpointEveryBytes of them) a checkpoint is
   * written, from a timer: never inside the request that crossed the bound, so no client waits
   * for the service state to be marshalled; and paced by the cost of the last one
   * (checkpointDelayMs), so a large state does not spend the replica's time marshalling.
   */
  private maybeScheduleCheckpoint(): void {
    if (this.checkpointDue || this.stopped) return;
    if (this.heldLog.sinceRequests < this.timing.checkpointEveryRequests && this.heldLog.sinceBytes < this.timing.checkpointEveryBytes) return;
    this.checkpointDue = true;
    const delayMs = checkpointDelayMs(this.env.clock.now(), this.checkpointEndedAt, this.checkpointCostMs);
    if (delayMs > 0) log('%s checkpoint: due, paced by %d ms (the last took %d ms)', this.me, delayMs, this.checkpointCostMs);
    this.env.clock.setTimer(delayMs, () => {
      if (this.stopped) return;
      const started = this.env.clock.now();
      const written = this.writeCheckpoint(false);
      // The synchronous part: marshalling and encoding (the storage write runs off the loop).
      this.checkpointEndedAt = this.env.clock.now();
      this.checkpointCostMs = this.checkpointEndedAt - started;
      void written.finally(() => {
        this.checkpointDue = false;
      });
    });
  }

  /**
   * Whether this replica holds every request committed in the current view: it completed the
   * synchronisation of some view and has been a member of every view since (a member executes
   * every request its view commits, durably). Only such a replica proposes removals (the
   * config's removal gate): a view formed by members that lack the state would serve without it.
   */
  get holdsState(): boolean {
    if (this.syncedVid === 0 || this.syncedVid > this.config.vid) return false;
    for (let vid = this.syncedVid; vid <= this.config.vid; vid++) if (!this.config.isMember(this.me, vid)) return false;
    return true;
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

  /** Not serving: from a view commit until the view is synchronised, before start and after stop. */
  protected get inViewChange(): boolean {
    return !isNormal(this.replicaStatus);
  }

  private get stopped(): boolean {
    return this.replicaStatus.kind === 'stopped';
  }

  /** The primary's synchronisation of view `vid` is answering its backups (transferreq, transferdonereq). */
  private servingBackups(vid: number): boolean {
    const status = this.replicaStatus;
    return status.kind === 'syncing' && status.vid === vid && status.role === 'primary' && status.phase === 'serving';
  }

  private setStatus(event: StatusEvent): void {
    const before = this.replicaStatus;
    this.replicaStatus = advance(before, event);
    if (this.replicaStatus !== before) log('%s status: %s', this.me, describeStatus(this.replicaStatus));
  }

  /**
   * The lab's amiprimary(): primary of the committed view and not in a view change, i.e. this
   * node serves client requests now. A service host runs primary-only work (sending revoke and
   * retry notices) while it holds; `onPrimaryChange` says when it flips.
   */
  get isPrimary(): boolean {
    return this.primaryId === this.me && !this.inViewChange && !this.stopped;
  }

  get isPartitioned(): boolean {
    return this.testControl.isPartitioned;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** The viewstamp of the last request executed here (VIEWSTAMP_ZERO: none). */
  get lastExecuted(): Viewstamp {
    return this.lastMyvs;
  }

  /**
   * The last viewstamp replayed from storage when this process opened the replica (VIEWSTAMP_ZERO:
   * none). A restart replays the whole log, requests not committed yet included: the state must
   * be what the log says, and the commit point is not durable.
   */
  get lastRestored(): Viewstamp {
    return this.restoredLast;
  }

  /**
   * The viewstamp of the last request in this replica's log (its write may still run): beyond
   * lastExecuted by a primary's pending batches or a backup's requests awaiting the commit point.
   */
  get lastHeld(): Viewstamp {
    const logged = this.heldLog.entries.at(-1)?.vs;
    return logged !== undefined && compareViewstamp(logged, this.lastMyvs) > 0 ? logged : this.lastMyvs;
  }

  /** Members of the committed view with the primary appended last (the client `members` reply). */
  membersWithPrimary(): string[] {
    return [...this.config.members(this.vidCommitted), this.primaryId];
  }

  // ---------------------------------------------------------------------------------------------
  // Listeners, for service hosts (primary-only background work) and checkers. Each registration
  // returns a function that removes it. Listeners run synchronously, after the node's state has
  // changed; they must not throw (a throw is reported as a fatal error of the node).

  /** A view was committed (phase `committed`) or finished its synchronisation (phase `ready`). */
  onViewChange(listener: (event: RsmViewEvent) => void): () => void {
    return this.viewListeners.add(listener);
  }

  /** `isPrimary` flipped; the argument is its new value. */
  onPrimaryChange(listener: (isPrimary: boolean) => void): () => void {
    return this.primaryListeners.add(listener);
  }

  /** A request was executed here (on the primary or a backup). */
  onExecuted(listener: (event: RsmExecutedEvent) => void): () => void {
    return this.executedListeners.add(listener);
  }

  /** This replica's state was replaced by state transfer. */
  onStateInstalled(listener: (event: RsmStateInstalledEvent) => void): () => void {
    return this.installedListeners.add(listener);
  }

  /** This primary stamped a batch (before it is logged or sent). */
  onBatchStamped(listener: (event: RsmBatchEvent) => void): () => void {
    return this.batchListeners.add(listener);
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle.

  start(): void {
    assert(this.replicaStatus.kind === 'created', 'rsm node started twice');
    this.setStatus({ kind: 'start' });
    // Restarting inside the view it had synchronised, with its durable record, a replica simply
    // carries on: it holds everything it acknowledged, and a primary also the last request it
    // stamped, so it neither loses requests nor stamps a viewstamp twice.
    if (this.restored && this.syncedVid === this.config.vid && this.config.isMember(this.me, this.syncedVid)) this.resumeVid = this.syncedVid;
    if (this.restored) this.installedListeners.emit({ last: this.lastMyvs, from: 'storage', vid: 0 }, (e) => this.fatal(e));
    this.config.removalGate = () => this.holdsState;
    this.config.commitListener = (vid) => this.commitChange(vid);
    if (this.config.vid > 0) this.commitChange(this.config.vid);
    this.config.start();
    void this.recoveryLoop().catch((error) => this.fatal(error));
  }

  /** Stops at once, as a crash: no goodbye messages, no view change of our own making. */
  stop(): void {
    if (this.stopped) return;
    this.setStatus({ kind: 'stop' });
    this.config.stop();
    this.stopController.abort(new Error('rsm node stopped'));
    this.asPrimary.stop();
    this.snapshots.drop();
    this.viewCommitted.notify();
    this.viewSync.wake();
    this.asBackup.moved();
    this.primaryMaybeChanged();
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
    // What we hold is in our log, so a restart would replay it anyway: the state must be what the
    // log says before the synchronisation compares it (the newest state among the members wins,
    // as when a backup executed on receipt). Nothing held reached a client unless it committed.
    this.executeAllHeld(`view ${vid} committed`);
    this.vidCommitted = vid;
    this.primaryId = this.primaries.primaryOf(vid, (v) => this.config.members(v));
    this.setStatus({ kind: 'commit', vid, role: members.includes(this.me) ? (this.primaryId === this.me ? 'primary' : 'backup') : undefined });
    log('%s commitChange: view %d [%s], primary %s', this.me, vid, members.join(' '), this.primaryId);
    this.viewCommitted.notify();
    this.viewSync.wake();
    this.asBackup.moved();
    this.primaryMaybeChanged();
    this.viewListeners.emit({ vid, members, primary: this.primaryId, phase: 'committed' }, (e) => this.fatal(e));
    if (members.includes(this.me)) this.testControl.breakpoint2();
  }

  // ---------------------------------------------------------------------------------------------
  // Recovery: join when outside the view, then synchronise each new view.

  /** Re-enters the view change of the committed view; the recovery loop synchronises it again. */
  private resync(): void {
    if (!isNormal(this.replicaStatus)) return;
    this.executeAllHeld(`view ${this.vidCommitted} synchronised again`);
    this.setStatus({ kind: 'resync' });
    this.asBackup.moved();
    this.primaryMaybeChanged();
    this.viewCommitted.notify();
  }

  private async recoveryLoop(): Promise<void> {
    while (!this.stopped) {
      if (!this.config.isMember(this.me, this.vidCommitted)) {
        await this.join.attempt();
        continue;
      }
      const vid = this.vidCommitted;
      const synced = await this.syncView(vid);
      if (this.stopped) return;
      if (this.vidCommitted !== vid) continue; // a newer view arrived meanwhile: start over
      if (!synced) {
        if (!(await this.pause(this.timing.syncRetryMs))) return;
        continue;
      }
      this.myvs = nextExpected(vid, this.lastMyvs);
      this.syncedVid = vid;
      const recorded = this.persistSynced();
      if (this.primaryId === this.me) {
        // A primary stamps in the view only once its record of having synchronised it is durable.
        // Its log write of a batch runs in parallel with the sends (group commit), so a crash can
        // take both its unsynced writes while a backup holds the view's first batch; restarted
        // without the record, it would take the backup's viewstamps in this view for forged
        // (the view synchronisation's collection step) and give them to other requests.
        await recorded;
        if (this.stopped) return;
        if (this.vidCommitted !== vid) continue;
      }
      this.setStatus({ kind: 'ready', vid });
      this.asBackup.moved();
      log('%s recovery: view %d ready (primary %s, last %s)', this.me, vid, this.primaryId, describeViewstamp(this.lastMyvs));
      this.primaryMaybeChanged();
      this.viewListeners.emit({ vid, members: this.config.members(vid), primary: this.primaryId, phase: 'ready' }, (e) => this.fatal(e));
      // Serving until a newer view is committed, resync() asks for the view again, or a stop.
      while (isNormal(this.replicaStatus) && this.replicaStatus.vid === vid) await this.viewCommitted.wait();
    }
  }

  /**
   * Brings this node's state in line for view `vid`: quiesces, then runs the synchronisation core
   * (rsm/view-sync.ts) as the view's primary or a backup. Resolves true when this node may leave
   * the view change.
   */
  protected async syncView(vid: number): Promise<boolean> {
    if (vid === this.resumeVid) {
      this.resumeVid = 0;
      this.setStatus({ kind: 'enter', vid, phase: 'resuming' });
      assert(this.asPrimary.pipeline.batches.length === 0, 'resuming with a pending batch');
      if (this.primaryId !== this.me) {
        log('%s sync: resuming view %d after a restart (last %s)', this.me, vid, describeViewstamp(this.lastMyvs));
        // The cluster has usually moved on while we were down (a view without us): ask the
        // members now rather than at the next heartbeat round, so the rejoin starts at once.
        void this.config.learnNewerView(this.timing.transferTimeoutMs).catch((error) => this.fatal(error));
        return true;
      }
      // A primary back from a restart first asks its view's members whether the cluster moved on
      // while it was down; if so it catches up and synchronises the newer view instead.
      if (await this.config.learnNewerView(this.timing.transferTimeoutMs)) {
        log('%s sync: not resuming view %d as primary: a newer view exists', this.me, vid);
        return false;
      }
      if (this.viewGone(vid)) return false;
      // It does not simply resume: its last batch was logged in parallel with the sends (group
      // commit), so a backup may hold a batch that its own log lost in the crash, and stamping
      // on from its own last would give those viewstamps to other requests. It synchronises the
      // view again instead (below): the newest state among the members wins, and its ready
      // backups re-synchronise when its transferreq reaches them.
      log('%s sync: primary of view %d after a restart (last %s): synchronising it again', this.me, vid, describeViewstamp(this.lastMyvs));
    }
    this.resumeVid = 0;
    this.setStatus({ kind: 'enter', vid, phase: 'quiescing' });
    // No client request may be mid-flight while state moves; later ones see the view change and
    // get BUSY. A request still pending from an earlier view is executed here: it is in our log,
    // so a restart would replay it anyway, and the state must be what the log says. The
    // synchronisation then settles it (the newest state among the members wins).
    await this.asPrimary.quiesced(() => undefined);
    if (this.viewGone(vid)) return false;
    // Each is reported as a backup's execution: no client saw it acknowledged, and the view
    // change may still replace it (a checker counts only a primary's executions as committed).
    this.asPrimary.settle();
    return this.viewSync.sync(vid);
  }

  /** True once view `vid` is no longer the committed one (or the node stopped). */
  private viewGone(vid: number): boolean {
    return this.stopped || this.vidCommitted !== vid;
  }

  /** Replaces the state machine's state; false (state unchanged) if the bytes do not decode. */
  private installState(state: Uint8Array, last: Viewstamp, from: string, vid: number): boolean {
    const installed = this.stateMachine.unmarshalState(state);
    if (!installed.ok) {
      log('%s sync: ignoring the state of %s (%s)', this.me, from, installed.reason);
      return false;
    }
    this.lastMyvs = last;
    this.lastRequest = undefined;
    // The installed state replaces the log: a checkpoint of it, with sync; `writes.durable` says when.
    void this.writeCheckpoint(true, state, true);
    log('%s sync: installed the state of %s (last %s)', this.me, from, describeViewstamp(last));
    this.installedListeners.emit({ last, from, vid }, (e) => this.fatal(e));
    return true;
  }

  /**
   * The wait before transfer step `attempt` + 1 (0 after the first try): an eighth of
   * transferRetryMs, doubling up to all of it. A BUSY usually means the other side is one message
   * behind (it has not committed the view yet, or is still collecting), so the first retries come
   * soon; a long synchronisation is still asked only every transferRetryMs.
   */
  private transferPause(attempt: number): Promise<boolean> {
    return this.pause(Math.ceil(this.timing.transferRetryMs / 2 ** Math.max(0, 3 - attempt)));
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
    this.rpc.handle(rsmClientProtocol.invoke, (args) => this.asPrimary.invoke(args.procno, args.req));
    // The lab's one-request invoke is a batch of one.
    // The lab's invoke carries no commit point: its backup executes on receipt.
    this.rpc.handle(rsmProtocol.invoke, (args) => this.asBackup.receive([{ vs: args.vs, timeMs: args.timeMs, proc: args.proc, req: args.req }], args.vs));
    this.rpc.handle(rsmProtocol.invokebatch, (args) => this.asBackup.receive(args.entries, args.committed));
    this.rpc.handle(rsmProtocol.commit, (args) => this.asBackup.commit(args.vid, args.committed));
    this.rpc.handle(rsmProtocol.transferreq, (args) => this.viewSync.answerTransfer(args.src, args.last, args.vid));
    this.rpc.handle(rsmProtocol.transferchunk, (args) => this.onTransferChunk(args.src, args.vid, args.last, args.offset));
    this.rpc.handle(rsmProtocol.transferdonereq, (args) => this.viewSync.answerTransferDone(args.m, args.vid));
    this.rpc.handle(rsmProtocol.joinreq, (args) => this.join.answer(args.src, args.cluster));
  }

  private countBatch(): void {
    this.batchesExecuted = (this.batchesExecuted + 1) >>> 0;
  }

  /**
   * Executes `batch`, taken off the head of the pipeline, here in viewstamp order (every member
   * holds it, or a view change settles it); its last request becomes the last executed. Returns
   * the results in batch order.
   */
  private executeBatch(batch: PendingBatch, role: 'primary' | 'backup'): ExecuteResult[] {
    const first = firstOf(batch);
    assert(compareViewstamp(first, nextExpected(first.vid, this.lastMyvs)) === 0, `${role} executing ${describeBatch(batch)} after ${describeViewstamp(this.lastMyvs)}`);
    this.countBatch();
    return batch.entries.map((entry) => this.execute(entry, role));
  }

  /** The primary's time for the batch it stamps now: whole ms, never running backwards. */
  private stampTime(): number {
    const now = Math.max(0, Math.floor(this.env.clock.now()));
    this.lastStampMs = Math.max(this.lastStampMs, now);
    return this.lastStampMs;
  }

  /**
   * A batch the backup's accept rule took (rsm/backup.ts): myvs moves past it, its log write
   * (sync) starts, and its entries wait for the primary's commit point (executeHeld). Resolves
   * once it is durable.
   */
  private holdAsBackup(entries: readonly LogEntry[]): Promise<void> {
    assert(this.myvs.vid === this.vidCommitted, 'backup expecting a viewstamp outside its committed view');
    this.myvs = successor(entries[entries.length - 1]!.vs);
    const written = this.appendLog(entries);
    for (const entry of entries) this.awaitingCommit.push(entry);
    return written;
  }

  /** A backup's last held viewstamp: its last request awaiting the commit point, else its last executed. */
  private get backupLastHeld(): Viewstamp {
    return this.awaitingCommit.at(-1)?.vs ?? this.lastMyvs;
  }

  /** Executes, in order, the held requests up to `committed` (a backup's commit point); how many. */
  private executeHeld(committed: Viewstamp): number {
    const count = this.heldUpTo(committed);
    if (count === 0) return 0;
    const executing = this.awaitingCommit.splice(0, count);
    this.countBatch();
    for (const entry of executing) this.execute(entry, 'backup');
    return count;
  }

  /** How many of the requests awaiting the commit point are at or before `committed`. */
  private heldUpTo(committed: Viewstamp): number {
    const held = this.awaitingCommit;
    let count = 0;
    while (count < held.length && compareViewstamp(held[count]!.vs, committed) <= 0) count++;
    return count;
  }

  /** A backup executes what it holds as commit points reach it only while it serves the view. */
  private get mayExecuteHeld(): boolean {
    return !this.inViewChange && !this.stopped && this.primaryId !== this.me;
  }

  /** A view change begins: every held request executes (see commitChange). */
  private executeAllHeld(why: string): void {
    const held = this.awaitingCommit.at(-1);
    if (held === undefined) return;
    log('%s %s: executing what I hold up to %s', this.me, why, describeViewstamp(held.vs));
    this.executeHeld(held.vs);
  }

  /** Executes a logged request with the context stamped on it and tells the listeners. */
  private execute(entry: LogEntry, role: 'primary' | 'backup'): ExecuteResult {
    const result = this.applyEntry(entry);
    this.executedListeners.emit({ vs: entry.vs, proc: entry.proc, request: entry.request, result, role }, (e) => this.fatal(e));
    return result;
  }

  /** What to send a replica whose last is `theirs` (chooseTransfer), from our durable state. */
  private transferFor(theirs: Viewstamp, onlyIfNewer: boolean): TransferRes {
    return chooseTransfer(theirs, this.lastMyvs, onlyIfNewer, this.heldLog.entries, () => this.snapshots.bytesAt(this.lastMyvs, () => this.stateMachine.marshalState()), this.snapshots.chunkBytes);
  }

  /**
   * transferchunk(src, vid, last, offset): the bytes of our snapshot at `last` from `offset` (at
   * most transferChunkBytes), to a member of our committed view `vid`. BUSY when we no longer
   * keep that snapshot (the asker starts over with transferreq); ERR for an offset outside it.
   */
  private onTransferChunk(src: string, vid: number, last: Viewstamp, offset: number): HandlerReply<Uint8Array> {
    if (this.stopped || vid !== this.vidCommitted || !this.config.isMember(src, vid)) return { status: RsmStatus.BUSY, result: EMPTY };
    const answer = this.snapshots.chunk(last, offset);
    if (answer.ok) return { status: RsmStatus.OK, result: answer.bytes };
    if (answer.why === 'gone') return { status: RsmStatus.BUSY, result: EMPTY };
    log('%s transferchunk from %s: ignoring (offset %d of a %d-byte state)', this.me, src, offset, answer.size);
    return { status: RsmStatus.ERR, result: EMPTY };
  }

  // ---------------------------------------------------------------------------------------------
  // Test control (rsm_tester, rsm_ctl), served on port ME+1.

  /**
   * Asserts every relation between this replica's fields that holds between events: after a
   * handler, a timer or a delivery has run as far as it can without waiting (rsm_sim calls it for
   * every live replica after each simulated event, once microtasks are drained). A failure is an
   * AssertionError naming the replica and the values. It only reads: it changes nothing, draws no
   * randomness and traces nothing, so checking does not change a run.
   *
   * Viewstamps and views
   * - lastMyvs is VIEWSTAMP_ZERO or (vid ≥ 1, seqno ≥ 1), myvs has seqno ≥ 1: every viewstamp is
   *   stamped from (v, 1) in a view v ≥ 1, and lastMyvs is always one that was stamped (executed,
   *   installed, restored) or nothing.
   * - vidCommitted ≤ config.vid: set only by commitChange, which asserts the bound; config's view
   *   only grows.
   * - Once started: lastMyvs, myvs and syncedVid are at most vidCommitted. A replica executes or
   *   installs in view v only after committing v (durably, in the same storage as its own
   *   records), and start() commits config's newest view; before start() the restored record can
   *   be ahead of vidCommitted (still 0). The primary is a member of the committed view.
   * - Before start(): nothing has happened yet (view 0, in a view change, no batch, no queue).
   *
   * The status (rsm/replica-status.ts): once started and until stopped it is in the committed view
   * (commitChange moves both together), `joining` exactly when this replica is not a member of it,
   * and otherwise its role is what primaryId says (the primary of a view is fixed at its commit).
   *
   * Serving (not in a view change): the recovery loop ended the view change for the committed view
   * (commitChange and resync() re-enter it), so this replica is a member of vidCommitted,
   * syncedVid = vidCommitted, myvs is in vidCommitted, and myvs is exactly what the
   * code computes: nextExpected(vidCommitted, lastMyvs) at the end of the view change and after
   * each batch a backup executes; on the primary with pending batches the successor of the last
   * one's last entry. Hence lastMyvs < myvs. Only the primary has pending batches while serving
   * (an old view's are executed by syncView before the view change can end).
   *
   * The pipeline (Pipeline.invariants, given lastMyvs and myvs: its batches follow lastMyvs without
   * a gap and myvs follows them, since they were stamped from myvs in turn and only their
   * execution, head first, moves lastMyvs meanwhile; installs happen only after syncView executed
   * them, and a backup's execution is refused to a primary and in a view change). Beyond its own
   * rules, seen from the node:
   * - first rounds running at most PIPELINE_DEPTH (pump stops there);
   * - every pending batch stamped at a time ≤ lastStampMs, of a view ≤ vidCommitted (of
   *   vidCommitted while serving), its backups the other members of that view;
   * - the head is not complete while running: advance runs after every acknowledgement and at
   *   the end of every own write, and executes complete heads at once;
   * - stalled (not in a view change): a recovery round is queued or running, or its timer is set.
   * A backup holds at most GAP_WAITERS_MAX batches for a gap (Backup counts them).
   *
   * The waiting requests: on a serving primary there are some only while pump is due
   * (pumpAfterRead's microtask, pumpSoon's timer) or the pipeline is full or quiesced (pump runs
   * right after the read or the turn that brought a request, at the end of every round and
   * quiesce, and after every execution, and answers BUSY at once while stalled), so no request is
   * stranded; a stopped node has none (stop() answers them, clientInvoke refuses).
   *
   * The log held since the checkpoint (HeldLog.invariants: ascending without a gap, its bytes
   * adding up, entries up to lastMyvs ending at lastMyvs). Its entries after lastMyvs are exactly
   * the pending batches' (logged when stamped, before execution) and there are none without
   * them. lastRequest, when known, is the entry at lastMyvs, and it is known exactly when that
   * entry is held (both are set together by executing and restoring, and dropped together by
   * installing a state). A kept snapshot (transferchunk) is larger than one chunk (smaller ones
   * are never kept) and has its idle timer running; stop() drops it.
   *
   * Synchronisation
   * - while the primary's synchronisation is serving: syncedBackups ⊆ keys of pulledBy ⊆ backups
   *   of the view (transferdonereq counts only a backup that pulled; transferreq records only
   *   members other than us), and every recorded pull is at our current lastMyvs (our state does
   *   not move while serving: no round executes in a view change and the adoption came before),
   *   and the synchronisation core's run is the one serving; a newer view or a stop ends the run
   *   at once (ViewSyncHost.wake);
   * - resumeVid is consumed by the first syncView, which start() reaches synchronously, unless a
   *   breakpoint stopped the node.
   *
   * Listeners: wasPrimary equals isPrimary (every change of primaryId, inViewChange and stopped is
   * followed by primaryMaybeChanged, so onPrimaryChange heard every flip; a stopped node is not
   * primary). lastStampMs is a whole ms, at most the clock's now (stamps are floor(now), never
   * backwards).
   */
  invariants(): void {
    // The messages are built only when a check fails: this runs after every simulated event.
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const me = `rsm invariants of ${this.me}`;
    const vs = describeViewstamp;
    const cmp = compareViewstamp;
    const last = this.lastMyvs;
    const myvs = this.myvs;
    const pending = this.asPrimary.pipeline.batches;

    // Viewstamps and views.
    check(isWellFormed(last) && (cmp(last, VIEWSTAMP_ZERO) === 0 || (last.vid >= 1 && last.seqno >= 1)), () => `${me}: lastMyvs ${vs(last)} is neither 0.0 nor a stamped viewstamp`);
    check(isWellFormed(myvs) && myvs.seqno >= 1, () => `${me}: myvs ${vs(myvs)} malformed`);
    check(this.vidCommitted <= this.config.vid, () => `${me}: vidCommitted ${this.vidCommitted} > config's view ${this.config.vid}`);
    const status = this.replicaStatus;
    const started = status.kind !== 'created';
    if (!started) {
      check(this.vidCommitted === 0 && pending.length === 0 && this.asPrimary.pipeline.waitingCount === 0, () => `${me}: not started, yet view ${this.vidCommitted}, ${pending.length} pending, ${this.asPrimary.pipeline.waitingCount} waiting`);
    } else {
      check(last.vid <= this.vidCommitted, () => `${me}: lastMyvs ${vs(last)} beyond the committed view ${this.vidCommitted}`);
      check(myvs.vid <= this.vidCommitted, () => `${me}: myvs ${vs(myvs)} beyond the committed view ${this.vidCommitted}`);
      check(this.syncedVid <= this.vidCommitted, () => `${me}: synchronised view ${this.syncedVid} beyond the committed view ${this.vidCommitted}`);
      if (!this.stopped) check(this.resumeVid === 0, () => `${me}: resumeVid ${this.resumeVid} not consumed by the first synchronisation`);
    }
    const members = this.vidCommitted > 0 ? this.config.members(this.vidCommitted) : [];
    // Decoding a view is the dearest part of the check: the committed one is decoded once.
    const membersOf = (vid: number): string[] => (vid === this.vidCommitted ? members : this.config.members(vid));
    if (this.vidCommitted > 0) check(members.includes(this.primaryId), () => `${me}: primary ${this.primaryId} not a member of view ${this.vidCommitted} [${members.join(' ')}]`);

    // The status: in the committed view, joining exactly when not a member, the role primaryId's.
    const statusView = statusVid(status);
    if (statusView !== undefined) {
      check(statusView === this.vidCommitted, () => `${me}: ${describeStatus(status)} but the committed view is ${this.vidCommitted}`);
      check((status.kind === 'joining') === !members.includes(this.me), () => `${me}: ${describeStatus(status)} in view ${this.vidCommitted} [${members.join(' ')}]`);
      if (status.kind === 'syncing' || status.kind === 'normal') {
        check(status.role === (this.primaryId === this.me ? 'primary' : 'backup'), () => `${me}: ${describeStatus(status)} but the primary is ${this.primaryId}`);
      }
    }

    // Serving: myvs is exactly what the view change and each batch left it at.
    if (!this.inViewChange) {
      check(members.includes(this.me), () => `${me}: serving view ${this.vidCommitted} [${members.join(' ')}] without being a member`);
      check(this.syncedVid === this.vidCommitted, () => `${me}: serving view ${this.vidCommitted} but synchronised view ${this.syncedVid}`);
      check(myvs.vid === this.vidCommitted, () => `${me}: serving view ${this.vidCommitted} with myvs ${vs(myvs)}`);
      if (pending.length > 0) {
        check(this.primaryId === this.me, () => `${me}: a backup (primary ${this.primaryId}) serving view ${this.vidCommitted} with a pending batch at ${vs(pending[0]!.entries[0]!.vs)}`);
      } else {
        const lastHeld = this.backupLastHeld;
        const expected = lastHeld.vid === this.vidCommitted ? { vid: lastHeld.vid, seqno: lastHeld.seqno + 1 } : { vid: this.vidCommitted, seqno: 1 };
        check(cmp(myvs, expected) === 0, () => `${me}: serving view ${this.vidCommitted} with myvs ${vs(myvs)}, but after the last held ${vs(lastHeld)} the next is ${vs(expected)}`);
      }
      check(cmp(last, myvs) < 0, () => `${me}: lastMyvs ${vs(last)} not before myvs ${vs(myvs)}`);
    }

    // The pipeline: its own rules, then what ties it to the node.
    this.asPrimary.pipeline.invariants(last, myvs, me);
    for (const batch of pending) {
      const first = firstOf(batch);
      const span = describeBatch(batch);
      check(batch.entries[0]!.timeMs <= this.lastStampMs, () => `${me}: pending batch ${span} stamped after lastStampMs ${this.lastStampMs}`);
      check(first.vid <= this.vidCommitted, () => `${me}: pending batch ${span} beyond the committed view ${this.vidCommitted}`);
      if (!this.inViewChange) check(first.vid === this.vidCommitted, () => `${me}: serving view ${this.vidCommitted} with a pending batch ${span} of another view`);
      const backups = membersOf(first.vid).filter((member) => member !== this.me);
      check(sameMembers(batch.backups, backups), () => `${me}: pending batch ${span} sent to [${batch.backups.join(' ')}], but the backups of view ${first.vid} are [${backups.join(' ')}]`);
    }
    // The head is executed as soon as every member holds it (advance runs on every change).
    const head = pending[0];
    if (head !== undefined && !this.stopped) check(!isComplete(head), () => `${me}: pending batch ${describeBatch(head)} is held by every member but not executed`);
    // The rounds, timers and queue of the primary's side (PrimaryHost.invariants): a stall ends by a
    // recovery round (in a view change, syncView settles the batches instead), and no waiting
    // request is stranded.
    this.asPrimary.invariants();

    const held = this.asBackup.heldForGap;
    check(held >= 0 && held <= GAP_WAITERS_MAX, () => `${me}: ${held} batches held for a gap (at most ${GAP_WAITERS_MAX})`);
    // The backup's core (its waiting batches and acknowledgements), the join core, and their hosts' timers and answers.
    this.asBackup.invariants();
    this.join.invariants();
    this.viewSync.invariants();
    // A backup's requests beyond its commit point: consecutive after lastMyvs, only while it
    // serves as a backup (a view change executes them first) or once stopped (a crash keeps them
    // in the log only).
    const awaiting = this.awaitingCommit;
    check(awaiting.length <= AWAITING_COMMIT_MAX, () => `${me}: ${awaiting.length} requests awaiting the commit point (at most ${AWAITING_COMMIT_MAX})`);
    if (awaiting.length > 0) {
      check(this.stopped || (isNormal(status) && status.role === 'backup'), () => `${me}: ${awaiting.length} requests awaiting the commit point while ${describeStatus(status)}`);
      awaiting.forEach((entry, i) => {
        const want = i === 0 ? nextExpected(entry.vs.vid, last) : successor(awaiting[i - 1]!.vs);
        check(cmp(entry.vs, want) === 0, () => `${me}: request ${i} awaiting the commit point is at ${vs(entry.vs)}, not ${vs(want)} (lastMyvs ${vs(last)})`);
      });
      check(awaiting.length === 0 || pending.length === 0, () => `${me}: requests awaiting the commit point and pending batches at once`);
    }

    // The waiting requests: a stopped node has none (stop() answers them, invoke refuses).
    const waiting = this.asPrimary.pipeline.waitingCount;
    if (waiting > 0) check(!this.stopped, () => `${me}: stopped with ${waiting} requests waiting`);

    // The log held since the checkpoint: its own rules, then what ties it to the pipeline.
    const { after, heldAtLast } = this.heldLog.invariants(last, me);
    // A snapshot is kept only for a state too large for one answer, and its idle timer runs.
    this.snapshots.invariants(me);
    if (this.stopped) check(this.snapshots.keptAt === undefined, () => `${me}: stopped with a snapshot kept`);
    // The log after lastMyvs is exactly what is not executed yet: the primary's pending batches
    // or the backup's requests awaiting the commit point.
    const pendingVs = pending.length > 0 ? pending.flatMap((batch) => batch.entries.map((entry) => entry.vs)) : awaiting.map((entry) => entry.vs);
    check(
      after.length === pendingVs.length && after.every((held, i) => cmp(held, pendingVs[i]!) === 0),
      () => `${me}: log entries held after lastMyvs ${vs(last)} are [${after.map(vs).join(' ')}], the unexecuted [${pendingVs.map(vs).join(' ')}]`,
    );
    check((this.lastRequest !== undefined) === heldAtLast, () => `${me}: the request at lastMyvs ${vs(last)} is ${this.lastRequest === undefined ? 'unknown' : 'known'} but its log entry is ${heldAtLast ? '' : 'not '}held`);
    const lastRequest = this.lastRequest;
    if (lastRequest !== undefined) check(cmp(lastRequest.vs, last) === 0, () => `${me}: lastRequest at ${vs(lastRequest.vs)}, lastMyvs ${vs(last)}`);

    // Synchronisation.
    if (this.servingBackups(this.vidCommitted)) {
      this.viewSync.servingInvariants(members.filter((member) => member !== this.me), last, me);
    }

    // Listeners and stamps.
    check(this.wasPrimary === this.isPrimary, () => `${me}: isPrimary ${this.isPrimary} but the listeners last heard ${this.wasPrimary}`);
    check(Number.isSafeInteger(this.lastStampMs) && this.lastStampMs >= 0 && this.lastStampMs <= this.env.clock.now(), () => `${me}: lastStampMs ${this.lastStampMs} (now ${this.env.clock.now()})`);
  }

  /** Serves net_repair, breakpoint and status on the control endpoint (a separate RpcEndpoint: rsm/test-control.ts). */
  registerControl(control: RpcEndpoint): void {
    assert(control !== this.rpc, 'the control protocol needs its own endpoint');
    this.testControl.register(control);
  }

  /** This replica's committed view, primary and last executed viewstamp (the status RPC). */
  status(): StatusRes {
    return {
      vid: this.vidCommitted,
      members: this.vidCommitted === 0 ? [] : [...this.config.members(this.vidCommitted)],
      primary: this.vidCommitted === 0 ? '' : this.primaryId,
      inViewChange: this.inViewChange,
      phase: describeStatus(this.replicaStatus),
      last: this.lastMyvs,
      batches: this.batchesExecuted,
    };
  }

  /** breakpoint b: 1 and 2 arm the rsm breakpoints, 3 and 4 the Paxos ones; others are ERR. */
  breakpoint(b: number): number {
    return this.testControl.breakpoint(b);
  }

  /** Disarms every breakpoint, RSM and Paxos (the simulator's liveness phase; no RPC for it). */
  disarmBreakpoints(): void {
    this.testControl.disarm();
  }

  /** net_repair: heal = 1 reconnects at once; heal = 0 arms a partition for the next partition1(). Others are ERR. */
  netRepair(heal: number): number {
    return this.testControl.netRepair(heal);
  }

  /** Cuts this node off if a partition is armed (called from the primary's request path). */
  partition1(): void {
    this.testControl.partition1();
  }

  /** rsm breakpoint 1 (called mid-request by the invoke paths). */
  breakpoint1(): void {
    this.testControl.breakpoint1();
  }

  private primaryMaybeChanged(): void {
    const now = this.isPrimary;
    if (now === this.wasPrimary) return;
    this.wasPrimary = now;
    this.primaryListeners.emit(now, (e) => this.fatal(e));
  }

  private fatal(error: unknown): void {
    if (this.stopped) return;
    this.onFatal(error);
  }
}

function sameMembers(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((member, i) => member === b[i]);
}

/** Re-exported for hosts that only import the RSM. */
export type { HistoryEntry };
