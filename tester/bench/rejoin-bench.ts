/**
 * Benchmark (e): rejoin. How long a replica takes to get in sync with its group when the group's
 * state holds 1,000,000 locks (`--rejoin-locks N`), against the same with 10 locks measured in the
 * same run. Target (issue 5): in sync within 2 s.
 *
 * The state is SEEDED, the rejoin is REAL:
 *
 * - Seeding. Filling a million locks through the service (~10k replicated requests/s) would take
 *   minutes, so this process builds the state itself: it executes real acquire and release
 *   requests through the lock service's StateMachine (CachingLockServer inside LockedFileService,
 *   as `lock_server MASTER ME` runs it; `execute`, then `marshalState`). Each lock is granted once
 *   or twice (its grant count is remembered), 1 % stay held by their clients, no lock has waiters
 *   (waiters would make the primary send revoke notices to clients that do not exist). Then a
 *   3-replica cluster of `lock_server` processes (127.0.0.1, free ports below 32000, data in a
 *   temporary directory) runs with limits raised to fit the state, serves a few real requests,
 *   and is stopped (SIGTERM). Into each replica's storage goes a checkpoint of the seeded state at
 *   the viewstamp that replica executed last (read from its storage: the checkpoint and the log
 *   after it), written in one batch with the deletion of every log entry it covers, as a
 *   checkpoint of an installed state is (rsm/replica-store.ts, rsm/node.ts writeCheckpoint). All
 *   three get byte-identical checkpoints at the same viewstamp (checked by reading them back). The
 *   replicas restart on it; a real STAT and INSPECT through the RSM check the seeded locks are
 *   there.
 * - Measured, on that cluster with no client load, each on a cluster of its own:
 *   (e1) full transfer: SIGKILL a backup; once the other two have a view without it, wipe its data
 *        directory (storage, file copies, paxos log: a new disk) and restart it with the same id;
 *   (e2) a little behind: SIGKILL a backup; once the other two have a view without it, run
 *        BEHIND_REQUESTS replicated requests through them, then restart it with its data intact.
 *   Time from the restart until "in sync": its control-port `status` shows the primary's view
 *   with all three members, neither it nor the primary is in a view change, and its last executed
 *   viewstamp equals the primary's. Bounded by SYNC_LIMIT_MS; a replica that is not in sync by
 *   then is reported as such (with what the replicas last said, whether the service still answers,
 *   and their logs kept under logs/bench-e-*), never waited for longer. Also the CPU (user +
 *   system, /proc) of the rejoining replica from its start, and of the replica that was primary at
 *   the restart over the same window.
 *
 * A state larger than one transfer chunk (4 MiB) travels in chunks (transferchunk), and a replica
 * a little behind gets the log entries it lacks instead (rsm/README.md, State transfer); before
 * that, a 33 MB state could not be transferred at all and (e1) and (e2) never got in sync. Nothing
 * here assumes either outcome: a rejoin that does not finish is reported as such.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { realClock } from '../../lib/clock.js';
import { openLevelStorage } from '../../lib/level-storage.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../../lib/tcp.js';
import {
  CacheProc,
  LockStatus,
  decodeI32Reply,
  decodeLockInspection,
  encodeCacheLockRequest,
  encodeCacheStatRequest,
} from '../../lockserver/cache-protocol.js';
import { CachingLockServer, defaultCachingLockServerLimits, type CachingLockServerLimits } from '../../lockserver/cache-server.js';
import { FileService } from '../../lockserver/file/file-service.js';
import { LockedFileService } from '../../lockserver/file/locked-files.js';
import { lockLimitArguments } from '../../lockserver/lock-replica.js';
import { RsmClient } from '../../rsm/client.js';
import { TRANSFER_CHUNK_BYTES, VIEWSTAMP_ZERO, compareViewstamp, describeViewstamp, type StatusRes, type Viewstamp } from '../../rsm/protocol.js';
import {
  KEY_CHECKPOINT,
  LOG_PREFIX,
  decodeCheckpoint,
  decodeLogEntry,
  encodeCheckpoint,
  logProblem,
  type LogEntry,
} from '../../rsm/replica-store.js';
import { LocalCluster, chooseBasePort, queryStatus, type Replica } from '../cluster.js';
import { describeExit, isPortFree, tail } from '../processes.js';
import type { Benchmark, BenchReport } from './framework.js';
import { processesCpuUs } from './replica-stats.js';
import { runThroughputLevel, type LevelResult } from './rsm-bench.js';

export interface RejoinBenchOptions {
  /** Locks in the seeded state of the measured rows. */
  readonly rejoinLocks: number;
  /** (b)'s measured time per level; (e3) runs LOAD_DURATION_FACTOR times as long. */
  readonly durationMs: number;
}

export const DEFAULT_REJOIN_BENCH: Omit<RejoinBenchOptions, 'durationMs'> = { rejoinLocks: 1_000_000 };

