/**
 * The synchronisation core (rsm/view-sync.ts) on its own, without a host, a clock or a network:
 * the actions it returns for each event, in order. The primary collects from every backup,
 * adopts the newest state only when newer than its own and never from a forged answer, serves
 * until every backup reported after a pull of its present state, and nudges the silent ones. A
 * backup pulls until its state is the primary's, reports, and pulls again after a BUSY. A run
 * whose view is gone ends, and its late outcomes are dropped. invariants() is checked after
 * every step. Last, the host (rsm/view-sync-host.ts) over fake effects.
 */
import t from 'tap';
import { RsmStatus, TransferKind, type TransferRes, type Viewstamp } from '../rsm/protocol.js';
import { ViewSync, type SyncReply, type ViewSyncAction, type ViewSyncPosition } from '../rsm/view-sync.js';
import { ViewSyncHost, type ViewSyncEffects } from '../rsm/view-sync-host.js';
import { rsmProtocol } from '../rsm/protocol.js';
import { withStanding } from './helpers/standing.js';

const RETRY_MS = 1000;
const vs = (vid: number, seqno: number): Viewstamp => ({ vid, seqno });

/** Replica `me` in view 2 of {p0, b1, b2}; the test moves the model. */
function replica(me: string, primary = 'p0') {
  const model = {
    members: ['p0', 'b1', 'b2'],
    vidCommit: 2,
    primary,
    inViewChange: true,
    stopped: false,
    last: vs(1, 5),
    syncedVid: 1,
    pendingBatches: 0,
    serving: false,
  };
  const position: ViewSyncPosition = withStanding(
    {
      me,
      timing: { syncRetryMs: RETRY_MS, transferTimeoutMs: 500 },
      get last() {
        return model.last;
      },
      get syncedVid() {
        return model.syncedVid;
      },
      get pendingBatches() {
        return model.pendingBatches;
      },
      config: {
        members: () => model.members,
        isMember: (node: string) => model.members.includes(node),
      } as unknown as ViewSyncPosition['config'],
      servingBackups: (vid: number) => model.serving && vid === model.vidCommit,
      transferFor: (theirs: Viewstamp) => ({ kind: TransferKind.NONE, last: model.last, stateBytes: 0, state: new Uint8Array(0), entries: [] }) as TransferRes,
    },
    model,
  );
  const core = new ViewSync(position);
  /** Checks invariants() and plays the host's `enter` into the model. */
  const step = (actions: ViewSyncAction[]): ViewSyncAction[] => {
    core.invariants();
    for (const action of actions) if (action.kind === 'enter') model.serving = action.phase === 'serving' && model.primary === me;
    return actions;
  };
  return { core, model, step, position };
}

const kinds = (actions: ViewSyncAction[]) => actions.map((a) => a.kind);
const ok = <T>(result: T): SyncReply<T> => ({ ok: true, status: RsmStatus.OK, result });
const busy = <T>(result: T): SyncReply<T> => ({ ok: true, status: RsmStatus.BUSY, result });
const lost: SyncReply<never> = { ok: false, error: { code: 'RPC_TIMEOUT' } };
const noneAt = (last: Viewstamp): TransferRes => ({ kind: TransferKind.NONE, last, stateBytes: 0, state: new Uint8Array(0), entries: [] });
const stateAt = (last: Viewstamp, bytes = 3): TransferRes => ({ kind: TransferKind.STATE, last, stateBytes: bytes, state: new Uint8Array(bytes), entries: [] });
const replies = (actions: ViewSyncAction[]) => actions.filter((a): a is Extract<ViewSyncAction, { kind: 'reply' }> => a.kind === 'reply').map((a) => a.reply.status);

