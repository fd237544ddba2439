/** The same seed gives the same run, byte for byte (trace hash), and different seeds differ. */
import t from 'tap';
import { runPaxosSwarm } from '../tester/sim/paxos-swarm.js';

t.test('a swarm run is a pure function of its seed', async (t) => {
  for (const seed of [3, 17, 42]) {
    const first = await runPaxosSwarm(seed);
    const second = await runPaxosSwarm(seed);
    t.ok(first.ok, `seed ${seed}: ${first.problems.join('; ')}`);
    t.equal(second.traceHash, first.traceHash, `seed ${seed}: same trace`);
    t.same(second.stats, first.stats);
  }
  t.not((await runPaxosSwarm(4)).traceHash, (await runPaxosSwarm(5)).traceHash);
});
