/**
 * The acceptor's rules (LAB.md §2.3, with our changes) and the durability rule: every state
 * change is durable (synced) before the reply leaves, and survives a crash and restart.
 */
import t from 'tap';
import type { Storage, StorageOp } from '../lib/env.js';
import { SimDisk, SimWorld } from '../lib/sim/index.js';
import { Acceptor } from '../paxos/acceptor.js';
import { MemoryLogSink } from '../paxos/log-sink.js';
import { PROPOSAL_ZERO, type ProposalNumber } from '../paxos/messages.js';
import { PaxosStore, clusterCheck, decidedKey, putClusterId, putDecided, readNodeIdentity } from '../paxos/store.js';
import { Writer } from '../lib/codec.js';
import { isValidViewValue } from '../paxos/view.js';

interface Harness {
  disk: SimDisk;
  sink: MemoryLogSink;
  acceptor: Acceptor;
  behind: Array<[string, number]>;
  commits: Array<[number, string]>;
}

async function openAcceptor(disk: SimDisk, sink: MemoryLogSink, storage: Storage = disk.open('a')): Promise<Harness> {
  const store = new PaxosStore(storage);
  const acceptor = Acceptor.restore({ me: 'a', store, logSink: sink, isValidValue: isValidViewValue }, await store.load());
  const behind: Array<[string, number]> = [];
  const commits: Array<[number, string]> = [];
  acceptor.onBehind = (src, instance) => behind.push([src, instance]);
  acceptor.onCommit = (instance, value) => commits.push([instance, value]);
  return { disk, sink, acceptor, behind, commits };
}

async function fresh(seed = 1): Promise<Harness> {
  return openAcceptor(new SimDisk(new SimWorld(seed)), new MemoryLogSink());
}

const p = (n: number, m: string): ProposalNumber => ({ n, m });

t.test('prepare: promise only above the promise; instance must be the open one', async (t) => {
  const { acceptor, behind } = await fresh();
  t.same(await acceptor.onPrepare({ src: 'b', instance: 1, n: p(1, 'b') }), {
    oldinstance: false,
    accept: true,
    n_a: PROPOSAL_ZERO,
    v_a: '',
  });
  t.same(acceptor.promised, p(1, 'b'));
  t.same(await acceptor.onPrepare({ src: 'c', instance: 1, n: p(1, 'b') }), {
    oldinstance: false,
    accept: false,
    n_a: p(1, 'b'),
    v_a: '',
  }, 'equal number refused; the refusal reports the promise in n_a');
  t.equal((await acceptor.onPrepare({ src: 'a', instance: 1, n: p(1, 'a') })).accept, false, '(1,a) < (1,b)');
  t.equal((await acceptor.onPrepare({ src: 'c', instance: 1, n: p(1, 'c') })).accept, true, '(1,c) > (1,b)');
  t.equal((await acceptor.onPrepare({ src: 'c', instance: 0, n: p(9, 'c') })).accept, false, 'instance 0');
  const ahead = await acceptor.onPrepare({ src: 'd', instance: 3, n: p(9, 'd') });
  t.same([ahead.accept, ahead.oldinstance], [false, false], 'an instance beyond the open one is refused');
  t.same(behind, [['d', 3]], 'and reported: we are behind');
  t.same(acceptor.promised, p(1, 'c'), 'refusals change nothing');
});

t.test('prepare on a decided instance answers oldinstance with the value, whatever n', async (t) => {
  const { acceptor } = await fresh();
  await acceptor.commit(1, '3772');
  await acceptor.commit(2, '3772 3774 ');
  for (const n of [PROPOSAL_ZERO, p(1, 'x'), p(1000, 'z')]) {
    t.same(await acceptor.onPrepare({ src: 'x', instance: 2, n }), { oldinstance: true, accept: false, n_a: PROPOSAL_ZERO, v_a: '3772 3774 ' });
    t.equal((await acceptor.onPrepare({ src: 'x', instance: 1, n })).v_a, '3772');
  }
  t.equal(acceptor.instanceH, 2);
  t.same(acceptor.promised, PROPOSAL_ZERO, 'asking for decided values promises nothing');
});

