/**
 * The primary's core (rsm/primary.ts) on its own, without a host, a clock or a network: the
 * actions it returns for each event, in order. Group commit (the sends and our write at once, no
 * execution before every member holds a batch), the test hooks after the first answer, the resend
 * after a reordering ERR, the stall and its recovery round, the quiesce queue, the commit notice,
 * a view change's settlement and a stop. invariants() is checked after every step. Last, the host
 * (rsm/primary-host.ts) over fake effects.
 */
import t from 'tap';
import type { HandlerReply } from '../lib/rpc.js';
import type { PendingBatch, WaitingRequest } from '../rsm/pipeline.js';
import { COMMIT_IDLE_MS, Primary, type PrimaryAction, type PrimaryPosition, type SendReply } from '../rsm/primary.js';
import { PrimaryHost, type PrimaryEffects } from '../rsm/primary-host.js';
import { decodeInvokeReply, RsmClientStatus, RsmStatus, type Viewstamp } from '../rsm/protocol.js';
import { withStanding } from './helpers/standing.js';

const RETRY_MS = 1000;
const vs = (vid: number, seqno: number): Viewstamp => ({ vid, seqno });
const OK: SendReply = { ok: true, status: RsmStatus.OK };
const ERR: SendReply = { ok: true, status: RsmStatus.ERR };
const LOST: SendReply = { ok: false, code: 'RPC_TIMEOUT' };

type Of<K extends PrimaryAction['kind']> = Extract<PrimaryAction, { kind: K }>;

/** The primary p0 serving view 2 of {p0, b1, b2}; the test moves the model. */
function primary(requestsMax = 100) {
  const model = { members: ['p0', 'b1', 'b2'], vidCommit: 2, primary: 'p0', inViewChange: false, stopped: false, next: vs(2, 1), started: true };
  const position: PrimaryPosition = withStanding(
    {
      me: 'p0',
      timing: { syncRetryMs: RETRY_MS },
      config: { members: () => model.members } as unknown as PrimaryPosition['config'],
      get next() {
        return model.next;
      },
      get started() {
        return model.started;
      },
      stampTime: () => 7,
    },
    model,
  );
  const core = new Primary(position, requestsMax);
  const answers = new Map<string, HandlerReply<Uint8Array>[]>();
  /** Checks invariants() and plays the host's setNext and answers into the model. */
  const step = (actions: PrimaryAction[]): PrimaryAction[] => {
    core.invariants();
    for (const action of actions) {
      if (action.kind === 'setNext') model.next = action.next;
      if (action.kind === 'answer') for (const request of action.requests) request.answer(action.reply);
    }
    return actions;
  };
  const request = (name: string): WaitingRequest => ({
    proc: 1,
    request: new TextEncoder().encode(name),
    answer: (reply) => answers.set(name, [...(answers.get(name) ?? []), reply]),
  });
  return { core, model, step, request, answers };
}

const kinds = (actions: readonly PrimaryAction[]) => actions.map((a) => a.kind);
const find = <K extends PrimaryAction['kind']>(actions: readonly PrimaryAction[], kind: K): Of<K>[] => actions.filter((a): a is Of<K> => a.kind === kind);
const statusOf = (replies: HandlerReply<Uint8Array>[] | undefined) => replies?.map((reply) => reply.status);

/** Invokes `names` and stamps them (an idle pipeline: the microtask after the read). */
function stampOne(p: ReturnType<typeof primary>, ...names: string[]): { batch: PendingBatch; actions: PrimaryAction[] } {
  const invoked = names.map((name) => p.step(p.core.invoked(p.request(name))));
  const actions = p.step(invoked.some((a) => kinds(a).includes('pumpAfterRead')) ? p.core.pumpDue() : p.core.timerFired('pump'));
  const sends = find(actions, 'send');
  return { batch: sends[sends.length - 1]!.batch, actions };
}

