/**
 * Benchmark (d): fair hand-off of one contended lock. N `LockClient`s (lockserver/locks.ts) on
 * one name, each looping acquire → release as fast as it can, against three real
 * `lock_server MASTER ME` processes (like `npm start`). A *hand-off* is a grant to a different
 * client than the previous grant. Printed: hand-offs per second, replicated requests per hand-off
 * (from the primary's executed viewstamps before and after), grants served from a client's cache
 * in between, and the replicas' CPU time per hand-off (from /proc). The baseline is 2 clients.
 */
import { performance } from 'node:perf_hooks';
import { connect, type LockClient } from '../../lockserver/locks.js';
import type { LocalCluster } from '../cluster.js';
import type { Benchmark, BenchReport } from './framework.js';
import { describeFloor, measureSyncedWrites } from './disk-floor.js';
import { executedOf, replicasCpuMs } from './replica-stats.js';
import { withCluster } from './rsm-bench.js';

export interface HandoffBenchOptions {
  /** Client counts; the first is the baseline. */
  readonly handoffClients: readonly number[];
  /** Measured time per level. */
  readonly durationMs: number;
}

const LOCK_NAME = 'handoff';
/** Bound on one acquire: a stuck hand-off fails the level instead of hanging. */
const ACQUIRE_TIMEOUT_MS = 30_000;

interface HandoffResult {
  readonly clients: number;
  readonly callersPerClient: number;
  readonly handoffs: number;
  readonly grants: number;
  readonly requests: number | undefined;
  /** Batches the primary executed (replication rounds), undefined if unknown. */
  readonly rounds: number | undefined;
  readonly cpuMs: number | undefined;
  readonly elapsedMs: number;
  readonly errors: number;
}

async function runLevel(cluster: LocalCluster, clients: number, durationMs: number, level: number, callersPerClient = 1): Promise<HandoffResult> {
  const members = cluster.replicas.map((r) => `127.0.0.1:${r.port}`);
  const locks: LockClient[] = [];
  for (let i = 0; i < clients; i++) locks.push(await connect({ members }));
  const name = `${LOCK_NAME}-${level}`;
  let last = -1;
  let handoffs = 0;
  let grants = 0;
  let errors = 0;
  let stop = false;
  // Warm-up: every client once, so sessions of the RSM client and callback endpoints exist.
  for (const client of locks) await client.withLock(name, () => undefined, { timeoutMs: ACQUIRE_TIMEOUT_MS });
  const before = await executedOf(cluster);
  const cpuBefore = await replicasCpuMs(cluster);
  const started = performance.now();
  // With several callers per client, a client's callers share its cache: a grant from one to the
  // other is a cached re-grant, not a hand-off.
  const workers = Array.from({ length: clients * callersPerClient }, (_, worker) => worker % clients).map(async (index) => {
    const client = locks[index]!;
    while (!stop) {
      try {
        const lock = await client.acquire(name, { timeoutMs: ACQUIRE_TIMEOUT_MS });
        grants++;
        if (last !== index) handoffs++;
        last = index;
        // Straight on to the next acquire, as an application's loop would: a cached re-grant
        // reaches its caller after the turn's pending I/O (the revoke that takes the lock away is
        // read first), and after a revoke this release and the next acquire leave in one write.
        await lock.release();
      } catch {
        errors++;
        if (stop) return;
      }
    }
  });
  await new Promise((resolve) => setTimeout(resolve, durationMs));
  stop = true;
  await Promise.all(workers);
  const elapsedMs = performance.now() - started;
  const after = await executedOf(cluster);
  const cpuAfter = await replicasCpuMs(cluster);
  await Promise.all(locks.map((client) => client.close()));
  const cpuMs = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined;
  const sameView = before !== undefined && after !== undefined && before.vid === after.vid;
  const requests = sameView ? after.seqno - before.seqno : undefined;
  const rounds = sameView && before.batches !== undefined && after.batches !== undefined ? (after.batches - before.batches) >>> 0 : undefined;
  return { clients, callersPerClient, handoffs, grants, requests, rounds, cpuMs, elapsedMs, errors };
}

