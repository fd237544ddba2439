/**
 * Cluster ids on the Paxos messages (paxos/README.md, "Cluster identity"): a node refuses
 * preparereq, acceptreq, decidereq and heartbeat from a node of another cluster (CLUSTER_MISMATCH)
 * or with a malformed cluster field (CLUSTER_INVALID), changes nothing, logs once per peer, and
 * never throws; a sender counts such a refusal as no vote and reports it. Two clusters whose nodes
 * reach each other never mix views, whatever one sends the other.
 */
import t from 'tap';
import { RpcEndpoint, type RpcReply } from '../lib/rpc.js';
import { SimDisk, SimNetwork, SimWorld, simEnv } from '../lib/sim/index.js';
import { ClusterIdentity, QuorumWatch } from '../paxos/identity.js';
import { putClusterId } from '../paxos/store.js';
import { PROPOSAL_ZERO, PaxosStatus, acceptreq, decidereq, heartbeat, preparereq } from '../paxos/messages.js';
import { encodeView } from '../paxos/view.js';
import { SimCluster, portIds } from '../tester/sim/cluster.js';
import { resolved } from './helpers/sim.js';

const TIMING = { heartbeatIntervalMs: 500, heartbeatTimeoutMs: 500, paxosTimeoutMs: 500, removeJitterMsMax: 100, joinRetryMs: 500, joinTimeoutMs: 3000, syncRetryMs: 500 };
const A = 'cAAAAAAAAAAAA';
const B = 'cBBBBBBBBBBBB';

async function formed(cluster: SimCluster, ids: readonly string[], master = ids[0]!): Promise<void> {
  for (let i = 0; i < ids.length; i++) {
    await cluster.start(ids[i]!, master);
    if (!(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 30_000))) throw new Error(cluster.describe());
  }
}

/** What a node's Paxos state looks like from outside: history, promise, accept. */
function paxosState(cluster: SimCluster, id: string): string {
  const config = cluster.node(id)!.config;
  return JSON.stringify({ history: config.history(), promised: config.acceptor.promised, accepted: config.acceptor.accepted ?? null });
}

/** A bare RPC endpoint at `address` in the cluster's world (a node of another cluster, or worse). */
async function outsider(cluster: SimCluster, address: string): Promise<RpcEndpoint> {
  const env = simEnv(cluster.world, cluster.network, address);
  return new RpcEndpoint(await env.network.listen(address), env.clock, env.random.fork());
}

