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
 *     answer OK (an operation that does not is counted as an error, not as a figure).
 * (c) Fail-over time: one client loops acquire+release; after it ran a while, SIGKILL the primary
 *     and time from the kill until the first acquire *issued after the kill* succeeds. One fresh
 *     cluster per trial; the median of the trials.
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
import { LocalCluster, chooseBasePort, queryMembers } from '../cluster.js';
import { isPortFree } from '../processes.js';
import type { Benchmark, BenchReport } from './framework.js';

export interface RsmBenchOptions {
  /** (b) concurrency levels; the first is the baseline. */
  readonly clientCounts: readonly number[];
  /** (b) measured time per level (after a short warm-up). */
  readonly durationMs: number;
  /** (c) fail-overs measured (one fresh cluster each). */
  readonly trials: number;
}

export const DEFAULT_RSM_BENCH: RsmBenchOptions = { clientCounts: [1, 8, 32], durationMs: 4_000, trials: 5 };

/** Untimed operations before each (b) level is measured. */
const WARMUP_MS = 500;
/** Bound on one RSM request; a request that takes longer counts as an error. */
const REQUEST_TIMEOUT_MS = 30_000;
/** (c): operations the client completes before the primary is killed. */
const OPS_BEFORE_KILL = 20;
/** (c): bound on the wait for the first acquire after the kill. */
const FAILOVER_LIMIT_MS = 60_000;
/** Bound on waiting for the client loop to reach OPS_BEFORE_KILL. */
const WARM_LIMIT_MS = 30_000;

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

  constructor(
    private readonly rpc: RpcEndpoint,
    member: string,
    readonly id: string,
    readonly lid: number,
  ) {
    this.rsm = new RsmClient({ rpc, knownMembers: [member], addressOf });
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
    this.rsm.close();
    await this.rpc.close();
  }
}

