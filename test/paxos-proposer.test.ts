/**
 * The proposer in a simulated cluster (heartbeats switched off, so only the test proposes):
 * adopting the highest accepted value, minorities, breakpoints, the persisted round.
 */
import t from 'tap';
import { SimCluster, portIds } from '../tester/sim/cluster.js';
import { PROPOSAL_ZERO } from '../paxos/messages.js';
import { encodeView } from '../paxos/view.js';
import { resolved } from './helpers/sim.js';

const QUIET = { heartbeatIntervalMs: 1e9 };


/** A cluster of `count` nodes that all joined (views 1..count), heartbeats off. */
async function joined(count: number, seed: number | string, timing = QUIET): Promise<{ cluster: SimCluster; ids: string[] }> {
  const ids = portIds(count);
  const cluster = new SimCluster({ seed, ids, timing });
  for (let i = 0; i < count; i++) {
    await cluster.start(ids[i]!);
    if (!(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 30_000))) throw new Error(cluster.describe());
  }
  return { cluster, ids };
}

t.test('the proposer adopts the value of the highest accepted proposal among the promises', async (t) => {
  const { cluster, ids } = await joined(3, 'adopt');
  const [a, b, c] = ids.map((id) => cluster.node(id)!.config);
  // Two earlier proposers got accepts in instance 4: (5, x) at a, (7, y) at b and c (a majority,
  // so y may be chosen). The round moves on at the first majority, which holds a and b or a and c:
  // either way the promises hold both accepted proposals, and the higher one must win.
  await a!.acceptor.onAccept({ src: 'x', instance: 4, n: { n: 5, m: 'x' }, v: encodeView([ids[0]!, ids[1]!]) });
  await b!.acceptor.onAccept({ src: 'y', instance: 4, n: { n: 7, m: 'y' }, v: encodeView([ids[0]!, ids[2]!]) });
  await c!.acceptor.onAccept({ src: 'y', instance: 4, n: { n: 7, m: 'y' }, v: encodeView([ids[0]!, ids[2]!]) });
  // a saw round 7 too, so its first round (8) is promised everywhere.
  await a!.acceptor.onPrepare({ src: 'y', instance: 4, n: { n: 7, m: 'y' } });
  const own = encodeView([...ids, '3778']);
  t.ok(await resolved(cluster.world, a!.proposer.run(4, ids, own)));
  t.same(a!.acceptor.history().length, 4);
  t.equal(a!.acceptor.value(4), encodeView([ids[0]!, ids[2]!]), 'the value accepted at (7, y) won, not our own');
  await cluster.runFor(1000);
  for (const config of [a, b, c]) t.equal(config!.acceptor.value(4), encodeView([ids[0]!, ids[2]!]));
  t.same(cluster.checker.violations, []);
});

t.test('with only some promisers, the highest accepted value among *them* wins', async (t) => {
  const { cluster, ids } = await joined(3, 'adopt-some');
  const [a, b, c] = ids.map((id) => cluster.node(id)!.config);
  await b!.acceptor.onAccept({ src: 'x', instance: 4, n: { n: 5, m: 'x' }, v: encodeView([ids[0]!, ids[1]!]) });
  await c!.acceptor.onAccept({ src: 'y', instance: 4, n: { n: 7, m: 'y' }, v: encodeView([ids[0]!, ids[2]!]) });
  cluster.network.isolate(ids[2]!); // c's (7, y) is out of reach: only a and b can promise
  let runs = 0;
  let decided = false;
  while (runs < 10 && !decided) {
    decided = await resolved(cluster.world, a!.proposer.run(4, ids, encodeView(ids)));
    runs++;
  }
  t.ok(decided);
  t.equal(runs, 2, "round 1 is refused by b, which reports its promise 5; round 6 outbids it");
  t.equal(a!.acceptor.value(4), encodeView([ids[0]!, ids[1]!]), '(5, x) was the highest among the promisers');
  t.same(cluster.checker.violations, []);
});

t.test('a minority never decides; the majority side can', async (t) => {
  const { cluster, ids } = await joined(5, 'minority');
  const configs = ids.map((id) => cluster.node(id)!.config);
  cluster.network.partition([ids.slice(0, 2), ids.slice(2)]);
  t.equal(await resolved(cluster.world, configs[0]!.proposer.run(6, ids, encodeView(ids.slice(0, 2)))), false, 'two of five');
  t.equal(await resolved(cluster.world, configs[1]!.proposer.run(6, ids, encodeView(ids.slice(0, 2)))), false);
  await cluster.runFor(5000);
  for (const config of configs) t.equal(config.vid, 5, 'no view 6 anywhere');
  t.equal(await resolved(cluster.world, configs[2]!.proposer.run(6, ids, encodeView(ids.slice(2)))), true, 'three of five');
  t.equal(configs[2]!.acceptor.value(6), encodeView(ids.slice(2)));
  t.equal(configs[0]!.vid, 5, 'the cut-off side has not learned it');
  t.same(cluster.checker.violations, []);
});

t.test('paxos breakpoint 3 (proposer breakpoint 1) fires after the prepare majority, before any accept', async (t) => {
  const { cluster, ids } = await joined(3, 'bp3');
  const [p0, p1] = [cluster.node(ids[0]!)!, cluster.node(ids[1]!)!];
  t.equal(p0.breakpoint(3), 0);
  void p0.config.proposer.run(4, ids, encodeView(ids.slice(0, 2)));
  await cluster.runFor(5000);
  t.same(cluster.slot(ids[0]!).deaths, ['Dying at breakpoint 1!']);
  t.notOk(cluster.isUp(ids[0]!), 'the proposer died');
  t.equal(p1.config.acceptor.promised.m, ids[0], 'p1 promised p0');
  t.equal(p1.config.acceptor.accepted, undefined, 'nothing was accepted');
  t.equal(p1.config.vid, 3);
});