/** Locks in the seeded state of the baseline rows. */
const BASELINE_LOCKS = 10;
/** The target of issue 5: in sync within this. */
const TARGET_MS = 2_000;
/** Bound on one rejoin: a replica not in sync by then is reported as not in sync. */
const SYNC_LIMIT_MS = 60_000;
/** Bound on the survivors' view without the killed backup, and on the first start's sync. */
const SETTLE_LIMIT_MS = 30_000;
/** Bound on the restart of all three on the seeded checkpoint (each restores the whole state). */
const RESTORE_LIMIT_MS = 180_000;
/** (e2): replicated requests the two survivors execute while the backup is down (acquire + release pairs). */
const BEHIND_REQUESTS = 1_000;
/** (e2): concurrent callers issuing them. */
const BEHIND_CALLERS = 8;
/** Real requests before the cluster is stopped for seeding. */
const WARMUP_OPERATIONS = 5;
/** How often the rejoin's status is polled. */
const STATUS_POLL_MS = 5;
/** Progress lines while a long wait goes on. */
const PROGRESS_EVERY_MS = 10_000;
/** Bound on one RSM request of the bench's own clients. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Deadline of one status call (a replica restoring a large checkpoint answers late). */
const STATUS_TIMEOUT_MS = 800;
/** One lock in this many stays held (per client, so no client holds more than its share). */
const HELD_ONE_IN = 100;
/** Locks per seeded client. */
const LOCKS_PER_CLIENT = 10_000;
/** After a rejoin that did not finish: how long a request may take to show the service still answers. */
const SERVICE_CHECK_MS = 5_000;
/** Lines of a replica's log quoted when a rejoin does not finish. */
const LOG_TAIL_LINES = 4;

const sleepMs = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function addressOf(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}

const count = (n: number): string => n.toLocaleString('en-US');

// -----------------------------------------------------------------------------------------------
// The seeded state.

/** A seeded lock the bench asks the restarted service about. */
interface SeededLock {
  readonly lid: string;
  readonly grants: number;
  /** Its holder's client id, if it stays held. */
  readonly holder: string | undefined;
}

export interface SeededState {
  readonly locks: number;
  readonly held: number;
  readonly clients: number;
  /** Acquire and release requests executed to build it. */
  readonly requests: number;
  /** The lock+file state as the replicas' StateMachine marshals it. */
  readonly state: Uint8Array;
  /** Duplicate-suppression records in the table. */
  readonly records: number;
  readonly buildMs: number;
  readonly marshalMs: number;
  /** unmarshalState of the same bytes into a fresh service in this process (also checks they decode). */
  readonly unmarshalMs: number;
  /** A few seeded locks (the first, one held, the last) to check the restarted service holds them. */
  readonly probes: readonly SeededLock[];
}

/** The replicas' StateMachine, made as startLockReplica makes it (fenced file service). */
function lockService(limits: Partial<CachingLockServerLimits>): { service: LockedFileService<CachingLockServer>; locks: CachingLockServer } {
  const locks = new CachingLockServer(limits);
  const files = new FileService({ holdToken: (lock) => locks.holderOf(lock)?.token }, { fenced: true });
  return { service: new LockedFileService(locks, files), locks };
}

/** Lock i's client, grant count and whether it stays held: a pure function of i, so probes can be checked. */
function seedPlan(i: number, clients: number): SeededLock {
  const client = i % clients;
  // The client's own index for this lock: spreads the held locks over the clients evenly.
  const nth = Math.floor(i / clients);
  const grants = i % 8 === 0 ? 2 : 1;
  const held = nth % HELD_ONE_IN === 0;
  return { lid: `seed-lock-${i}`, grants, holder: held ? `seed-client-${client}` : undefined };
}

/**
 * Builds the seeded state by executing acquire/release requests through the service, in this
 * process. `progress` gets a line every PROGRESS_EVERY_MS (the 1,000,000-lock seed takes a while).
 */
