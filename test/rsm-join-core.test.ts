/**
 * The join core (rsm/join.ts) on its own, without a host, a clock or a network: the actions it
 * returns for each event, in order. The asking side asks the believed primary first, adopts a
 * newer history and finishes without a pause once admitted, catches up after BUSY, rotates to the
 * next candidate after a failed call, and adopts nothing from another cluster. The admitting side
 * refuses bad ids, other clusters, non-primaries and unsynchronised views, and answers OK only
 * after `add` and `flush`. invariants() is checked after every step. Last, the host (rsm/join-host.ts)
 * over fake effects: outcomes come back as events, and a throw while feeding one rejects the
 * attempt or the delivery instead of escaping.
 */
import t from 'tap';
import { Join, type JoinAction, type JoinPosition, type JoinReply } from '../rsm/join.js';
import { JoinHost, type JoinEffects } from '../rsm/join-host.js';
import { withStanding } from './helpers/standing.js';
import { RsmStatus } from '../rsm/protocol.js';
import type { HistoryEntry } from '../paxos/view.js';

const RETRY_MS = 1000;

/** A replica whose config knows `views` (members per view, view 1 first); the test moves it. */
function replica(me: string, views: string[][]) {
  const model = { views: views.map((v) => [...v]), vidCommit: views.length, primary: views.at(-1)?.[0] ?? '', inViewChange: false, stopped: false, cluster: 'c1' };
  const position: JoinPosition = withStanding(
    {
      me,
      master: 'p0',
      last: { vid: 0, seqno: 0 },
      timing: { joinRetryMs: RETRY_MS, joinTimeoutMs: 10_000 },
      config: {
        get cluster() {
          return model.cluster;
        },
        get vid() {
          return model.views.length;
        },
        members: (vid = model.views.length) => model.views[vid - 1] ?? [],
        isMember: (node: string, vid = model.views.length) => (model.views[vid - 1] ?? []).includes(node),
        history: () => model.views.map((members, i) => ({ instance: i + 1, value: members.join(' ') })),
      } as JoinPosition['config'],
    },
    model,
  );
  const core = new Join(position);
  const step = (actions: JoinAction[]): JoinAction[] => {
    core.invariants();
    return actions;
  };
  return { core, model, step, position };
}

const kinds = (actions: JoinAction[]) => actions.map((a) => a.kind);
const history = (...views: string[][]): HistoryEntry[] => views.map((members, i) => ({ instance: i + 1, value: members.join(' ') }));
const reply = (status: number, hist: HistoryEntry[] = [], cluster = 'c1'): JoinReply => ({ ok: true, status, result: { history: hist, cluster } });

t.test('asking: a newer history from the primary is adopted; admitted, the attempt finishes at once', async (t) => {
  const { core, model, step } = replica('b3', [['p0', 'b1', 'b2']]);
  const ask = step(core.start());
  t.same(kinds(ask), ['ask']);
  t.equal((ask[0] as Extract<JoinAction, { kind: 'ask' }>).target, 'p0', 'the believed primary first');
  t.same(kinds(step(core.answered(reply(RsmStatus.OK, history(['p0', 'b1', 'b2'], ['p0', 'b1', 'b2', 'b3']))))), ['adoptHistory']);
  model.views.push(['p0', 'b1', 'b2', 'b3']); // what config.adoptHistory does
  t.same(kinds(step(core.adopted())), ['commitNewest']);
  model.vidCommit = 2; // what commitNewest does
  t.same(step(core.committed()), [{ kind: 'finish', pauseMs: 0 }], 'admitted: no pause');
  t.equal(core.attempting, false);
  // The rotation starts again: the next attempt asks the primary first.
  t.equal((step(core.start())[0] as Extract<JoinAction, { kind: 'ask' }>).target, 'p0');
});

t.test('asking: an OK whose history leaves us out finishes after the retry pause', async (t) => {
  const { core, step } = replica('b3', [['p0', 'b1']]);
  step(core.start());
  t.same(kinds(step(core.answered(reply(RsmStatus.OK, history(['p0', 'b1']))))), ['commitNewest'], 'nothing newer to adopt');
  t.same(step(core.committed()), [{ kind: 'finish', pauseMs: RETRY_MS }]);
});

t.test('asking: a bad history is not adopted', async (t) => {
  const { core, step } = replica('b3', [['p0', 'b1']]);
  step(core.start());
  const bad: HistoryEntry[] = [{ instance: 2, value: 'p0' }];
  t.same(step(core.answered(reply(RsmStatus.OK, bad))), [{ kind: 'finish', pauseMs: RETRY_MS }]);
});