t.test('group commit: the sends and our write at once, executed once every member holds the batch', async (t) => {
  const p = primary();
  const { step, core } = p;
  t.same(kinds(step(core.invoked(p.request('a')))), ['pumpAfterRead'], 'an idle pipeline stamps after the read');
  t.same(kinds(step(core.invoked(p.request('b')))), [], 'one pump for the whole read');
  const stamped = step(core.pumpDue());
  t.same(kinds(stamped), ['setNext', 'stamped', 'send', 'appendLog'], 'stamped, sent, then logged');
  const send = find(stamped, 'send')[0]!;
  t.same(send.to.map((s) => s.backup), ['b1', 'b2']);
  t.same(send.batch.entries.map((e) => e.vs), [vs(2, 1), vs(2, 2)], 'one batch, consecutive viewstamps');
  t.same(p.model.next, vs(2, 3));
  t.same(find(stamped, 'stamped')[0]!.event, { first: vs(2, 1), size: 2, bytes: 2, behind: 0 });

  t.same(kinds(step(core.sent('first', send.batch, 'b1', OK, 1))), ['passHooks'], 'the hooks right after the first answer, nothing executed');
  t.same(kinds(step(core.sent('first', send.batch, 'b2', OK, 1))), [], 'both backups hold it, our write does not yet: not executed');
  const done = step(core.written(send.batch, true));
  t.same(kinds(done), ['execute', 'setTimer'], 'executed at once, then the commit notice timed');
  const execute = find(done, 'execute')[0]!;
  t.equal(execute.role, 'primary');
  t.same(execute.requests.map((r) => new TextDecoder().decode(r.request)), ['a', 'b'], 'its clients, in entry order');
  t.same(find(done, 'setTimer')[0], { kind: 'setTimer', timer: 'commit', ms: COMMIT_IDLE_MS });
  t.equal(core.pipeline.batches.length, 0);
});

t.test('a busy pipeline stamps after the turn, at most PIPELINE_DEPTH batches in flight', async (t) => {
  const p = primary();
  const { step, core } = p;
  stampOne(p, 'a');
  t.same(kinds(step(core.invoked(p.request('b')))), ['setTimer'], 'busy: the pump timer');
  t.same(find(step(core.invoked(p.request('c'))), 'setTimer'), [], 'one pump timer at a time');
  const second = step(core.timerFired('pump'));
  t.same(kinds(second), ['setNext', 'stamped', 'send', 'appendLog']);
  t.equal(find(second, 'stamped')[0]!.event.behind, 1, 'stamped while one is in flight');
  for (const name of ['d', 'e']) stampOne(p, name);
  t.equal(core.pipeline.batches.length, 4);
  step(core.invoked(p.request('f')));
  t.same(kinds(step(core.timerFired('pump'))), [], 'full: the request waits');
  t.equal(core.pipeline.waitingCount, 1);
});

t.test('an ERR from a batch that overtook the one before it: resent once that one is acknowledged', async (t) => {
  const p = primary();
  const { step, core } = p;
  const first = stampOne(p, 'a').batch;
  const second = stampOne(p, 'b').batch;
  step(core.sent('first', first, 'b2', OK, 1));
  step(core.sent('first', second, 'b2', OK, 1));
  t.same(kinds(step(core.sent('first', second, 'b1', ERR, 1))), [], 'waits for the first batch\'s round');
  step(core.written(second, true));
  step(core.written(first, true));
  const acked = step(core.sent('first', first, 'b1', OK, 1));
  t.same(kinds(acked), ['execute', 'send'], 'the first batch executed, the second resent to b1 only');
  const resend = find(acked, 'send')[0]!;
  t.equal(resend.batch, second);
  t.same(resend.to.map((s) => s.backup), ['b1']);
  const finished = step(core.sent('first', second, 'b1', OK, 1));
  t.same(kinds(finished), ['execute', 'setTimer'], 'acknowledged on the resend: executed');
  t.notOk(core.pipeline.stalled);
});

t.test('a batch lacking an acknowledgement stalls the pipeline; the recovery round resends it', async (t) => {
  const p = primary();
  const { step, core } = p;
  const { batch } = stampOne(p, 'a');
  step(core.sent('first', batch, 'b1', OK, 1));
  step(core.written(batch, true));
  const stalled = step(core.sent('first', batch, 'b2', LOST, 1));
  t.same(kinds(stalled), ['answer', 'send'], 'BUSY to its client, and the recovery round resends it');
  t.same(statusOf(p.answers.get('a')), [RsmClientStatus.BUSY]);
  const resend = find(stalled, 'send')[0]!;
  t.equal(resend.round, 'recovery');
  t.same(resend.to.map((s) => s.backup), ['b2'], 'only to the backup that lacks it');
  t.ok(core.pipeline.stalled && core.recoveryQueued);

  step(core.invoked(p.request('b')));
  t.equal(p.answers.get('b'), undefined, 'a request while stalled waits for the pump');
  step(core.timerFired('pump'));
  t.same(statusOf(p.answers.get('b')), [RsmClientStatus.BUSY], 'then gets BUSY');

  const recovered = step(core.sent('recovery', batch, 'b2', OK, 1));
  t.same(kinds(recovered), ['execute', 'setTimer'], 'executed (nobody answered: it got BUSY), the notice timed');
  t.same(find(recovered, 'execute')[0]!.requests, []);
  t.notOk(core.pipeline.stalled, 'running again');
  t.notOk(core.recoveryQueued);
  t.same(kinds(stampOne(p, 'c').actions), ['setNext', 'stamped', 'send', 'appendLog'], 'and stamps again');
});