export const DEFAULT_HANDOFF_BENCH: HandoffBenchOptions = { handoffClients: [2, 8], durationMs: 4_000 };

export const handoffBenchmark: Benchmark<HandoffBenchOptions> = {
  id: 'd',
  title: 'fair hand-off: N clients contending one lock name through 3 replicas (2 and 8 clients)',
  async run(report: BenchReport, options: HandoffBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; LockClients (connect) in this process, one name.');
    report.note('Each client loops acquire → release; a hand-off is a grant to another client than the last one.');
    report.note('Last, the most clients with two callers each (a grant between the callers of one client is a cached re-grant).');
    report.note(`${options.durationMs} ms measured per level, after one unmeasured level that warms the fresh replicas up;`);
    report.note("replicated requests = growth of the primary's seqno; replication rounds = batches the primary executed.");
    // Before the cluster starts, so nothing else writes: the disk's share of a hand-off's time.
    const floor = await measureSyncedWrites();
    report.note(`${describeFloor(floor)}.`);
    const results = await withCluster(async (cluster) => {
      // Unmeasured first, so the first level is not billed for the fresh replicas' JIT warm-up.
      await runLevel(cluster, Math.max(...options.handoffClients), options.durationMs, options.handoffClients.length);
      const out: HandoffResult[] = [];
      for (const [level, clients] of options.handoffClients.entries()) out.push(await runLevel(cluster, clients, options.durationMs, level));
      // The most clients again, each with two callers: the caller that releases finds the other
      // one waiting, so its release and their next acquire leave together (one batch).
      out.push(await runLevel(cluster, Math.max(...options.handoffClients), options.durationMs, options.handoffClients.length + 1, 2));
      return out;
    });
    const label = (r: HandoffResult): string => `${r.clients} clients${r.callersPerClient > 1 ? ` × ${r.callersPerClient} callers` : ''}`;
    report.compare({
      what: 'hand-offs per second',
      unit: 'hand-offs/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: results.map((r, i) => ({
        label: label(r),
        value: (r.handoffs / r.elapsedMs) * 1000,
        baseline: i === 0,
        note: `${r.handoffs} hand-offs, ${r.grants - r.handoffs} cached re-grants${r.errors > 0 ? `, ${r.errors} failed acquires` : ''}`,
      })),
    });
    // A total of the level divided by its hand-offs; unknown when the total is.
    const perHandoff = (what: string, unit: string, words: readonly [string, string], total: (r: HandoffResult) => number | undefined, note?: (total: number) => string): void =>
      report.compare({
        what,
        unit,
        decimals: 2,
        words,
        rows: results.map((r, i) => {
          const sum = total(r);
          return {
            label: label(r),
            value: sum === undefined || r.handoffs === 0 ? undefined : sum / r.handoffs,
            baseline: i === 0,
            ...(note === undefined ? {} : { note: sum === undefined ? 'unknown (a view change during the level)' : note(sum) }),
          };
        }),
      });
    perHandoff('replicated requests per hand-off', 'requests', ['fewer', 'more'], (r) => r.requests, (n) => `${n} requests`);
    perHandoff('replication rounds (batches) per hand-off', 'rounds', ['fewer', 'more'], (r) => r.rounds, (n) => `${n} batches`);
    perHandoff('replica CPU time per hand-off (3 replicas together)', 'ms', ['less', 'more'], (r) => r.cpuMs);
    // The time between two hand-offs in units of the disk's synced write (three writers at once,
    // as in a round): a slow disk raises the hand-off time but not this figure; a slow change
    // raises both.
    perHandoff('time between hand-offs, in synced writes of this disk (three writers at once)', 'writes', ['fewer', 'more'], (r) => r.elapsedMs / floor.threeAtOnceMs);
  },
};