export function buildSeededState(locks: number, limits: Partial<CachingLockServerLimits>, progress: (line: string) => void): SeededState {
  const started = performance.now();
  const clients = Math.max(1, Math.ceil(locks / LOCKS_PER_CLIENT));
  const { service, locks: table } = lockService(limits);
  const xids = new Array<number>(clients).fill(0);
  let seqno = 0;
  let requests = 0;
  let held = 0;
  let lastProgress = started;
  // vid 0, time 0: the table's clock before any replicated request (as an unreplicated host's);
  // the first replicated request after the restart moves it to its own view and time.
  const execute = (proc: number, request: Uint8Array, what: string): void => {
    requests++;
    const result = service.execute(proc, request, { vid: 0, seqno: ++seqno, timeMs: 0 });
    if (result.status !== LockStatus.OK) throw new Error(`seeding: ${what} answered status ${result.status}`);
  };
  for (let i = 0; i < locks; i++) {
    const plan = seedPlan(i, clients);
    const id = `seed-client-${i % clients}`;
    for (let grant = 1; grant <= plan.grants; grant++) {
      const xid = ++xids[i % clients]!;
      const request = encodeCacheLockRequest({ lid: plan.lid, id, xid });
      execute(CacheProc.ACQUIRE, request, `acquire ${plan.lid}`);
      if (plan.holder !== undefined && grant === plan.grants) {
        held++;
        break;
      }
      execute(CacheProc.RELEASE, request, `release ${plan.lid}`);
    }
    if ((i + 1) % 1000 === 0 && performance.now() - lastProgress >= PROGRESS_EVERY_MS) {
      lastProgress = performance.now();
      progress(`seeding: ${count(i + 1)} of ${count(locks)} locks (${((lastProgress - started) / 1000).toFixed(0)} s)`);
    }
  }
  const sizes = table.sizes;
  if (sizes.busyLocks !== held || sizes.idleLocks !== locks - held) {
    throw new Error(`seeding: the table has ${sizes.busyLocks} busy and ${sizes.idleLocks} idle locks, expected ${held} and ${locks - held} (limits too low?)`);
  }
  const built = performance.now();
  const state = service.marshalState();
  const marshalled = performance.now();
  const check = lockService(limits).service.unmarshalState(state);
  const unmarshalled = performance.now();
  if (!check.ok) throw new Error(`seeding: the service refuses its own seeded state: ${check.reason}`);
  const heldProbe = Array.from({ length: Math.min(locks, HELD_ONE_IN * clients) }, (_, i) => seedPlan(i, clients)).find((p) => p.holder !== undefined);
  const probes = [seedPlan(0, clients), ...(heldProbe === undefined ? [] : [heldProbe]), seedPlan(locks - 1, clients)];
  return {
    locks,
    held,
    clients,
    requests,
    state,
    records: sizes.records,
    buildMs: built - started,
    marshalMs: marshalled - built,
    unmarshalMs: unmarshalled - marshalled,
    probes: [...new Map(probes.map((p) => [p.lid, p])).values()],
  };
}

// -----------------------------------------------------------------------------------------------
// The cluster.

/** The bench's own connection to the cluster: RSM requests and control-port status. */
class Probe {
  readonly rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  readonly rsm: RsmClient;

  constructor(readonly cluster: LocalCluster) {
    this.rsm = new RsmClient({ rpc: this.rpc, knownMembers: cluster.replicas.map((r) => r.id), addressOf });
  }

  status(replica: Replica): Promise<StatusRes | undefined> {
    return queryStatus(this.rpc, `127.0.0.1:${replica.controlPort}`, STATUS_TIMEOUT_MS).catch(() => undefined);
  }

