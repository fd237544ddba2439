#!/usr/bin/env node
/**
 * `npm run bench`: the benchmarks of issue #5, printed as figures with units and ratios against a
 * baseline measured in the same run (framework.ts). Benchmarks never pass or fail: the program
 * exits 0 unless a benchmark crashes (exit 1) or the command line is wrong (exit 2).
 *
 *   (a) cache-workload.ts   server acquires with basic versus caching clients (the caching lab's workload)
 *   (b) rsm-bench.ts        acquire+release throughput and p50/p99 latency through 3 replicas, 1/8/32/128 clients, and an echo floor
 *   (c) rsm-bench.ts        fail-over after SIGKILL of the primary and of a backup (20 trials: median, p90)
 *   (d) handoff-bench.ts    fair hand-off of one contended lock name: hand-offs/s and replicated requests per hand-off
 *   (e) rejoin-bench.ts     rejoin: restart → in sync of a wiped backup and of one 1,000 requests behind, with a seeded 1,000,000-lock state
 *   (f) keepalive-bench.ts  idle sessions: (b)'s workload alone and beside 1,000 idle LockClients with sessions
 *   (g) decay-bench.ts      no decay: (b)'s workload on a fresh cluster and after 10,000 other clients were served
 *   (h) memory-bench.ts     the replicas' resident set and data directory over a long run
 */
import { UsageError, parseCommandLine, parseCount, runMain, type CommandSpec } from '../../lib/cli.js';
import { DEFAULT_CACHE_WORKLOAD, cacheWorkloadBenchmark, type CacheWorkloadOptions } from './cache-workload.js';
import { BenchReport, type Benchmark } from './framework.js';
import { DEFAULT_HANDOFF_BENCH, handoffBenchmark, type HandoffBenchOptions } from './handoff-bench.js';
import { DEFAULT_KEEPALIVE_BENCH, keepaliveBenchmark, type KeepaliveBenchOptions } from './keepalive-bench.js';
import { DEFAULT_DECAY_BENCH, decayBenchmark, type DecayBenchOptions } from './decay-bench.js';
import { DEFAULT_MEMORY_BENCH, memoryBenchmark, type MemoryBenchOptions } from './memory-bench.js';
import { DEFAULT_REJOIN_BENCH, rejoinBenchmark, type RejoinBenchOptions } from './rejoin-bench.js';
import { DEFAULT_RSM_BENCH, failoverBenchmark, rsmThroughputBenchmark, type RsmBenchOptions } from './rsm-bench.js';

/** Options every benchmark receives; each reads what concerns it. */
type BenchOptions = CacheWorkloadOptions & RsmBenchOptions & HandoffBenchOptions & RejoinBenchOptions & KeepaliveBenchOptions & DecayBenchOptions & MemoryBenchOptions;

/** The benchmarks, in the order they run. */
const benchmarks: ReadonlyArray<Benchmark<BenchOptions>> = [
  cacheWorkloadBenchmark,
  rsmThroughputBenchmark,
  failoverBenchmark,
  handoffBenchmark,
  rejoinBenchmark,
  keepaliveBenchmark,
  decayBenchmark,
  memoryBenchmark,
];

/** (e): the largest seeded state (memory: the bench and every replica hold it whole). */
const REJOIN_LOCKS_MAX = 10_000_000;

