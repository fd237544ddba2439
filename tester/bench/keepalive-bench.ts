/**
 * Benchmark (f): what idle sessions cost. The throughput of benchmark (b)'s workload (8 clients,
 * uncached acquire+release through the RSM) on three real `lock_server MASTER ME` processes,
 * first alone (the baseline), then while 1,000 idle `LockClient`s with sessions (default TTL
 * 10 s) renew their leases in the background: each sends a keepalive every TTL/3, which the
 * primary's host coalesces into replicated keepalive requests (at most one batch started per
 * 100 ms). Printed: the throughput and its ratio to the baseline, the replicated requests per
 * second once the workload stopped (the keepalive batches and lease ticks), and the replicas' CPU
 * time per operation. The idle clients run in this process too, so they also take CPU from the
 * 2-core machine; their keepalives are counted from their session keepers.
 */
import { performance } from 'node:perf_hooks';
import { connect, type LockClient } from '../../lockserver/locks.js';
import type { LocalCluster } from '../cluster.js';
import type { Benchmark, BenchReport } from './framework.js';
import { executedOf, replicasCpuMs } from './replica-stats.js';
import { runThroughputLevel, withCluster, type LevelResult } from './rsm-bench.js';

export interface KeepaliveBenchOptions {
  /** Idle session clients in the second level. */
  readonly idleClients: number;
  /** Measured time per level. */
  readonly durationMs: number;
}

export const DEFAULT_KEEPALIVE_BENCH: Omit<KeepaliveBenchOptions, 'durationMs'> = { idleClients: 1_000 };

/** Busy clients of the workload, as (b)'s middle level. */
const BUSY_CLIENTS = 8;
/** Sessions opened at once while connecting the idle clients. */
const CONNECT_BATCH = 50;
/** How long the background request rate is watched after each level. */
const BACKGROUND_WINDOW_MS = 3_000;

interface Level {
  readonly label: string;
  readonly result: LevelResult;
  /** Replicated requests per second once the workload stopped, or undefined (view change). */
  readonly backgroundRequestsPerSecond: number | undefined;
  readonly cpuMsPerOperation: number | undefined;
  readonly keepalivesPerSecond: number;
  readonly lostSessions: number;
}

/** Replicated requests per second with no workload running (keepalive batches, lease ticks). */
async function backgroundRequestsPerSecond(cluster: LocalCluster): Promise<number | undefined> {
  const before = await executedOf(cluster);
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, BACKGROUND_WINDOW_MS));
  const after = await executedOf(cluster);
  const seconds = (performance.now() - started) / 1000;
  return before !== undefined && after !== undefined && before.vid === after.vid ? (after.seqno - before.seqno) / seconds : undefined;
}

async function measure(cluster: LocalCluster, label: string, durationMs: number, level: number, idle: readonly LockClient[]): Promise<Level> {
  const keepalives = (): number => idle.reduce((sum, c) => sum + (c.sessionKeeper?.keepalivesSent ?? 0), 0);
  const cpuBefore = await replicasCpuMs(cluster);
  const keepalivesBefore = keepalives();
  const started = performance.now();
  const result = await runThroughputLevel(cluster, BUSY_CLIENTS, durationMs, level);
  const seconds = (performance.now() - started) / 1000;
  const cpuAfter = await replicasCpuMs(cluster);
  const keepalivesSent = keepalives() - keepalivesBefore;
  const background = await backgroundRequestsPerSecond(cluster);
  // CPU over the whole level (warm-up included) against the operations over it, estimated from the measured rate.
  const operationsWhole = result.opsPerSecond * seconds;
  return {
    label,
    result,
    backgroundRequestsPerSecond: background,
    cpuMsPerOperation: cpuBefore === undefined || cpuAfter === undefined || operationsWhole === 0 ? undefined : (cpuAfter - cpuBefore) / operationsWhole,
    keepalivesPerSecond: keepalivesSent / seconds,
    lostSessions: idle.filter((c) => c.sessionLost).length,
  };
}

export const keepaliveBenchmark: Benchmark<KeepaliveBenchOptions> = {
  id: 'f',
  title: `idle sessions: (b)'s workload with ${BUSY_CLIENTS} clients, alone and beside 1,000 idle session clients`,
  async run(report: BenchReport, options: KeepaliveBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; every client in this process.');
    report.note(`Workload: ${BUSY_CLIENTS} clients, uncached acquire+release through the RSM (as (b)); ${options.durationMs} ms measured per level.`);
    report.note(`Then ${options.idleClients} LockClients connect with sessions (TTL 10 s, a keepalive every 3.3 s each) and stay idle.`);
    const levels = await withCluster(async (cluster) => {
      const members = cluster.replicas.map((r) => `127.0.0.1:${r.port}`);
      // A first short run, so the view has executed requests and the baseline's count is known.
      await runThroughputLevel(cluster, 1, 200, 9);
      const out: Level[] = [await measure(cluster, 'alone', options.durationMs, 0, [])];
      const idle: LockClient[] = [];
      try {
        for (let i = 0; i < options.idleClients; i += CONNECT_BATCH) {
          const batch = Math.min(CONNECT_BATCH, options.idleClients - i);
          idle.push(...(await Promise.all(Array.from({ length: batch }, () => connect({ members })))));
        }
        // One renewal period, so every idle client is in its steady renewal rhythm.
        await new Promise((resolve) => setTimeout(resolve, 3_500));
        out.push(await measure(cluster, `${options.idleClients} idle sessions`, options.durationMs, 1, idle));
      } finally {
        await Promise.all(idle.map((client) => client.close()));
      }
      return out;
    });
    report.compare({
      what: 'throughput (acquire+release operations per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: levels.map((l, i) => ({
        label: l.label,
        value: l.result.opsPerSecond,
        baseline: i === 0,
        note: i === 0 ? `${l.result.operations} operations` : `${l.keepalivesPerSecond.toFixed(0)} keepalives/s sent, ${l.lostSessions} sessions lost`,
      })),
    });
    report.compare({
      what: 'replicated requests per second with the workload stopped (keepalive batches, lease ticks)',
      unit: 'req/s',
      decimals: 1,
      words: ['fewer', 'more'],
      rows: levels.map((l, i) => ({ label: l.label, value: l.backgroundRequestsPerSecond, baseline: i === 0 })),
    });
    report.compare({
      what: 'replica CPU time per operation (3 replicas together)',
      unit: 'ms',
      decimals: 2,
      words: ['less', 'more'],
      rows: levels.map((l, i) => ({ label: l.label, value: l.cpuMsPerOperation, baseline: i === 0 })),
    });
    report.note('Target (issue 9): 1,000 idle sessions cost under 5 % of the throughput.');
  },
};