  /** One acquire+release of `lid` by `id`; whether both answered OK. */
  async operation(lid: string, id: string, xid: number): Promise<boolean> {
    const request = encodeCacheLockRequest({ lid, id, xid });
    const acquired = await this.rsm.invoke(CacheProc.ACQUIRE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
    if (acquired?.status !== LockStatus.OK) return false;
    const released = await this.rsm.invoke(CacheProc.RELEASE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
    return released?.status === LockStatus.OK;
  }

  /** What the service says of a seeded lock, or why it could not be asked. */
  async check(lock: SeededLock): Promise<string | undefined> {
    const stat = await this.rsm.invoke(CacheProc.STAT, encodeCacheStatRequest({ lid: lock.lid }), { timeoutMs: REQUEST_TIMEOUT_MS }).catch((e: Error) => e);
    if (stat instanceof Error) return `stat ${lock.lid}: ${stat.message}`;
    const grants = decodeI32Reply(stat.reply);
    if (stat.status !== LockStatus.OK || !grants.ok || grants.value !== lock.grants) {
      return `stat ${lock.lid}: status ${stat.status}, ${grants.ok ? `${grants.value} grants` : grants.reason}; seeded ${lock.grants}`;
    }
    const inspect = await this.rsm.invoke(CacheProc.INSPECT, encodeCacheStatRequest({ lid: lock.lid }), { timeoutMs: REQUEST_TIMEOUT_MS }).catch((e: Error) => e);
    if (inspect instanceof Error) return `inspect ${lock.lid}: ${inspect.message}`;
    const seen = decodeLockInspection(inspect.reply);
    const holder = seen.ok ? seen.value.holder?.session : undefined;
    if (inspect.status !== LockStatus.OK || !seen.ok || holder !== lock.holder) {
      return `inspect ${lock.lid}: holder ${holder ?? 'none'}, seeded ${lock.holder ?? 'none'}`;
    }
    return undefined;
  }

  /** ms until the service answers a STAT of `lid` (through the primary), or undefined if not within `limitMs`. */
  async answersWithin(lid: string, limitMs: number): Promise<number | undefined> {
    const started = performance.now();
    const answer = await this.rsm.invoke(CacheProc.STAT, encodeCacheStatRequest({ lid }), { timeoutMs: limitMs }).catch(() => undefined);
    return answer?.status === LockStatus.OK ? performance.now() - started : undefined;
  }

  async close(): Promise<void> {
    this.rsm.close();
    await this.rpc.close();
  }
}

interface GroupStatus {
  readonly replica: Replica;
  readonly status: StatusRes | undefined;
}

function describeStatus(cluster: LocalCluster, { replica, status }: GroupStatus): string {
  if (status === undefined) return `${replica.name}: no status answer`;
  return (
    `${replica.name}: view ${status.vid} ${cluster.describe(status.members)}${status.inViewChange ? ', in view change' : ''}, ` +
    `primary ${status.primary === '' ? '-' : cluster.nameOf(status.primary)}, last ${describeViewstamp(status.last)}`
  );
}

/**
 * Whether `replicas` form one serving view of exactly `members`: each answers for the same view
 * with those members, none is in a view change, and each has executed what the primary has.
 */
function inSync(statuses: readonly GroupStatus[], members: readonly Replica[]): boolean {
  const first = statuses[0]?.status;
  if (first === undefined) return false;
  const ids = members.map((m) => m.id).sort();
  const primary = statuses.find((s) => s.replica.id === first.primary)?.status;
  if (primary === undefined) return false;
  return statuses.every(({ status }) => {
    if (status === undefined || status.inViewChange || status.vid !== primary.vid || status.primary !== primary.primary) return false;
    if ([...status.members].sort().join(',') !== ids.join(',')) return false;
    return compareViewstamp(status.last, primary.last) === 0;
  });
}

/** Polls until `replicas` are in sync as a view of exactly themselves; the statuses then, or undefined at `limitMs`. */
async function waitForGroup(
  probe: Probe,
  replicas: readonly Replica[],
  limitMs: number,
  progress?: (line: string) => void,
): Promise<readonly GroupStatus[] | undefined> {
  const started = performance.now();
  let nextProgress = started + PROGRESS_EVERY_MS;
  for (;;) {
    const statuses = await Promise.all(replicas.map(async (replica) => ({ replica, status: await probe.status(replica) })));
    if (inSync(statuses, replicas)) return statuses;
    const now = performance.now();
    if (now - started >= limitMs) return undefined;
    if (progress !== undefined && now >= nextProgress) {
      nextProgress += PROGRESS_EVERY_MS;
      progress(`waiting ${((now - started) / 1000).toFixed(0)} s: ${statuses.map((s) => describeStatus(probe.cluster, s)).join('; ')}`);
    }
    await sleepMs(STATUS_POLL_MS);
  }
}

/** SIGTERM to every replica, waiting for each to exit (SIGKILL after a bound): "this node stops now". */
async function stopAll(cluster: LocalCluster): Promise<void> {
  for (const replica of cluster.replicas) replica.process?.signal('SIGTERM');
  for (const replica of cluster.replicas) {
    if (replica.process === undefined) continue;
    if ((await replica.process.waitForExit(10_000)) === undefined) {
      process.kill(replica.process.pid, 'SIGKILL');
      await replica.process.exited;
    }
  }
}

/**
 * What `dataPath`'s replica executed last, from its storage: its checkpoint's viewstamp, or the
 * last log entry after it (a restart replays those). Throws if the log does not follow the
 * checkpoint (the replica would refuse it too).
 */
async function executedInStorage(dataPath: string): Promise<{ last: Viewstamp; logKeys: string[] }> {
  const storage = await openLevelStorage(dataPath);
  try {
    const checkpointBytes = await storage.get(KEY_CHECKPOINT);
    let last = VIEWSTAMP_ZERO;
    if (checkpointBytes !== undefined) {
      const checkpoint = decodeCheckpoint(checkpointBytes);
      if (!checkpoint.ok) throw new Error(`${dataPath}: unreadable checkpoint: ${checkpoint.reason}`);
      last = checkpoint.value.last;
    }
    const stored = await storage.list(LOG_PREFIX);
    const entries: Array<readonly [string, LogEntry]> = [];
    for (const [key, bytes] of stored) {
      const entry = decodeLogEntry(bytes);
      if (!entry.ok) throw new Error(`${dataPath}: unreadable log entry ${key}: ${entry.reason}`);
      entries.push([key, entry.value]);
    }
    // A periodic checkpoint keeps the entry at its own viewstamp; the ones after it must follow it.
    const after = entries.filter(([, entry]) => compareViewstamp(entry.vs, last) > 0);
    const problem = logProblem(last, after);
    if (problem !== undefined) throw new Error(`${dataPath}: ${problem}`);
    return { last: after.at(-1)?.[1].vs ?? last, logKeys: stored.map(([key]) => key) };
  } finally {
    await storage.close();
  }
}

/**
 * Writes the seeded state as every replica's checkpoint at the viewstamp they all executed last,
 * deleting the log entries it covers (all of them: the seeded state replaces the history, as an
 * installed state's checkpoint does). The replicas must be stopped. Returns that viewstamp.
 */
async function writeSeededCheckpoints(cluster: LocalCluster, state: Uint8Array): Promise<Viewstamp> {
  const dataPaths = cluster.replicas.map((replica) => path.join(cluster.options.dataDir, replica.id));
  const executed = await Promise.all(dataPaths.map(executedInStorage));
  const last = executed[0]!.last;
  if (executed.some((e) => compareViewstamp(e.last, last) !== 0)) {
    throw new Error(`the replicas stopped at different viewstamps (${executed.map((e) => describeViewstamp(e.last)).join(', ')}); not seeding`);
  }
  if (compareViewstamp(last, VIEWSTAMP_ZERO) === 0) throw new Error('the replicas executed nothing before seeding');
  const checkpoint = encodeCheckpoint({ last, state });
  for (const [i, dataPath] of dataPaths.entries()) {
    const storage = await openLevelStorage(dataPath);
    try {
      await storage.write([{ type: 'put', key: KEY_CHECKPOINT, value: checkpoint }, ...executed[i]!.logKeys.map((key) => ({ type: 'del' as const, key }))], { sync: true });
      const back = await storage.get(KEY_CHECKPOINT);
      const left = await storage.list(LOG_PREFIX);
      if (back === undefined || Buffer.compare(back, checkpoint) !== 0 || left.length !== 0) throw new Error(`${dataPath}: the seeded checkpoint did not read back as written`);
    } finally {
      await storage.close();
    }
  }
  return last;
}

/** A cluster on free ports (below 32000) with its logs and data under `dir`; not started. */
async function newCluster(dir: string, serverArguments: readonly string[]): Promise<LocalCluster> {
  const random = osRandom();
  let base: number | undefined;
  for (let draw = 0; draw < 50 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports for a 3-replica cluster');
  // Every replica runs with the same lock table limits (the state records them).
  return new LocalCluster({
    replicas: 3,
    basePort: base,
    logDir: dir,
    dataDir: path.join(dir, 'data'),
    binDir: fileURLToPath(new URL('../bin/', import.meta.url)),
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
    serverArguments,
  });
}

/**
 * A 3-replica cluster restarted on the seeded checkpoint and checked to serve the seeded locks;
 * `body` runs on it; the processes are stopped (by PID) and the directory removed in any case.
 */
async function withSeededCluster<T>(
  seed: SeededState,
  limits: Partial<CachingLockServerLimits>,
  progress: (line: string) => void,
  body: (cluster: LocalCluster, probe: Probe) => Promise<T>,
): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-bench-e-'));
  const cluster = await newCluster(dir, lockLimitArguments(limits));
  let probe: Probe | undefined = new Probe(cluster);
  try {
    await cluster.start(() => {});
    for (let i = 0; i < WARMUP_OPERATIONS; i++) {
      if (!(await probe.operation(`warmup-${i}`, 'bench-e-warmup', i + 1))) throw new Error('a warm-up request failed');
    }
    if ((await waitForGroup(probe, cluster.replicas, SETTLE_LIMIT_MS)) === undefined) throw new Error('the fresh cluster did not get in sync');
    await probe.close();
    probe = undefined;
    await stopAll(cluster);
    const last = await writeSeededCheckpoints(cluster, seed.state);
    progress(`seeded checkpoint written to the 3 replicas at viewstamp ${describeViewstamp(last)}; restarting them on it`);
    const restarted = performance.now();
    for (const replica of cluster.replicas) cluster.spawn(replica);
    const restartedProbe = new Probe(cluster);
    probe = restartedProbe;
    const group = await waitForGroup(restartedProbe, cluster.replicas, RESTORE_LIMIT_MS, progress);
    if (group === undefined) throw new Error(`the replicas did not get in sync on the seeded checkpoint within ${RESTORE_LIMIT_MS / 1000} s`);
    for (const lock of seed.probes) {
      const problem = await restartedProbe.check(lock);
      if (problem !== undefined) throw new Error(`the restarted service does not hold the seeded state: ${problem}`);
    }
    progress(`restarted and in sync in ${((performance.now() - restarted) / 1000).toFixed(1)} s; the service answers for the seeded locks (${seed.probes.map((p) => p.lid).join(', ')})`);
    return await body(cluster, restartedProbe);
  } finally {
    await probe?.close();
    await cluster.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

// -----------------------------------------------------------------------------------------------
// One rejoin.

/**
 * Copies the replicas' output and paxos logs of a rejoin that did not finish out of the temporary
 * directory (which is removed), to `<$RSM_LOG_DIR or logs>/bench-e-<what>/`, so the failure can be
 * read afterwards. Returns that directory.
 */
async function keepLogs(cluster: LocalCluster, what: string): Promise<string> {
  const target = path.join(process.env['RSM_LOG_DIR'] || 'logs', `bench-e-${what}`);
  await fsp.rm(target, { recursive: true, force: true });
  await fsp.mkdir(target, { recursive: true });
  for (const replica of cluster.replicas) {
    for (const file of [replica.logFile, replica.paxosLog]) await fsp.copyFile(file, path.join(target, path.basename(file))).catch(() => undefined);
  }
  return target;
}

export type RejoinKind = 'wiped' | 'behind';

export interface RejoinResult {
  /** ms from the restart to in sync; undefined if not within SYNC_LIMIT_MS (or it could not run). */
  readonly syncMs: number | undefined;
  /** CPU of the rejoining replica from its start to in sync (or the bound), ms. */
  readonly rejoinerCpuMs: number | undefined;
  /** CPU of the replica that was primary at the restart, over the same window, ms (it may lose that role meanwhile). */
  readonly primaryCpuMs: number | undefined;
  /** What went wrong, for the report (lines). */
  readonly problem: readonly string[];
}

async function rejoin(cluster: LocalCluster, probe: Probe, kind: RejoinKind, seed: SeededState, progress: (line: string) => void): Promise<RejoinResult> {
  const failed = (problem: string[]): RejoinResult => ({ syncMs: undefined, rejoinerCpuMs: undefined, primaryCpuMs: undefined, problem });
  const statuses = await Promise.all(cluster.replicas.map(async (replica) => ({ replica, status: await probe.status(replica) })));
  const primaryId = statuses.find((s) => s.status !== undefined)?.status?.primary;
  const primary = cluster.replicas.find((r) => r.id === primaryId);
  // The last backup in member order: never the MASTER a (re)joining node asks first.
  const backup = [...cluster.replicas].reverse().find((r) => r !== primary && r !== cluster.master) ?? cluster.replicas.find((r) => r !== primary);
  if (primary === undefined || backup?.process === undefined) return failed([`no primary and backup to work with: ${statuses.map((s) => describeStatus(cluster, s)).join('; ')}`]);
  const survivors = cluster.replicas.filter((r) => r !== backup);

  backup.process.signal('SIGKILL');
  await backup.process.exited;
  const without = await waitForGroup(probe, survivors, SETTLE_LIMIT_MS);
  if (without === undefined) return failed([`the other two did not form a view without ${backup.name} within ${SETTLE_LIMIT_MS / 1000} s`]);
  const primaryNow = cluster.replicas.find((r) => r.id === without[0]!.status!.primary) ?? primary;

  if (kind === 'behind') {
    let next = 0;
    let failures = 0;
    await Promise.all(
      Array.from({ length: BEHIND_CALLERS }, async (_, caller) => {
        for (let i = next++; i < BEHIND_REQUESTS / 2; i = next++) {
          if (!(await probe.operation(`behind-${i}`, `bench-e-behind-${caller}`, i + 1))) failures++;
        }
      }),
    );
    if (failures > 0) return failed([`${failures} of the ${BEHIND_REQUESTS / 2} acquire+release operations while ${backup.name} was down failed`]);
  } else {
    // A new disk: the node's storage, its copies of the files and its paxos log.
    await fsp.rm(path.join(cluster.options.dataDir, backup.id), { recursive: true, force: true });
    await fsp.rm(path.join(cluster.options.dataDir, `files-${backup.id}`), { recursive: true, force: true });
    await fsp.rm(backup.paxosLog, { force: true });
  }

  const primaryPid = primaryNow.process?.running === true ? primaryNow.process.pid : undefined;
  const primaryCpuBefore = primaryPid === undefined ? undefined : await processesCpuUs([primaryPid]);
  const restartedAt = performance.now();
  const child = cluster.spawn(backup);
  const group = await waitForGroup(probe, cluster.replicas, SYNC_LIMIT_MS, progress);
  const syncMs = group === undefined ? undefined : performance.now() - restartedAt;
  const rejoinerCpu = child.running ? await processesCpuUs([child.pid]) : undefined;
  const primaryCpuAfter = primaryPid === undefined ? undefined : await processesCpuUs([primaryPid]);
  const cpu = {
    rejoinerCpuMs: rejoinerCpu === undefined ? undefined : rejoinerCpu / 1000,
    primaryCpuMs: primaryCpuBefore === undefined || primaryCpuAfter === undefined ? undefined : (primaryCpuAfter - primaryCpuBefore) / 1000,
  };
  if (syncMs === undefined) {
    const kept = await keepLogs(cluster, `${seed.locks}-locks-${kind}`);
    const last = await Promise.all(cluster.replicas.map(async (replica) => ({ replica, status: await probe.status(replica) })));
    const exited = child.running ? [] : [`${backup.name} exited (${describeExit(child.exitInfo!)})`];
    // A failed rejoin may cost more than the rejoiner: a primary busy marshalling a large state
    // stops answering heartbeats, and the others may drop it from the view.
    const view = last.find((s) => s.status !== undefined && s.status.primary !== '' && s.replica.id !== s.status.primary)?.status;
    const dropped = view === undefined ? [] : cluster.replicas.filter((r) => r !== backup && !view.members.includes(r.id)).map((r) => `${r.name} (not killed) is no longer in the view`);
    const answeredMs = await probe.answersWithin(seed.probes[0]!.lid, SERVICE_CHECK_MS);
    const service =
      answeredMs === undefined
        ? `the service then: no answer to a request within ${SERVICE_CHECK_MS / 1000} s (clients are refused while the view is not synchronised)`
        : `the service then: answered a request in ${answeredMs.toFixed(0)} ms`;
    const logLines = async (replica: Replica): Promise<string[]> => (await tail(replica.logFile, LOG_TAIL_LINES)).map((line) => `  ${replica.name}'s log: ${line}`);
    return {
      syncMs,
      ...cpu,
      problem: [
        `did not get in sync within ${SYNC_LIMIT_MS / 1000} s`,
        ...exited,
        ...last.map((s) => `  then ${describeStatus(cluster, s)}`),
        ...dropped,
        ...(view !== undefined && view.primary !== primaryNow.id ? [`the primary changed from ${primaryNow.name} to ${cluster.nameOf(view.primary)}`] : []),
        service,
        ...(await logLines(backup)),
        ...(await logLines(primaryNow)),
        `  the replicas' logs are kept in ${kept} (DEBUG=viewstamp:rsm,viewstamp:tcp in the bench's environment adds the RSM's and transport's own lines)`,
      ],
    };
  }
  // The group serves again, with the seeded locks (asked through the primary).
  const problem = await probe.check(seed.probes[0]!);
  return { syncMs, ...cpu, problem: problem === undefined ? [] : [`in sync, but afterwards: ${problem}`] };
}

// -----------------------------------------------------------------------------------------------
// The benchmark.

/** The limits every replica runs with: idle locks raised to hold the largest seed (same for both sizes). */
function limitsFor(locks: number): Partial<CachingLockServerLimits> {
  return { maxIdleLocks: Math.max(defaultCachingLockServerLimits.maxIdleLocks, locks) };
}

interface SizeResult {
  readonly seed: SeededState;
  readonly full: RejoinResult;
  readonly behind: RejoinResult;
  /** (e3): (b)'s workload on the seeded cluster, or undefined if it could not run. */
  readonly load: LevelResult | undefined;
}

/** (e3): clients, and measured time against --duration-ms (10 s by default: a few checkpoints). */
const LOAD_CLIENTS = 8;
const LOAD_DURATION_FACTOR = 2.5;

async function measureSize(report: BenchReport, locks: number, limits: Partial<CachingLockServerLimits>, loadMs: number): Promise<SizeResult> {
  const progress = (line: string): void => report.note(`  ${line}`);
  report.note(`${count(locks)} locks: building the seeded state in this process…`);
  const seed = buildSeededState(locks, limits, progress);
  report.note(
    `${count(locks)} locks: ${count(seed.locks - seed.held)} idle (grant counts 1-2), ${count(seed.held)} held, ${count(seed.clients)} client(s), ` +
      `${count(seed.records)} duplicate-suppression records; ${count(seed.state.length)} bytes marshalled ` +
      `(${(seed.state.length / TRANSFER_CHUNK_BYTES).toFixed(2)} transfer chunks of ${TRANSFER_CHUNK_BYTES / 1024 / 1024} MiB)`,
  );
  report.note(
    `  built from ${count(seed.requests)} requests through execute in ${(seed.buildMs / 1000).toFixed(1)} s; ` +
      `in this process marshalState takes ${seed.marshalMs.toFixed(0)} ms, unmarshalState ${seed.unmarshalMs.toFixed(0)} ms`,
  );
  const run = async (kind: RejoinKind): Promise<RejoinResult> => {
    const what = kind === 'wiped' ? 'full transfer (wiped backup)' : `${count(BEHIND_REQUESTS)} requests behind`;
    try {
      const result = await withSeededCluster(seed, limits, progress, (cluster, probe) => {
        report.note(`  ${count(locks)} locks, ${what}: SIGKILL a backup${kind === 'wiped' ? ', wipe its data' : `, ${count(BEHIND_REQUESTS)} requests through the other two`}, restart it…`);
        return rejoin(cluster, probe, kind, seed, progress);
      });
      report.note(`  ${count(locks)} locks, ${what}: ${result.syncMs === undefined ? result.problem[0] : `in sync after ${result.syncMs.toFixed(0)} ms`}`);
      for (const line of result.syncMs === undefined ? result.problem.slice(1) : result.problem) report.note(`    ${line}`);
      return result;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      report.note(`  ${count(locks)} locks, ${what}: could not run: ${message}`);
      return { syncMs: undefined, rejoinerCpuMs: undefined, primaryCpuMs: undefined, problem: [`could not run: ${message}`] };
    }
  };
  const full = await run('wiped');
  const behind = await run('behind');
  let load: LevelResult | undefined;
  try {
    load = await withSeededCluster(seed, limits, progress, async (cluster) => {
      report.note(`  ${count(locks)} locks: (b)'s workload, ${LOAD_CLIENTS} clients for ${(loadMs / 1000).toFixed(1)} s…`);
      return runThroughputLevel(cluster, LOAD_CLIENTS, loadMs, 500);
    });
    report.note(`  ${count(locks)} locks: ${load.opsPerSecond.toFixed(1)} ops/s, ${load.errors} errors`);
  } catch (error) {
    report.note(`  ${count(locks)} locks, workload: could not run: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { seed, full, behind, load };
}

export const rejoinBenchmark: Benchmark<RejoinBenchOptions> = {
  id: 'e',
  title: 'rejoin: time for a restarted replica to get in sync when the state holds 1,000,000 locks (seeded state, real rejoin)',
  async run(report: BenchReport, options: RejoinBenchOptions): Promise<void> {
    const limits = limitsFor(options.rejoinLocks);
    report.note('3 lock_server MASTER ME processes on 127.0.0.1, run with ' + (lockLimitArguments(limits).join(' ') || 'the default limits') + '; no client load.');
    report.note('The state is SEEDED: built in this process by executing acquire/release requests through the lock');
    report.note("service's StateMachine, then written as every replica's checkpoint (at the viewstamp they executed");
    report.note('last, replacing their log) while they are stopped; they restart on it. The REJOIN is real: SIGKILL a');
    report.note('backup; (e1) wipe its data (storage and paxos log) or (e2) let the other two execute');
    report.note(`${count(BEHIND_REQUESTS)} requests; restart it. Measured: restart → its status shows the primary's view with all 3,`);
    report.note(`no view change, the primary's last viewstamp (polled every ${STATUS_POLL_MS} ms; given up after ${SYNC_LIMIT_MS / 1000} s).`);
    report.note(`Each measurement on a fresh seeded cluster; the baseline: the same with ${BASELINE_LOCKS} locks, same limits.`);
    const loadMs = Math.round(LOAD_DURATION_FACTOR * options.durationMs);
    const small = await measureSize(report, BASELINE_LOCKS, limits, loadMs);
    const large = await measureSize(report, options.rejoinLocks, limits, loadMs);
    const label = (locks: number): string => `${count(locks)} locks`;
    const rowNote = (result: RejoinResult): string | undefined => (result.syncMs === undefined ? (result.problem[0] ?? 'not in sync') : undefined);
    for (const [what, pick] of [
      ['(e1) full transfer: restart with a wiped data directory → in sync', (r: SizeResult) => r.full],
      [`(e2) ${count(BEHIND_REQUESTS)} requests behind: restart with its data → in sync`, (r: SizeResult) => r.behind],
    ] as const) {
      const [a, b] = [pick(small), pick(large)];
      report.compare({
        what,
        unit: 'ms',
        words: ['faster', 'slower'],
        rows: [
          { label: label(small.seed.locks), value: a.syncMs, baseline: true, ...(rowNote(a) === undefined ? {} : { note: rowNote(a)! }) },
          { label: label(large.seed.locks), value: b.syncMs, note: rowNote(b) ?? `state ${count(large.seed.state.length)} bytes` },
          { label: 'target', value: TARGET_MS, reference: true },
        ],
      });
      const id = what.slice(0, 4);
      const cpu: ReadonlyArray<readonly [string, (r: RejoinResult) => number | undefined]> = [
        ['the rejoining replica from its start until in sync (or the bound)', (r) => r.rejoinerCpuMs],
        ['the replica that was primary at the restart, over the same window', (r) => r.primaryCpuMs],
      ];
      for (const [whose, pick] of cpu) {
        report.compare({
          what: `${id} CPU of ${whose}, from /proc`,
          unit: 'ms',
          words: ['less', 'more'],
          rows: [
            { label: label(small.seed.locks), value: pick(a), baseline: true },
            { label: label(large.seed.locks), value: pick(b) },
          ],
        });
      }
    }
    report.compare({
      what: `(e3) throughput of (b)'s workload with ${LOAD_CLIENTS} clients on the seeded cluster (acquire+release per second; every replica checkpoints the whole state as the log grows)`,
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: [
        { label: label(small.seed.locks), value: small.load?.opsPerSecond, baseline: true },
        { label: label(large.seed.locks), value: large.load?.opsPerSecond, ...(large.load !== undefined && large.load.errors > 0 ? { note: `${large.load.errors} errors` } : {}) },
      ],
    });
    report.note(`Target (issue 5): in sync within ${TARGET_MS / 1000} s with 1,000,000 locks.`);
  },
};