t.test('paxos breakpoint 4 (proposer breakpoint 2) fires after the accept majority, before any decide', async (t) => {
  const { cluster, ids } = await joined(3, 'bp4');
  const [p0, p1, p2] = ids.map((id) => cluster.node(id)!);
  p0!.breakpoint(4);
  const value = encodeView(ids.slice(0, 2));
  void p0!.config.proposer.run(4, ids, value);
  await cluster.runFor(5000);
  t.same(cluster.slot(ids[0]!).deaths, ['Dying at breakpoint 2!']);
  // The accept phase ends at the first majority (p0 and one of p1, p2): at least one accepted.
  t.ok([p1!, p2!].some((node) => node.config.acceptor.accepted?.v === value), 'accepted by a majority with p0');
  for (const node of [p1!, p2!]) t.equal(node.config.vid, 3, 'but not decided');
  // The survivors finish the instance with the accepted value, whatever they propose.
  t.equal(await resolved(cluster.world, p1!.config.proposer.run(4, ids.slice(0, 3), encodeView([ids[1]!, ids[2]!]))), true);
  t.equal(p1!.config.acceptor.value(4), value, 'the accepted value was adopted');
  t.same(cluster.checker.violations, []);
});

t.test('the proposer persists its round before sending prepares: a restart never reuses one', async (t) => {
  const { cluster, ids } = await joined(3, 'round');
  const p2 = cluster.node(ids[2]!)!;
  cluster.network.isolate(ids[2]!);
  for (let i = 0; i < 3; i++) t.equal(await resolved(cluster.world, p2.config.proposer.run(4, ids, encodeView(ids.slice(1)))), false);
  const rounds = cluster.slot(ids[2]!).log.lines.filter((line) => line.startsWith('propseen'));
  t.same(rounds, [`propseen 1 ${ids[2]}`, `propseen 2 ${ids[2]}`, `propseen 3 ${ids[2]}`]);
  // A commit resets the acceptor's promise, so only the persisted round keeps n growing.
  cluster.network.heal();
  await cluster.restart(ids[2]!);
  const again = cluster.node(ids[2]!)!;
  t.same(again.config.acceptor.promised, { n: 3, m: ids[2] }, 'the promise survived');
  await resolved(cluster.world, again.config.acceptor.commit(4, encodeView(ids)));
  t.same(again.config.acceptor.promised, PROPOSAL_ZERO);
  cluster.network.isolate(ids[2]!);
  await resolved(cluster.world, again.config.proposer.run(5, ids, encodeView(ids.slice(1))));
  t.equal(cluster.slot(ids[2]!).log.lines.at(-1), `propseen 4 ${ids[2]}`, 'round 4, not 1 again');
});

t.test('a lagging proposer learns the decided value from an oldinstance reply (and gives up)', async (t) => {
  const { cluster, ids } = await joined(3, 'oldinstance');
  const [p0, , p2] = ids.map((id) => cluster.node(id)!.config);
  cluster.network.isolate(ids[2]!);
  t.ok(await resolved(cluster.world, p0!.proposer.run(4, ids, encodeView(ids.slice(0, 2)))), 'view 4 without p2');
  cluster.network.heal();
  t.equal(p2!.vid, 3);
  t.equal(await resolved(cluster.world, p2!.proposer.run(4, ids, encodeView(ids.slice(1)))), false, 'its own proposal fails');
  t.equal(p2!.vid, 4, 'but it learned view 4');
  t.equal(p2!.acceptor.value(4), encodeView(ids.slice(0, 2)));
  t.same(cluster.checker.violations, []);
});

t.test('a round moves on at a majority: a silent member does not hold it to its RPC deadline', async (t) => {
  const { cluster, ids } = await joined(3, 'early-majority', { ...QUIET, paxosTimeoutMs: 60_000 } as typeof QUIET);
  const a = cluster.node(ids[0]!)!.config;
  cluster.network.isolate(ids[2]!); // no answer, no refusal: as a SIGSTOPped process
  const started = cluster.world.now();
  t.equal(await resolved(cluster.world, a.proposer.run(4, ids, encodeView(ids.slice(0, 2)))), true);
  t.ok(cluster.world.now() - started < 1_000, `decided after ${cluster.world.now() - started} virtual ms, not after the 60 s deadline`);
  t.equal(cluster.node(ids[1]!)!.config.vid, 4, 'the other accepter learned the decision');
  t.same(cluster.checker.violations, []);
});

t.test('a member that restarted since the proposer last called it still counts (OLDSRV: rebind and resend)', async (t) => {
  const { cluster, ids } = await joined(3, 'oldsrv');
  const a = cluster.node(ids[0]!)!.config;
  // Every node has talked to every other during the joins, so a's clients are bound to c's first instance.
  await cluster.restart(ids[2]!);
  cluster.network.isolate(ids[1]!); // a needs c's vote to reach a majority
  t.equal(await resolved(cluster.world, a.proposer.run(4, ids, encodeView([ids[0]!, ids[2]!]))), true, 'decided with the restarted node');
  t.same(cluster.checker.violations, []);
});