/** A fresh 3-replica cluster on free random ports in a temporary directory; always cleaned up. */
export async function withCluster<T>(body: (cluster: LocalCluster) => Promise<T>): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-bench-'));
  let base: number | undefined;
  const random = osRandom();
  for (let draw = 0; draw < 50 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(40_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports for a 3-replica cluster');
  const cluster = new LocalCluster({
    replicas: 3,
    basePort: base,
    logDir: dir,
    dataDir: path.join(dir, 'data'),
    binDir: fileURLToPath(new URL('../bin/', import.meta.url)),
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
  });
  try {
    await cluster.start(() => {});
    return await body(cluster);
  } finally {
    await cluster.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function newClient(cluster: LocalCluster, id: string, lid: number): RawLockClient {
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
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
}

/** Runs `clients` concurrent loops for WARMUP_MS (unmeasured) then `durationMs` (measured). */
async function runLevel(cluster: LocalCluster, clients: number, durationMs: number, level: number): Promise<LevelResult> {
  const loops = Array.from({ length: clients }, (_, i) => newClient(cluster, `bench-b-${level}-${i}`, level * 1000 + i + 1));
  const latencies: number[] = [];
  let errors = 0;
  let measuring = false;
  let stop = false;
  const workers = loops.map(async (client) => {
    while (!stop) {
      const started = performance.now();
      const ok = await client.operation();
      if (!measuring) continue;
      if (ok) latencies.push(performance.now() - started);
      else errors++;
    }
  });
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  measuring = true;
  const started = performance.now();
  latencies.length = 0;
  await new Promise((resolve) => setTimeout(resolve, durationMs));
  stop = true;
  const elapsedMs = performance.now() - started;
  // The operations in flight finish (each bounded by REQUEST_TIMEOUT_MS); they count too.
  await Promise.all(workers);
  const wall = performance.now() - started;
  await Promise.all(loops.map((client) => client.close()));
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    clients,
    operations: latencies.length,
    errors,
    elapsedMs,
    opsPerSecond: (latencies.length / wall) * 1000,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
  };
}

export async function runThroughput(options: RsmBenchOptions): Promise<LevelResult[]> {
  return withCluster(async (cluster) => {
    const results: LevelResult[] = [];
    for (const [level, clients] of options.clientCounts.entries()) results.push(await runLevel(cluster, clients, options.durationMs, level));
    return results;
  });
}

export const rsmThroughputBenchmark: Benchmark<RsmBenchOptions> = {
  id: 'b',
  title: 'RSM throughput and latency: acquire+release through 3 replicas, 1/8/32 clients, cache defeated',
  async run(report: BenchReport, options: RsmBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; clients in this process, each on its own lock.');
    report.note('Cache defeated: each operation sends acquire(lid, id, new xid) and release(lid, id, xid) through');
    report.note('the RSM client, as a caching client does on a miss and after a revoke: 2 RSM requests per operation.');
    report.note(`${options.durationMs} ms measured per level after ${WARMUP_MS} ms of warm-up.`);
    const results = await runThroughput(options);
    const label = (r: LevelResult): string => `${r.clients} client${r.clients === 1 ? '' : 's'}`;
    const note = (r: LevelResult): string | undefined => (r.errors > 0 ? `${r.errors} failed operations` : `${r.operations} operations`);
    report.compare({
      what: 'throughput (acquire+release operations per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: results.map((r, i) => ({ label: label(r), value: r.opsPerSecond, baseline: i === 0, note: note(r) })),
    });
    for (const [name, pick] of [
      ['p50', (r: LevelResult) => r.p50Ms],
      ['p99', (r: LevelResult) => r.p99Ms],
    ] as const) {
      report.compare({
        what: `${name} latency of one acquire+release`,
        unit: 'ms',
        decimals: 1,
        words: ['faster', 'slower'],
        rows: results.map((r, i) => ({ label: label(r), value: pick(r), baseline: i === 0 })),
      });
    }
  },
};

export interface FailoverTrial {
  /** ms from the SIGKILL to the first acquire issued after it succeeding; undefined if none within FAILOVER_LIMIT_MS. */
  readonly failoverMs: number | undefined;
  /** The replica that was primary and was killed ("p0"). */
  readonly killed: string;
}

/** One trial on a fresh cluster. */
export async function runFailoverTrial(trial: number): Promise<FailoverTrial> {
  return withCluster(async (cluster) => {
    const client = newClient(cluster, `bench-c-${trial}`, 1);
    let completed = 0;
    let killedAt: number | undefined;
    let recovered: number | undefined;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        await client.operation((issued, at) => {
          if (killedAt !== undefined && recovered === undefined && issued >= killedAt) recovered = at - killedAt;
        });
        completed++;
        if (recovered !== undefined) break;
      }
    })();
    try {
      const warmDeadline = performance.now() + WARM_LIMIT_MS;
      while (completed < OPS_BEFORE_KILL && performance.now() < warmDeadline) await new Promise((resolve) => setTimeout(resolve, 20));
      const probe = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
      const members = await queryMembers(probe, `127.0.0.1:${cluster.master.port}`).finally(() => probe.close());
      const primaryId = members.answered ? members.primary : cluster.master.id;
      const primary = cluster.replicas.find((r) => r.id === primaryId) ?? cluster.master;
      killedAt = performance.now();
      primary.process?.signal('SIGKILL');
      const deadline = killedAt + FAILOVER_LIMIT_MS;
      while (recovered === undefined && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      return { failoverMs: recovered, killed: primary.name };
    } finally {
      stop = true;
      await client.close(); // ends an invoke in flight (RSM_CLOSED)
      await loop;
    }
  });
}

export const failoverBenchmark: Benchmark<RsmBenchOptions> = {
  id: 'c',
  title: 'fail-over time: SIGKILL the primary while a client loops, time to its next acquire',
  async run(report: BenchReport, options: RsmBenchOptions): Promise<void> {
    report.note(`${options.trials} trials, each on a fresh 3-replica cluster: a client loops acquire+release through the RSM;`);
    report.note(`after ${OPS_BEFORE_KILL} operations the primary gets SIGKILL; measured: kill → first acquire issued after it succeeds.`);
    report.note('Includes the RSM client giving up on the dead primary (its per-call deadline, 5 s by default), failure');
    report.note('detection (heartbeats), the Paxos view change, state synchronisation and the client backoff.');
    const times: number[] = [];
    let lost = 0;
    for (let trial = 0; trial < options.trials; trial++) {
      const result = await runFailoverTrial(trial);
      report.note(`trial ${trial + 1}: killed ${result.killed}: ${result.failoverMs === undefined ? `no acquire within ${FAILOVER_LIMIT_MS / 1000} s` : `${result.failoverMs.toFixed(0)} ms`}`);
      if (result.failoverMs === undefined) lost++;
      else times.push(result.failoverMs);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const median = sorted.length === 0 ? undefined : sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
    report.compare({
      what: 'fail-over time',
      unit: 'ms',
      words: ['faster', 'slower'],
      rows: [
        { label: 'median', value: median, baseline: true, note: lost > 0 ? `${lost} trial(s) without recovery` : `of ${times.length}` },
        { label: 'fastest', value: sorted[0] },
        { label: 'slowest', value: sorted.at(-1) },
      ],
    });
  },
};
