/**
 * The kv service replicated by the RSM in the simulator: the same requests in the same order on
 * every replica, state transfer to joiners, durable replica state across restarts, and the
 * service's duplicate suppression.
 */
import t from 'tap';
import { KvProc, KvStatus, encodeKvRequest } from '../rsm/kv/kv-service.js';
import { kvClient, kvCluster, settle, settledOn, stateDigests, valueAt } from './helpers/rsm.js';

t.test('concurrent clients over a lossy network: every append once, every replica the same state', async (t) => {
  const { cluster, ids, checker } = await kvCluster('kv-concurrent', 3, { lossy: true });
  const clients = ['c1', 'c2', 'c3'].map((name) => kvClient(cluster, name));
  const work = clients.map(async (kv) => {
    const values: string[] = [];
    for (let i = 1; i <= 10; i++) values.push((await kv.append('k', `${kv.clientId}.${i};`)).value);
    return values;
  });
  const results = await settle(cluster, Promise.all(work), 120_000);
  t.ok(await settledOn(cluster, ids), cluster.describe());
  const final = valueAt(cluster, ids[0]!, 'k')!;
  const tokens = final.split(';').filter((x) => x !== '');
  t.equal(tokens.length, 30, 'thirty appends');
  t.equal(new Set(tokens).size, 30, 'each exactly once');
  for (const [i, values] of results.entries()) {
    // Each client's own appends appear in its order, and each reply is a prefix of the final value.
    const mine = tokens.filter((x) => x.startsWith(`c${i + 1}.`));
    t.same(mine, Array.from({ length: 10 }, (_, j) => `c${i + 1}.${j + 1}`), `c${i + 1} in order`);
    t.ok(values.every((value) => final.startsWith(value)), `c${i + 1}: every reply is a prefix of the final value`);
  }
  t.equal(new Set(stateDigests(cluster).values()).size, 1, 'one state');
  t.same(checker.violations, []);
});

t.test('a joiner gets the state by transfer', async (t) => {
  const { cluster, ids, checker } = await kvCluster('kv-join', 3);
  cluster.crash(ids[2]!);
  t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(0, 2)), 20_000));
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.put('x', '1'));
  await settle(cluster, kv.append('x', '2'));
  // p2 restarts with its durable state of view 3 (before the puts), is outside view 4, rejoins.
  await cluster.start(ids[2]!);
  t.ok(await settledOn(cluster, ids), cluster.describe());
  t.equal(valueAt(cluster, ids[2]!, 'x'), '12');
  t.ok(checker.transfers >= 1, 'by state transfer');
  t.same(checker.violations, []);
});

t.test('a primary restarted inside its view resumes it: no view change, no viewstamp given twice', async (t) => {
  const { cluster, ids, checker } = await kvCluster('kv-primary-restart', 3);
  const kv = kvClient(cluster, 'c1');
  for (let i = 1; i <= 3; i++) await settle(cluster, kv.append('k', `${i};`));
  const before = cluster.node(ids[0]!)!.lastExecuted;
  await cluster.restart(ids[0]!);
  t.same(cluster.node(ids[0]!)!.lastExecuted, before, 'restored from its durable record');
  for (let i = 4; i <= 6; i++) await settle(cluster, kv.append('k', `${i};`));
  t.ok(await settledOn(cluster, ids), cluster.describe());
  t.equal(cluster.node(ids[0]!)!.config.vid, 3, 'still view 3');
  t.same(cluster.node(ids[0]!)!.lastExecuted, { vid: 3, seqno: 6 }, 'the stamps go on: 3.4, 3.5, 3.6');
  t.equal(valueAt(cluster, ids[1]!, 'k'), '1;2;3;4;5;6;');
  t.same(checker.violations, []);
});

t.test('every replica crashes at once: nothing acknowledged is lost (the replica state is durable)', async (t) => {
  const { cluster, ids, checker } = await kvCluster('kv-all-crash', 3);
  const kv = kvClient(cluster, 'c1');
  for (let i = 1; i <= 5; i++) await settle(cluster, kv.append('k', `${i};`));
  for (const id of ids) cluster.crash(id);
  for (const id of ids) await cluster.start(id);
  const result = await settle(cluster, kv.append('k', '6;'));
  t.same(result, { status: KvStatus.OK, value: '1;2;3;4;5;6;', seq: 6 });
  t.ok(await settledOn(cluster, ids), cluster.describe());
  t.equal(new Set(stateDigests(cluster).values()).size, 1);
  t.same(checker.violations, []);
});

t.test('the service answers a resent request from its record, without executing it again', async (t) => {
  const { cluster, ids } = await kvCluster('kv-dedup', 3);
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.append('k', 'a;'));
  // The same request (client c1, seq 1) again, as a resend to a new primary would be.
  const again = await settle(cluster, kv.rsm.invoke(KvProc.APPEND, encodeKvRequest({ client: 'c1', seq: 1, key: 'k', value: 'a;' })));
  t.equal(again.status, KvStatus.OK);
  t.ok(await settledOn(cluster, ids));
  t.equal(valueAt(cluster, ids[2]!, 'k'), 'a;', 'executed once');
});