t.test('config refuses every Paxos message and heartbeat of another cluster, changing nothing, logging once per peer', async (t) => {
  const ids = portIds(3);
  const cluster = new SimCluster({ seed: 'gate', ids, timing: TIMING, clusterId: A });
  await formed(cluster, ids);
  const target = ids[1]!;
  const refusals: string[] = [];
  cluster.node(target)!.config.clusterRefusalListener = (line) => refusals.push(line);
  // An accepted proposal in the open instance, so a refused message could show if it touched it.
  const config = cluster.node(target)!.config;
  const open = config.vid + 1;
  await resolved(cluster.world, config.acceptor.onAccept({ src: ids[0]!, instance: open, n: { n: 50, m: ids[0]! }, v: encodeView(ids) }));
  const before = paxosState(cluster, target);
  const b = await outsider(cluster, '3790');
  const go = <R>(promise: Promise<RpcReply<R>>): Promise<unknown[]> =>
    resolved(cluster.world, promise).then((reply) => (reply.ok ? [reply.status, reply.result] : [reply.error.code]));
  const opts = { timeoutMs: 2000 };

  for (let round = 0; round < 3; round++) {
    const refused = { oldinstance: false, accept: false, n_a: PROPOSAL_ZERO, v_a: '' };
    t.same(await go(b.call(target, preparereq, { src: '3790', cluster: B, instance: open, n: { n: 1000, m: '3790' } }, opts)), [PaxosStatus.CLUSTER_MISMATCH, refused], 'prepare refused, revealing nothing');
    t.same(await go(b.call(target, preparereq, { src: '3790', cluster: B, instance: 1, n: PROPOSAL_ZERO }, opts)), [PaxosStatus.CLUSTER_MISMATCH, refused], 'no decided value either (no catch-up across clusters)');
    t.same(await go(b.call(target, acceptreq, { src: '3790', cluster: B, instance: open, n: { n: 1000, m: '3790' }, v: encodeView(['3790']) }, opts)), [PaxosStatus.CLUSTER_MISMATCH, false]);
    t.same(await go(b.call(target, decidereq, { src: '3790', cluster: B, instance: open, v: encodeView(['3790']) }, opts)), [PaxosStatus.CLUSTER_MISMATCH, 0]);
    t.same(await go(b.call(target, decidereq, { src: '3790', cluster: B, instance: open + 5, v: encodeView(['3790']) }, opts)), [PaxosStatus.CLUSTER_MISMATCH, 0], 'a decide far ahead starts no catch-up from the outsider');
    t.same(await go(b.call(target, heartbeat, { me: '3790', cluster: B, vid: 1000 }, opts)), [PaxosStatus.CLUSTER_MISMATCH, 0], 'heartbeat refused; the vid is not revealed');
  }
  await cluster.runFor(3000);
  t.equal(paxosState(cluster, target), before, 'the refused messages changed nothing');
  t.same(refusals, [`refusing preparereq from 3790: it is in cluster ${B}, this node is in cluster ${A}`], 'logged once for the peer');

  // Unknown on either side passes (a fresh joiner): the same heartbeat from "" is answered.
  t.same(await go(b.call(target, heartbeat, { me: '3790', cluster: '', vid: config.vid }, opts)), [PaxosStatus.OK, config.vid]);
  const same = await go(b.call(target, preparereq, { src: '3790', cluster: A, instance: 1, n: PROPOSAL_ZERO }, opts));
  t.same([same[0], (same[1] as { oldinstance: boolean }).oldinstance], [PaxosStatus.OK, true], 'a node of the same cluster is answered');
  // A peer refused again after it was answered normally is logged again (a new episode).
  await go(b.call(target, heartbeat, { me: '3790', cluster: B, vid: 1 }, opts));
  t.equal(refusals.length, 2);
  t.same(cluster.fatalErrors, []);
  t.same(cluster.checker.violations, []);
});

t.test('a malformed cluster field is refused with a status, never a crash', async (t) => {
  const ids = portIds(3);
  const cluster = new SimCluster({ seed: 'bad-field', ids, timing: TIMING, clusterId: A });
  await formed(cluster, ids);
  const before = ids.map((id) => paxosState(cluster, id));
  const x = await outsider(cluster, '3790');
  for (const junk of ['c A', 'x'.repeat(65), 'y'.repeat(256), '\u0000\u0001', 'c\u00e9', 'c\n']) {
    for (const mine of [ids[0]!, ids[2]!]) {
      const prepare = await resolved(cluster.world, x.call(mine, preparereq, { src: '3790', cluster: junk, instance: 4, n: { n: 99, m: '3790' } }, { timeoutMs: 2000 }));
      t.same(prepare.ok && prepare.status, PaxosStatus.CLUSTER_INVALID, `prepare with ${JSON.stringify(junk.slice(0, 10))}`);
      const beat = await resolved(cluster.world, x.call(mine, heartbeat, { me: '3790', cluster: junk, vid: 99 }, { timeoutMs: 2000 }));
      t.same(beat.ok && beat.status, PaxosStatus.CLUSTER_INVALID);
      const accept = await resolved(cluster.world, x.call(mine, acceptreq, { src: '3790', cluster: junk, instance: 4, n: { n: 99, m: '3790' }, v: '3790 ' }, { timeoutMs: 2000 }));
      t.same(accept.ok && accept.status, PaxosStatus.CLUSTER_INVALID);
    }
  }
  // A sender id with a line break is quoted in the log line, never printed raw.
  const lines: string[] = [];
  cluster.node(ids[1]!)!.config.clusterRefusalListener = (line) => lines.push(line);
  const forged = await resolved(cluster.world, x.call(ids[1]!, heartbeat, { me: '3790\nreplica 3772: fake line', cluster: B, vid: 1 }, { timeoutMs: 2000 }));
  t.same(forged.ok && forged.status, PaxosStatus.CLUSTER_MISMATCH);
  t.same(lines, [`refusing heartbeat from "3790\\nreplica 3772: fake line": it is in cluster ${B}, this node is in cluster ${A}`]);
  // Longer than any field may be on the wire: the RPC layer refuses it (the handler never runs).
  const huge = await resolved(cluster.world, x.call(ids[0]!, decidereq, { src: '3790', cluster: 'z'.repeat(257), instance: 4, v: '3790 ' }, { timeoutMs: 2000 }));
  t.same(huge.ok ? huge.status : huge.error.code, 'RPC_BAD_ARGS');
  await cluster.runFor(3000);
  t.same(ids.map((id) => paxosState(cluster, id)), before, 'nothing changed anywhere');
  t.same(cluster.fatalErrors, []);
  t.ok(cluster.converged(), 'the cluster kept its view');
});

