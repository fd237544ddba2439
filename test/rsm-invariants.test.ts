/**
 * RsmNode.invariants() (rsm/node.ts): it holds on healthy replicas through normal operation
 * (batches in flight, a view change, a restart, a stopped node), it fails on a node whose fields
 * were corrupted (several different invariants, each passing again once the field is restored, so
 * the check is neither vacuous nor failing for another reason), and the simulator turns a failure
 * into a failed run: rsm_sim reports it as a violation with the step and stops there, and a
 * SimCluster in its default mode rejects runUntil with the AssertionError. Also the one rule that
 * spans replicas (commitPointBreach): a serving backup is never ahead of its serving primary.
 */
import t from 'tap';
import type { RsmNode } from '../rsm/node.js';
import type { Viewstamp } from '../rsm/protocol.js';
import type { ReplicaStatus } from '../rsm/replica-status.js';
import { commitPointBreach, type ReplicaPosition } from '../tester/sim/cluster.js';
import { runRsmSim } from '../tester/sim/rsm-sim.js';
import { kvClient, kvCluster, settle, settledOn } from './helpers/rsm.js';

/** The private fields the tests read or corrupt (a cast: they are not part of the API). */
interface Internals {
  asPrimary: { pipeline: { batches: readonly unknown[]; waitingCount: number; bytesWaiting: number } };
  replicaStatus: ReplicaStatus;
  myvs: Viewstamp;
  awaitingCommit: Array<{ vs: Viewstamp; timeMs: number; proc: number; request: Uint8Array }>;
  heldLog: { heldBytes: number };
  lastRequest: unknown;
  wasPrimary: boolean;
  viewSync: { core: { pulledBy: Map<string, Viewstamp> } };
}

function internals(node: RsmNode): Internals {
  return node as unknown as Internals;
}

t.test('invariants() hold on healthy replicas: batches in flight, a view change, a restart, a stopped node', async (t) => {
  const { cluster, ids, checker } = await kvCluster('rsm-invariants-healthy', 3, { storageSyncMs: 2 });
  const checkAll = (): void => {
    for (const id of cluster.upIds()) cluster.node(id)!.invariants();
  };
  t.doesNotThrow(checkAll, 'after bootstrap');

  // Many clients at once, so the primary has pending batches and waiting requests between events.
  const seen = { pending: 0, waiting: 0, serving: 0 };
  const sample = (): void => {
    checkAll();
    for (const id of cluster.upIds()) {
      const node = internals(cluster.node(id)!);
      if (node.asPrimary.pipeline.batches.length > 0) seen.pending++;
      if (node.asPrimary.pipeline.waitingCount > 0) seen.waiting++;
      const status = node.replicaStatus;
      if (status.kind === 'syncing' && status.role === 'primary' && status.phase === 'serving') seen.serving++;
    }
  };
  const clients = Array.from({ length: 8 }, (_, i) => kvClient(cluster, `c${i + 1}`));
  const appends = (from: number): Promise<unknown> =>
    Promise.all(clients.map(async (kv) => {
      for (let i = from; i < from + 4; i++) await kv.append('k', `${kv.clientId}.${i};`);
    }));
  let done = false;
  void appends(1).then(() => (done = true));
  t.ok(await cluster.runUntil(() => (sample(), done), 60_000), 'the first appends finish');
  t.ok(seen.pending > 0 && seen.waiting > 0, `checked with batches pending (${seen.pending} steps) and requests waiting (${seen.waiting})`);

  // A view change: the primary crashes; the others synchronise a view of two (the new primary serving its backups).
  const oldPrimary = cluster.node(ids[0]!)!;
  cluster.crash(ids[0]!);
  done = false;
  void appends(5).then(() => (done = true));
  t.ok(await cluster.runUntil(() => (sample(), done), 60_000), 'appends finish after the view change');
  t.ok(seen.serving > 0, `checked while a primary was synchronising (${seen.serving} steps serving its backups)`);
  t.doesNotThrow(() => oldPrimary.invariants(), 'the crashed (stopped) incarnation');
  t.notOk(oldPrimary.isPrimary);

  // A restart from the durable record, and back to one view of three.
  await cluster.start(ids[0]!);
  t.ok(await cluster.runUntil(() => (sample(), cluster.converged(ids)), 60_000), cluster.describe());
  t.ok(await settledOn(cluster, ids), 'every replica at the same viewstamp');
  t.doesNotThrow(checkAll, 'after the restart');
  t.ok(cluster.invariantChecks > 100, `the cluster checked every replica after each event too (${cluster.invariantChecks} steps)`);
  t.same(cluster.invariantViolations, []);
  t.same(checker.violations, []);
});

