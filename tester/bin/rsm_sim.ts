#!/usr/bin/env node
/**
 * rsm_sim [--workload kv|lock|file] [--seed S | --seeds N] [--first-seed S] [--nodes K] [--fault-ms MS] [--liveness-ms MS] [--verbose]
 *
 * The deterministic RSM simulator (tester/sim/rsm-sim.ts): a replicated kv service (default) or
 * the replicated caching lock service (--workload lock, tester/sim/lock-sim.ts) in one process
 * under simulated faults, checked from outside and by each replica's invariants() after every
 * simulated event. The same seed gives byte-identical output.
 * With --workload lock and LOCK_HISTORY_DIR set, each seed's history goes to
 * $LOCK_HISTORY_DIR/rsm_sim-lock-<seed>.jsonl.
 *
 * Exit status: 0 all runs passed; 1 a safety violation; 2 a liveness failure (or a usage error);
 * 3 the simulator itself crashed. With several seeds the worst wins: 3, then 1, then 2.
 */
import { randomInt } from 'node:crypto';
import { runRsmSim, type RsmSimOptions, type RsmSimResult } from '../sim/rsm-sim.js';
import { UsageError, parseCommandLine, parseCount, runMain, type CommandSpec } from '../../lib/cli.js';

const EXIT_VIOLATION = 1;
const EXIT_LIVENESS = 2;
const EXIT_CRASH = 3;
/** Problems printed per failed seed in a multi-seed run. */
const PROBLEMS_SHOWN = 5;

const spec: CommandSpec = {
  usage: ['rsm_sim [--workload kv|lock|file] [--seed S | --seeds N] [--first-seed S] [--nodes K] [--fault-ms MS] [--liveness-ms MS] [--verbose]'],
  help: `Runs the deterministic RSM simulator: a replicated service (3-5 replicas) and its clients
under crashes, restarts, partitions, message loss, duplication and reordering, breakpoints and
armed partitions, then a liveness phase on a healed network. Checkers watch from outside: one
value per Paxos instance; every replica executes the same request at each viewstamp, in order,
with no gaps or duplicates; replicas at the same viewstamp have the same state; and from inside,
every replica's own invariants after every simulated event (the first failure stops the run: a
violation). Workload kv (default): 2-4 kv clients; every kv result agrees with a sequential
model. Workload lock: the caching lock service (a CachingLockServer per replica, revoke/retry
from the primary), 2-4 caching lock clients with 2-4 concurrent callers each on 2-3 locks; no two
callers ever hold one lock, replicas agree on holders, the clients' caches agree with the
primary's table. Everything is drawn from the seed: the same seed (and workload) prints the same
output, byte for byte.

  --workload W    kv (default), lock, or file (the lock workload with the file service beside
                  it: callers append records while they hold a lock; every acknowledged append
                  present exactly once in every replica's files, holds contiguous, copies equal)
  --seed S        run seed S (default: a seed drawn at random, and printed)
  --seeds N       run seeds F..F+N-1 (N 1..1000000; F = --first-seed, default 0), one line each, and a summary
  --first-seed S  the first seed of --seeds
  --nodes K       cluster size 3..5 instead of the drawn one
  --fault-ms MS   virtual length of the safety phase (default 30000)
  --liveness-ms MS  virtual time the healed cluster gets to finish (default 120000)
  --verbose       print the fault schedule of a single seed, and the options of every seed

Exit status: 0 passed; 1 safety violation; 2 liveness failure (or usage error); 3 the simulator
crashed. A failing seed prints "SEED=<s> to reproduce: rsm_sim --seed <s>" (with
"--workload lock" before --seed for the lock workload).

Environment: LOCK_HISTORY_DIR=DIR (lock workload) writes DIR/rsm_sim-lock-<seed>.jsonl per seed.`,
  minPositionals: 0,
  maxPositionals: 0,
  options: {
    workload: { type: 'string' },
    seed: { type: 'string' },
    seeds: { type: 'string' },
    'first-seed': { type: 'string' },
    nodes: { type: 'string' },
    'fault-ms': { type: 'string' },
    'liveness-ms': { type: 'string' },
    verbose: { type: 'boolean' },
  },
};

type Outcome = RsmSimResult['outcome'] | 'crash';

/** Errors that escape the simulated code (an assertion in a handler, …) while a seed runs. */
const escaped: unknown[] = [];

function write(line: string): void {
  process.stdout.write(`${line}\n`);
}

function reproduce(seed: number, options: RsmSimOptions): string {
  const extra =
    (options.nodes === undefined ? '' : ` --nodes ${options.nodes}`) +
    (options.faultPhaseMs === undefined ? '' : ` --fault-ms ${options.faultPhaseMs}`) +
    (options.livenessLimitMs === undefined ? '' : ` --liveness-ms ${options.livenessLimitMs}`);
  const workload = options.workload === 'lock' || options.workload === 'file' ? ` --workload ${options.workload}` : '';
  return `SEED=${seed} to reproduce: rsm_sim${workload} --seed ${seed}${extra}`;
}

function label(outcome: Outcome): string {
  return { ok: 'OK', violation: 'VIOLATION', liveness: 'LIVENESS FAILURE', crash: 'CRASH' }[outcome];
}