t.test('accept: n ≥ promise, open instance, a real round and a view value', async (t) => {
  const { acceptor, behind } = await fresh();
  await acceptor.onPrepare({ src: 'b', instance: 1, n: p(5, 'b') });
  t.equal(await acceptor.onAccept({ src: 'c', instance: 1, n: p(4, 'c'), v: 'c ' }), false, 'below the promise');
  t.equal(await acceptor.onAccept({ src: 'b', instance: 1, n: p(5, 'b'), v: '' }), false, 'not a view');
  t.equal(await acceptor.onAccept({ src: 'b', instance: 1, n: p(5, 'b'), v: 'b b ' }), false, 'duplicate member');
  t.equal(await acceptor.onAccept({ src: 'b', instance: 2, n: p(5, 'b'), v: 'b ' }), false, 'not the open instance');
  t.same(behind, [['b', 2]]);
  t.equal(await acceptor.onAccept({ src: 'b', instance: 1, n: p(5, 'b'), v: 'a b ' }), true, 'equal to the promise');
  t.same(acceptor.accepted, { n: p(5, 'b'), v: 'a b ' });
  t.equal(await acceptor.onAccept({ src: 'c', instance: 1, n: p(7, 'c'), v: 'a c ' }), true, 'above the promise (no prepare seen)');
  t.same(acceptor.promised, p(7, 'c'), 'accepting n also promises n');
  t.equal(await acceptor.onAccept({ src: 'b', instance: 1, n: p(6, 'b'), v: 'a b ' }), false, 'now below');
  const promise = await acceptor.onPrepare({ src: 'd', instance: 1, n: p(8, 'd') });
  t.same(promise, { oldinstance: false, accept: true, n_a: p(7, 'c'), v_a: 'a c ' }, 'a promise reports the accepted proposal');

  const zero = await fresh(2);
  t.equal(await zero.acceptor.onAccept({ src: 'x', instance: 1, n: PROPOSAL_ZERO, v: 'x ' }), false, 'round 0 is never accepted');
});

t.test('decide: commits only the open instance; stale ignored; future ignored (not fatal) and reported', async (t) => {
  const { acceptor, behind, commits } = await fresh();
  t.equal(await acceptor.onDecide({ src: 'b', instance: 2, v: 'a b ' }), 0);
  t.equal(acceptor.instanceH, 0, 'a decide ahead of us leaves no hole');
  t.same(behind, [['b', 2]]);
  await acceptor.onDecide({ src: 'b', instance: 1, v: 'a' });
  await acceptor.onDecide({ src: 'b', instance: 1, v: 'z' });
  t.equal(acceptor.value(1), 'a', 'a decided value never changes');
  t.same(commits, [[1, 'a']]);
  t.equal(await acceptor.commit(3, 'a b '), false, 'commit refuses a hole');
  t.equal(await acceptor.commit(2, ''), false, 'commit refuses a non-view');
  t.equal(await acceptor.commit(2, 'a b '), true);
  t.same(acceptor.history(), [
    { instance: 1, value: 'a' },
    { instance: 2, value: 'a b ' },
  ]);
});

t.test('a commit resets the promise and the accepted proposal, durably and atomically', async (t) => {
  const h = await fresh();
  await h.acceptor.onPrepare({ src: 'b', instance: 1, n: p(3, 'b') });
  await h.acceptor.onAccept({ src: 'b', instance: 1, n: p(3, 'b'), v: 'a b ' });
  await h.acceptor.commit(1, 'a b ');
  t.same(h.acceptor.promised, PROPOSAL_ZERO);
  t.equal(h.acceptor.accepted, undefined);
  t.equal(h.acceptor.highestSeenN, 3, 'the highest round seen survives, for the local proposer');
  h.disk.crash('a');
  const again = await openAcceptor(h.disk, h.sink);
  t.equal(again.acceptor.instanceH, 1);
  t.same(again.acceptor.promised, PROPOSAL_ZERO);
  t.equal(again.acceptor.accepted, undefined);
});

t.test('the log: propseen, accepted and done lines in the lab formats', async (t) => {
  const { acceptor, sink } = await fresh();
  await acceptor.commit(1, '3772');
  await acceptor.onPrepare({ src: '3772', instance: 2, n: p(1, '3772') });
  await acceptor.onAccept({ src: '3772', instance: 2, n: p(1, '3772'), v: '3772 3774 ' });
  await acceptor.onDecide({ src: '3772', instance: 2, v: '3772 3774 ' });
  t.same(sink.lines, ['done 1 3772', 'propseen 1 3772', 'accepted 1 3772 3772 3774 ', 'done 2 3772 3774 ']);
  t.equal(sink.text(), 'done 1 3772\npropseen 1 3772\naccepted 1 3772 3772 3774 \ndone 2 3772 3774 \n');
});

