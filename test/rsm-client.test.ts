/**
 * The RSM client against simulated replica groups: finding the primary, NOTPRIMARY and BUSY,
 * failing over when the primary dies, never running out of candidates, and its errors.
 */
import t from 'tap';
import { RpcEndpoint } from '../lib/rpc.js';
import { RpcError } from '../lib/errors.js';
import { rsmClientProtocol } from '../rsm/protocol.js';
import { RsmError } from '../rsm/errors.js';
import { RsmClient } from '../rsm/client.js';
import { KvProc, KvStatus, decodeKvReply, encodeKvRequest } from '../rsm/kv/kv-service.js';
import { EMPTY_MACHINE_STATUS } from '../rsm/state-machine.js';
import { SimCluster, portIds } from '../tester/sim/cluster.js';
import { kvClient, kvCluster, rsmClient, settle, settledOn, valueAt } from './helpers/rsm.js';

const request = (client: string, seq: number, key: string, value: string): Uint8Array => encodeKvRequest({ client, seq, key, value });

t.test('a client that knows only a backup learns the primary from it (members, primary last)', async (t) => {
  const { cluster, ids } = await kvCluster('client-redirect');
  const client = rsmClient(cluster, 'c1', { knownMembers: [ids[2]!] });
  const reply = await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'v')));
  t.equal(reply.status, KvStatus.OK);
  t.same(decodeKvReply(reply.reply), { ok: true, value: 'v' });
  t.equal(client.primary, ids[0], 'the primary is the last of the members reply');
  t.same([...client.knownMembers].sort(), [...ids].sort(), 'it learned every member');
  t.ok(await settledOn(cluster, ids), 'the idle primary tells its backups the commit point');
  t.equal(valueAt(cluster, ids[1]!, 'k'), 'v', 'the backups executed it too');
});

t.test('NOTPRIMARY from a former primary: the client asks it for the members and goes to the primary it names', async (t) => {
  const { cluster, ids, checker } = await kvCluster('client-notprimary');
  const [p0, p1, p2] = ids as [string, string, string];
  const client = rsmClient(cluster, 'c1');
  await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'a')));
  t.equal(client.primary, p0);
  // p0 is cut off, removed, and rejoins as a backup; the client still believes in it.
  cluster.network.isolate(p0);
  t.ok(await cluster.runUntil(() => cluster.converged([p1, p2]), 20_000), cluster.describe());
  cluster.network.heal();
  t.ok(await settledOn(cluster, [p1, p2, p0]), cluster.describe());
  const reply = await settle(cluster, client.invoke(KvProc.APPEND, request('c1', 2, 'k', 'b')));
  t.same(decodeKvReply(reply.reply), { ok: true, value: 'ab' });
  t.equal(client.stats.notPrimary, 1, 'one NOTPRIMARY, then straight to the primary');
  t.equal(client.primary, p1);
  t.same(checker.violations, []);
});

t.test('open asks the known members for the view first', async (t) => {
  const { cluster, ids } = await kvCluster('client-open');
  const rpc = new RpcEndpoint(cluster.network.forOwner('c1').connect(), cluster.world.clockFor('c1'), cluster.world.random.fork());
  const client = await settle(cluster, RsmClient.open({ rpc, knownMembers: ids[1]! }));
  t.equal(client.primary, ids[0]);
  await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'v')));
  t.equal(client.stats.notPrimary, 0, 'no detour');
});

t.test('BUSY while a backup cannot be reached: the client backs off and retries until the view changes', async (t) => {
  const { cluster, ids, checker } = await kvCluster('client-busy');
  const client = rsmClient(cluster, 'c1');
  await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'a')));
  cluster.network.isolate(ids[2]!);
  const reply = await settle(cluster, client.invoke(KvProc.APPEND, request('c1', 2, 'k', 'b')));
  t.same(decodeKvReply(reply.reply), { ok: true, value: 'ab' });
  t.ok(client.stats.busy >= 1, `BUSY answers: ${client.stats.busy}`);
  t.same(cluster.node(ids[0]!)!.config.members(), [ids[0], ids[1]], 'the unreachable backup was removed');
  t.same(checker.violations, []);
});

t.test('the primary dies: the client moves on and finds the new primary', async (t) => {
  const { cluster, ids, checker } = await kvCluster('client-failover');
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, kv.put('k', 'a;'));
  cluster.crash(ids[0]!);
  const result = await settle(cluster, kv.append('k', 'b;'));
  t.same(result, { status: KvStatus.OK, value: 'a;b;', seq: 2 });
  t.equal(kv.rsm.primary, ids[1], 'the first survivor is the new primary');
  t.ok(kv.rsm.stats.primaryFailures >= 1);
  t.same(checker.violations, []);
});