t.test('a recovery round that cannot finish is retried after syncRetryMs', async (t) => {
  const p = primary();
  const { step, core } = p;
  const { batch } = stampOne(p, 'a');
  step(core.written(batch, true));
  step(core.sent('first', batch, 'b1', OK, 1));
  step(core.sent('first', batch, 'b2', LOST, 1));
  const failed = step(core.sent('recovery', batch, 'b2', LOST, 1));
  t.same(find(failed, 'setTimer'), [{ kind: 'setTimer', timer: 'retry', ms: RETRY_MS }]);
  t.ok(core.pipeline.stalled);
  t.notOk(core.recoveryQueued, 'no round queued: the timer is');
  const again = step(core.timerFired('retry'));
  t.same(find(again, 'send').map((s) => [s.round, s.to.map((x) => x.backup)]), [['recovery', ['b2']]]);
});

t.test('quiesce: granted once the running rounds end; requests wait meanwhile; the pipeline pumps after', async (t) => {
  const p = primary();
  const { step, core } = p;
  const { batch } = stampOne(p, 'a');
  t.same(step(core.quiesce(1)), [], 'a round runs: not granted yet');
  step(core.invoked(p.request('b')));
  t.same(find(step(core.timerFired('pump')), 'send'), [], 'no round starts while a task waits to quiesce');
  step(core.written(batch, true));
  step(core.sent('first', batch, 'b1', OK, 1));
  const ended = step(core.sent('first', batch, 'b2', OK, 1));
  t.same(kinds(ended), ['execute', 'setTimer', 'runQuiesced'], 'the round ended: the task runs (and the idle pipeline times its commit notice)');
  t.same(step(core.quiesce(2)), [], 'the next task queues behind');
  t.same(kinds(step(core.quiesceEnded(1))), ['runQuiesced'], 'then runs');
  const resumed = step(core.quiesceEnded(2));
  t.same(kinds(resumed), ['setNext', 'stamped', 'send', 'appendLog'], 'the queue is empty: the waiting request is stamped');
  t.throws(() => core.quiesceEnded(2), /not running/, 'a task ends once');
});

t.test('the commit notice: only while idle in the view, sent again after syncRetryMs if a backup missed it', async (t) => {
  const p = primary();
  const { step, core } = p;
  const { batch } = stampOne(p, 'a');
  step(core.written(batch, true));
  step(core.sent('first', batch, 'b1', OK, 1));
  step(core.sent('first', batch, 'b2', OK, 1));
  const notice = find(step(core.timerFired('commit')), 'noticeCommit')[0]!;
  t.same([notice.vid, notice.backups], [2, ['b1', 'b2']]);
  t.same(step(core.noticed(notice.notice, 'b1', true)), []);
  t.same(step(core.noticed(notice.notice, 'b2', false)), [{ kind: 'setTimer', timer: 'commit', ms: RETRY_MS }], 'one missed it: again later');
  p.model.vidCommit = 3;
  t.same(step(core.timerFired('commit')), [], 'not once the view has changed');

  const q = primary();
  const first = stampOne(q, 'a').batch;
  q.step(q.core.written(first, true));
  q.step(q.core.sent('first', first, 'b1', OK, 1));
  q.step(q.core.sent('first', first, 'b2', OK, 1));
  stampOne(q, 'b');
  t.same(q.step(q.core.timerFired('commit')), [], 'a pending batch carries the commit point');
});

t.test('a view change: BUSY to new requests; settle executes the pending batches as a backup', async (t) => {
  const p = primary();
  const { step, core } = p;
  const { batch } = stampOne(p, 'a');
  step(core.written(batch, true));
  p.model.inViewChange = true;
  t.same(statusOf((step(core.invoked(p.request('b'))), p.answers.get('b'))), [RsmClientStatus.BUSY]);
  step(core.sent('first', batch, 'b1', LOST, 1));
  step(core.sent('first', batch, 'b2', OK, 1));
  t.same(statusOf(p.answers.get('a')), [RsmClientStatus.BUSY], 'the round ended lacking b1: stalled, BUSY');
  const settled = step(core.settle());
  t.same(kinds(settled), ['answer', 'execute'], 'no recovery round was timed (a view change settles the batches)');
  const execute = find(settled, 'execute')[0]!;
  t.same([execute.batch, execute.role, execute.requests], [batch, 'backup', []], 'executed from our log, nobody answered');
  t.notOk(core.pipeline.stalled);
  t.equal(core.pipeline.batches.length, 0);
});