t.test('a sender counts a mismatch as no vote and reports it once per peer', async (t) => {
  // Two clusters in one world: A on 3772.., B on 3780.., both reachable from each other.
  const aIds = portIds(3, 3772);
  const bIds = portIds(3, 3780);
  const a = new SimCluster({ seed: 'sender', ids: aIds, timing: TIMING, clusterId: A });
  const b = new SimCluster({ seed: 'unused', ids: bIds, timing: TIMING, clusterId: B, shareWith: a });
  await formed(a, aIds);
  await formed(b, bIds);
  const aBefore = aIds.map((id) => paxosState(a, id));
  const proposer = b.node(bIds[0]!)!.config;
  const reported: string[] = [];
  proposer.clusterMismatchListener = (peer) => reported.push(peer);
  // B's node proposes a view among A's nodes (as a node whose view named them would).
  for (let i = 0; i < 3; i++) {
    t.equal(await resolved(a.world, proposer.proposer.run(proposer.vid + 1, [...aIds, bIds[0]!], encodeView([bIds[0]!]))), false, 'no majority: every A node refused');
  }
  // Catch-up from an A node learns nothing.
  const vidB = proposer.vid;
  await resolved(a.world, proposer.catchUp(aIds[0]!));
  t.equal(proposer.vid, vidB);
  t.same(reported.sort(), [...aIds].sort(), 'each A node reported once, though refused many times');
  await a.runFor(5000);
  t.same(aIds.map((id) => paxosState(a, id)), aBefore, "A's views, promises and accepts are unchanged");
  t.ok(a.converged(aIds) && b.converged(bIds));
  for (const id of aIds) t.equal(a.node(id)!.config.viewCluster(), A);
  for (const id of bIds) t.equal(b.node(id)!.config.viewCluster(), B);
  t.same([...a.checker.violations, ...b.checker.violations, ...a.fatalErrors, ...b.fatalErrors], []);
});

