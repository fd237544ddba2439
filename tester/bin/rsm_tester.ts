#!/usr/bin/env node
/**
 * rsm_tester [-s SEED] [-k] [--keep-data-dir] [--cpu-burners N] [TEST…]
 *
 * Runs the process-level replica scenarios (tester/scenarios.ts) against real lock_server
 * processes; see tester/README.md. Prints "tests done OK" and exits 0 when all pass; prints
 * "Failed: …" and keeps the log directory, exiting 1, at the first failure; exits 2 on a usage
 * error. It never leaves processes behind: every child is SIGKILLed when its scenario ends, and
 * whatever is left on SIGINT/SIGTERM/SIGHUP and at exit.
 */
import { killAllChildren, parseRsmTesterArgs, runScenarios } from '../rsm-tester.js';
import { scenarios } from '../scenarios.js';
import { EXIT_FAILURE, UsageError, parseCommandLine, parseCount, runMain, type CommandSpec } from '../../lib/cli.js';

const spec: CommandSpec = {
  usage: ['rsm_tester [-s SEED] [-k] [--keep-data-dir] [--cpu-burners N] [TEST…]'],
  help: `Runs the replica scenarios TEST… (default: all, ${scenarios.map((s) => s.id).join(' ')}) on 127.0.0.1 against real
lock_server processes started from this build, and checks the views they record in paxos-<port>.log.

Options:
  -s, --seed SEED   seed of the ports and random delays (default: random; printed, so that a run
                    can be repeated)
  -k                accepted for compatibility with the lab; spawned processes are always killed
  --keep-data-dir   one RSM_DATA_DIR for all scenarios, kept between them, while every scenario
                    starts with no paxos logs: each node must see that its stored state is from
                    an earlier life (paxos log missing), move it aside and start fresh
  --cpu-burners N   run N processes that each spin on a core beside the scenarios, 0..16
                    (default 0): the scenarios check every view, so a failure detector that
                    takes a loaded machine for a failed node fails them

Each run uses a fresh temporary directory (RSM_LOG_DIR and RSM_DATA_DIR of the servers): removed
when all tests pass, kept and printed when one fails.`,
  minPositionals: 0,
  maxPositionals: Number.MAX_SAFE_INTEGER,
  options: { seed: { type: 'string', short: 's' }, k: { type: 'boolean', short: 'k' }, 'keep-data-dir': { type: 'boolean' }, 'cpu-burners': { type: 'string' } },
};

let runDir: string | undefined;

process.on('exit', () => killAllChildren());
for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  process.on(signal, () => {
    const killed = killAllChildren();
    const kept = runDir === undefined ? '' : `; logs kept in ${runDir}`;
    process.stdout.write(`\nrsm_tester: interrupted by ${signal}; killed ${killed} processes${kept}\n`);
    process.exit(status);
  });
}

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const seed = values['seed'];
  const args = parseRsmTesterArgs(
    typeof seed === 'string' ? seed : undefined,
    positionals,
    scenarios.map((scenario) => scenario.id),
  );
  if (!args.ok) throw new UsageError(args.message);
  const burnersText = values['cpu-burners'];
  const cpuBurners = typeof burnersText === 'string' ? parseCount(burnersText, '--cpu-burners', 16) : 0;
  const passed = await runScenarios({ scenarios, tests: args.tests, seed: args.seed, keepDataDir: values['keep-data-dir'] === true, cpuBurners, onRunDir: (dir) => (runDir = dir) });
  return passed ? 0 : EXIT_FAILURE;
});