/** Storage whose writes complete only when the test releases them. */
class GatedStorage implements Storage {
  readonly pending: Array<{ ops: readonly StorageOp[]; sync: boolean; release: () => void }> = [];
  constructor(private readonly inner: Storage) {}
  get(key: string): Promise<Uint8Array | undefined> {
    return this.inner.get(key);
  }
  list(prefix: string): Promise<Array<[string, Uint8Array]>> {
    return this.inner.list(prefix);
  }
  write(ops: readonly StorageOp[], options: { readonly sync: boolean }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({
        ops,
        sync: options.sync,
        release: () => this.inner.write(ops, options).then(resolve, reject),
      });
    });
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('durability rule: no reply before the synced write completes; writes stay in order', async (t) => {
  const disk = new SimDisk(new SimWorld(3));
  const gated = new GatedStorage(disk.open('a'));
  const { acceptor, sink } = await openAcceptor(disk, new MemoryLogSink(), gated);
  let promised = false;
  const reply = acceptor.onPrepare({ src: 'b', instance: 1, n: p(2, 'b') }).then((r) => {
    promised = true;
    return r;
  });
  // A refusal computed after the promise must not overtake its write either.
  let refused = false;
  const refusal = acceptor.onPrepare({ src: 'c', instance: 1, n: p(1, 'c') }).then((r) => {
    refused = true;
    return r;
  });
  await tick();
  t.equal(gated.pending.length, 1, 'one write issued');
  t.equal(gated.pending[0]!.sync, true, 'with sync');
  t.equal(promised, false, 'no reply while the write is pending');
  t.equal(refused, false, 'nor a later reply');
  t.same(sink.lines, [], 'nor a log line');
  t.same(acceptor.promised, p(2, 'b'), 'the in-memory state changed at once (synchronous core)');
  gated.pending[0]!.release();
  t.equal((await reply).accept, true);
  t.equal((await refusal).accept, false);
  t.same(sink.lines, ['propseen 2 b']);

  // Two state changes in flight: the second write is issued only after the first completed.
  const first = acceptor.onAccept({ src: 'b', instance: 1, n: p(2, 'b'), v: 'a b ' });
  const second = acceptor.onPrepare({ src: 'd', instance: 1, n: p(3, 'd') });
  await tick();
  t.equal(gated.pending.length, 2, 'the second write waits for the first');
  gated.pending[1]!.release();
  await tick();
  t.equal(gated.pending.length, 3);
  gated.pending[2]!.release();
  t.equal(await first, true);
  t.equal((await second).accept, true);
  t.same(sink.lines, ['propseen 2 b', 'accepted 2 b a b ', 'propseen 3 d']);
});

t.test('a crash right after the write resolves keeps the promise; it survives restart', async (t) => {
  const h = await fresh(4);
  const reply = await h.acceptor.onPrepare({ src: 'b', instance: 1, n: p(9, 'b') });
  t.equal(reply.accept, true);
  h.disk.crash('a'); // the reply is out: the promise must survive
  const again = await openAcceptor(h.disk, h.sink);
  t.same(again.acceptor.promised, p(9, 'b'), 'promise restored');
  t.equal(await again.acceptor.onAccept({ src: 'c', instance: 1, n: p(8, 'c'), v: 'a c ' }), false, 'a lower accept is still refused');
  t.equal((await again.acceptor.onPrepare({ src: 'c', instance: 1, n: p(9, 'b') })).accept, false, 'the same prepare is refused');
  t.same(h.sink.lines, ['propseen 9 b'], 'the log was rewritten from storage at restart');
});

t.test('an accepted proposal survives crash and restart and is reported by the next promise', async (t) => {
  const h = await fresh(5);
  await h.acceptor.commit(1, 'a');
  await h.acceptor.onPrepare({ src: 'a', instance: 2, n: p(4, 'a') });
  t.equal(await h.acceptor.onAccept({ src: 'a', instance: 2, n: p(4, 'a'), v: 'a b ' }), true);
  h.disk.crash('a');
  const again = await openAcceptor(h.disk, h.sink);
  t.same(again.acceptor.accepted, { n: p(4, 'a'), v: 'a b ' });
  t.same(await again.acceptor.onPrepare({ src: 'c', instance: 2, n: p(5, 'c') }), {
    oldinstance: false,
    accept: true,
    n_a: p(4, 'a'),
    v_a: 'a b ',
  });
  t.same(h.sink.lines, ['done 1 a', 'propseen 4 a', 'accepted 4 a a b ', 'propseen 5 c']);
});