t.test('asking: BUSY catches up from the candidate; a new primary restarts the rotation', async (t) => {
  const { core, model, step } = replica('b3', [['p0', 'b1', 'b2']]);
  step(core.start());
  t.same(step(core.answered(reply(RsmStatus.BUSY))), [{ kind: 'catchUp', from: 'p0' }]);
  model.views.push(['b1', 'b2']);
  t.same(kinds(step(core.caughtUp())), ['commitNewest']);
  model.vidCommit = 2;
  model.primary = 'b1';
  t.same(step(core.committed()), [{ kind: 'finish', pauseMs: RETRY_MS }]);
  const next = step(core.start());
  t.equal((next[0] as Extract<JoinAction, { kind: 'ask' }>).target, 'b1', 'the new primary is asked first');
});

t.test('asking: a failed call rotates to the next candidate', async (t) => {
  const { core, step } = replica('b3', [['p0', 'b1', 'b2']]);
  const targets: string[] = [];
  for (let i = 0; i < 3; i++) {
    targets.push((step(core.start())[0] as Extract<JoinAction, { kind: 'ask' }>).target);
    t.same(step(core.answered({ ok: false, error: { code: 'RPC_TIMEOUT' } })), [{ kind: 'finish', pauseMs: RETRY_MS }]);
  }
  t.equal(new Set(targets).size, 3, `three different candidates: ${targets.join(' ')}`);
  t.notOk(targets.includes('b3'), 'never itself');
});

t.test('asking: another cluster is reported and nothing is adopted', async (t) => {
  for (const answer of [reply(RsmStatus.CLUSTER_MISMATCH, [], ''), reply(RsmStatus.OK, history(['p0'], ['p0', 'b3']), 'c2')]) {
    const { core, step } = replica('b3', [['p0']]);
    step(core.start());
    t.same(step(core.answered(answer)), [{ kind: 'reportClusterMismatch', peer: 'p0' }, { kind: 'finish', pauseMs: RETRY_MS }]);
  }
});

t.test('asking: once stopped, an outcome ends the attempt without another action', async (t) => {
  const { core, model, step } = replica('b3', [['p0']]);
  step(core.start());
  model.stopped = true;
  t.same(step(core.answered(reply(RsmStatus.OK, history(['p0'], ['p0', 'b3'])))), [{ kind: 'finish', pauseMs: 0 }]);
});

t.test('asking: a failed action forgets the attempt; a second start while one runs is a bug', async (t) => {
  const { core, step } = replica('b3', [['p0']]);
  step(core.start());
  t.throws(() => core.start(), /while one is asking/);
  step(core.answered(reply(RsmStatus.BUSY)));
  t.same(step(core.failed()), []);
  t.equal(core.attempting, false);
  t.throws(() => core.caughtUp(), /caught up while idle/, 'a late outcome of a forgotten action is caught');
});

t.test('admitting: only the primary of a synchronised view admits, after add and flush', async (t) => {
  const { core, model, step } = replica('p0', [['p0', 'b1']]);
  t.same(step(core.answer(1, 'b2', 'c1')), [{ kind: 'add', delivery: 1, src: 'b2', vid: 1 }]);
  t.equal(core.admitting, 1);
  model.views.push(['p0', 'b1', 'b2']); // the Paxos round of config.add
  t.same(step(core.added(1)), [{ kind: 'flush', delivery: 1 }]);
  const ok = step(core.flushed(1));
  t.same(ok, [{ kind: 'reply', delivery: 1, status: RsmStatus.OK, result: { history: history(['p0', 'b1'], ['p0', 'b1', 'b2']), cluster: 'c1' } }]);
  t.equal(core.admitting, 0);
  // A member (asking again after a lost reply) gets OK after a flush, without another round.
  model.vidCommit = 2;
  t.same(step(core.answer(2, 'b2', 'c1')), [{ kind: 'flush', delivery: 2 }]);
  t.equal((step(core.flushed(2))[0] as Extract<JoinAction, { kind: 'reply' }>).status, RsmStatus.OK);
});

t.test('admitting: a round that did not admit the joiner is BUSY', async (t) => {
  const { core, step } = replica('p0', [['p0', 'b1']]);
  step(core.answer(1, 'b2', 'c1'));
  t.same(kinds(step(core.added(1))), ['reply']);
  t.equal(core.admitting, 0);
});