t.test('a client that knew only the master still finds the primary after the master dies', async (t) => {
  const { cluster, ids } = await kvCluster('client-master-dies', 4);
  const kv = kvClient(cluster, 'c1', { knownMembers: [ids[0]!] });
  await settle(cluster, kv.put('k', 'a;'));
  t.same([...kv.rsm.knownMembers].sort(), [...ids].sort(), 'the members reply taught it the others');
  cluster.crash(ids[0]!);
  cluster.crash(ids[1]!); // the next primary in line too; 2 of 4 cannot form a view…
  await cluster.start(ids[1]!); // …until it returns (it resumes with its durable state)
  const result = await settle(cluster, kv.append('k', 'b;'));
  t.same(result.value, 'a;b;');
  t.ok(await settledOn(cluster, [ids[1]!, ids[2]!, ids[3]!]), cluster.describe());
});

t.test('errors: RSM_NO_QUORUM, RSM_ABORTED, RSM_CLOSED, RSM_NO_MEMBERS', async (t) => {
  const { cluster, ids } = await kvCluster('client-errors');
  for (const id of ids) cluster.crash(id);
  const client = rsmClient(cluster, 'c1');
  const failure = (promise: Promise<unknown>): Promise<unknown> => settle(cluster, promise.then(() => undefined, (error: unknown) => error));

  const started = cluster.world.now();
  const timedOut = await failure(client.invoke(KvProc.GET, request('c1', 1, 'k', ''), { timeoutMs: 3000 }));
  t.ok(timedOut instanceof RsmError && timedOut.code === 'RSM_NO_QUORUM', String(timedOut));
  t.match((timedOut as RsmError).message, /no primary answered within 3\d\d\d ms; tried .*RPC_UNREACHABLE/, 'it says what it tried');
  t.ok((timedOut as RsmError).cause !== undefined, 'the last failure is the cause');
  const elapsed = cluster.world.now() - started;
  t.ok(elapsed >= 3000 && elapsed < 3100, `gave up at the deadline (${elapsed} ms)`);

  const controller = new AbortController();
  cluster.world.schedule(700, () => controller.abort(new Error('enough')));
  const aborted = await failure(client.invoke(KvProc.GET, request('c1', 2, 'k', ''), { signal: controller.signal }));
  t.ok(aborted instanceof RsmError && aborted.code === 'RSM_ABORTED', String(aborted));

  cluster.world.schedule(700, () => client.close());
  const closed = await failure(client.invoke(KvProc.GET, request('c1', 3, 'k', '')));
  t.ok(closed instanceof RsmError && closed.code === 'RSM_CLOSED', String(closed));
  const afterClose = await failure(client.invoke(KvProc.GET, request('c1', 4, 'k', '')));
  t.ok(afterClose instanceof RsmError && afterClose.code === 'RSM_CLOSED', 'refused after close');

  const nobody = rsmClient(cluster, 'c2', { knownMembers: [] });
  const none = await failure(nobody.invoke(KvProc.GET, request('c2', 1, 'k', '')));
  t.ok(none instanceof RsmError && none.code === 'RSM_NO_MEMBERS', String(none));
});

t.test('a replica without a service (the default EmptyStateMachine) answers every request EMPTY_MACHINE_STATUS', async (t) => {
  const ids = portIds(2);
  const cluster = new SimCluster({ seed: 'client-empty', ids });
  for (let i = 0; i < ids.length; i++) {
    await cluster.start(ids[i]!);
    t.ok(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 20_000));
  }
  const client = rsmClient(cluster, 'c1');
  const reply = await settle(cluster, client.invoke(7, Uint8Array.of(1, 2, 3)));
  t.same(reply, { status: EMPTY_MACHINE_STATUS, reply: new Uint8Array(0) });
  t.ok(await settledOn(cluster, ids), 'the idle primary tells its backup the commit point');
  t.same(cluster.node(ids[1]!)!.lastExecuted, { vid: 2, seqno: 1 }, 'it was still ordered and executed on the backup');
});