t.test('replaceHistory adopts a longer consistent history, replaces the log, refuses the rest', async (t) => {
  const h = await fresh(6);
  await h.acceptor.commit(1, '3772');
  await h.acceptor.onPrepare({ src: 'x', instance: 2, n: p(3, 'x') });
  const history = [
    { instance: 1, value: '3772' },
    { instance: 2, value: '3772 3774 ' },
    { instance: 3, value: '3772 3774 3776 ' },
  ];
  t.equal(await h.acceptor.replaceHistory(history.slice(0, 1)), false, 'not newer');
  t.equal(await h.acceptor.replaceHistory([history[0]!, history[2]!]), false, 'a hole');
  t.equal(await h.acceptor.replaceHistory([history[0]!, { instance: 2, value: '' }]), false, 'a non-view');
  t.equal(await h.acceptor.replaceHistory(history), true);
  t.same(h.acceptor.history(), history);
  t.same(h.acceptor.promised, PROPOSAL_ZERO, 'the old open instance is gone');
  t.same(h.sink.lines, ['done 1 3772', 'done 2 3772 3774 ', 'done 3 3772 3774 3776 ']);
  t.same(h.commits.at(-1), [3, '3772 3774 3776 '], 'one upcall for the newest view');
  h.disk.crash('a');
  const again = await openAcceptor(h.disk, h.sink);
  t.same(again.acceptor.history(), history, 'adopted durably');
  await t.rejects(again.acceptor.replaceHistory([{ instance: 1, value: '9999' }, ...history.slice(1), { instance: 4, value: 'x ' }]), /differs/, 'a conflicting history is a broken invariant');
});

t.test('property: any sequence of requests keeps the invariants and never throws', async (t) => {
  const fc = (await import('fast-check')).default;
  const id = fc.constantFrom('a', 'b', 'c', '', 'x y', '3772');
  const proposal = fc.record({ n: fc.integer({ min: 0, max: 6 }), m: id });
  const value = fc.constantFrom('a ', 'a b ', 'b c ', '', ' ', 'a a ', 'x\ty');
  const instance = fc.integer({ min: 0, max: 4 });
  const request = fc.oneof(
    fc.record({ type: fc.constant('prepare' as const), src: id, instance, n: proposal }),
    fc.record({ type: fc.constant('accept' as const), src: id, instance, n: proposal, v: value }),
    fc.record({ type: fc.constant('decide' as const), src: id, instance, v: value }),
    fc.record({ type: fc.constant('crash' as const) }),
  );
  let seed = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(request, { maxLength: 40 }), async (requests) => {
      let h = await fresh(seed++);
      const decided = new Map<number, string>();
      for (const r of requests) {
        if (r.type === 'crash') {
          h.disk.crash('a');
          h = await openAcceptor(h.disk, h.sink);
        } else if (r.type === 'prepare') {
          const reply = await h.acceptor.onPrepare(r);
          if (reply.oldinstance) t.equal(reply.v_a, decided.get(r.instance));
        } else if (r.type === 'accept') {
          await h.acceptor.onAccept(r);
        } else {
          await h.acceptor.onDecide(r);
        }
        h.acceptor.invariants();
        for (const entry of h.acceptor.history()) {
          const earlier = decided.get(entry.instance);
          if (earlier !== undefined && earlier !== entry.value) return false;
          decided.set(entry.instance, entry.value);
        }
        if (decided.size !== h.acceptor.instanceH) return false;
      }
      return true;
    }),
    { numRuns: 300 },
  );
});

t.test('designatedRemover: the smallest member other than the failed one, the same at every detector', async (t) => {
  const { designatedRemover } = await import('../paxos/config.js');
  t.equal(designatedRemover(['3774', '3772', '3776'], '3772'), '3774', 'the smallest failed: the next smallest removes it');
  t.equal(designatedRemover(['3774', '3772', '3776'], '3776'), '3772');
  t.equal(designatedRemover(['10', '9'], '10'), '9', 'numeric order for ports');
  t.equal(designatedRemover(['3772'], '3772'), undefined);
});

// -----------------------------------------------------------------------------------------------
// Every view records its cluster (paxos/store.ts, "EVERY VIEW RECORDS ITS CLUSTER").

async function inCluster(disk: SimDisk, sink: MemoryLogSink, cluster: () => string, stored?: string): Promise<Acceptor> {
  const storage = disk.open('a');
  if (stored !== undefined) await storage.write([putClusterId(stored)], { sync: true });
  const store = new PaxosStore(storage);
  return Acceptor.restore({ me: 'a', store, logSink: sink, isValidValue: isValidViewValue, cluster }, await store.load());
}