t.test('primary: collects from every backup, adopts the newest state, serves until both reported', async (t) => {
  const { core, model, step } = replica('p0');
  const started = step(core.start(2));
  t.same(kinds(started), ['enter', 'askBackup', 'askBackup']);
  const run = (started[1] as Extract<ViewSyncAction, { kind: 'askBackup' }>).run;
  t.same(step(core.answeredByBackup(run, 'b1', ok(noneAt(vs(1, 3))))), [], 'waits for the other backup');
  const adopting = step(core.answeredByBackup(run, 'b2', ok(stateAt(vs(1, 7)))));
  t.same(kinds(adopting), ['enter', 'fetch']);
  t.match(adopting[1], { kind: 'fetch', from: 'b2' }, 'the newest, newer than ours, is fetched');
  const install = step(core.fetched(run, { ok: true, transfer: { kind: 'state', state: new Uint8Array(3) } }));
  t.match(install, [{ kind: 'installState', last: vs(1, 7), from: 'b2' }]);
  model.last = vs(1, 7);
  t.same(kinds(step(core.installed(run, true))), ['awaitDurable']);
  const serving = step(core.durable(run));
  t.same(serving, [{ kind: 'enter', vid: 2, phase: 'serving' }, { kind: 'setTimer', run, ms: RETRY_MS }]);

  // b1 reports before it pulled: it must pull again.
  t.same(replies(step(core.answerTransferDone(1, { m: 'b1', vid: 2 }))), [RsmStatus.BUSY]);
  t.same(kinds(step(core.answerTransfer(2, { src: 'b1', last: vs(1, 3), vid: 2 }))), ['quiesce']);
  t.same(kinds(step(core.quiesced(2))), ['forgetAcknowledgements', 'reply'], 'b1 installs our state: its acknowledgements are forgotten');
  t.same(step(core.answerTransferDone(3, { m: 'b1', vid: 2 })), [{ kind: 'reply', delivery: 3, reply: { status: RsmStatus.OK, result: 0 } }, { kind: 'setTimer', run, ms: RETRY_MS }]);

  // Silence for syncRetryMs: only b2, which has not reported, is nudged.
  t.same(
    step(core.timerFired(run)).map((a) => (a.kind === 'nudge' ? `nudge ${a.backup}` : a.kind)),
    ['nudge b2', 'setTimer'],
  );
  step(core.answerTransfer(4, { src: 'b2', last: vs(1, 7), vid: 2 }));
  t.same(kinds(step(core.quiesced(4))), ['reply'], 'its state is ours: nothing forgotten');
  const done = step(core.answerTransferDone(5, { m: 'b2', vid: 2 }));
  t.same(done.slice(1), [{ kind: 'enter', vid: 2, phase: 'recording' }, { kind: 'finish', run, synced: true }]);
  t.equal(core.running, false);
});

t.test('primary: a forged answer is ignored; a failed ask is retried after a pause', async (t) => {
  const { core, step } = replica('p0');
  const run = (step(core.start(2))[1] as Extract<ViewSyncAction, { kind: 'askBackup' }>).run;
  t.same(step(core.answeredByBackup(run, 'b1', lost)), [{ kind: 'pause', run, attempt: 0, backup: 'b1' }]);
  t.same(kinds(step(core.paused(run, true, 'b1'))), ['askBackup']);
  t.same(step(core.answeredByBackup(run, 'b1', lost)), [{ kind: 'pause', run, attempt: 1, backup: 'b1' }], 'the pause grows');
  step(core.paused(run, true, 'b1'));
  // A last in the view being synchronised: nobody executes there before it is synchronised.
  step(core.answeredByBackup(run, 'b1', ok(stateAt(vs(2, 1)))));
  // Newer than ours with nothing to take us there.
  const serving = step(core.answeredByBackup(run, 'b2', ok(noneAt(vs(1, 9)))));
  t.same(kinds(serving), ['enter', 'setTimer'], 'nothing adopted: straight to serving');
});

