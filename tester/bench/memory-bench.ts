/**
 * Benchmark (h): bounded memory. (b)'s workload (uncached acquire+release through the RSM) with
 * 32 clients runs on one fresh cluster for `memoryMs` (default a minute; the issue's figure is
 * ten: `--memory-ms 600000`), in slices; after each slice it reads every replica's resident set
 * (VmRSS in /proc/<pid>/status) and the size of its data directory. The first slice is the
 * baseline (warmed up: JIT, pools, the first checkpoint), so the ratios say whether memory and
 * disk keep growing with the number of requests served. Each slice uses new client ids, as
 * clients that come and go do; the service remembers them up to its `maxClients` bound.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { LocalCluster } from '../cluster.js';
import type { Benchmark, BenchReport } from './framework.js';
import { replicaPids } from './replica-stats.js';
import { runThroughputLevel, withCluster } from './rsm-bench.js';

export interface MemoryBenchOptions {
  /** Total measured time. */
  readonly memoryMs: number;
}

export const DEFAULT_MEMORY_BENCH: MemoryBenchOptions = { memoryMs: 60_000 };

const CLIENTS = 32;
/** Slices the run is cut into (a sample after each). */
const SLICES = 6;

/** Resident set (KiB) of process `pid`, from /proc; undefined if it cannot be read. */
async function rssKib(pid: number): Promise<number | undefined> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const match = status?.match(/^VmRSS:\s+(\d+) kB$/m);
  return match === undefined || match === null ? undefined : Number(match[1]);
}

/** Bytes under `dir` (files only), 0 if it does not exist. */
async function directoryBytes(dir: string): Promise<number> {
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await directoryBytes(full);
    else if (entry.isFile()) total += (await fsp.stat(full).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

interface Sample {
  readonly atMs: number;
  readonly operations: number;
  /** The largest replica's resident set, and the sum over the replicas (MiB). */
  readonly rssMaxMiB: number | undefined;
  readonly rssSumMiB: number | undefined;
  /** The largest replica's data directory (MiB). */
  readonly diskMaxMiB: number;
}

async function sample(cluster: LocalCluster, atMs: number, operations: number): Promise<Sample> {
  const rss = await Promise.all(replicaPids(cluster).map(rssKib));
  const known = rss.every((kib) => kib !== undefined) && rss.length === cluster.replicas.length;
  const disks = await Promise.all(cluster.replicas.map((replica) => directoryBytes(path.join(cluster.options.dataDir, replica.id))));
  const mib = (n: number): number => n / 1024;
  return {
    atMs,
    operations,
    rssMaxMiB: known ? mib(Math.max(...(rss as number[]))) : undefined,
    rssSumMiB: known ? mib((rss as number[]).reduce((a, b) => a + b, 0)) : undefined,
    diskMaxMiB: Math.max(...disks) / (1024 * 1024),
  };
}

export const memoryBenchmark: Benchmark<MemoryBenchOptions> = {
  id: 'h',
  title: `bounded memory: (b)'s workload with ${CLIENTS} clients on one cluster, the replicas' resident set and data directory sampled ${SLICES} times`,
  async run(report: BenchReport, options: MemoryBenchOptions): Promise<void> {
    const sliceMs = Math.max(1_000, Math.round(options.memoryMs / SLICES));
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; clients in this process.');
    report.note(`Workload: ${CLIENTS} clients, uncached acquire+release through the RSM (as (b)), ${SLICES} slices of ${sliceMs} ms; a sample after each.`);
    const samples = await withCluster(async (cluster) => {
      const taken: Sample[] = [];
      let operations = 0;
      const started = performance.now();
      for (let slice = 0; slice < SLICES; slice++) {
        const level = await runThroughputLevel(cluster, CLIENTS, sliceMs, 100 + slice);
        operations += level.operations;
        const taken1 = await sample(cluster, performance.now() - started, operations);
        taken.push(taken1);
        process.stderr.write(`bench (h): slice ${slice + 1}/${SLICES}: ${operations} operations, largest RSS ${taken1.rssMaxMiB?.toFixed(1) ?? '-'} MiB\n`);
      }
      return taken;
    });
    const row = (s: Sample, i: number, value: number | undefined) => ({
      label: `after ${(s.atMs / 1000).toFixed(0)} s (${s.operations} ops)`,
      value,
      ...(i === 0 ? { baseline: true } : {}),
    });
    const figures: ReadonlyArray<readonly [string, number, (s: Sample) => number | undefined]> = [
      ['resident set of the largest replica', 1, (s) => s.rssMaxMiB],
      ['resident set of the three replicas together', 1, (s) => s.rssSumMiB],
      ['largest data directory (Paxos state, operation log, checkpoint)', 2, (s) => s.diskMaxMiB],
    ];
    for (const [what, decimals, pick] of figures) {
      report.compare({ what, unit: 'MiB', decimals, words: ['less', 'more'], rows: samples.map((s, i) => row(s, i, pick(s))) });
    }
    report.note('Target (issue 8): checkpoints keep the log bounded, and a replica\'s resident set stays flat (10 minutes: --memory-ms 600000).');
  },
};
