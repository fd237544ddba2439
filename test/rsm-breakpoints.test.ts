/**
 * RSM breakpoints 1 and 2 and the armed partition (LAB.md §4.6, rsm_tester scenarios
 * 12–16) in the simulator, with a kv client running: the views that follow, the state every
 * replica ends with, and the client's retry deduplicated by the service.
 */
import t, { type Test } from 'tap';
import { doneEntries } from '../paxos/log-sink.js';
import { decodeView } from '../paxos/view.js';
import type { SimCluster } from '../tester/sim/cluster.js';
import { kvClient, kvCluster, settle, settledOn, stateDigests, valueAt } from './helpers/rsm.js';

function views(cluster: SimCluster, id: string): string[][] {
  return doneEntries(cluster.slot(id).log.lines).map((entry) => decodeView(entry.value) ?? []);
}

function oneState(t: Test, cluster: SimCluster): void {
  t.equal(new Set(stateDigests(cluster).values()).size, 1, 'every replica has the same state');
}

t.test('breakpoint 1 on the primary: it dies after the first backup executed; the retry is deduplicated', async (t) => {
  for (let round = 0; round < 5; round++) {
    const { cluster, ids, checker } = await kvCluster(`bp1-primary-${round}`);
    const [p0, p1, p2] = ids as [string, string, string];
    const kv = kvClient(cluster, 'c1');
    await settle(cluster, kv.append('k', 'a;'));
    const executedInView3 = new Set<string>();
    for (const id of [p1, p2]) cluster.node(id)!.onExecuted((e) => e.vs.vid === 3 && e.vs.seqno === 2 && executedInView3.add(id));
    t.equal(cluster.node(p0)!.breakpoint(1), 0);
    const result = await settle(cluster, kv.append('k', 'x;'));
    t.same(cluster.slot(p0).deaths, ['Dying at breakpoint 1 in rsm!'], 'the primary died mid-request');
    t.ok(executedInView3.size >= 1, `a backup executed 3.2 before the primary died (${[...executedInView3].join(',')})`);
    t.same(result.value, 'a;x;', 'the client got its reply from the new primary');
    t.same(views(cluster, p1).at(-1), [p1, p2], 'view 4 without p0');
    t.equal(valueAt(cluster, p1, 'k'), 'a;x;', 'executed once: the resend at 4.1 was answered from the service record');
    // p0 restarts with p1 as MASTER and rejoins; it catches up by state transfer.
    await cluster.start(p0, p1);
    t.ok(await settledOn(cluster, [p1, p2, p0]), cluster.describe());
    t.same(views(cluster, p0).at(-1), [p1, p2, p0], 'view 5: p0 appended');
    oneState(t, cluster);
    t.same(checker.violations, []);
  }
});

t.test('breakpoint 1 on a backup: it dies right after executing; the others go on without it', async (t) => {
  const { cluster, ids, checker } = await kvCluster('bp1-backup');
  const [p0, p1, p2] = ids as [string, string, string];
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.append('k', 'a;'));
  cluster.node(p2)!.breakpoint(1);
  const result = await settle(cluster, kv.append('k', 'x;'));
  t.same(cluster.slot(p2).deaths, ['Dying at breakpoint 1 in rsm!']);
  t.same(result.value, 'a;x;');
  t.same(views(cluster, p0).at(-1), [p0, p1], 'view 4 {p0,p1}');
  await cluster.start(p2);
  t.ok(await settledOn(cluster, [p0, p1, p2]), cluster.describe());
  t.equal(valueAt(cluster, p2, 'k'), 'a;x;');
  oneState(t, cluster);
  t.same(checker.violations, []);
});

t.test('breakpoint 2 on a backup (scenario 14): it dies committing the next view that contains it', async (t) => {
  const { cluster, ids, checker } = await kvCluster('bp2-backup', 5);
  const [p0, p1, p2, p3, p4] = ids as [string, string, string, string, string];
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.append('k', 'a;'));
  cluster.node(p4)!.breakpoint(1);
  cluster.node(p3)!.breakpoint(2);
  const result = await settle(cluster, kv.append('k', 'x;'), 120_000);
  t.same(result.value, 'a;x;');
  t.ok(await settledOn(cluster, [p0, p1, p2]), cluster.describe());
  t.same(cluster.slot(p4).deaths, ['Dying at breakpoint 1 in rsm!']);
  t.same(cluster.slot(p3).deaths, ['Dying at breakpoint 2 in rsm!']);
  const seen = views(cluster, p0).slice(5);
  t.same(seen, [[p0, p1, p2, p3], [p0, p1, p2]], 'view 6 without p4 (p3 dies committing it), view 7 without p3');
  oneState(t, cluster);
  t.same(checker.violations, []);
});

t.test('breakpoint 2 on the primary (scenario 15): it dies committing view 6; p1 takes over', async (t) => {
  const { cluster, ids, checker } = await kvCluster('bp2-primary', 5);
  const [p0, p1, p2, p3, p4] = ids as [string, string, string, string, string];
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.append('k', 'a;'));
  cluster.node(p4)!.breakpoint(1);
  cluster.node(p0)!.breakpoint(2);
  const result = await settle(cluster, kv.append('k', 'x;'), 120_000);
  t.same(result.value, 'a;x;');
  t.ok(await settledOn(cluster, [p1, p2, p3]), cluster.describe());
  t.same(cluster.slot(p0).deaths, ['Dying at breakpoint 2 in rsm!']);
  t.same(views(cluster, p1).slice(5), [[p0, p1, p2, p3], [p1, p2, p3]], 'view 6, then view 7 without p0');
  t.equal(cluster.node(p2)!.primary, p1, 'the first survivor of view 6 is primary');
  oneState(t, cluster);
  t.same(checker.violations, []);
});

t.test('partition (scenario 16): the primary is cut off at its next request, the others go on, healing brings it back', async (t) => {
  const { cluster, ids, checker } = await kvCluster('partition-primary');
  const [p0, p1, p2] = ids as [string, string, string];
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.append('k', 'a;'));
  t.equal(cluster.node(p0)!.netRepair(0), 0);
  t.notOk(cluster.node(p0)!.isPartitioned, 'net_repair 0 only arms');
  const result = await settle(cluster, kv.append('k', 'x;'));
  t.ok(cluster.node(p0)!.isPartitioned, 'cut at its next request');
  t.same(result.value, 'a;x;', 'the client found the new primary');
  t.same(views(cluster, p1).at(-1), [p1, p2], 'view 4 without p0');
  await settle(cluster, kv.append('k', 'y;'));
  t.equal(cluster.node(p0)!.netRepair(1), 0);
  t.ok(await settledOn(cluster, [p1, p2, p0]), cluster.describe());
  t.same(views(cluster, p0).at(-1), [p1, p2, p0], 'view 5: p0 rejoined, appended last');
  t.equal(valueAt(cluster, p0, 'k'), 'a;x;y;', 'and caught up by state transfer');
  oneState(t, cluster);
  t.same(checker.violations, []);
});
