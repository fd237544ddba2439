/**
 * Shared driver of the swarm seed files (paxos-sim-a/b.test.ts). One tap assertion per seed; a
 * failing seed's message holds the seed, the drawn parameters and what went wrong, so
 * `runPaxosSwarm(seed)` reproduces it exactly.
 */
import t from 'tap';
import { runPaxosSwarm } from '../tester/sim/paxos-swarm.js';

export const SEEDS_PER_FILE = Number(process.env['PAXOS_SIM_SEEDS'] ?? 400);
const FIRST_SEED = Number(process.env['PAXOS_SIM_FIRST_SEED'] ?? 0);

export function runSwarmSeeds(part: number): void {
  const first = FIRST_SEED + part * SEEDS_PER_FILE;
  t.test(`swarm seeds ${first}..${first + SEEDS_PER_FILE - 1}`, async (t) => {
    const started = Date.now();
    let views = 0;
    let crashes = 0;
    let deaths = 0;
    let failed = 0;
    for (let seed = first; seed < first + SEEDS_PER_FILE; seed++) {
      const result = await runPaxosSwarm(seed);
      views += result.stats.views;
      crashes += result.stats.crashes;
      deaths += result.stats.breakpointDeaths;
      if (!result.ok) failed++;
      if (!result.ok || seed === first) {
        t.ok(result.ok, `seed ${seed}`, {
          diagnostic: !result.ok,
          seed,
          parameters: result.parameters,
          problems: result.problems.slice(0, 20),
          state: result.description,
        });
      }
    }
    t.equal(failed, 0, `all ${SEEDS_PER_FILE} seeds safe and live`);
    t.comment(`${SEEDS_PER_FILE} seeds in ${Date.now() - started} ms: ${views} views, ${crashes} crashes, ${deaths} breakpoint deaths`);
  });
}