t.test('two clusters that reach each other never mix views, under faults and a stream of cross-cluster messages', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const aIds = portIds(3, 3772);
    const bIds = portIds(3, 3780);
    const a = new SimCluster({ seed: `mix-${seed}`, ids: aIds, timing: TIMING, clusterId: A });
    const b = new SimCluster({ seed: 'unused', ids: bIds, timing: TIMING, clusterId: B, shareWith: a });
    await formed(a, aIds);
    await formed(b, bIds);
    const random = a.world.random;
    let refusals = 0;
    let mismatches = 0;
    for (const id of [...aIds, ...bIds]) {
      const config = (aIds.includes(id) ? a : b).node(id)!.config;
      config.clusterRefusalListener = () => refusals++;
      config.clusterMismatchListener = () => mismatches++;
    }
    a.network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 50, loss: 0.05, duplicate: 0.05 });
    const all = [...aIds, ...bIds];
    const clusterOf = (id: string): SimCluster => (aIds.includes(id) ? a : b);
    const sent: Array<Promise<unknown>> = [];
    const end = a.world.now() + 30_000;
    while (a.world.now() < end) {
      await a.runFor(50 + random.int(300));
      // A node of one cluster sends a real-looking Paxos message or heartbeat to the other's.
      const from = all[random.int(all.length)]!;
      const others = aIds.includes(from) ? bIds : aIds;
      const to = others[random.int(others.length)]!;
      const source = clusterOf(from);
      const rpc = source.slot(from).rpc;
      if (rpc === undefined) continue;
      const config = source.node(from)!.config;
      const cluster = config.cluster;
      const instance = Math.max(1, config.vid + random.int(3) - 1);
      const n = { n: 1 + random.int(1000), m: from };
      const v = encodeView(aIds.includes(from) ? aIds : bIds);
      switch (random.int(6)) {
        case 0: sent.push(rpc.call(to, preparereq, { src: from, cluster, instance, n })); break;
        case 1: sent.push(rpc.call(to, acceptreq, { src: from, cluster, instance, n, v })); break;
        case 2: sent.push(rpc.call(to, decidereq, { src: from, cluster, instance, v })); break;
        case 3: sent.push(rpc.call(to, heartbeat, { me: from, cluster, vid: config.vid + random.int(5) })); break;
        case 4: sent.push(config.catchUp(to)); break;
        default: sent.push(config.proposer.run(config.vid + 1, [...others], v)); break;
      }
      // Now and then a member of either cluster crashes and comes back.
      if (random.int(40) === 0) {
        const victim = all[random.int(all.length)]!;
        const owner = clusterOf(victim);
        if (owner.isUp(victim)) owner.crash(victim);
        a.world.schedule(100 + random.int(1000), () => void owner.start(victim).catch(() => {}));
      }
    }
    a.network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 5, loss: 0, duplicate: 0 });
    for (const id of aIds) if (!a.isUp(id)) await a.start(id);
    for (const id of bIds) if (!b.isUp(id)) await b.start(id);
    t.ok(await a.runUntil(() => a.converged(aIds) && b.converged(bIds), 120_000), `seed ${seed}: both converge (${a.describe()} | ${b.describe()})`);
    a.checkHistories();
    b.checkHistories();
    t.same([...a.checker.violations, ...b.checker.violations], [], `seed ${seed}: each cluster agrees with itself`);
    for (const [owner, ids, own, id] of [[a, aIds, bIds, A], [b, bIds, aIds, B]] as const) {
      for (const node of ids) {
        const config = owner.node(node)!.config;
        for (const entry of config.history()) {
          const members = entry.value.trim().split(' ');
          t.ok(members.every((member) => !own.includes(member)), `seed ${seed}: ${node} view ${entry.instance} {${members}} holds only its own cluster's nodes`);
          t.equal(config.viewCluster(entry.instance), id);
        }
      }
    }
    t.same([...a.fatalErrors, ...b.fatalErrors], [], `seed ${seed}: nothing threw`);
    t.ok(refusals > 0 && mismatches > 0, `seed ${seed}: messages were refused (${refusals} peers logged, ${mismatches} reported)`);
    for (const id of all) if (clusterOf(id).isUp(id)) clusterOf(id).crash(id);
    void Promise.allSettled(sent);
  }
});

