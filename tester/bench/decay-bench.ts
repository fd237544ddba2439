/**
 * Benchmark (g): no decay with use. The throughput of (b)'s workload with 8 clients on a fresh
 * cluster after a short warm-up (the baseline: the service remembers a few dozen clients), then again after 10,000
 * other clients each did one acquire+release of a lock of its own, so the lock table remembers
 * 10,000 more clients and locks (the service's `maxClients` bound). Before replication core v2
 * every request marshalled the whole state, so this cost grew with every client ever seen; with
 * the operation log and off-path checkpoints it should not.
 *
 * Each level is measured RUNS_PER_LEVEL times in a row and compared by its mean. A single run of
 * a few seconds on this 2-core machine varies by more than the 10 % the target allows (one run
 * pair read 1.14x slower, the next 1.20x faster), so the individual runs are printed beside the
 * means: their spread says how much of a difference is noise.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../../lib/tcp.js';
import { CacheProc, encodeCacheLockRequest } from '../../lockserver/cache-protocol.js';
import { LockStatus } from '../../lockserver/protocol.js';
import { RsmClient } from '../../rsm/client.js';
import type { LocalCluster } from '../cluster.js';
import type { Benchmark, BenchReport } from './framework.js';
import { runThroughputLevel, withCluster, type LevelResult } from './rsm-bench.js';

export interface DecayBenchOptions {
  /** Clients remembered before the second measurement. */
  readonly rememberedClients: number;
  readonly durationMs: number;
}

export const DEFAULT_DECAY_BENCH: Omit<DecayBenchOptions, 'durationMs'> = { rememberedClients: 10_000 };

const BUSY_CLIENTS = 8;
/** Concurrent callers while the remembered clients are created. */
const FILL_CONCURRENCY = 32;
const REQUEST_TIMEOUT_MS = 30_000;
/** Measured runs per level, back to back on the same cluster. */
const RUNS_PER_LEVEL = 2;

/** `runs` measured levels back to back. */
async function measureRuns(cluster: LocalCluster, durationMs: number, runs: number, seedBase: number): Promise<LevelResult[]> {
  const results: LevelResult[] = [];
  for (let run = 0; run < runs; run++) results.push(await runThroughputLevel(cluster, BUSY_CLIENTS, durationMs, seedBase + run));
  return results;
}

/** Operations per second over all the runs together. */
function meanOpsPerSecond(runs: readonly LevelResult[]): number {
  const operations = runs.reduce((sum, run) => sum + run.operations, 0);
  const elapsedMs = runs.reduce((sum, run) => sum + run.elapsedMs, 0);
  return elapsedMs > 0 ? (operations * 1000) / elapsedMs : 0;
}

/** The mean server CPU per request, undefined if any run could not read it. */
function meanCpuUs(runs: readonly LevelResult[]): number | undefined {
  const values = runs.map((run) => run.serverCpuUsPerRequest);
  if (values.some((value) => value === undefined)) return undefined;
  return (values as number[]).reduce((sum, value) => sum + value, 0) / values.length;
}

/** The rows of one level: each run for reference, then their mean (compared with the baseline). */
function levelRows(label: string, runs: readonly LevelResult[], pick: (run: LevelResult) => number | undefined, mean: number | undefined, baseline: boolean, note?: string) {
  return [
    ...runs.map((run, i) => ({ label: `${label}, run ${i + 1}`, value: pick(run), reference: true })),
    { label: `${label}, mean`, value: mean, ...(baseline ? { baseline: true } : {}), ...(note === undefined ? {} : { note }) },
  ];
}

/** `count` distinct client ids each acquire and release their own lock once; resolves the failures. */
async function remember(cluster: LocalCluster, count: number): Promise<number> {
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  const rsm = new RsmClient({ rpc, knownMembers: [cluster.master.id], addressOf: (id) => normalizeAddress(id) });
  let next = 0;
  let failures = 0;
  try {
    await Promise.all(
      Array.from({ length: FILL_CONCURRENCY }, async () => {
        for (let i = next++; i < count; i = next++) {
          const request = encodeCacheLockRequest({ lid: `remembered-${i}`, id: `bench-g-client-${i}`, xid: 1 });
          const acquired = await rsm.invoke(CacheProc.ACQUIRE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
          const released = acquired?.status === LockStatus.OK ? await rsm.invoke(CacheProc.RELEASE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined) : undefined;
          if (released?.status !== LockStatus.OK) failures++;
        }
      }),
    );
  } finally {
    rsm.close();
    await rpc.close();
  }
  return failures;
}

export const decayBenchmark: Benchmark<DecayBenchOptions> = {
  id: 'g',
  title: `no decay: (b)'s workload with ${BUSY_CLIENTS} clients on a fresh cluster and after 10,000 other clients were served`,
  async run(report: BenchReport, options: DecayBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; clients in this process.');
    report.note(`Workload: ${BUSY_CLIENTS} clients, uncached acquire+release through the RSM (as (b)); ${options.durationMs} ms measured per level.`);
    report.note(`In between, ${options.rememberedClients} distinct client ids each acquire and release a lock of their own once.`);
    report.note(`Each level runs ${RUNS_PER_LEVEL} times back to back; the means are compared, the runs show the noise.`);
    const { fresh, remembered, failures } = await withCluster(async (cluster) => {
      // A short unmeasured run first, so both measured levels run on warmed-up processes (JIT).
      await runThroughputLevel(cluster, BUSY_CLIENTS, 1_000, 9);
      const fresh = await measureRuns(cluster, options.durationMs, RUNS_PER_LEVEL, 0);
      const failures = await remember(cluster, options.rememberedClients);
      const remembered = await measureRuns(cluster, options.durationMs, RUNS_PER_LEVEL, 100);
      return { fresh, remembered, failures };
    });
    const freshLabel = `at most ${(RUNS_PER_LEVEL + 1) * BUSY_CLIENTS} clients remembered`;
    const rememberedLabel = `over ${options.rememberedClients} clients remembered`;
    const fillNote = failures > 0 ? `${failures} of the ${options.rememberedClients} filling operations failed` : undefined;
    report.compare({
      what: 'throughput (acquire+release operations per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: [
        ...levelRows(freshLabel, fresh, (run) => run.opsPerSecond, meanOpsPerSecond(fresh), true),
        ...levelRows(rememberedLabel, remembered, (run) => run.opsPerSecond, meanOpsPerSecond(remembered), false, fillNote),
      ],
    });
    report.compare({
      what: 'server CPU per replicated request (3 replicas, from /proc)',
      unit: 'µs',
      words: ['less', 'more'],
      rows: [
        ...levelRows(freshLabel, fresh, (run) => run.serverCpuUsPerRequest, meanCpuUs(fresh), true),
        ...levelRows(rememberedLabel, remembered, (run) => run.serverCpuUsPerRequest, meanCpuUs(remembered), false),
      ],
    });
    report.note('Target (issue 8): 10,000 remembered clients cost at most 10 % of the throughput.');
  },
};
