/**
 * Cluster identity and quorum visibility on real replicas (TCP on loopback, classic-level storage,
 * file logs; rsm/replica-process.ts): a node started on another cluster's data directory refuses
 * and leaves it unchanged; a node whose paxos log was deleted moves its old state aside and starts
 * fresh; the survivor of two kills reports no quorum; replicas refuse another cluster's Paxos
 * messages and print it once per peer. Plus the synchronous QuorumTracker.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { realClock, sleep } from '../lib/clock.js';
import { openLevelStorage } from '../lib/level-storage.js';
import { QuorumTracker, describeNoQuorum } from '../paxos/identity.js';
import { PaxosStatus, heartbeat, preparereq } from '../paxos/messages.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { KEY_CLUSTER, drawClusterId, isValidClusterId, readNodeIdentity } from '../paxos/store.js';
import { SeededRandom } from '../lib/random.js';
import { startReplica, type Replica } from '../rsm/replica-process.js';
import { chooseBasePort } from '../tester/cluster.js';
import { isPortFree } from '../tester/processes.js';

const TIMING = { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 300, paxosTimeoutMs: 300, removeJitterMsMax: 100, joinRetryMs: 200 };

async function waitFor(predicate: () => boolean, limitMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (predicate()) return true;
    await sleep(realClock, 20);
  }
  return predicate();
}

function doneLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter((line) => line.startsWith('done '));
  } catch {
    return [];
  }
}

/** Every key and value of a storage directory, as text (opened and closed again). */
async function dump(directory: string): Promise<string> {
  const storage = await openLevelStorage(directory);
  try {
    return (await storage.list('')).map(([key, value]) => `${key}=${Buffer.from(value).toString('hex')}`).join('\n');
  } finally {
    await storage.close();
  }
}

/** Three node ids whose ports and control ports (port + 1) are all free now. */
async function portBlock(): Promise<string[]> {
  for (let draw = 0; draw < 100; draw++) {
    const choice = await chooseBasePort(3, 20_000 + 2 * Math.floor(Math.random() * 5_500), isPortFree);
    if (choice.ok) return [0, 1, 2].map((i) => String(choice.base + 2 * i));
  }
  throw new Error('no free block of ports');
}

interface Cluster {
  readonly replicas: Map<string, Replica>;
  readonly lines: string[];
  start(id: string): Promise<Replica>;
  stop(id: string): Promise<void>;
  stopAll(): Promise<void>;
}

function cluster(ids: readonly string[], logDir: string, dataDir: string): Cluster {
  const replicas = new Map<string, Replica>();
  const lines: string[] = [];
  return {
    replicas,
    lines,
    async start(id) {
      const replica = await startReplica({
        master: ids[0]!,
        me: id,
        logDir,
        dataDir,
        timing: TIMING,
        lossyPercent: 0,
        die: (m) => lines.push(`${id} died: ${m}`),
        say: (line) => lines.push(`${id}: ${line}`),
      });
      replicas.set(id, replica);
      return replica;
    },
    async stop(id) {
      await replicas.get(id)?.close();
      replicas.delete(id);
    },
    async stopAll() {
      for (const id of [...replicas.keys()]) await this.stop(id);
    },
  };
}

t.test('cluster ids: drawn from the injected Random, valid, deterministic per seed', async (t) => {
  const a = drawClusterId(new SeededRandom(7));
  t.equal(a, drawClusterId(new SeededRandom(7)));
  t.not(a, drawClusterId(new SeededRandom(8)));
  t.ok(isValidClusterId(a));
  t.notOk(isValidClusterId(''));
  t.notOk(isValidClusterId('a b'));
});

t.test('QuorumTracker: majority of the view, self included; lines only on change', async (t) => {
  const tracker = new QuorumTracker('b');
  const view = { vid: 4, members: ['a', 'b'] };
  t.equal(tracker.record(view, new Set(['a']), 1000), undefined, 'quorum: nothing to say');
  t.equal(tracker.status.quorum, true);
  const at = Date.UTC(2026, 0, 1, 12, 1, 7);
  t.equal(tracker.record(view, new Set(), at), 'no quorum: view 4 {a,b}; a unreachable since 12:01:07');
  t.equal(tracker.status.quorum, false);
  t.same(tracker.status.reachable, ['b']);
  t.equal(tracker.record(view, new Set(), at + 5000), undefined, 'same verdict, same since: silent');
  t.equal(describeNoQuorum(tracker.status), 'no quorum: view 4 {a,b}; a unreachable since 12:01:07', 'since is the first failure');
  t.equal(tracker.record(view, new Set(['a']), at + 6000), 'quorum regained: view 4 {a,b} reachable');
  const three = { vid: 5, members: ['a', 'b', 'c'] };
  t.equal(tracker.record(three, new Set(['c']), at + 7000), undefined, '2 of 3 is a majority');
});

