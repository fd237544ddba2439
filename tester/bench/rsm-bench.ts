/**
 * Benchmarks (b) and (c): the replicated caching lock service, as real `lock_server MASTER ME`
 * processes on 127.0.0.1 (three replicas, started by tester/cluster.ts like `npm start`), driven
 * from this process over TCP.
 *
 * (b) Throughput and latency of acquire+release through the RSM with 1, 8 and 32 concurrent
 *     clients, each on its own lock. The cache is defeated by driving the caching lock protocol
 *     directly through an RsmClient, as CachingLockClient does on a cache miss and after a revoke:
 *     every operation is acquire(lid, id, xid) then release(lid, id, xid) with a fresh xid, two RSM
 *     requests that each go through the primary, every backup and the synced writes. Both must
 *     answer OK (an operation that does not is counted as an error, not as a figure). It also
 *     prints the replicas' CPU (user + system, read from /proc/<pid>/stat before and after the
 *     measured window) per replicated request, so costs that do not shrink with batching show.
 * (c) Fail-over: one client loops acquire+release. Per trial, on a fresh cluster:
 *     1. after it ran a while, SIGKILL the primary; time from the kill until the first acquire
 *        *issued after the kill* succeeds, and until a survivor's paxos log shows a view without
 *        the killed node (the view change alone: its `done` line is written once the view is
 *        committed durably);
 *     2. restart the killed replica, wait until it is back in a 3-member view, SIGKILL a backup,
 *        and take the longest client-visible stall: the longest time without a completed
 *        operation from the kill until STALL_WINDOW_MS after it.
 *     20 trials by default; median and p90 (nearest rank) of each figure.
 *
 * Figures depend on the machine, its load and the disks (every request is synced on every
 * replica); they are meant to be read against each other in one run.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../../lib/tcp.js';
import { CacheProc, encodeCacheLockRequest } from '../../lockserver/cache-protocol.js';
import { LockStatus } from '../../lockserver/protocol.js';
import { RsmClient } from '../../rsm/client.js';
import { LocalCluster, chooseBasePort, latestLoggedView, queryMembers, type Replica } from '../cluster.js';
import { ChildHandle, isPortFree, lockServerScript } from '../processes.js';
import { measureFloor } from './echo-floor.js';
import { processesCpuUs, replicaPids } from './replica-stats.js';
import type { Benchmark, BenchReport } from './framework.js';

export interface RsmBenchOptions {
  /** (b) concurrency levels; the first is the baseline. */
  readonly clientCounts: readonly number[];
  /** (b) measured time per level (after a short warm-up). */
  readonly durationMs: number;
  /** (c) fail-overs measured (one fresh cluster each). */
  readonly trials: number;
}

export const DEFAULT_RSM_BENCH: RsmBenchOptions = { clientCounts: [1, 8, 32, 128], durationMs: 4_000, trials: 20 };

/** (b)'s lossy level: the percentage of faulty messages on every process. */
const LOSSY_PERCENT = 5;
/** Untimed operations before each (b) level is measured. */
const WARMUP_MS = 500;
/** Clients of the unmeasured level that warms a fresh cluster up before (b)'s levels. */
const WARM_UP_CLIENTS = 32;
/** Bound on one RSM request; a request that takes longer counts as an error. */
const REQUEST_TIMEOUT_MS = 30_000;
/** (c): operations the client completes before the primary is killed. */
const OPS_BEFORE_KILL = 20;
/** (c): bound on the wait for the first acquire after the kill. */
const FAILOVER_LIMIT_MS = 60_000;
/** Bound on waiting for the client loop to reach OPS_BEFORE_KILL. */
const WARM_LIMIT_MS = 30_000;
/** (c): the stall after a backup's kill is looked for in this window. */
const STALL_WINDOW_MS = 3_000;
/** (c): how often the survivors' paxos logs are read while waiting for the view change. */
const VIEW_POLL_MS = 2;
/** (c): bound on the restarted replica's rejoin. */
const REJOIN_LIMIT_MS = 30_000;

function addressOf(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}

/** One lock client of the benchmark: raw acquire/release of its own lock through the RSM. */
class RawLockClient {
  private xid = 0;
  readonly rsm: RsmClient;