t.test('backup: pulls, reports, and pulls again after a BUSY', async (t) => {
  const { core, model, step } = replica('b1');
  const started = step(core.start(2));
  t.match(started, [{ kind: 'enter', phase: 'pulling' }, { kind: 'pull', primary: 'p0', args: { src: 'b1', last: vs(1, 5), vid: 2 } }]);
  const run = (started[1] as Extract<ViewSyncAction, { kind: 'pull' }>).run;
  t.same(kinds(step(core.pulled(run, ok(noneAt(vs(1, 5)))))), ['awaitDurable'], 'its state is ours already');
  t.match(step(core.durable(run)), [{ kind: 'enter', phase: 'reporting' }, { kind: 'report', args: { m: 'b1', vid: 2 } }]);
  t.same(step(core.reported(run, busy(0))), [{ kind: 'pause', run, attempt: 0 }]);
  model.last = vs(1, 6);
  t.match(step(core.paused(run, true)), [{ kind: 'enter', phase: 'pulling' }, { kind: 'pull', args: { last: vs(1, 6) } }], 'BUSY: pull again, from our last now');
  t.same(kinds(step(core.pulled(run, ok(stateAt(vs(1, 8)))))), ['fetch']);
  t.same(kinds(step(core.fetched(run, { ok: false, reason: 'transferchunk at 3: RPC_TIMEOUT' }))), ['pause'], 'a failed fetch is retried');
  t.same(kinds(step(core.paused(run, true))), ['pull'], 'a retry of the same pull enters no phase');
  t.same(kinds(step(core.pulled(run, ok(noneAt(vs(1, 8)))))), ['pause'], 'NONE with another last is not our state');
  step(core.paused(run, true));
  step(core.pulled(run, ok(noneAt(vs(1, 6)))));
  step(core.durable(run));
  t.same(step(core.reported(run, ok(0))), [{ kind: 'finish', run, synced: true }]);
});

t.test('a run whose view is gone ends; its late outcomes are dropped', async (t) => {
  const { core, model, step } = replica('b1');
  const run = (step(core.start(2))[1] as Extract<ViewSyncAction, { kind: 'pull' }>).run;
  t.same(step(core.moved()), [], 'nothing moved');
  model.vidCommit = 3;
  t.same(step(core.moved()), [{ kind: 'finish', run, synced: false }]);
  t.same(step(core.pulled(run, ok(noneAt(vs(1, 5))))), [], 'the late answer is dropped');
  // A view gone by the time an outcome comes (no `moved` in between) ends the run there.
  const next = (step(core.start(3))[1] as Extract<ViewSyncAction, { kind: 'pull' }>).run;
  model.stopped = true;
  t.same(step(core.pulled(next, lost)), [{ kind: 'finish', run: next, synced: false }]);
  t.throws(() => core.pulled(next + 1, lost), /never started/, 'an outcome of a run that never started is a bug');
});

t.test('answers: BUSY outside the view; a backup resynchronises for its primary', async (t) => {
  const backup = replica('b1');
  t.same(replies(backup.step(backup.core.answerTransfer(1, { src: 'p0', last: vs(1, 5), vid: 3 }))), [RsmStatus.BUSY], 'a view not committed here');
  t.same(replies(backup.step(backup.core.answerTransfer(2, { src: 'b9', last: vs(1, 5), vid: 2 }))), [RsmStatus.BUSY], 'not a member');
  t.same(replies(backup.step(backup.core.answerTransfer(3, { src: 'b2', last: vs(1, 5), vid: 2 }))), [RsmStatus.BUSY], 'not our primary');
  t.same(replies(backup.step(backup.core.answerTransfer(4, { src: 'p0', last: vs(1, 5), vid: 2 }))), [RsmStatus.OK], 'our primary collecting');
  backup.model.inViewChange = false;
  t.same(backup.step(backup.core.answerTransfer(5, { src: 'p0', last: vs(1, 5), vid: 2 })), [{ kind: 'resync', delivery: 5 }], 'serving: synchronise the view again first');
  t.equal(backup.core.answering, 1);
  t.same(replies(backup.step(backup.core.resynced(5))), [RsmStatus.OK]);
  t.equal(backup.core.answering, 0);

  const primary = replica('p0');
  primary.model.pendingBatches = 2;
  primary.model.inViewChange = false;
  primary.step(primary.core.answerTransfer(1, { src: 'b1', last: vs(1, 2), vid: 2 }));
  t.same(kinds(primary.step(primary.core.quiesced(1))), ['forgetAcknowledgements', 'stall', 'reply'], 'a serving primary with pending batches stalls them');
  primary.step(primary.core.answerTransfer(2, { src: 'b1', last: vs(1, 2), vid: 2 }));
  primary.model.inViewChange = true;
  t.same(replies(primary.step(primary.core.quiesced(2))), [RsmStatus.BUSY], 'a view change began meanwhile');
  t.same(replies(primary.step(primary.core.answerTransferDone(3, { m: 'b1', vid: 2 }))), [RsmStatus.BUSY], 'transferdonereq outside the synchronisation, in a view change');
  primary.model.inViewChange = false;
  t.same(replies(primary.step(primary.core.answerTransferDone(4, { m: 'b1', vid: 2 }))), [RsmStatus.OK], 'a retry while serving the view');
});

