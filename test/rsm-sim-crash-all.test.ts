/**
 * The crash-all fault of rsm_sim: every replica is killed at once (kill -9: unsynced writes lost)
 * at a moment drawn from the seed, then all restart from their checkpoints and logs. Nothing a
 * client saw acknowledged may be lost: the run's final checks compare every acknowledged kv
 * operation with the converged state (kv-model.ts) and, for the lock workload, the clients'
 * caches and holders with the replicas' tables; the RsmChecker checks every restored state
 * against the other replicas' at the same viewstamp.
 */
import t from 'tap';
import { runRsmSim, type RsmSimWorkload } from '../tester/sim/rsm-sim.js';

const SEEDS = Number(process.env['RSM_SIM_CRASH_ALL_SEEDS'] ?? 30);

for (const workload of ['kv', 'lock'] as RsmSimWorkload[]) {
  t.test(`rsm_sim --workload ${workload}: kill every replica at once, restart, lose nothing acknowledged (${SEEDS} seeds)`, async (t) => {
    let failed = 0;
    let crashedAll = 0;
    let acked = 0;
    for (let seed = 0; seed < SEEDS; seed++) {
      const result = await runRsmSim(seed, { workload, crashAll: true, keepEvents: true });
      if (result.events.some((line) => line.includes(' crash all '))) crashedAll++;
      acked += result.stats.acked;
      if (result.outcome !== 'ok') {
        failed++;
        t.fail(`seed ${seed}: ${result.outcome}`, { options: result.options, summary: result.summary, problems: result.problems.slice(0, 10) });
      }
    }
    t.equal(failed, 0, 'every seed safe and live');
    t.equal(crashedAll, SEEDS, 'every run killed every replica at once');
    t.ok(acked > 0, `clients saw ${acked} operations acknowledged`);
  });
}

t.test('regression: a replica that installs a state drops the log entries after it too (kv seed 1145)', async (t) => {
  // Its log held a request the installed (older) state lacked; a later restart replayed it over
  // the installed state and the replica diverged.
  const result = await runRsmSim(1145);
  t.equal(result.outcome, 'ok', result.problems.slice(0, 3).join('; '));
});