t.test('a node started on another cluster\'s data directory refuses and leaves it unchanged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-identity-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ids = await portBlock();
  const logA = join(dir, 'a');
  const dataA = join(dir, 'a', 'data');
  const a = cluster(ids, logA, dataA);
  t.teardown(() => a.stopAll());
  for (const id of ids) await a.start(id);
  t.ok(await waitFor(() => ids.every((id) => doneLines(join(logA, `paxos-${id}.log`)).length === 3)), 'cluster A in view 3');
  const clusterA = a.replicas.get(ids[0]!)!.startup.clusterId;
  t.ok(isValidClusterId(clusterA), 'the first node drew an id');
  t.match(a.lines.join('\n'), new RegExp(`${ids[0]}: starts fresh in .* \\(new cluster ${clusterA}\\)`));
  t.ok(await waitFor(() => ids.every((id) => a.replicas.get(id)!.startup.clusterId === clusterA || a.lines.some((l) => l.startsWith(`${id}: adopted cluster id ${clusterA}`)))), 'the joiners adopted it');
  await a.stopAll();

  // Cluster B on the same ports, in another directory: p0 and p1 fresh.
  const logB = join(dir, 'b');
  const b = cluster(ids, logB, join(dir, 'b', 'data'));
  t.teardown(() => b.stopAll());
  await b.start(ids[0]!);
  await b.start(ids[1]!);
  t.ok(await waitFor(() => doneLines(join(logB, `paxos-${ids[1]}.log`)).length === 2), 'cluster B in view 2');
  const clusterB = b.replicas.get(ids[0]!)!.startup.clusterId;
  t.not(clusterB, clusterA, 'a new cluster has a new id');

  // p2 restarted by hand on A's data directory (its paxos log there too) while B runs.
  const p2Data = join(dataA, ids[2]!);
  const p2Log = join(logA, `paxos-${ids[2]}.log`);
  const dataBefore = await dump(p2Data);
  const logBefore = readFileSync(p2Log, 'utf8');
  const stray = cluster(ids, logA, dataA);
  await t.rejects(stray.start(ids[2]!), {
    code: 'CLUSTER_MISMATCH',
    message: new RegExp(`data directory ${p2Data.replace(/[/\\]/g, '.')} belongs to cluster ${clusterA}, but ${ids[0]} is in cluster ${clusterB}; refusing to start`),
  });
  t.equal(await dump(p2Data), dataBefore, 'the data directory holds exactly what it held');
  t.equal(readFileSync(p2Log, 'utf8'), logBefore, 'the paxos log is unchanged');
  t.match(b.lines.join('\n'), new RegExp(`refusing ${ids[2]}: it is in cluster ${clusterA}`), 'the live cluster logged the refusal');
  t.same(doneLines(join(logB, `paxos-${ids[0]}.log`)).length, 2, 'cluster B still in view 2');
});

t.test('a node whose paxos log was deleted moves its state aside and starts fresh', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-stale-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ids = await portBlock();
  const dataDir = join(dir, 'data');
  const c = cluster(ids, dir, dataDir);
  t.teardown(() => c.stopAll());
  for (const id of ids) await c.start(id);
  const log1 = join(dir, `paxos-${ids[1]}.log`);
  const log0 = join(dir, `paxos-${ids[0]}.log`);
  t.ok(await waitFor(() => doneLines(log1).length === 3), 'view 3');
  await c.stop(ids[1]!);
  // The others remove it first (a fresh node cannot stand in for its old self inside a view).
  t.ok(await waitFor(() => doneLines(log0).length === 4), 'view 4 without p1');
  const before = await dump(join(dataDir, ids[1]!));
  unlinkSync(log1);

  const restarted = await c.start(ids[1]!);
  const aside = restarted.startup.movedAside;
  t.ok(aside !== undefined && aside.startsWith(`${join(dataDir, ids[1]!)}.stale-`), `moved aside to ${aside}`);
  t.ok(aside !== undefined && existsSync(aside));
  t.equal(await dump(aside!), before, 'the old state is kept, whole');
  t.equal(restarted.startup.restored, false);
  t.match(c.lines.join('\n'), /is missing but .* holds state: moved it aside to .*\.stale-\d{8}T\d{6}Z \(nothing deleted\); starting fresh/);
  t.match(c.lines.join('\n'), new RegExp(`${ids[1]}: starts fresh in `));
  t.ok(await waitFor(() => doneLines(log1).length >= 5), 'it rejoined as a new node (view 5)');
  const identity = await (async () => {
    await c.stop(ids[1]!);
    const storage = await openLevelStorage(join(dataDir, ids[1]!));
    try {
      return { id: await readNodeIdentity(storage), key: await storage.get(KEY_CLUSTER) };
    } finally {
      await storage.close();
    }
  })();
  t.equal(identity.id.clusterId, c.replicas.get(ids[0]!)!.startup.clusterId, 'and adopted the cluster id again');

  // A restart with log and state both present restores, and says what.
  await c.start(ids[1]!);
  t.match(c.lines.join('\n'), new RegExp(`${ids[1]}: restored cluster c[0-9a-f]{12} from .*: view \\d+ \\{[^}]*\\}, last viewstamp \\d+\\.\\d+`));
});

