/**
 * The rsm_tester view scenarios 0-7 (LAB.md §5.4) in the simulator, with the lab's timers
 * (1 s heartbeats). Views are read from each node's Paxos log, as the tester does, but compared
 * member by member rather than by count only.
 */
import t, { type Test } from 'tap';
import { doneEntries } from '../paxos/log-sink.js';
import { decodeView } from '../paxos/view.js';
import { SimCluster, portIds } from '../tester/sim/cluster.js';

/** The views in `id`'s log, as member lists. */
function views(cluster: SimCluster, id: string): string[][] {
  return doneEntries(cluster.slot(id).log.lines).map((entry) => decodeView(entry.value) ?? []);
}

function sizes(cluster: SimCluster, id: string): number[] {
  return views(cluster, id).map((members) => members.length);
}

/** Like the tester's wait_for_view_change: until `id`'s log has at least `count` views. */
function waitViews(cluster: SimCluster, ids: readonly string[], count: number, limitMs = 20_000): Promise<boolean> {
  return cluster.runUntil(() => ids.every((id) => views(cluster, id).length >= count), limitMs);
}

async function startNodes(t: Test, cluster: SimCluster, ids: readonly string[]): Promise<void> {
  for (let i = 0; i < ids.length; i++) {
    await cluster.start(ids[i]!);
    await cluster.runFor(1000);
    t.ok(await waitViews(cluster, ids.slice(0, i + 1), i + 1), `view ${i + 1} reached`);
    for (const id of ids.slice(0, i + 1)) t.same(views(cluster, id)[i], ids.slice(0, i + 1), `${id}: view ${i + 1}`);
  }
}

/** Every scenario runs under several seeds (network timing and jitter draws differ). */
const SEEDS = Number(process.env['SCENARIO_SEEDS'] ?? 20);

/** A cluster with loopback-like link delays of 1..10 ms (so messages reorder). */
function newCluster(seed: string, ids: readonly string[]): SimCluster {
  const cluster = new SimCluster({ seed, ids });
  cluster.network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 10 });
  return cluster;
}

function scenario(name: string, body: (t: Test, seed: string) => Promise<void>): void {
  t.test(name, async (t) => {
    for (let i = 0; i < SEEDS; i++) await t.test(`seed ${i}`, (t) => body(t, `${name}#${i}`));
  });
}

function done(t: Test, cluster: SimCluster): void {
  t.same(cluster.checker.violations, [], 'paxos checker');
  t.same(cluster.fatalErrors, [], 'no fatal errors');
}

scenario('scenarios 0-2: start 3, then lose a backup or the primary', async (t, seed) => {
  for (const victim of [2, 0]) {
    const ids = portIds(3);
    const cluster = newCluster(`${seed}-${victim}`, ids);
    await startNodes(t, cluster, ids);
    cluster.crash(ids[victim]!);
    const rest = ids.filter((_, i) => i !== victim);
    t.ok(await waitViews(cluster, rest, 4), cluster.describe());
    for (const id of rest) t.same(views(cluster, id)[3], rest, `${id}: view 4 without ${ids[victim]}`);
    await cluster.runFor(5000);
    for (const id of rest) t.equal(views(cluster, id).length, 4, 'no further view');
    done(t, cluster);
  }
});

scenario('scenario 3: a restarted node with a stale view learns the newer views and rejoins', async (t, seed) => {
  const [p0, p1, p2] = portIds(3);
  const cluster = newCluster(seed, [p0!, p1!, p2!]);
  await startNodes(t, cluster, [p0!, p1!, p2!]);
  cluster.crash(p2!);
  t.ok(await waitViews(cluster, [p0!, p1!], 4));
  await cluster.start(p2!, p0!);
  t.equal(cluster.node(p2!)!.config.vid, 3, 'p2 restarts believing view 3, where it is a member');
  t.ok(await waitViews(cluster, [p0!, p1!, p2!], 5), cluster.describe());
  for (const id of [p0!, p1!, p2!]) {
    t.same(views(cluster, id), [[p0], [p0, p1], [p0, p1, p2], [p0, p1], [p0, p1, p2]], `${id}: the whole history`);
  }
  t.ok(await cluster.runUntil(() => cluster.converged(), 10_000), cluster.describe());
  done(t, cluster);
});

scenario('scenario 4: a minority never forms a view; a restarted member rejoins without a view change', async (t, seed) => {
  const [p0, p1, p2] = portIds(3);
  const cluster = newCluster(seed, [p0!, p1!, p2!]);
  await startNodes(t, cluster, [p0!, p1!, p2!]);
  cluster.crash(p2!);
  t.ok(await waitViews(cluster, [p0!, p1!], 4));
  cluster.crash(p1!);
  await cluster.start(p2!, p0!); // its join must fail: p0 alone is no majority of view 4
  await cluster.runFor(5000);
  t.same(sizes(cluster, p0!), [1, 2, 3, 2], 'p0 formed no view alone');
  t.equal(views(cluster, p2!).filter((members) => members.includes(p2!)).length, 1, 'p2 gained no view with it (only view 3)');
  t.ok(views(cluster, p2!).length <= 4, 'nor any view 5');
  cluster.crash(p2!);
  await cluster.start(p1!, p0!);
  await cluster.runFor(7000);
  // p1 is still a member of view 4 and comes back without a new view being needed. But p0 may
  // have been proposing to remove p1 when it returned (a heartbeat sent while p1 was down fails
  // just after), and p1's return gives that proposal its majority: then view 5 is {p0} and p1
  // rejoins as view 6 {p0,p1}. rsm_tester accepts the same two histories (tester/scenarios.ts).
  const back = views(cluster, p0!).slice(4);
  t.ok(back.length === 0 || JSON.stringify(back) === JSON.stringify([[p0], [p0, p1]]), `p1 came back into view 4, or was removed and rejoined: ${JSON.stringify(back)}`);
  await cluster.start(p2!, p0!);
  const all = (id: string): boolean => views(cluster, id).at(-1)?.length === 3;
  t.ok(await cluster.runUntil(() => [p0!, p1!, p2!].every(all), 20_000), cluster.describe());
  const legal = [JSON.stringify([[p0, p1, p2]]), JSON.stringify([[p0], [p0, p1], [p0, p1, p2]])];
  for (const id of [p0!, p1!, p2!]) t.ok(legal.includes(JSON.stringify(views(cluster, id).slice(4))), `${id}: views after 4 ${JSON.stringify(views(cluster, id).slice(4))}`);
  done(t, cluster);
});