  get endpoint(): RpcEndpoint {
    return this.rpc;
  }

  /** With `shared`, this client sends through another's RsmClient (and endpoint) and closes neither. */
  constructor(
    private readonly rpc: RpcEndpoint,
    member: string,
    readonly id: string,
    readonly lid: number,
    private readonly shared?: RsmClient,
  ) {
    this.rsm = shared ?? new RsmClient({ rpc, knownMembers: [member], addressOf });
  }

  /** One acquire+release; resolves whether both were answered OK. `onAcquired` gets the time the acquire returned. */
  async operation(onAcquired?: (acquireIssuedAt: number, at: number) => void): Promise<boolean> {
    const xid = ++this.xid;
    const request = encodeCacheLockRequest({ lid: String(this.lid), id: this.id, xid });
    const issued = performance.now();
    const acquired = await this.rsm.invoke(CacheProc.ACQUIRE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
    if (acquired?.status !== LockStatus.OK) return false;
    onAcquired?.(issued, performance.now());
    const released = await this.rsm.invoke(CacheProc.RELEASE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
    return released?.status === LockStatus.OK;
  }

  async close(): Promise<void> {
    if (this.shared !== undefined) return;
    this.rsm.close();
    await this.rpc.close();
  }
}

/** A fresh 3-replica cluster on free random ports in a temporary directory; always cleaned up. */
export async function withCluster<T>(body: (cluster: LocalCluster) => Promise<T>, lossyPercent = 0): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-bench-'));
  let base: number | undefined;
  const random = osRandom();
  for (let draw = 0; draw < 50 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports for a 3-replica cluster');
  const cluster = new LocalCluster({
    replicas: 3,
    basePort: base,
    logDir: dir,
    dataDir: path.join(dir, 'data'),
    binDir: fileURLToPath(new URL('../bin/', import.meta.url)),
    env: { ...process.env, RPC_LOSSY: lossyPercent > 0 ? String(lossyPercent) : '', RPC_COUNT: '' },
  });
  try {
    await cluster.start(() => {});
    return await body(cluster);
  } finally {
    await cluster.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function newClient(cluster: LocalCluster, id: string, lid: number, lossyPercent = 0): RawLockClient {
  const rpc = new RpcEndpoint(tcpNetwork({ lossyPercent }).connect(), realClock, osRandom());
  return new RawLockClient(rpc, cluster.master.id, id, lid);
}

function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export interface LevelResult {
  readonly clients: number;
  readonly operations: number;
  readonly errors: number;
  readonly elapsedMs: number;
  readonly opsPerSecond: number;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  /** p50 of the acquire alone (the first of the two requests), in ms. */
  readonly acquireP50Ms: number | undefined;
  /**
   * CPU (user + system) the three replica processes used over the measured window, in µs per
   * replicated request (2 per operation); undefined when /proc cannot be read.
   */
  readonly serverCpuUsPerRequest: number | undefined;
}

/** Runs `clients` concurrent loops for WARMUP_MS (unmeasured) then `durationMs` (measured). */
export async function runThroughputLevel(cluster: LocalCluster, clients: number, durationMs: number, level: number, lossyPercent = 0, shareConnection = false): Promise<LevelResult> {
  const first = newClient(cluster, `bench-b-${level}-0`, level * 1000 + 1, lossyPercent);
  const loops = [
    first,
    ...Array.from({ length: clients - 1 }, (_, i) =>
      shareConnection
        ? new RawLockClient(first.endpoint, cluster.master.id, `bench-b-${level}-${i + 1}`, level * 1000 + i + 2, first.rsm)
        : newClient(cluster, `bench-b-${level}-${i + 1}`, level * 1000 + i + 2, lossyPercent),
    ),
  ];
  const latencies: number[] = [];
  const acquireLatencies: number[] = [];
  const onAcquired = (issued: number, at: number): void => {
    if (measuring) acquireLatencies.push(at - issued);
  };
  let errors = 0;
  let measuring = false;
  let stop = false;
  const workers = loops.map(async (client) => {
    while (!stop) {
      const started = performance.now();
      const ok = await client.operation(onAcquired);
      if (!measuring) continue;
      if (ok) latencies.push(performance.now() - started);
      else errors++;
    }
  });
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  measuring = true;
  const pids = replicaPids(cluster);
  const cpuBefore = await processesCpuUs(pids);
  const started = performance.now();
  latencies.length = 0;
  acquireLatencies.length = 0;
  await new Promise((resolve) => setTimeout(resolve, durationMs));
  stop = true;
  const elapsedMs = performance.now() - started;
  // The operations in flight finish (each bounded by REQUEST_TIMEOUT_MS); they count too.
  await Promise.all(workers);
  const wall = performance.now() - started;
  const cpuAfter = await processesCpuUs(pids);
  // Every operation counted is two replicated requests (acquire, release); failed ones are not counted.
  const requests = latencies.length * 2;
  const serverCpuUsPerRequest =
    cpuBefore === undefined || cpuAfter === undefined || pids.length !== 3 || requests === 0 ? undefined : (cpuAfter - cpuBefore) / requests;
  // Sharing clients first: the owner of the shared connection closes it last.
  await Promise.all(loops.slice(1).map((client) => client.close()));
  await first.close();
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    clients,
    operations: latencies.length,
    errors,
    elapsedMs,
    opsPerSecond: (latencies.length / wall) * 1000,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    acquireP50Ms: percentile([...acquireLatencies].sort((a, b) => a - b), 50),
    serverCpuUsPerRequest,
  };
}

export async function runThroughput(options: RsmBenchOptions): Promise<LevelResult[]> {
  return withCluster(async (cluster) => {
    // Unmeasured first: on fresh processes the code runs unoptimised for a while (JIT), which would
    // bill the first level (1 client) for the warm-up. 32 clients run every path often enough.
    await runThroughputLevel(cluster, WARM_UP_CLIENTS, options.durationMs, 49);
    const results: LevelResult[] = [];
    for (const [level, clients] of options.clientCounts.entries()) results.push(await runThroughputLevel(cluster, clients, options.durationMs, level));
    return results;
  });
}

export const rsmThroughputBenchmark: Benchmark<RsmBenchOptions> = {
  id: 'b',
  title: 'RSM throughput and latency: acquire+release through 3 replicas, 1/8/32/128 clients, cache defeated, against an echo floor',
  async run(report: BenchReport, options: RsmBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; clients in this process, each on its own lock.');
    report.note('Cache defeated: each operation sends acquire(lid, id, new xid) and release(lid, id, xid) through');
    report.note('the RSM client, as a caching client does on a miss and after a revoke: 2 RSM requests per operation.');
    report.note(`${options.durationMs} ms measured per level after ${WARMUP_MS} ms of warm-up; first, one unmeasured level of ${WARM_UP_CLIENTS} clients warms the fresh replicas up.`);
    const results = await runThroughput(options);
    const clientsLabel = (clients: number): string => `${clients} client${clients === 1 ? '' : 's'}`;
    const label = (r: LevelResult): string => clientsLabel(r.clients);
    const note = (r: LevelResult): string | undefined => (r.errors > 0 ? `${r.errors} failed operations` : `${r.operations} operations`);
    report.compare({
      what: 'throughput (acquire+release operations per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: results.map((r, i) => ({ label: label(r), value: r.opsPerSecond, baseline: i === 0, note: note(r) })),
    });
    for (const [what, pick] of [
      ['p50 latency of one acquire+release', (r: LevelResult) => r.p50Ms],
      ['p99 latency of one acquire+release', (r: LevelResult) => r.p99Ms],
      ['p50 latency of the acquire alone', (r: LevelResult) => r.acquireP50Ms],
    ] as const) {
      report.compare({
        what,
        unit: 'ms',
        decimals: 2,
        words: ['faster', 'slower'],
        rows: results.map((r, i) => ({ label: label(r), value: pick(r), baseline: i === 0 })),
      });
    }
    report.compare({
      what: 'server CPU per replicated request (user + system of the 3 replicas, from /proc)',
      unit: 'µs',
      words: ['less', 'more'],
      rows: results.map((r, i) => ({ label: label(r), value: r.serverCpuUsPerRequest, baseline: i === 0 })),
    });
    // Lossy networks: the 32-client level again on a cluster whose every process (replicas and
    // clients) loses, duplicates or delays LOSSY_PERCENT % of its messages.
    const lossyClients = 32;
    const lossless = results.find((r) => r.clients === lossyClients);
    if (lossless !== undefined) {
      const lossy = await withCluster((cluster) => runThroughputLevel(cluster, lossyClients, options.durationMs, 50, LOSSY_PERCENT), LOSSY_PERCENT);
      report.compare({
        what: `throughput at ${lossyClients} clients with RPC_LOSSY=${LOSSY_PERCENT} on every process`,
        unit: 'ops/s',
        decimals: 1,
        words: ['lower', 'higher'],
        rows: [
          { label: 'lossless (above)', value: lossless.opsPerSecond, baseline: true },
          { label: `RPC_LOSSY=${LOSSY_PERCENT}`, value: lossy.opsPerSecond, note: lossy.errors > 0 ? `${lossy.errors} failed operations` : `${lossy.operations} operations` },
        ],
      });
    }
    // One connection for many clients (openLockConnection): the 32-client workload with each client
    // on its own endpoint and RSM client, then with all of them on one, on a fresh cluster of its own.
    const sharedClients = 32;
    if (options.clientCounts.includes(sharedClients)) {
      const [separate, shared] = await withCluster(async (cluster) => {
        // A fresh cluster's first level runs slower (the replicas' JIT warms up): this one is not shown.
        await runThroughputLevel(cluster, sharedClients, options.durationMs, 59);
        const own = await runThroughputLevel(cluster, sharedClients, options.durationMs, 60);
        return [own, await runThroughputLevel(cluster, sharedClients, options.durationMs, 61, 0, true)] as const;
      });
      const rows = (pick: (r: LevelResult) => number | undefined) => [
        { label: 'own connection each', value: pick(separate), baseline: true },
        { label: 'one shared connection', value: pick(shared) },
      ];
      report.compare({ what: `throughput at ${sharedClients} clients: own connections against one shared RSM client`, unit: 'ops/s', decimals: 1, words: ['lower', 'higher'], rows: rows((r) => r.opsPerSecond) });
      report.compare({ what: `server CPU per replicated request at ${sharedClients} clients, same two runs`, unit: 'µs', words: ['less', 'more'], rows: rows((r) => r.serverCpuUsPerRequest) });
    }
    report.note('The floor: the same chain (client → primary → both backups → primary → client) as a bare echo over');
    report.note('our TCP framing and RPC layer (tester/bench/echo-floor.ts): no storage, fsync, state machine or views.');
    const floor = await measureFloor(options.clientCounts, options.durationMs);
    report.compare({
      what: 'floor throughput (operations of two echo calls per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: floor.map((f, i) => ({ label: clientsLabel(f.clients), value: f.opsPerSecond, baseline: i === 0, ...(f.errors > 0 ? { note: `${f.errors} failed` } : {}) })),
    });
    report.compare({
      what: '(b) as a share of the floor at the same client count',
      unit: '%',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: results.map((r, i) => {
        const f = floor[i]?.opsPerSecond;
        return { label: label(r), value: f === undefined || f === 0 ? undefined : (100 * r.opsPerSecond) / f, baseline: i === 0 };
      }),
    });
  },
};

export interface FailoverTrial {
  /** ms from the primary's SIGKILL to the first acquire issued after it succeeding; undefined if none within FAILOVER_LIMIT_MS. */
  readonly failoverMs: number | undefined;
  /** ms from the primary's SIGKILL to a survivor logging a view without it; undefined if none. */
  readonly viewChangeMs: number | undefined;
  /** The longest client-visible stall after a backup's SIGKILL, ms; undefined if that part did not run. */
  readonly backupStallMs: number | undefined;
  /** The replicas killed ("p0", "p2"). */
  readonly killedPrimary: string;
  readonly killedBackup: string | undefined;
  /** Why the backup part did not run, if it did not. */
  readonly note?: string;
}

const sleepMs = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The primary as `asked` sees it, or undefined. */
async function primaryOf(cluster: LocalCluster, asked: readonly Replica[]): Promise<Replica | undefined> {
  const probe = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  try {
    for (const replica of asked) {
      const members = await queryMembers(probe, `127.0.0.1:${replica.port}`);
      if (members.answered) return cluster.replicas.find((r) => r.id === members.primary);
    }
    return undefined;
  } finally {
    await probe.close();
  }
}

/** Resolves ms from `since` until some replica of `watch` logs a view matching `wanted`, or undefined at `limitMs`. */
async function waitForLoggedView(watch: readonly Replica[], wanted: (members: readonly string[]) => boolean, since: number, limitMs: number): Promise<number | undefined> {
  const deadline = since + limitMs;
  while (performance.now() < deadline) {
    for (const replica of watch) {
      const view = await latestLoggedView(replica.paxosLog).catch(() => undefined);
      if (view !== undefined && wanted(view.members)) return performance.now() - since;
    }
    await sleepMs(VIEW_POLL_MS);
  }
  return undefined;
}

/** One trial on a fresh cluster: the primary's kill, then (after its restart) a backup's. */
export async function runFailoverTrial(trial: number): Promise<FailoverTrial> {
  return withCluster(async (cluster) => {
    const client = newClient(cluster, `bench-c-${trial}`, 1);
    let completed = 0;
    const completions: number[] = [];
    let killedAt: number | undefined;
    let recovered: number | undefined;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const ok = await client.operation((issued, at) => {
          if (killedAt !== undefined && recovered === undefined && issued >= killedAt) recovered = at - killedAt;
        });
        if (ok) {
          completed++;
          completions.push(performance.now());
          if (completions.length > 100_000) completions.splice(0, 50_000); // bounded
        }
      }
    })();
    try {
      const warmDeadline = performance.now() + WARM_LIMIT_MS;
      while (completed < OPS_BEFORE_KILL && performance.now() < warmDeadline) await sleepMs(20);
      // 1. The primary.
      const primary = (await primaryOf(cluster, cluster.replicas)) ?? cluster.master;
      const survivors = cluster.replicas.filter((r) => r !== primary);
      killedAt = performance.now();
      primary.process?.signal('SIGKILL');
      const viewChange = waitForLoggedView(survivors, (members) => !members.includes(primary.id), killedAt, FAILOVER_LIMIT_MS);
      const deadline = killedAt + FAILOVER_LIMIT_MS;
      while (recovered === undefined && performance.now() < deadline) await sleepMs(5);
      const viewChangeMs = await viewChange;
      const base = { failoverMs: recovered, viewChangeMs, killedPrimary: primary.name };
      if (recovered === undefined) return { ...base, backupStallMs: undefined, killedBackup: undefined, note: 'no recovery' };

      // 2. Restart it (through the new primary), wait for a 3-member view, then kill a backup.
      await primary.process?.exited;
      const newPrimary = (await primaryOf(cluster, survivors)) ?? survivors[0]!;
      primary.process = ChildHandle.spawn(lockServerScript(), [newPrimary.id, primary.id], primary.logFile, {
        ...process.env,
        RPC_LOSSY: '',
        RPC_COUNT: '',
        RSM_LOG_DIR: cluster.options.logDir,
        RSM_DATA_DIR: cluster.options.dataDir,
      });
      const rejoined = await waitForLoggedView(survivors, (members) => members.length === 3, performance.now(), REJOIN_LIMIT_MS);
      if (rejoined === undefined) return { ...base, backupStallMs: undefined, killedBackup: undefined, note: 'the killed primary did not rejoin' };
      const settled = completed;
      const settleDeadline = performance.now() + WARM_LIMIT_MS;
      while (completed < settled + OPS_BEFORE_KILL && performance.now() < settleDeadline) await sleepMs(20);
      const current = (await primaryOf(cluster, survivors)) ?? newPrimary;
      const backup = cluster.replicas.find((r) => r !== current && r.process?.running === true);
      if (backup === undefined) return { ...base, backupStallMs: undefined, killedBackup: undefined, note: 'no backup to kill' };
      const backupKilledAt = performance.now();
      backup.process?.signal('SIGKILL');
      await sleepMs(STALL_WINDOW_MS);
      const windowEnd = backupKilledAt + STALL_WINDOW_MS;
      let stall = 0;
      let previous = backupKilledAt;
      for (const at of completions) {
        if (at <= backupKilledAt || at > windowEnd) continue;
        stall = Math.max(stall, at - previous);
        previous = at;
      }
      stall = Math.max(stall, windowEnd - previous);
      return { ...base, backupStallMs: stall, killedBackup: backup.name };
    } finally {
      stop = true;
      await client.close(); // ends an invoke in flight (RSM_CLOSED)
      await loop;
    }
  });
}

