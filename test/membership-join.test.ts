/**
 * The RSM membership shell in the simulator: joins adopting the primary's history (and log),
 * lagging nodes catching up, the `members` and `joinreq` handlers, the test-control endpoint
 * (breakpoints, partitions) and rsm breakpoint 2.
 */
import t from 'tap';
import { RpcEndpoint } from '../lib/rpc.js';
import { doneEntries } from '../paxos/log-sink.js';
import { RsmClientStatus, RsmStatus, RsmTestStatus, VIEWSTAMP_ZERO, rsmClientProtocol, rsmProtocol, rsmTestProtocol } from '../rsm/protocol.js';
import { PrimaryTracker, joinCandidates } from '../rsm/membership.js';
import { SimCluster, portIds, simControlAddress } from '../tester/sim/cluster.js';
import { resolved } from './helpers/sim.js';


/** A cluster of `ids` where the first `count` (default all) have joined, one after the other. */
async function joined(ids: readonly string[], seed: string, count = ids.length, clusterId?: string): Promise<SimCluster> {
  const cluster = new SimCluster({ seed, ids, ...(clusterId === undefined ? {} : { clusterId }) });
  for (let i = 0; i < count; i++) {
    await cluster.start(ids[i]!);
    if (!(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 30_000))) throw new Error(cluster.describe());
  }
  return cluster;
}

/** An RPC client endpoint of the test itself on the simulated network. */
function tester(cluster: SimCluster): RpcEndpoint {
  return new RpcEndpoint(cluster.network.forOwner('tester').connect(), cluster.world.clockFor('tester'), cluster.world.random.fork());
}

t.test('the log lines of views: view 1 is the bare id, later views end each member with a space', async (t) => {
  const cluster = await joined(['3772', '3774'], 'format');
  t.equal(cluster.slot('3772').log.text(), 'done 1 3772\npropseen 1 3772\naccepted 1 3772 3772 3774 \ndone 2 3772 3774 \n');
  t.equal(cluster.slot('3774').log.text(), 'done 1 3772\ndone 2 3772 3774 \n', "the joiner's log is the adopted history");
});

t.test('a join adopts the whole history and replaces the joiner\'s log', async (t) => {
  const ids = portIds(3);
  const cluster = await joined(ids, 'adopt');
  const p2 = ids[2]!;
  // Cut p2 off: the others remove it, while p2 keeps trying to remove p0 and logs its promises.
  cluster.network.isolate(p2);
  t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(0, 2)), 20_000));
  await cluster.runFor(5000);
  t.ok(cluster.slot(p2).log.lines.some((line) => line.startsWith('propseen')), 'p2 logged its own attempts');
  cluster.network.heal();
  t.ok(await cluster.runUntil(() => cluster.converged([ids[0]!, ids[1]!, p2]), 30_000), cluster.describe());
  const history = cluster.node(ids[0]!)!.config.history();
  t.equal(history.length, 5);
  t.same(cluster.slot(p2).log.lines, history.map((e) => `done ${e.instance} ${e.value}`), 'log = the adopted history, nothing else');
  t.same(cluster.node(p2)!.config.history(), history, 'and so is the durable history');
  t.same(cluster.checker.violations, []);
});

t.test('a lagging member learns the views it missed by catching up (no view change needed)', async (t) => {
  const ids = portIds(5);
  const cluster = await joined(ids, 'lag');
  const laggard = ids[4]!;
  // Cut the laggard off, then change views twice without it: remove p3, then add it back.
  cluster.network.isolate(laggard);
  const p0 = cluster.node(ids[0]!)!;
  t.ok(await resolved(cluster.world, p0.config.remove(ids[3]!)));
  t.ok(await resolved(cluster.world, p0.config.add(ids[3]!, 6)));
  t.equal(cluster.node(laggard)!.config.vid, 5, 'the laggard missed views 6 and 7');
  cluster.network.heal();
  t.ok(await cluster.runUntil(() => cluster.node(laggard)!.config.vid === 7, 10_000), cluster.describe());
  t.same(cluster.node(laggard)!.config.history(), p0.config.history());
  t.ok(await cluster.runUntil(() => cluster.converged(), 10_000), cluster.describe());
  t.equal(p0.config.vid, 7, 'no view was added to remove or re-add the laggard');
  t.same(cluster.checker.violations, []);
});