scenario('scenario 5: breakpoint 3 kills p0 between prepare and accept; p1 and p2 remove it', async (t, seed) => {
  const [p0, p1, p2] = portIds(3);
  const cluster = newCluster(seed, [p0!, p1!, p2!]);
  await startNodes(t, cluster, [p0!, p1!, p2!]);
  cluster.node(p0!)!.breakpoint(3);
  cluster.crash(p2!);
  t.ok(await cluster.runUntil(() => !cluster.isUp(p0!), 10_000), 'p0 died trying to remove p2');
  t.same(cluster.slot(p0!).deaths, ['Dying at breakpoint 1!']);
  await cluster.runFor(5000);
  t.equal(views(cluster, p1!).length, 3, 'no new views');
  await cluster.start(p2!, p0!);
  t.ok(await waitViews(cluster, [p1!, p2!], 4), cluster.describe());
  for (const id of [p1!, p2!]) t.same(views(cluster, id), [[p0], [p0, p1], [p0, p1, p2], [p1, p2]]);
  done(t, cluster);
});

scenario('scenario 6: breakpoint 4 kills p0 after accept; the accepted view is adopted later', async (t, seed) => {
  const [p0, p1, p2, p3] = portIds(4);
  const ids = [p0!, p1!, p2!, p3!];
  const cluster = newCluster(seed, ids);
  await startNodes(t, cluster, ids);
  cluster.node(p0!)!.breakpoint(4);
  cluster.crash(p3!);
  t.ok(await cluster.runUntil(() => !cluster.isUp(p0!), 10_000));
  t.same(cluster.slot(p0!).deaths, ['Dying at breakpoint 2!']);
  await cluster.runFor(5000);
  t.same([views(cluster, p1!).length, views(cluster, p2!).length], [4, 4], 'two of four: no view');
  await cluster.runFor(5000);
  await cluster.start(p3!, p1!);
  t.ok(await waitViews(cluster, [p1!, p2!], 5, 30_000), cluster.describe());
  t.same(views(cluster, p1!)[4], [p0, p1, p2], 'view 5 is the value p0 got accepted');
  t.ok(await cluster.runUntil(() => cluster.converged([p1!, p2!, p3!]), 30_000), cluster.describe());
  for (const id of [p1!, p2!, p3!]) {
    t.same(sizes(cluster, id).slice(0, 5), [1, 2, 3, 4, 3]);
    t.same(views(cluster, id).at(-1), [p1, p2, p3], `${id}: last view`);
  }
  done(t, cluster);
});

scenario('scenario 7: accepted values survive restarts of the acceptors', async (t, seed) => {
  const [p0, p1, p2, p3] = portIds(4);
  const ids = [p0!, p1!, p2!, p3!];
  const cluster = newCluster(seed, ids);
  await startNodes(t, cluster, ids);
  cluster.node(p0!)!.breakpoint(4);
  await cluster.runFor(3000);
  cluster.crash(p3!);
  await cluster.runFor(5000);
  t.notOk(cluster.isUp(p0!), 'p0 died after the accept phase');
  t.equal(cluster.node(p1!)!.config.acceptor.accepted?.v, `${p0} ${p1} ${p2} `);
  cluster.crash(p2!);
  cluster.crash(p1!);
  await cluster.runFor(5000);
  await cluster.start(p1!, p0!);
  await cluster.runFor(5000);
  await cluster.start(p2!, p0!);
  await cluster.runFor(5000);
  t.same([views(cluster, p1!).length, views(cluster, p2!).length], [4, 4], 'two of four: no view');
  t.equal(cluster.node(p1!)!.config.acceptor.accepted?.v, `${p0} ${p1} ${p2} `, 'the accept survived the restart');
  await cluster.start(p3!, p1!);
  t.ok(await waitViews(cluster, [p1!, p2!], 5, 15_000), cluster.describe());
  t.same(views(cluster, p1!)[4], [p0, p1, p2]);
  t.ok(await cluster.runUntil(() => cluster.converged([p1!, p2!, p3!]), 30_000), cluster.describe());
  for (const id of [p1!, p2!, p3!]) {
    t.same(sizes(cluster, id).slice(0, 5), [1, 2, 3, 4, 3]);
    t.equal(views(cluster, id).at(-1)!.length, 3);
  }
  done(t, cluster);
});
