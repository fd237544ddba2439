import t from 'tap';
import { SimCluster, portIds } from '../tester/sim/cluster.js';

t.test('three nodes join one by one: views 1, 2, 3 in every log', async (t) => {
  const ids = portIds(3);
  const cluster = new SimCluster({ seed: 1, ids });
  await cluster.start(ids[0]!);
  t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(0, 1)), 10_000), cluster.describe());
  await cluster.start(ids[1]!);
  t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(0, 2)), 10_000), cluster.describe());
  await cluster.start(ids[2]!);
  t.ok(await cluster.runUntil(() => cluster.converged(ids), 10_000), cluster.describe());
  for (const id of ids) {
    t.same(cluster.slot(id).log.lines.filter((l) => l.startsWith('done')), ['done 1 3772', 'done 2 3772 3774 ', 'done 3 3772 3774 3776 '], id);
  }
  t.same(cluster.checker.violations, []);
  t.same(cluster.fatalErrors, []);
});