t.test("a node of another cluster on a member's port (a stale data directory) is refused and removed; neither cluster takes the other's views", async (t) => {
  // Cluster B forms on 3776, 3778, 3780, then loses 3776 (crashed; B removes it).
  const bIds = ['3776', '3778', '3780'];
  const aIds = ['3772', '3774', '3776'];
  const a = new SimCluster({ seed: 'takeover', ids: aIds, timing: TIMING, clusterId: A });
  const b = new SimCluster({ seed: 'unused', ids: bIds, timing: TIMING, clusterId: B, shareWith: a });
  await formed(b, bIds);
  b.crash('3776');
  t.ok(await b.runUntil(() => b.converged(['3778', '3780']), 30_000), 'B removed 3776');
  // Cluster A forms on 3772, 3774 and 3776 (its own 3776, with its own storage).
  await formed(a, aIds);
  const aHistory = a.node('3772')!.config.history();
  // A's 3776 goes down, and B's 3776 comes up on the same address with B's data.
  a.crash('3776');
  const mismatches: string[] = [];
  const refusals: string[] = [];
  for (const id of ['3772', '3774']) {
    a.node(id)!.config.clusterMismatchListener = (peer) => mismatches.push(`${id}→${peer}`);
    a.node(id)!.config.clusterRefusalListener = (line) => refusals.push(`${id}: ${line}`);
  }
  await b.start('3776', '3778');
  t.ok(await a.runUntil(() => a.converged(['3772', '3774']) && b.converged(bIds), 60_000), `A removed the impostor, B took its node back (${a.describe()} | ${b.describe()})`);
  t.ok(mismatches.some((m) => m.endsWith('→3776')), `A saw 3776 refuse it (${mismatches.join(', ')})`);
  const aNow = a.node('3772')!.config.history();
  t.same(aNow.slice(0, aHistory.length), aHistory, "A's earlier views are untouched");
  t.same(aNow.slice(aHistory.length).map((entry) => entry.value), [encodeView(['3772', '3774'])], 'A decided one more view: the removal of 3776');
  for (const id of ['3778', '3780', '3776']) {
    for (const entry of b.node(id)!.config.history()) t.notOk(/377[24]/.test(entry.value), `B's ${id} view ${entry.instance} has no A node`);
  }
  // B's 3776 goes away and A's comes back: A readmits its own node.
  b.crash('3776');
  t.ok(await b.runUntil(() => b.converged(['3778', '3780']), 60_000));
  await a.start('3776');
  t.ok(await a.runUntil(() => a.converged(aIds), 60_000), `A took its own 3776 back (${a.describe()})`);
  a.checkHistories();
  b.checkHistories();
  t.same([...a.checker.violations, ...b.checker.violations, ...a.fatalErrors, ...b.fatalErrors], []);
  for (const id of aIds) for (const entry of a.node(id)!.config.history()) t.equal(a.node(id)!.config.viewCluster(entry.instance), A);
});

t.test("QuorumWatch.peerMismatch: an unconfirmed node stops with the message naming its data directory; a confirmed one keeps running", async (t) => {
  const world = new SimWorld('peer-mismatch');
  const network = new SimNetwork(world);
  const disk = new SimDisk(world);
  const node = async (id: string, first: string, cluster?: string): Promise<ClusterIdentity> => {
    const env = simEnv(world, network, id);
    const storage = disk.open(id);
    if (cluster !== undefined) await storage.write([putClusterId(cluster)], { sync: true });
    const rpc = new RpcEndpoint(await env.network.listen(id), env.clock, env.random.fork());
    const identity = await ClusterIdentity.open({ me: id, first, storage, random: env.random.fork(), rpc, dataPath: `data/${id}` });
    identity.register(rpc);
    return identity;
  };
  await node('3772', '3772', A);
  const stranger = await node('3776', '3772', B);
  for (const confirmed of [false, true]) {
    const said: string[] = [];
    const stops: string[] = [];
    const watch = new QuorumWatch(
      {
        me: '3776',
        identity: stranger,
        clock: simEnv(world, network, '3776').clock,
        wallNow: () => 0,
        view: () => ({ vid: 3, members: ['3776'] }),
        intervalMs: 1e9,
        say: (line) => said.push(line),
        onMismatch: (error) => stops.push(`${error.code}: ${error.message}`),
      },
      confirmed,
    );
    await resolved(world, watch.peerMismatch('3772'));
    if (confirmed) {
      t.same(stops, [], 'a confirmed node does not stop: the peer is the one in the wrong place');
      t.match(said, [/3772 refused this node as another cluster's/]);
    } else {
      t.equal(stops.length, 1);
      t.match(stops[0], new RegExp(`CLUSTER_MISMATCH: data directory data/3776 belongs to cluster ${B}, but 3772 is in cluster ${A}`));
    }
    watch.stop();
  }
});
