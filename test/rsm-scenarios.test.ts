/**
 * Runs all seventeen process-level scenarios (`rsm_tester 0 1 … 16`) against real lock_server
 * processes and requires them all to pass: 0–7 membership and Paxos faults, 8–16 lock_tester
 * through the replicated lock service while replicas die, hit breakpoints and are partitioned. The run's seed is in the output, so a
 * failure can be repeated with `rsm_tester -s SEED N`; its log directory is kept and printed. Then
 * 0 and 8 once more beside two CPU-burning processes (no view change without a fault).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const RSM_TESTER = fileURLToPath(new URL('../tester/bin/rsm_tester.js', import.meta.url));
const TESTS = Array.from({ length: 17 }, (_, i) => String(i));
/** Bound on the whole run (about five minutes on a 2-core machine); below tap's per-file timeout. */
const RUN_TIMEOUT_MS = 780_000;
/** After SIGTERM (which makes rsm_tester kill its servers), how long before SIGKILL. */
const STOP_GRACE_MS = 15_000;

interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
  readonly timedOut: boolean;
}

/** Runs rsm_tester; `stop` SIGTERMs it if it is still running (rsm_tester then kills its servers). */
function runTester(args: readonly string[]): { result: Promise<Outcome>; stop(): void } {
  const child = spawn(process.execPath, [RSM_TESTER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const result = new Promise<Outcome>((resolve) => {
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const stopTimer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    }, RUN_TIMEOUT_MS);
    child.once('close', (code, signal) => {
      clearTimeout(stopTimer);
      clearTimeout(killTimer);
      resolve({ code, signal, output, timedOut });
    });
  });
  return { result, stop: () => child.exitCode === null && child.signalCode === null && child.kill('SIGTERM') };
}

// When run by the tap runner, its per-file timeout (package.json) bounds this too.
t.setTimeout(RUN_TIMEOUT_MS + STOP_GRACE_MS + 10_000);

t.test(`rsm_tester ${TESTS.join(' ')}`, async (t) => {
  const run = runTester(TESTS);
  t.teardown(() => run.stop());
  const outcome = await run.result;
  const passed = outcome.code === 0 && /^tests done OK$/m.test(outcome.output);
  if (!passed) t.comment(outcome.output.split('\n').slice(-80).join('\n'));
  t.notOk(outcome.timedOut, `finishes within ${RUN_TIMEOUT_MS / 1000} s`);
  t.equal(outcome.code, 0, 'exit status 0');
  t.match(outcome.output, /^tests done OK$/m, 'prints "tests done OK"');
  for (const test of TESTS) t.match(outcome.output, new RegExp(`^test ${test}: OK`, 'm'), `test ${test} passed`);
  t.notMatch(outcome.output, /^Failed:/m);
});

t.test('rsm_tester --cpu-burners 2 0 8: no view change without a fault on a loaded machine', async (t) => {
  // Scenario 0 checks every view of a plain start and 8 runs lock_tester with no fault; both
  // fail on any extra view, which is what a failure detector fooled by a busy CPU would add.
  const run = runTester(['--cpu-burners', '2', '0', '8']);
  t.teardown(() => run.stop());
  const outcome = await run.result;
  if (outcome.code !== 0) t.comment(outcome.output.split('\n').slice(-60).join('\n'));
  const burners = /^rsm_tester: 2 CPU-burning processes run beside the scenarios \(pids (\d+) (\d+)\)$/m.exec(outcome.output);
  t.ok(burners, 'two burners ran beside the scenarios');
  t.match(outcome.output, /^test 0: OK/m, 'test 0 passed');
  t.match(outcome.output, /^test 8: OK/m, 'test 8 passed');
  t.equal(outcome.code, 0, 'exit status 0');
  for (const pid of burners?.slice(1) ?? []) {
    // Gone, or at most a zombie (its parent, rsm_tester, has exited; PID 1 reaps it): not running.
    let state = 'gone';
    try {
      state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? 'gone';
    } catch {
      // no such process
    }
    t.ok(state === 'gone' || state === 'Z', `burner ${pid} was stopped (state ${state})`);
  }
});