function median(sorted: readonly number[]): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
}

const ms = (value: number | undefined): string => (value === undefined ? '-' : `${value.toFixed(0)} ms`);

export const failoverBenchmark: Benchmark<RsmBenchOptions> = {
  id: 'c',
  title: 'fail-over: SIGKILL of the primary (next acquire, view change) and of a backup (longest stall)',
  async run(report: BenchReport, options: RsmBenchOptions): Promise<void> {
    report.note(`${options.trials} trials, each on a fresh 3-replica cluster; a client loops acquire+release through the RSM.`);
    report.note(`Primary: after ${OPS_BEFORE_KILL} operations it gets SIGKILL; measured: kill → first acquire issued after it succeeds,`);
    report.note('and kill → a survivor logs a view without it (the view change alone). Backup: the killed primary');
    report.note(`restarts and rejoins, then a backup gets SIGKILL; measured: the longest time without a completed operation`);
    report.note(`in the ${STALL_WINDOW_MS / 1000} s after the kill. Targets: next acquire median ≤ 500 ms, p90 ≤ 1000 ms; backup stall ≤ 500 ms;`);
    report.note('view change median ≤ 300 ms.');
    const failovers: number[] = [];
    const viewChanges: number[] = [];
    const stalls: number[] = [];
    let lost = 0;
    for (let trial = 0; trial < options.trials; trial++) {
      const result = await runFailoverTrial(trial);
      report.note(
        `trial ${trial + 1}: primary ${result.killedPrimary}: next acquire ${result.failoverMs === undefined ? `none within ${FAILOVER_LIMIT_MS / 1000} s` : ms(result.failoverMs)}, ` +
          `view change ${ms(result.viewChangeMs)}; backup ${result.killedBackup ?? '-'}: stall ${ms(result.backupStallMs)}${result.note === undefined ? '' : ` (${result.note})`}`,
      );
      if (result.failoverMs === undefined) lost++;
      else failovers.push(result.failoverMs);
      if (result.viewChangeMs !== undefined) viewChanges.push(result.viewChangeMs);
      if (result.backupStallMs !== undefined) stalls.push(result.backupStallMs);
    }
    const sorted = (values: number[]): number[] => [...values].sort((a, b) => a - b);
    const [f, v, b] = [sorted(failovers), sorted(viewChanges), sorted(stalls)];
    report.compare({
      what: 'primary SIGKILL → next successful acquire',
      unit: 'ms',
      words: ['faster', 'slower'],
      rows: [
        { label: 'median', value: median(f), baseline: true, note: lost > 0 ? `${lost} trial(s) without recovery` : `of ${f.length}` },
        { label: 'p90', value: percentile(f, 90) },
        { label: 'slowest', value: f.at(-1) },
        { label: 'target median', value: 500, reference: true },
        { label: 'target p90', value: 1000, reference: true },
      ],
    });
    report.compare({
      what: 'primary SIGKILL → new view committed (the view change alone)',
      unit: 'ms',
      words: ['faster', 'slower'],
      rows: [
        { label: 'median', value: median(v), baseline: true, note: `of ${v.length}` },
        { label: 'p90', value: percentile(v, 90) },
        { label: 'target median', value: 300, reference: true },
      ],
    });
    report.compare({
      what: 'backup SIGKILL → longest client-visible stall',
      unit: 'ms',
      words: ['shorter', 'longer'],
      rows: [
        { label: 'median', value: median(b), baseline: true, note: `of ${b.length}` },
        { label: 'longest', value: b.at(-1) },
        { label: 'target', value: 500, reference: true },
      ],
    });
  },
};