async function runOne(seed: number, options: RsmSimOptions): Promise<{ outcome: Outcome; result?: RsmSimResult; error?: unknown }> {
  escaped.length = 0;
  try {
    const result = await runRsmSim(seed, options);
    if (escaped.length > 0) return { outcome: 'crash', result, error: escaped[0] };
    return { outcome: result.outcome, result };
  } catch (error) {
    return { outcome: 'crash', error };
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

function exitFor(outcomes: readonly Outcome[]): number {
  if (outcomes.includes('crash')) return EXIT_CRASH;
  if (outcomes.includes('violation')) return EXIT_VIOLATION;
  if (outcomes.includes('liveness')) return EXIT_LIVENESS;
  return 0;
}

runMain(spec, async () => {
  const { values } = parseCommandLine(spec);
  const text = (name: string): string | undefined => values[name] as string | undefined;
  if (text('seed') !== undefined && text('seeds') !== undefined) throw new UsageError('give --seed or --seeds, not both');
  if (text('first-seed') !== undefined && text('seeds') === undefined) throw new UsageError('--first-seed goes with --seeds');
  const verbose = values['verbose'] === true;
  const nodes = text('nodes') === undefined ? undefined : parseCount(text('nodes')!, '--nodes', 5, 3);
  const faultMs = text('fault-ms') === undefined ? undefined : parseCount(text('fault-ms')!, '--fault-ms', 10_000_000);
  const livenessMs = text('liveness-ms') === undefined ? undefined : parseCount(text('liveness-ms')!, '--liveness-ms', 10_000_000);
  const workload = text('workload') ?? 'kv';
  if (workload !== 'kv' && workload !== 'lock' && workload !== 'file') throw new UsageError('--workload must be kv, lock or file');
  const options: RsmSimOptions = {
    ...(workload === 'lock' || workload === 'file' ? { workload } : {}),
    ...(nodes === undefined ? {} : { nodes }),
    ...(faultMs === undefined ? {} : { faultPhaseMs: faultMs }),
    ...(livenessMs === undefined ? {} : { livenessLimitMs: livenessMs }),
    keepEvents: verbose,
  };
  process.on('unhandledRejection', (error) => escaped.push(error));
  process.on('uncaughtException', (error) => escaped.push(error));

  if (text('seeds') === undefined) {
    const seed = text('seed') === undefined ? randomInt(0, 2 ** 31) : parseCount(text('seed')!, '--seed', 2 ** 53 - 1);
    write(`rsm_sim: seed ${seed}`);
    const run = await runOne(seed, options);
    if (run.result !== undefined) {
      write(`options: ${run.result.options}`);
      for (const line of run.result.events) write(`  ${line}`);
      write(`result: ${label(run.outcome)} ${run.result.summary} trace=${run.result.traceHash.slice(0, 16)}`);
      for (const problem of run.result.problems) write(`  - ${problem}`);
    }
    if (run.error !== undefined) write(`rsm_sim: the simulator crashed: ${describeError(run.error)}`);
    if (run.outcome !== 'ok') write(reproduce(seed, options));
    return exitFor([run.outcome]);
  }

  const count = parseCount(text('seeds')!, '--seeds', 1_000_000, 1);
  const first = text('first-seed') === undefined ? 0 : parseCount(text('first-seed')!, '--first-seed', 2 ** 53 - 1);
  const outcomes: Outcome[] = [];
  const failed: number[] = [];
  const batching = { batches: 0, multi: 0, largest: 0, pipelined: 0, deepest: 0 };
  for (let seed = first; seed < first + count; seed++) {
    const run = await runOne(seed, options);
    outcomes.push(run.outcome);
    if (run.result !== undefined) {
      batching.batches += run.result.stats.batches;
      batching.multi += run.result.stats.multiRequestBatches;
      batching.largest = Math.max(batching.largest, run.result.stats.largestBatch);
      batching.pipelined += run.result.stats.pipelinedBatches;
      batching.deepest = Math.max(batching.deepest, run.result.stats.deepestPipeline);
    }
    const summary = run.result === undefined ? '' : ` ${run.result.summary} trace=${run.result.traceHash.slice(0, 16)}`;
    write(`seed ${seed}: ${label(run.outcome)}${summary}`);
    if (verbose && run.result !== undefined) write(`  options: ${run.result.options}`);
    if (run.outcome !== 'ok') {
      failed.push(seed);
      for (const problem of run.result?.problems.slice(0, PROBLEMS_SHOWN) ?? []) write(`  - ${problem}`);
      if (run.error !== undefined) write(`  - the simulator crashed: ${describeError(run.error)}`);
    }
  }
  const tally = (outcome: Outcome): number => outcomes.filter((o) => o === outcome).length;
  write(
    `rsm_sim: ${count} seeds from ${first}: ${tally('ok')} ok, ${tally('violation')} violations, ` +
      `${tally('liveness')} liveness failures, ${tally('crash')} crashes`,
  );
  write(
    `rsm_sim: ${batching.batches} batches stamped, ${batching.multi} with more than one request, the largest ${batching.largest}; ` +
      `${batching.pipelined} stamped while others were in flight, at most ${batching.deepest} in flight`,
  );
  for (const seed of failed) write(reproduce(seed, options));
  return exitFor(outcomes);
});