t.test('invariants() fail on a corrupted field, and pass again once it is restored', async (t) => {
  const { cluster, ids } = await kvCluster('rsm-invariants-corrupt', 3);
  // Some requests, so the replicas hold log entries and know their last request.
  const kv = kvClient(cluster, 'c1');
  await settle(cluster, (async () => {
    for (let i = 1; i <= 3; i++) await kv.append('k', `${i};`);
  })());
  t.ok(await settledOn(cluster, ids));
  const primary = cluster.node(ids[0]!)!;
  const backup = cluster.node(ids[1]!)!;
  t.ok(primary.isPrimary, 'the first node is the primary');
  primary.invariants();
  backup.invariants();

  const corruptions: Array<{ what: string; node: RsmNode; corrupt: (n: Internals) => () => void; message: RegExp }> = [
    {
      what: 'waitingBytes off by one',
      node: primary,
      corrupt: (n) => {
        n.asPrimary.pipeline.bytesWaiting += 1;
        return () => (n.asPrimary.pipeline.bytesWaiting -= 1);
      },
      message: /rsm invariants of 3772: waitingBytes 1, but the 0 waiting requests hold 0/,
    },
    {
      what: "a backup's myvs one too far",
      node: backup,
      corrupt: (n) => {
        const myvs = n.myvs;
        n.myvs = { vid: myvs.vid, seqno: myvs.seqno + 1 };
        return () => (n.myvs = myvs);
      },
      message: /rsm invariants of 3774: serving view \d+ with myvs \d+\.\d+, but after the last held \d+\.\d+ the next is/,
    },
    {
      what: 'a request awaiting the commit point that the log does not hold',
      node: backup,
      corrupt: (n) => {
        const myvs = n.myvs;
        n.awaitingCommit.push({ vs: myvs, timeMs: 0, proc: 1, request: new Uint8Array(0) });
        n.myvs = { vid: myvs.vid, seqno: myvs.seqno + 1 };
        return () => {
          n.awaitingCommit.pop();
          n.myvs = myvs;
        };
      },
      message: /rsm invariants of 3774: log entries held after lastMyvs \d+\.\d+ are \[\], the unexecuted \[\d+\.\d+\]/,
    },
    {
      what: 'logHeldBytes off',
      node: backup,
      corrupt: (n) => {
        n.heldLog.heldBytes += 5;
        return () => (n.heldLog.heldBytes -= 5);
      },
      message: /logHeldBytes \d+, but the \d+ held entries hold \d+/,
    },
    {
      what: 'the last request forgotten while its entry is held',
      node: backup,
      corrupt: (n) => {
        const lastRequest = n.lastRequest;
        n.lastRequest = undefined;
        return () => (n.lastRequest = lastRequest);
      },
      message: /the request at lastMyvs \d+\.\d+ is unknown but its log entry is held/,
    },
    {
      what: 'the primary listeners out of date',
      node: primary,
      corrupt: (n) => {
        n.wasPrimary = false;
        return () => (n.wasPrimary = true);
      },
      message: /isPrimary true but the listeners last heard false/,
    },
    {
      what: 'a status in another view than the committed one',
      node: primary,
      corrupt: (n) => {
        const status = n.replicaStatus;
        n.replicaStatus = { kind: 'normal', vid: (status.kind === 'normal' ? status.vid : 0) + 1, role: 'primary' };
        return () => (n.replicaStatus = status);
      },
      message: /rsm invariants of 3772: normal in view \d+ as primary but the committed view is \d+/,
    },
    {
      what: 'a backup whose status says primary',
      node: backup,
      corrupt: (n) => {
        const status = n.replicaStatus;
        if (status.kind !== 'normal') throw new Error(`backup not normal: ${status.kind}`);
        n.replicaStatus = { ...status, role: 'primary' };
        return () => (n.replicaStatus = status);
      },
      message: /rsm invariants of 3774: normal in view \d+ as primary but the primary is 3772/,
    },
    {
      what: 'a pull of an older state counted while serving the synchronisation',
      node: primary,
      corrupt: (n) => {
        const status = n.replicaStatus;
        if (status.kind !== 'normal') throw new Error(`primary not normal: ${status.kind}`);
        n.replicaStatus = { kind: 'syncing', vid: status.vid, role: 'primary', phase: 'serving' };
        n.viewSync.core.pulledBy.set('3774', { vid: 0, seqno: 0 });
        return () => {
          n.replicaStatus = status;
          n.viewSync.core.pulledBy.clear();
        };
      },
      message: /3774 pulled at 0\.0 but our state is at \d+\.\d+ \(it moved while serving the synchronisation\)/,
    },
  ];
  for (const { what, node, corrupt, message } of corruptions) {
    const restore = corrupt(internals(node));
    t.throws(() => node.invariants(), { name: 'AssertionError', message }, what);
    restore();
    t.doesNotThrow(() => node.invariants(), `${what}: restored, it holds again`);
  }
});