t.test('a quick restart of a member creates no view', async (t) => {
  const ids = portIds(3);
  const cluster = await joined(ids, 'quick');
  for (const id of ids) {
    await cluster.restart(id);
    await cluster.runFor(10_000);
  }
  for (const id of ids) t.equal(cluster.node(id)!.config.vid, 3, `${id}: still view 3`);
  t.ok(cluster.converged());
});

t.test('members: the view with the primary appended; joinreq: BUSY unless primary; ERR for bad ids', async (t) => {
  const ids = portIds(3);
  const cluster = await joined(ids, 'handlers');
  const rpc = tester(cluster);
  const members = await resolved(cluster.world, rpc.call(ids[1]!, rsmClientProtocol.members, { dummy: 0 }));
  t.same(members.ok && [members.status, members.result], [RsmClientStatus.OK, [...ids, ids[0]]]);
  const busy = await resolved(cluster.world, rpc.call(ids[1]!, rsmProtocol.joinreq, { src: '3790', last: VIEWSTAMP_ZERO, cluster: '' }));
  t.same(busy.ok && busy.status, RsmStatus.BUSY, 'a backup does not admit joiners');
  const bad = await resolved(cluster.world, rpc.call(ids[0]!, rsmProtocol.joinreq, { src: 'a b', last: VIEWSTAMP_ZERO, cluster: '' }));
  t.same(bad.ok && bad.status, RsmStatus.ERR, 'an id with a space would corrupt the view');
  const member = await resolved(cluster.world, rpc.call(ids[1]!, rsmProtocol.joinreq, { src: ids[2]!, last: VIEWSTAMP_ZERO, cluster: '' }));
  t.same(member.ok && [member.status, member.result.history.length], [RsmStatus.OK, 3], 'a member gets the history from anyone');
  t.equal(cluster.node(ids[0]!)!.config.vid, 3, 'no view change');
  // The primary cannot admit a node while it has no majority: BUSY, and no view.
  cluster.crash(ids[1]!);
  cluster.crash(ids[2]!);
  const noMajority = await resolved(cluster.world, rpc.call(ids[0]!, rsmProtocol.joinreq, { src: '3790', last: VIEWSTAMP_ZERO, cluster: '' }, { timeoutMs: 20_000 }));
  t.same(noMajority.ok && noMajority.status, RsmStatus.BUSY);
  t.equal(cluster.node(ids[0]!)!.config.vid, 3);
  t.same(cluster.checker.violations, []);
});

t.test('joinreq carries the cluster id: another cluster\'s joiner is refused (CLUSTER_MISMATCH), a malformed id gets ERR, no view changes', async (t) => {
  const ids = portIds(3);
  const mine = 'c0123456789ab';
  const cluster = await joined(ids, 'join-cluster', ids.length, mine);
  const rpc = tester(cluster);
  const other = await resolved(cluster.world, rpc.call(ids[0]!, rsmProtocol.joinreq, { src: '3790', last: VIEWSTAMP_ZERO, cluster: 'cfedcba987654' }));
  t.same(other.ok && [other.status, other.result.history.length, other.result.cluster], [RsmStatus.CLUSTER_MISMATCH, 0, mine], 'the primary refuses a joiner of another cluster and says its own');
  const malformed = await resolved(cluster.world, rpc.call(ids[0]!, rsmProtocol.joinreq, { src: '3790', last: VIEWSTAMP_ZERO, cluster: 'not an id' }));
  t.same(malformed.ok && malformed.status, RsmStatus.ERR, 'a malformed cluster id is refused');
  const unknown = await resolved(cluster.world, rpc.call(ids[1]!, rsmProtocol.joinreq, { src: ids[2]!, last: VIEWSTAMP_ZERO, cluster: '' }));
  t.same(unknown.ok && [unknown.status, unknown.result.cluster], [RsmStatus.OK, mine], 'a joiner that knows no id yet is answered, with the id');
  await cluster.runFor(5_000);
  for (const id of ids) t.equal(cluster.node(id)!.config.vid, 3, `${id}: still view 3, nobody admitted`);
  t.same(cluster.checker.violations, []);
});