t.test('off the primary NOTPRIMARY; beyond the admission bound BUSY; a stop answers everybody BUSY', async (t) => {
  const p = primary(2);
  const { step, core } = p;
  p.model.primary = 'b1';
  step(core.invoked(p.request('x')));
  t.same(statusOf(p.answers.get('x')), [RsmClientStatus.NOTPRIMARY]);
  p.model.primary = 'p0';
  const { batch } = stampOne(p, 'a');
  step(core.invoked(p.request('b')));
  step(core.invoked(p.request('c')));
  t.same(statusOf(p.answers.get('c')), [RsmClientStatus.BUSY], 'two unanswered already: BUSY');
  p.model.stopped = true;
  const stopped = step(core.stop());
  t.same(find(stopped, 'cancelTimer').map((a) => a.timer), ['pump']);
  t.same([statusOf(p.answers.get('a')), statusOf(p.answers.get('b'))], [[RsmClientStatus.BUSY], [RsmClientStatus.BUSY]]);
  step(core.written(batch, true));
  step(core.sent('first', batch, 'b1', OK, 1));
  t.same(kinds(step(core.sent('first', batch, 'b2', OK, 1))), ['answer'], 'a stopped primary executes nothing');
  t.same(statusOf(p.answers.get('a')), [RsmClientStatus.BUSY], 'and answers each client once');
});

t.test('a log write that ends outside a first round is a bug the core reports', async (t) => {
  const p = primary();
  const { batch } = stampOne(p, 'a');
  p.step(p.core.written(batch, true));
  t.throws(() => p.core.written(batch, true), /outside its first round/);
});

/** The host over fake effects: an endpoint whose calls answer OK at once, a log that is durable at once. */
function hosted(options: { executeThrows?: boolean } = {}) {
  const fatal: unknown[] = [];
  let next = vs(2, 1);
  let last = vs(2, 0);
  const effects = withStanding(
    {
      me: 'p0',
      timing: { syncRetryMs: RETRY_MS, invokeTimeoutMs: 100 },
      config: { members: () => ['p0', 'b1', 'b2'] },
      get next() {
        return next;
      },
      get last() {
        return last;
      },
      started: true,
      rpc: {
        options: { maxConcurrentHandlers: 100 },
        call: async () => ({ ok: true, status: RsmStatus.OK, result: 0 }),
      },
      clock: { now: () => 0, setTimer: (ms: number, fire: () => void) => { const handle = setTimeout(fire, ms); return { cancel: () => clearTimeout(handle) }; } },
      addressOf: (id: string) => id,
      stampTime: () => 7,
      setNext: (vs: Viewstamp) => (next = vs),
      batchStamped: () => undefined,
      appendLog: async () => undefined,
      executeBatch: (batch: PendingBatch) => {
        if (options.executeThrows === true) throw new Error('planted');
        last = batch.entries[batch.entries.length - 1]!.vs;
        return batch.entries.map(() => ({ status: 0, reply: new TextEncoder().encode('done') }));
      },
      partition1: () => undefined,
      breakpoint1: () => undefined,
      fatal: (error: unknown) => fatal.push(error),
    },
    { stopped: false, inViewChange: false, primary: 'p0', vidCommit: 2 },
  ) as unknown as PrimaryEffects;
  return { host: new PrimaryHost(effects, true), fatal, last: () => last };
}

t.test('host: an invoke is answered OK once replicated, logged and executed; a quiesced task runs between rounds', async (t) => {
  const { host, fatal, last } = hosted();
  const reply = await host.invoke(1, new Uint8Array([1]));
  t.equal(reply.status, RsmClientStatus.OK);
  const decoded = decodeInvokeReply(reply.result);
  t.ok(decoded.ok && new TextDecoder().decode(decoded.value.reply) === 'done', 'the service\'s reply');
  t.same(last(), vs(2, 1));
  t.equal(await host.quiesced(() => 'quiet'), 'quiet');
  host.invariants();
  host.stop();
  t.same(fatal, []);
});

t.test('host: a throw while carrying out an action goes to fatal, not out of the handler', async (t) => {
  const { host, fatal } = hosted({ executeThrows: true });
  const reply = await host.invoke(1, new Uint8Array([1]));
  t.equal(reply.status, RsmClientStatus.BUSY, 'its client is still answered');
  t.equal(fatal.length, 1);
  t.match(String(fatal[0]), /planted/);
  host.stop();
});
