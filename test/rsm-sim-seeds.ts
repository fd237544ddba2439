/**
 * Shared driver of the rsm_sim seed files (rsm-sim-a..d.test.ts for kv, rsm-sim-lock-a..b.test.ts
 * for the lock workload). One assertion per failing seed (with the drawn options and the problems,
 * so `rsm_sim [--workload lock] --seed S` reproduces it) and a summary.
 * RSM_SIM_SEEDS=N runs N seeds per file instead of 100; RSM_SIM_FIRST_SEED shifts them.
 */
import t from 'tap';
import { runRsmSim, type RsmSimWorkload } from '../tester/sim/rsm-sim.js';

export const SEEDS_PER_FILE = Number(process.env['RSM_SIM_SEEDS'] ?? 100);
const FIRST_SEED = Number(process.env['RSM_SIM_FIRST_SEED'] ?? 0);

export function runRsmSimSeeds(part: number, workload: RsmSimWorkload = 'kv'): void {
  const first = FIRST_SEED + part * SEEDS_PER_FILE;
  const flag = workload === 'kv' ? '' : ` --workload ${workload}`;
  t.test(`rsm_sim${flag} seeds ${first}..${first + SEEDS_PER_FILE - 1}`, async (t) => {
    const started = Date.now();
    let failed = 0;
    let ops = 0;
    let views = 0;
    let crashes = 0;
    let transfers = 0;
    for (let seed = first; seed < first + SEEDS_PER_FILE; seed++) {
      const result = await runRsmSim(seed, workload === 'kv' ? {} : { workload });
      ops += result.stats.acked;
      views += result.stats.views;
      crashes += result.stats.crashes;
      transfers += result.stats.transfers;
      if (result.outcome !== 'ok') {
        failed++;
        t.fail(`seed ${seed}: ${result.outcome}`, { seed, options: result.options, summary: result.summary, problems: result.problems.slice(0, 10), reproduce: `rsm_sim${flag} --seed ${seed}` });
      }
    }
    t.equal(failed, 0, `all ${SEEDS_PER_FILE} seeds safe and live`);
    t.comment(`${SEEDS_PER_FILE} seeds in ${Date.now() - started} ms: ${ops} acknowledged operations, ${views} views, ${crashes} crashes, ${transfers} state transfers`);
  });
}