t.test('a SimCluster rejects runUntil with the AssertionError after the event that broke an invariant', async (t) => {
  const { cluster, ids } = await kvCluster('rsm-invariants-throw', 3);
  const backup = cluster.node(ids[2]!)!;
  // Corrupt from inside an event, as a bug in a handler would.
  cluster.world.schedule(50, () => (internals(backup).heldLog.heldBytes += 1));
  const before = cluster.world.now();
  await t.rejects(cluster.runFor(1000), { name: 'AssertionError', message: /^t=\d+ms after event \d+: 3776#1 rsm invariants of 3776: logHeldBytes/ });
  t.equal(cluster.world.now(), before + 50, 'the world stopped at the event that broke it');
  t.equal(cluster.invariantViolations.length, 1);
  await t.rejects(cluster.runFor(1000), { name: 'AssertionError' }, 'and stays stopped');
  t.equal(cluster.world.now(), before + 50, 'no further event ran');
});

/** A hook that corrupts the first replica to execute a request at seqno 3 as primary, once. */
function corruptAtThirdRequest(): { hook: (id: string, node: RsmNode) => void; at: () => number | undefined } {
  let at: number | undefined;
  return {
    at: () => at,
    hook: (_id, node) => {
      node.onExecuted((event) => {
        if (at !== undefined || event.role !== 'primary' || event.vs.seqno !== 3) return;
        at = event.vs.vid;
        internals(node).heldLog.heldBytes += 1;
      });
    },
  };
}

for (const workload of ['kv', 'lock'] as const) {
  t.test(`rsm_sim (${workload}) reports a broken replica invariant as a violation at its step, and stops there`, async (t) => {
    const seed = 7;
    const healthy = await runRsmSim(seed, { workload });
    t.equal(healthy.outcome, 'ok', `seed ${seed} passes untouched: ${healthy.problems.join('; ')}`);
    const first = corruptAtThirdRequest();
    const broken = await runRsmSim(seed, { workload, observeNode: first.hook });
    t.ok(first.at() !== undefined, 'the corruption happened');
    t.equal(broken.outcome, 'violation');
    t.match(broken.problems[0], /^t=\d+ms after event \d+: \d+#\d+ rsm invariants of \d+: logHeldBytes \d+, but the \d+ held entries hold \d+$/);
    const stoppedAt = Number(/^t=(\d+)ms/.exec(broken.problems[0] ?? '')?.[1]);
    t.equal(broken.stats.virtualMs, stoppedAt, 'the run stopped at the failed step');
    t.ok(broken.stats.virtualMs < healthy.stats.virtualMs, 'before the healthy run ended');
    // A report is a complete reproduction: the same seed and hook fail at the same step.
    const again = await runRsmSim(seed, { workload, observeNode: corruptAtThirdRequest().hook });
    t.equal(again.problems[0], broken.problems[0], 'the same report twice');
    t.equal(again.traceHash, broken.traceHash);
  });
}

t.test('the commit point across replicas: a serving backup ahead of its serving primary is a breach, anything else is not', async (t) => {
  const at = (seqno: number): Viewstamp => ({ vid: 4, seqno });
  const replica = (me: string, lastExecuted: Viewstamp, more: Partial<ReplicaPosition> = {}): ReplicaPosition => ({
    me,
    isStopped: false,
    isInViewChange: false,
    isPrimary: me === 'p',
    primary: 'p',
    vidCommit: 4,
    lastExecuted,
    lastRestored: { vid: 0, seqno: 0 },
    ...more,
  });
  const group = (...replicas: ReplicaPosition[]): Map<string, ReplicaPosition> => new Map(replicas.map((r) => [`${r.me}#1`, r]));
  t.equal(commitPointBreach(group(replica('p', at(5)), replica('b', at(5)), replica('c', at(3)))), undefined, 'level with it, or behind');
  t.match(commitPointBreach(group(replica('p', at(5)), replica('b', at(6)))), /^backup b#1 executed up to 4\.6, beyond its primary p \(4\.5\) in view 4$/, 'one ahead');
  t.equal(commitPointBreach(group(replica('p', at(5)), replica('b', at(6), { isInViewChange: true }))), undefined, 'a backup in a view change executes what it holds');
  t.equal(commitPointBreach(group(replica('p', at(5), { isInViewChange: true }), replica('b', at(6)))), undefined, 'a primary synchronising the view');
  t.equal(commitPointBreach(group(replica('p', at(5), { vidCommit: 5 }), replica('b', at(6)))), undefined, 'a primary of another view');
  t.equal(commitPointBreach(group(replica('p', at(5), { isStopped: true }), replica('b', at(6)))), undefined, 'a stopped primary');
  t.equal(commitPointBreach(group(replica('b', at(6)))), undefined, 'a primary not running');
  t.equal(commitPointBreach(group(replica('p', at(5)), replica('b', at(6), { lastRestored: at(6) }))), undefined, 'ahead by what it replayed at a restart');
  t.match(commitPointBreach(group(replica('p', at(5)), replica('b', at(7), { lastRestored: at(6) }))), /b#1 executed up to 4\.7/, 'beyond what it replayed');
});