t.test('admitting: refusals', async (t) => {
  const statusOf = (actions: JoinAction[]) => (actions.length === 1 && actions[0]!.kind === 'reply' ? actions[0]!.status : -1);
  const primary = replica('p0', [['p0', 'b1']]);
  t.equal(statusOf(primary.step(primary.core.answer(1, 'p0', 'c1'))), RsmStatus.ERR, 'its own id');
  t.equal(statusOf(primary.step(primary.core.answer(2, 'not an id!', 'c1'))), RsmStatus.ERR, 'a bad id');
  t.equal(statusOf(primary.step(primary.core.answer(3, 'b2', 'c2'))), RsmStatus.CLUSTER_MISMATCH, 'another cluster');
  primary.model.inViewChange = true;
  t.equal(statusOf(primary.step(primary.core.answer(4, 'b2', 'c1'))), RsmStatus.BUSY, 'a view not synchronised yet');
  const backup = replica('b1', [['p0', 'b1']]);
  t.equal(statusOf(backup.step(backup.core.answer(1, 'b2', 'c1'))), RsmStatus.BUSY, 'not the primary');
  t.equal(primary.core.admitting + backup.core.admitting, 0, 'nothing left waiting');
});

t.test('admitting: a failed add forgets the delivery', async (t) => {
  const { core, step } = replica('p0', [['p0', 'b1']]);
  step(core.answer(1, 'b2', 'c1'));
  t.same(step(core.failed(1)), []);
  t.equal(core.admitting, 0);
  t.throws(() => core.added(1), /unknown/, 'a late outcome is caught');
});

/**
 * A JoinHost over `replica`'s position and model, with effects that succeed at once: joinreq
 * answers `answer`, config's rounds change the model as the real ones would.
 */
function host(me: string, views: string[][], answer: JoinReply) {
  const { model, position } = replica(me, views);
  const config = Object.assign(Object.create(position.config) as JoinPosition['config'], {
    adoptHistory: async (hist: HistoryEntry[]) => {
      model.views = hist.map((h) => h.value.split(' '));
      return true;
    },
    catchUp: async () => undefined,
    add: async (src: string) => {
      model.views.push([...(model.views.at(-1) ?? []), src]);
      return true;
    },
    flushed: async () => undefined,
    reportClusterMismatch: () => undefined,
  });
  const effects: JoinEffects = Object.assign(Object.create(position) as JoinPosition, {
    rpc: { call: async () => answer } as unknown as JoinEffects['rpc'],
    config,
    addressOf: (id: string) => `addr-${id}`,
    commitNewest: () => {
      model.vidCommit = model.views.length;
    },
    pause: async () => !model.stopped,
  });
  return { host: new JoinHost(effects, true), model };
}

t.test('host: an attempt runs to its finish; an admission to its reply', async (t) => {
  const asking = host('b3', [['p0']], reply(RsmStatus.OK, history(['p0'], ['p0', 'b3'])));
  await asking.host.attempt();
  t.same(asking.model.views, [['p0'], ['p0', 'b3']], 'the history from the primary was adopted');
  t.equal(asking.model.vidCommit, 2, 'and its newest view committed');
  t.equal(asking.host.core.attempting, false);
  asking.host.invariants();

  const admitting = host('p0', [['p0', 'b1']], reply(RsmStatus.OK));
  const answer = await admitting.host.answer('b2', 'c1');
  t.equal(answer.status, RsmStatus.OK);
  t.same(answer.result.history, history(['p0', 'b1'], ['p0', 'b1', 'b2']));
  admitting.host.invariants();
});

t.test('host: a throw while feeding an outcome rejects the attempt or the delivery', async (t) => {
  const asking = host('b3', [['p0']], reply(RsmStatus.OK, history(['p0'], ['p0', 'b3'])));
  asking.host.core.answered = () => {
    throw new Error('planted: the core asserts on the answer');
  };
  await t.rejects(asking.host.attempt(), /planted/, 'the attempt rejects (the replica reports it as fatal)');

  const admitting = host('p0', [['p0', 'b1']], reply(RsmStatus.OK));
  admitting.host.core.flushed = () => {
    throw new Error('planted: the core asserts on the flush');
  };
  await t.rejects(admitting.host.answer('b2', 'c1'), /planted/, 'the joinreq handler rejects');
});