t.test('the control endpoint: breakpoints 1-4 arm, others are ERR; net_repair 0 arms, partition1 cuts, 1 heals', async (t) => {
  const ids = portIds(3);
  const cluster = await joined(ids, 'control');
  const rpc = tester(cluster);
  const control = simControlAddress(ids[0]!);
  for (const b of [1, 3, 4]) {
    const reply = await resolved(cluster.world, rpc.call(control, rsmTestProtocol.breakpoint, { b }));
    t.same(reply.ok && reply.status, RsmTestStatus.OK, `breakpoint ${b}`);
  }
  const badBreakpoint = await resolved(cluster.world, rpc.call(control, rsmTestProtocol.breakpoint, { b: 7 }));
  t.same(badBreakpoint.ok && badBreakpoint.status, RsmTestStatus.ERR);
  const p0 = cluster.node(ids[0]!)!;
  const arm = await resolved(cluster.world, rpc.call(control, rsmTestProtocol.net_repair, { heal: 0 }));
  t.same(arm.ok && arm.status, RsmTestStatus.OK);
  t.equal(cluster.slot(ids[0]!).rpc!.isReachable, true, 'net_repair 0 only arms');
  p0.partition1();
  t.equal(cluster.slot(ids[0]!).rpc!.isReachable, false, 'partition1 cuts');
  t.equal(p0.isPartitioned, true);
  p0.partition1();
  t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(1)), 20_000), 'the others form a view without p0');
  const heal = await resolved(cluster.world, rpc.call(control, rsmTestProtocol.net_repair, { heal: 1 }));
  t.same(heal.ok && heal.status, RsmTestStatus.OK, 'the control port still answers while partitioned');
  t.equal(cluster.slot(ids[0]!).rpc!.isReachable, true);
  p0.breakpoint1();
  t.same(cluster.slot(ids[0]!).deaths, ['Dying at breakpoint 1 in rsm!']);
  t.notOk(cluster.isUp(ids[0]!));
  await cluster.start(ids[0]!);
  t.ok(await cluster.runUntil(() => cluster.converged([ids[1]!, ids[2]!, ids[0]!]), 30_000), cluster.describe());
  t.same(cluster.node(ids[1]!)!.config.members(), [ids[1], ids[2], ids[0]], 'p0 rejoined, appended last');
  t.same(cluster.checker.violations, []);
});

t.test('rsm breakpoint 2 fires when a node commits a view that contains it', async (t) => {
  const ids = portIds(4);
  const cluster = await joined(ids, 'rsm-bp2', 3);
  t.equal(cluster.node(ids[2]!)!.breakpoint(2), RsmTestStatus.OK);
  await cluster.start(ids[3]!);
  t.ok(await cluster.runUntil(() => !cluster.isUp(ids[2]!), 10_000));
  t.same(cluster.slot(ids[2]!).deaths, ['Dying at breakpoint 2 in rsm!']);
  t.equal(doneEntries(cluster.slot(ids[2]!).log.lines).length, 4, 'it logged view 4 before dying');
  t.ok(await cluster.runUntil(() => cluster.converged([ids[0]!, ids[1]!, ids[3]!]), 30_000), cluster.describe());
  t.same(cluster.checker.violations, []);
});

t.test('primary choice: kept while a member, else the first survivor of the previous view', async (t) => {
  const views = [['a'], ['a', 'b'], ['a', 'b', 'c'], ['b', 'c'], ['b', 'c', 'a'], ['c', 'a'], ['c', 'a', 'b']];
  const tracker = new PrimaryTracker();
  const primaries = views.map((_, i) => tracker.primaryOf(i + 1, (v) => views[v - 1]!));
  t.same(primaries, ['a', 'a', 'a', 'b', 'b', 'c', 'c']);
  t.same(joinCandidates('d', 'c', 'a', views), ['c', 'a', 'b']);
  t.same(joinCandidates('a', 'a', 'a', views), ['c', 'b']);
});
