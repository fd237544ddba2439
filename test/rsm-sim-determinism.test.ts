/**
 * rsm_sim is a pure function of its seed: the same seed gives the same trace hash and the same
 * output, byte for byte (library and program); different seeds differ. And the program's exit
 * statuses and reproduction line.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runRsmSim } from '../tester/sim/rsm-sim.js';

const RSM_SIM = fileURLToPath(new URL('../tester/bin/rsm_sim.js', import.meta.url));

function rsmSim(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [RSM_SIM, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

t.test('the same seed gives the same run; different seeds differ', async (t) => {
  for (const seed of [7, 42, 311]) {
    const first = await runRsmSim(seed, { keepEvents: true });
    const second = await runRsmSim(seed, { keepEvents: true });
    t.equal(first.outcome, 'ok', `seed ${seed}: ${first.problems.join('; ')}`);
    t.equal(second.traceHash, first.traceHash, `seed ${seed}: same trace hash`);
    t.equal(second.summary, first.summary, `seed ${seed}: same summary`);
    t.same(second.events, first.events, `seed ${seed}: same fault schedule`);
    t.equal(second.options, first.options);
  }
  const hashes = new Set<string>();
  for (const seed of [1, 2, 3, 4]) hashes.add((await runRsmSim(seed)).traceHash);
  t.equal(hashes.size, 4, 'four seeds, four traces');
});

t.test('rsm_sim --seed 7 prints the same bytes twice; --seeds prints one line per seed and a summary', async (t) => {
  const first = rsmSim('--seed', '7', '--verbose');
  const second = rsmSim('--seed', '7', '--verbose');
  t.equal(first.status, 0, first.stderr);
  t.equal(second.stdout, first.stdout, 'byte-identical output');
  t.match(first.stdout, /^rsm_sim: seed 7\noptions: seed=7 nodes=\d /);
  t.match(first.stdout, /\nresult: OK views=\d+ .* trace=[0-9a-f]{16}\n$/);
  const many = rsmSim('--seeds', '3', '--first-seed', '10');
  t.equal(many.status, 0, many.stderr);
  const lines = many.stdout.trimEnd().split('\n');
  t.equal(lines.length, 5);
  t.match(lines[0], /^seed 10: OK .* batches=\d+\/\d+\/\d+ /);
  t.match(lines[3], /^rsm_sim: 3 seeds from 10: 3 ok, 0 violations, 0 liveness failures, 0 crashes$/);
  t.match(lines[4], /^rsm_sim: \d+ batches stamped, \d+ with more than one request, the largest \d+; \d+ stamped while others were in flight, at most \d+ in flight$/);
  t.equal(rsmSim('--seeds', '3', '--first-seed', '10').stdout, many.stdout, 'also byte-identical');
});

t.test('a liveness failure exits 2 and prints the seed to reproduce it; usage errors and --help', async (t) => {
  const stuck = rsmSim('--seed', '3', '--liveness-ms', '1');
  t.equal(stuck.status, 2);
  t.match(stuck.stdout, /\nresult: LIVENESS FAILURE /);
  t.match(stuck.stdout, /\nSEED=3 to reproduce: rsm_sim --seed 3 --liveness-ms 1\n$/);
  t.equal(rsmSim('--help').status, 0);
  t.equal(rsmSim('--seed', '1', '--seeds', '2').status, 2, 'usage error');
  t.equal(rsmSim('--nodes', '7').status, 2, 'usage error');
});