t.test('the survivor of two kills reports no quorum', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-quorum-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ids = await portBlock();
  const c = cluster(ids, dir, join(dir, 'data'));
  t.teardown(() => c.stopAll());
  for (const id of ids) await c.start(id);
  const log2 = join(dir, `paxos-${ids[2]}.log`);
  t.ok(await waitFor(() => doneLines(log2).length === 3), 'view 3');
  await c.stop(ids[1]!);
  t.ok(await waitFor(() => doneLines(log2).length === 4), 'view 4 without p1');
  const survivor = c.replicas.get(ids[2]!)!;
  t.equal(survivor.quorum().quorum, true, 'two of two: quorum');
  await c.stop(ids[0]!);
  t.ok(await waitFor(() => !survivor.quorum().quorum), 'no quorum once p0 is gone');
  t.same(survivor.quorum().members, [ids[0], ids[2]]);
  t.match(c.lines.join('\n'), new RegExp(`${ids[2]}: no quorum: view 4 \\{${ids[0]},${ids[2]}\\}; ${ids[0]} unreachable since \\d\\d:\\d\\d:\\d\\d`));
});

t.test('real replicas send their cluster id on Paxos messages and refuse another cluster\'s, once per peer in their output', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'viewstamp-paxos-cluster-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ids = await portBlock();
  const logDir = join(dir, 'logs');
  const dataDir = join(dir, 'data');
  const a = cluster(ids, logDir, dataDir);
  t.teardown(() => a.stopAll());
  for (const id of ids) await a.start(id);
  t.ok(await waitFor(() => ids.every((id) => doneLines(join(logDir, `paxos-${id}.log`)).length === 3)), 'view 3');
  const clusterA = a.replicas.get(ids[0]!)!.startup.clusterId;
  const network = tcpNetwork();
  const rpc = new RpcEndpoint(await network.listen('127.0.0.1:0'), realClock, new SeededRandom('outsider'));
  t.teardown(() => rpc.close());
  const other = 'cffffffffffff';
  for (const id of ids) {
    // The joiners adopted the id from the first node: every replica refuses the other cluster.
    for (let i = 0; i < 3; i++) {
      const reply = await rpc.call(`127.0.0.1:${id}`, heartbeat, { me: '127.0.0.1:9', cluster: other, vid: 99 }, { timeoutMs: 2000 });
      t.same(reply.ok && [reply.status, reply.result], [PaxosStatus.CLUSTER_MISMATCH, 0], `${id} refuses cluster ${other}`);
    }
    const prepare = await rpc.call(`127.0.0.1:${id}`, preparereq, { src: '127.0.0.1:9', cluster: clusterA, instance: 1, n: { n: 0, m: '' } }, { timeoutMs: 2000 });
    t.same(prepare.ok && [prepare.status, prepare.result.oldinstance], [PaxosStatus.OK, true], `${id} answers its own cluster`);
    const refusals = a.lines.filter((line) => line.startsWith(`${id}: refusing heartbeat from 127.0.0.1:9`));
    t.equal(refusals.length, 1, `${id} printed the refusal once`);
    t.match(refusals[0], new RegExp(`it is in cluster ${other}, this node is in cluster ${clusterA} \\(data directory ${join(dataDir, id).replace(/[/\\]/g, '.')}\\)`));
  }
  await sleep(realClock, 1000);
  t.ok(ids.every((id) => doneLines(join(logDir, `paxos-${id}.log`)).length === 3), 'no view change');
});