t.test('each decided view records the cluster id the node had then, beside the value; done lines unchanged', async (t) => {
  const disk = new SimDisk(new SimWorld('views-record'));
  const sink = new MemoryLogSink();
  let id = '';
  const acceptor = await inCluster(disk, sink, () => id);
  await acceptor.commit(1, 'a');
  id = 'c0123456789ab'; // adopted (the host stores it; the acceptor records it with later views)
  await acceptor.onDecide({ src: 'b', instance: 2, v: 'a b ' });
  t.equal(acceptor.clusterOf(1), '', 'decided while the id was unknown');
  t.equal(acceptor.clusterOf(2), 'c0123456789ab');
  t.equal(acceptor.clusterOf(3), undefined, 'not decided');
  t.same(sink.lines, ['done 1 a', 'done 2 a b '], 'the log lines carry the value only');
  // replaceHistory records the id for every adopted view.
  await acceptor.replaceHistory([
    { instance: 1, value: 'a' },
    { instance: 2, value: 'a b ' },
    { instance: 3, value: 'a b c ' },
  ]);
  t.same([1, 2, 3].map((i) => acceptor.clusterOf(i)), ['c0123456789ab', 'c0123456789ab', 'c0123456789ab']);
});

t.test('restart: the recorded clusters are restored; old records without one still read', async (t) => {
  const disk = new SimDisk(new SimWorld('views-restore'));
  const storage = disk.open('a');
  // View 1 as written before cluster ids were kept (the value alone), view 2 with a cluster.
  await storage.write(
    [
      putClusterId('cA'),
      { type: 'put', key: decidedKey(1), value: new Writer().string('a').finish() },
      putDecided(2, 'a b ', 'cA'),
    ],
    { sync: true },
  );
  await storage.close();
  const acceptor = await inCluster(disk, new MemoryLogSink(), () => 'cA');
  t.same(acceptor.history(), [
    { instance: 1, value: 'a' },
    { instance: 2, value: 'a b ' },
  ]);
  t.equal(acceptor.clusterOf(1), undefined, 'an old record: not recorded');
  t.equal(acceptor.clusterOf(2), 'cA');
});

t.test('a storage whose views were decided in another cluster is refused, not misread', async (t) => {
  const mixed = new SimDisk(new SimWorld('views-mixed'));
  let storage = mixed.open('a');
  await storage.write([putClusterId('cA'), putDecided(1, 'a', 'cA'), putDecided(2, 'a b ', 'cB')], { sync: true });
  await t.rejects(new PaxosStore(storage).load(), { code: 'CLUSTER_MISMATCH', message: /view 2 was decided in cluster cB, but this storage belongs to cluster cA/ });

  storage = new SimDisk(new SimWorld('views-no-id')).open('a');
  await storage.write([putDecided(1, 'a', 'cA')], { sync: true });
  await t.rejects(new PaxosStore(storage).load(), { code: 'STORAGE_CORRUPT', message: /decided in cluster cA, but paxos\/cluster is missing/ });

  storage = new SimDisk(new SimWorld('views-bad-id')).open('a');
  await storage.write([{ type: 'put', key: decidedKey(1), value: new Writer().string('a').string('bad id').finish() }], { sync: true });
  await t.rejects(new PaxosStore(storage).load(), { code: 'STORAGE_CORRUPT' });
  await t.rejects(readNodeIdentity(storage), { code: 'STORAGE_CORRUPT' }, 'the host\'s startup summary refuses it too');

  storage = new SimDisk(new SimWorld('views-trailing')).open('a');
  await storage.write([{ type: 'put', key: decidedKey(1), value: new Writer().string('a').string('cA').u32(7).finish() }], { sync: true });
  await t.rejects(new PaxosStore(storage).load(), { code: 'STORAGE_CORRUPT' });

  // The same views recorded with "" (decided before the id was known) are fine in any cluster.
  storage = new SimDisk(new SimWorld('views-unknown')).open('a');
  await storage.write([putClusterId('cA'), putDecided(1, 'a', ''), putDecided(2, 'a b ', 'cA')], { sync: true });
  t.equal((await new PaxosStore(storage).load()).decided.length, 2);
});

t.test('clusterCheck: unknown on either side passes; known and different is a mismatch; junk is invalid', async (t) => {
  t.equal(clusterCheck('', ''), 'ok');
  t.equal(clusterCheck('cA', ''), 'ok');
  t.equal(clusterCheck('', 'cB'), 'ok');
  t.equal(clusterCheck('cA', 'cA'), 'ok');
  t.equal(clusterCheck('cA', 'cB'), 'mismatch');
  for (const junk of ['c A', 'x'.repeat(65), '\u0000', 'é', 'c\n']) {
    t.equal(clusterCheck('cA', junk), 'invalid', JSON.stringify(junk));
    t.equal(clusterCheck('', junk), 'invalid', `${JSON.stringify(junk)} from an unknown node too`);
  }
});