t.test('one RsmClient shared by 40 concurrent invokes: all complete across a primary crash, with searches shared', async (t) => {
  const { cluster, ids, checker } = await kvCluster('client-concurrent');
  const client = rsmClient(cluster, 'c1');
  const first = await settle(cluster, Promise.all(Array.from({ length: 20 }, (_, i) => client.invoke(KvProc.PUT, request(`w${i}`, 1, `k${i}`, 'a')))));
  t.ok(first.every((reply) => reply.status === KvStatus.OK), 'the first 20 all answered OK');
  const refreshesBefore = client.stats.refreshes;
  const failuresBefore = client.stats.primaryFailures;
  cluster.crash(ids[0]!);
  const second = await settle(cluster, Promise.all(Array.from({ length: 20 }, (_, i) => client.invoke(KvProc.APPEND, request(`w${i}`, 2, `k${i}`, 'b')))));
  t.ok(second.every((reply) => reply.status === KvStatus.OK), 'the 20 invokes after the crash all answered OK');
  for (let i = 0; i < 20; i++) t.equal(valueAt(cluster, ids[1]!, `k${i}`), 'ab', `k${i} got both writes once`);
  t.equal(client.primary, ids[1]);
  // Each round of the outage fails all 20 invokes at the dead primary; sharing means one search
  // per round or so, never one per failed call. (How many rounds there are depends on how long the view
  // change takes, so the count of searches alone says nothing.)
  const searches = client.stats.refreshes - refreshesBefore;
  const failures = client.stats.primaryFailures - failuresBefore;
  t.ok(failures >= 20, `every invoke failed at the dead primary at least once (${failures} failed calls)`);
  t.ok(searches * 3 <= failures, `the waiting invokes shared their searches (${searches} members answers adopted for ${failures} failed calls)`);
  t.same(checker.violations, []);
});

t.test('RSM_NO_QUORUM: a survivor of two kills in a view of three; the client fails at its deadline, saying what it tried', async (t) => {
  const { cluster, ids } = await kvCluster('client-no-quorum');
  const client = rsmClient(cluster, 'c1');
  await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'a')));
  cluster.crash(ids[2]!);
  cluster.crash(ids[0]!);
  const outcome = await settle(cluster, client.invoke(KvProc.GET, request('c1', 2, 'k', ''), { timeoutMs: 5_000 }).then(() => undefined, (error: unknown) => error));
  t.ok(outcome instanceof RsmError && outcome.code === 'RSM_NO_QUORUM', String(outcome));
  t.match((outcome as RsmError).message, new RegExp(`no primary answered within 5\\d\\d\\d ms; tried .*${ids[0]}`));
});

t.test('a client whose first members call failed learns the view from the node that answered its invoke, and later fails over', async (t) => {
  const { cluster, ids, checker } = await kvCluster('client-learns-late');
  const [p0, p1, p2] = ids as [string, string, string];
  const inner = new RpcEndpoint(cluster.network.forOwner('c1').connect(), cluster.world.clockFor('c1'), cluster.world.random.fork());
  // The first members call fails (as when the one node the client was told of is slow to answer
  // its first call); everything else goes through.
  let membersFailures = 1;
  const rpc = new Proxy(inner, {
    get(target, property, receiver) {
      if (property !== 'call') return Reflect.get(target, property, receiver) as unknown;
      return (async (address: string, procedure: { id: number }, ...rest: unknown[]) => {
        if (procedure.id === rsmClientProtocol.members.id && membersFailures > 0) {
          membersFailures--;
          return { ok: false, error: new RpcError('RPC_TIMEOUT', 'members: dropped by the test') };
        }
        return (target.call as (...args: unknown[]) => Promise<unknown>)(address, procedure, ...rest);
      }) as RpcEndpoint['call'];
    },
  });
  const client = new RsmClient({ rpc, knownMembers: [p0], callTimeoutMs: 2000, backoffMsMax: 1000 });
  await settle(cluster, client.invoke(KvProc.PUT, request('c1', 1, 'k', 'a')));
  t.equal(membersFailures, 0, 'the first members call was dropped');
  await cluster.runFor(500);
  t.same([...client.knownMembers].sort(), [...ids].sort(), 'it learned every member after its invoke went through');
  cluster.crash(p0);
  const reply = await settle(cluster, client.invoke(KvProc.APPEND, request('c1', 2, 'k', 'b')), 60_000);
  t.same(decodeKvReply(reply.reply), { ok: true, value: 'ab' }, 'with its first node gone, it found the new primary');
  t.not(client.primary, p0);
  t.ok(client.primary === p1 || client.primary === p2);
  t.same(checker.violations, []);
});