const spec: CommandSpec = {
  name: 'bench',
  usage: [
    'npm run bench -- [--only IDS] [--clients N] [--locks N] [--rounds N] [--duration-ms MS] [--trials N] [--rejoin-locks N] [--memory-ms MS]',
    'node dist/tester/bench/index.js [options]',
  ],
  help: `Runs the benchmarks and prints their figures, with ratios against a baseline measured in the
same run. Nothing passes or fails: the exit status is 0 unless a benchmark crashes.

Benchmarks:
${benchmarks.map((b) => `  (${b.id}) ${b.title}${b.unavailable === undefined ? '' : `\n      not available yet: ${b.unavailable}`}`).join('\n')}

Options:
  --only IDS      run only these benchmarks, e.g. --only a or --only a,b (default: all)
  --clients N     (a) lock clients, each with its own locks (default ${DEFAULT_CACHE_WORKLOAD.clients})
  --locks N       (a) locks per client (default ${DEFAULT_CACHE_WORKLOAD.locks})
  --rounds N      (a) rounds of acquiring and releasing every lock (default ${DEFAULT_CACHE_WORKLOAD.rounds})
  --duration-ms MS  (b, d, f, g) measured time per level; (e3) runs 2.5 times as long (default ${DEFAULT_RSM_BENCH.durationMs})
  --trials N      (c) fail-over trials, each on a fresh cluster (default ${DEFAULT_RSM_BENCH.trials})
  --rejoin-locks N  (e) locks in the seeded state, 1..${REJOIN_LOCKS_MAX} (default ${DEFAULT_REJOIN_BENCH.rejoinLocks.toLocaleString('en-US')})
  --memory-ms MS  (h) length of the memory run (default ${DEFAULT_MEMORY_BENCH.memoryMs}; the issue's figure: 600000)

The default run takes a few minutes, most of it (e) with 1,000,000 locks (about 4-5 minutes on 2
cores: building the seeded state, restoring it on 3 replicas twice, and up to 60 s per rejoin);
--only IDS, --rejoin-locks 100000, --duration-ms 1000 and --trials 1 shorten it.`,
  minPositionals: 0,
  maxPositionals: 0,
  options: {
    only: { type: 'string' },
    clients: { type: 'string' },
    locks: { type: 'string' },
    rounds: { type: 'string' },
    'duration-ms': { type: 'string' },
    trials: { type: 'string' },
    'rejoin-locks': { type: 'string' },
    'memory-ms': { type: 'string' },
  },
};

function positive(value: string | boolean | undefined, name: string, fallback: number, max: number): number {
  if (typeof value !== 'string') return fallback;
  const n = parseCount(value, name, max);
  if (n === 0) throw new UsageError(`${name} must be at least 1`);
  return n;
}

runMain(spec, async () => {
  const { values } = parseCommandLine(spec);
  const options: BenchOptions = {
    ...DEFAULT_CACHE_WORKLOAD,
    clients: positive(values['clients'], '--clients', DEFAULT_CACHE_WORKLOAD.clients, 64),
    locks: positive(values['locks'], '--locks', DEFAULT_CACHE_WORKLOAD.locks, 10_000),
    rounds: positive(values['rounds'], '--rounds', DEFAULT_CACHE_WORKLOAD.rounds, 10_000),
    ...DEFAULT_RSM_BENCH,
    ...DEFAULT_HANDOFF_BENCH,
    ...DEFAULT_KEEPALIVE_BENCH,
    ...DEFAULT_DECAY_BENCH,
    durationMs: positive(values['duration-ms'], '--duration-ms', DEFAULT_RSM_BENCH.durationMs, 600_000),
    trials: positive(values['trials'], '--trials', DEFAULT_RSM_BENCH.trials, 100),
    rejoinLocks: positive(values['rejoin-locks'], '--rejoin-locks', DEFAULT_REJOIN_BENCH.rejoinLocks, REJOIN_LOCKS_MAX),
    memoryMs: positive(values['memory-ms'], '--memory-ms', DEFAULT_MEMORY_BENCH.memoryMs, 3_600_000),
  };
  let selected = benchmarks;
  const only = values['only'];
  if (typeof only === 'string') {
    const ids = only.split(',').map((id) => id.trim().replace(/^\((.*)\)$/, '$1'));
    for (const id of ids) {
      if (!benchmarks.some((b) => b.id === id)) throw new UsageError(`no benchmark ${JSON.stringify(id)}; they are ${benchmarks.map((b) => b.id).join(', ')}`);
    }
    selected = benchmarks.filter((b) => ids.includes(b.id));
  }

  const report = new BenchReport();
  report.header('viewstamp benchmarks');
  for (const benchmark of selected) {
    if (benchmark.unavailable !== undefined) {
      report.skipped(benchmark.id, benchmark.title, benchmark.unavailable);
      continue;
    }
    report.title(benchmark.id, benchmark.title);
    await benchmark.run(report, options);
  }
  return 0;
});