t.test('a failed action forgets the run; a second start while one runs is a bug', async (t) => {
  const { core, step } = replica('b1');
  const run = (step(core.start(2))[1] as Extract<ViewSyncAction, { kind: 'pull' }>).run;
  t.throws(() => core.start(2), /while one is pulling/);
  step(core.pulled(run, ok(noneAt(vs(1, 5)))));
  t.same(step(core.failed(run)), []);
  t.equal(core.running, false);
  t.same(step(core.durable(run)), [], 'the late outcome of a forgotten run is dropped');
});

/** A ViewSyncHost over `replica`'s position, its calls answered by `answer(method)`, everything else at once. */
function host(me: string, answer: (method: number) => SyncReply<unknown> | Promise<SyncReply<unknown>>) {
  const { model, position } = replica(me);
  const log: string[] = [];
  const effects: ViewSyncEffects = Object.assign(Object.create(position) as ViewSyncPosition, {
    rpc: {
      call: async (_address: string, method: { id: number }) => {
        log.push(method.id === rsmProtocol.transferreq.id ? 'transferreq' : 'transferdonereq');
        return answer(method.id);
      },
    } as unknown as ViewSyncEffects['rpc'],
    clock: { now: () => 0, setTimer: () => ({ cancel: () => undefined }) } as unknown as ViewSyncEffects['clock'],
    addressOf: (id: string) => `addr-${id}`,
    durable: Promise.resolve(),
    drained: async () => undefined,
    enter: (_vid: number, phase: string) => log.push(`enter ${phase}`),
    quiesced: <T>(task: () => Promise<T>) => task(),
    forgetAcknowledgements: (backup: string) => log.push(`forget ${backup}`),
    stall: () => log.push('stall'),
    resync: () => log.push('resync'),
    executeEntries: () => log.push('execute'),
    installState: () => true,
    transferPause: async () => !model.stopped,
  });
  return { host: new ViewSyncHost(effects, true), model, log };
}

t.test('host: a backup run to its finish; a primary answers inside the quiesced section', async (t) => {
  const backup = host('b1', (method) => (method === rsmProtocol.transferreq.id ? ok(noneAt(vs(1, 5))) : ok(0)));
  t.equal(await backup.host.sync(2), true);
  t.same(backup.log, ['enter pulling', 'transferreq', 'enter reporting', 'transferdonereq']);
  backup.host.invariants();

  const primary = host('p0', () => lost);
  primary.model.inViewChange = false;
  const reply = await primary.host.answerTransfer('b1', vs(1, 2), 2);
  t.equal(reply.status, RsmStatus.OK);
  t.same(primary.log, ['forget b1']);
  primary.host.invariants();
});

t.test('host: a throw while feeding an outcome rejects the run; a view gone resolves it false', async (t) => {
  const planted = host('b1', () => ok(noneAt(vs(1, 5))));
  planted.host.core.pulled = () => {
    throw new Error('planted: the core asserts on the answer');
  };
  await t.rejects(planted.host.sync(2), /planted/, 'the run rejects (the replica reports it as fatal)');
  t.equal(planted.host.core.running, false, 'and the core forgot it');

  let release: (reply: SyncReply<unknown>) => void = () => undefined;
  const gone = host('b1', () => new Promise((resolve) => (release = resolve)));
  const running = gone.host.sync(2);
  gone.model.vidCommit = 3;
  gone.host.wake();
  t.equal(await running, false);
  release(ok(noneAt(vs(1, 5))));
  await new Promise((resolve) => setImmediate(resolve));
  gone.host.invariants();
  t.equal(gone.host.core.running, false, 'the late answer started nothing');
});
