/**
 * The backup's synchronous core (rsm/backup.ts) on its own, without a host, a clock or a promise:
 * the actions it returns for each event, in order. An accepted batch is held before its commit
 * point executes and answered only once its write is reported; a batch that overtook the one
 * before it waits on a timer and, once the gap fills, is decided in a step of its own (`recheck`);
 * a failed write is ERR; a late timer is ignored. Then a property: for random deliveries and
 * random orders of the outcomes, every delivery is answered exactly once, never OK before the write
 * it depends on is reported, the held requests stay consecutive, and invariants() holds after
 * every step.
 */
import fc from 'fast-check';
import t from 'tap';
import { GAP_WAIT_MS, GAP_WAITERS_MAX, Backup, type BackupAction, type BackupPosition, type Delivery } from '../rsm/backup.js';
import { successor } from '../rsm/invoke-rule.js';
import { compareViewstamp, RsmStatus, type BatchEntry, type Viewstamp } from '../rsm/protocol.js';
import type { LogEntry } from '../rsm/replica-store.js';
import { withStanding } from './helpers/standing.js';

const OK = RsmStatus.OK;
const ERR = RsmStatus.ERR;
const VID = 2;
const at = (seqno: number): Viewstamp => ({ vid: VID, seqno });
const NONE = at(0);

const batch = (from: number, count: number, fill = 1): BatchEntry[] =>
  Array.from({ length: count }, (_, i) => ({ vs: at(from + i), timeMs: 0, proc: 7, req: new Uint8Array([fill, from + i]) }));

/**
 * A backup serving view 2 that carries out the core's actions itself, as its host would, except
 * that writes and timers stay outstanding until the test reports them.
 */
function replica() {
  const held: LogEntry[] = [];
  const executed: LogEntry[] = [];
  const model = { expected: at(1), last: NONE, lastRequest: undefined as LogEntry | undefined, inViewChange: false, stopped: false, primary: 'p0', vidCommit: VID };
  const position: BackupPosition = withStanding(
    {
      me: 'b1',
      get expected() {
        return model.expected;
      },
      get lastHeld() {
        return model.last;
      },
      get lastHeldRequest() {
        return model.lastRequest;
      },
      get awaitingCommit() {
        return held.length;
      },
      executable: (committed: Viewstamp) => (model.inViewChange || model.stopped ? 0 : held.filter((e) => compareViewstamp(e.vs, committed) <= 0).length),
    },
    model,
  );
  const core = new Backup(position);
  const replies = new Map<Delivery, number[]>();
  /** Deliveries whose write (hold or awaitDurable) is outstanding. */
  const writes = new Set<Delivery>();
  const timers = new Set<Delivery>();
  /** The last viewstamp's seqno of each batch delivered, and the first of each hold not yet written. */
  const batchLast = new Map<Delivery, number>();
  const unwrittenHolds = new Map<Delivery, number>();
  let breakpoints = 0;
  /** Carries out `actions` (and the rechecks they ask for); returns them all, in order. */
  const perform = (actions: BackupAction[]): BackupAction[] => {
    const all: BackupAction[] = [];
    core.invariants();
    for (let queue = actions; queue.length > 0; ) {
      const action = queue.shift()!;
      all.push(action);
      switch (action.kind) {
        case 'execute':
          while (held.length > 0 && compareViewstamp(held[0]!.vs, action.committed) <= 0) executed.push(held.shift()!);
          break;
        case 'hold': {
          const tail = action.entries[action.entries.length - 1]!;
          for (const entry of action.entries) held.push(entry);
          model.expected = successor(tail.vs);
          model.last = tail.vs;
          model.lastRequest = tail;
          writes.add(action.delivery);
          unwrittenHolds.set(action.delivery, action.entries[0]!.vs.seqno);
          break;
        }
        case 'awaitDurable':
          writes.add(action.delivery);
          break;
        case 'setGapTimer':
          expect(action.ms === GAP_WAIT_MS, `gap timer of ${action.ms} ms`);
          timers.add(action.delivery);
          break;
        case 'cancelGapTimer':
          timers.delete(action.delivery);
          break;
        case 'recheck':
          expect(queue.length === 0, 'recheck is not the last action of its step');
          queue = core.moved();
          core.invariants();
          break;
        case 'breakpoint1':
          breakpoints++;
          break;
        case 'reply':
          expect(!writes.has(action.delivery), `delivery ${action.delivery} answered with its write outstanding`);
          if (action.status === OK && batchLast.has(action.delivery)) {
            // OK means durable here up to the batch's last request, whichever hold logged it.
            const last = batchLast.get(action.delivery)!;
            for (const [hold, first] of unwrittenHolds) expect(first > last, `delivery ${action.delivery} (up to ${last}) acknowledged while the hold of ${first} (delivery ${hold}) is not durable`);
          }
          replies.set(action.delivery, [...(replies.get(action.delivery) ?? []), action.status]);
          break;
      }
    }
    return all;
  };
  return {
    core,
    model,
    held,
    executed,
    replies,
    writes,
    timers,
    get breakpoints() {
      return breakpoints;
    },
    perform,
    receive: (delivery: Delivery, entries: BatchEntry[], committed: Viewstamp) => {
      if (entries.length > 0) batchLast.set(delivery, entries[entries.length - 1]!.vs.seqno);
      return perform(core.receive(delivery, entries, committed));
    },
    written: (delivery: Delivery) => {
      writes.delete(delivery);
      unwrittenHolds.delete(delivery);
      return perform(core.written(delivery));
    },
    failed: (delivery: Delivery) => {
      writes.delete(delivery);
      unwrittenHolds.delete(delivery);
      return perform(core.writeFailed(delivery));
    },
    fire: (delivery: Delivery) => {
      timers.delete(delivery);
      return perform(core.gapTimerFired(delivery));
    },
  };
}

/** Throws: a failed check inside a property run must stop it (and let fast-check shrink). */
function expect(condition: boolean, problem: string): void {
  if (!condition) throw new Error(problem);
}

const kinds = (actions: readonly BackupAction[]): string[] => actions.map((a) => (a.kind === 'reply' ? `reply ${a.status === OK ? 'OK' : a.status === ERR ? 'ERR' : a.status}` : a.kind));
const seqnos = (entries: readonly LogEntry[]): number[] => entries.map((e) => e.vs.seqno);

t.test('an accepted batch: held, then its commit point executes, and OK only once its write is reported', async (t) => {
  const r = replica();
  t.same(kinds(r.perform(r.core.receive(1, batch(1, 2), NONE))), ['hold'], 'nothing to execute yet, no answer before the write');
  t.same(kinds(r.written(1)), ['reply OK']);
  t.same(kinds(r.perform(r.core.receive(2, batch(3, 1), at(3)))), ['hold', 'execute'], 'held first, so the fsync overlaps the execution, which covers the batch itself');
  t.same(seqnos(r.executed), [1, 2, 3]);
  t.same(kinds(r.written(2)), ['breakpoint1', 'reply OK'], 'breakpoint 1 after executing, before the answer');
  t.equal(r.core.awaitingWrite, 0);
});

t.test('a failed write is ERR, and so is a write reported once the replica stopped', async (t) => {
  const r = replica();
  r.perform(r.core.receive(1, batch(1, 1), NONE));
  t.same(kinds(r.failed(1)), ['reply ERR']);
  r.perform(r.core.receive(2, batch(2, 1), NONE));
  r.model.stopped = true;
  t.same(kinds(r.written(2)), ['reply ERR']);
  t.throws(() => r.core.written(2), 'a second outcome for one write is a host bug');
});

t.test('acknowledgements go in the order the writes began, whatever order the writes are reported in', async (t) => {
  const r = replica();
  r.receive(1, batch(1, 2), NONE);
  r.receive(2, batch(3, 1), NONE);
  r.receive(3, batch(3, 1), NONE); // the last one again: answered once every write so far is durable
  t.same(kinds(r.written(2)), [], 'batch 3 waits for batch 1..2');
  t.same(kinds(r.written(3)), []);
  t.same(
    r.written(1).map((a) => (a.kind === 'reply' ? a.delivery : a.kind)),
    [1, 2, 3],
    'then all three, in order',
  );
  r.receive(4, batch(4, 1), NONE);
  r.receive(5, batch(5, 1), NONE);
  t.same(kinds(r.written(5)), []);
  t.same(kinds(r.failed(4)), ['reply ERR', 'reply ERR'], 'after a lost write, nothing held later is acknowledged');
  r.receive(6, batch(6, 1), NONE);
  t.same(kinds(r.written(6)), ['reply ERR']);
});

t.test('a batch that overtook the one before it waits on a timer; once the gap fills it is decided in a step of its own', async (t) => {
  const r = replica();
  t.same(kinds(r.perform(r.core.receive(1, batch(3, 2), NONE))), ['setGapTimer']);
  t.equal(r.core.heldForGap, 1);
  const filled = r.perform(r.core.receive(2, batch(1, 2), NONE));
  t.same(kinds(filled), ['hold', 'recheck', 'cancelGapTimer', 'hold'], 'the missing batch is held, then the waiting one after it');
  t.same(seqnos(r.held), [1, 2, 3, 4]);
  t.equal(r.core.heldForGap, 0);
  t.same(r.timers, new Set());
  t.same(kinds(r.written(2)), ['reply OK'], 'the missing batch, held first, is acknowledged first');
  t.same(kinds(r.written(1)), ['reply OK']);
  t.same(kinds(r.fire(1)), [], 'a timer that fires after its cancel changes nothing');
});

t.test('several waiting batches are decided one per step, each against the position the previous one left', async (t) => {
  const r = replica();
  r.perform(r.core.receive(1, batch(3, 1), NONE));
  r.perform(r.core.receive(2, batch(2, 1), NONE));
  t.equal(r.core.heldForGap, 2);
  const actions = r.perform(r.core.receive(3, batch(1, 1), NONE));
  t.same(kinds(actions), ['hold', 'recheck', 'cancelGapTimer', 'hold', 'recheck', 'cancelGapTimer', 'hold']);
  t.same(seqnos(r.held), [1, 2, 3], 'in viewstamp order although 3 came first');
});

t.test('a gap that does not fill is refused when its timer fires; the bound on waiting batches holds', async (t) => {
  const r = replica();
  for (let i = 0; i < GAP_WAITERS_MAX; i++) t.same(kinds(r.perform(r.core.receive(i + 1, batch(5 + i, 1), NONE))), ['setGapTimer']);
  t.same(kinds(r.perform(r.core.receive(99, batch(20, 1), NONE))), ['reply ERR'], 'one more waits for nothing');
  t.same(kinds(r.fire(1)), ['reply ERR', 'recheck'], 'refused; the others are looked at again (none has its gap filled)');
  t.equal(r.core.heldForGap, GAP_WAITERS_MAX - 1);
  r.model.inViewChange = true;
  const refused = r.perform(r.core.moved());
  t.same(kinds(refused).slice(0, 3), ['cancelGapTimer', 'reply ERR', 'recheck'], 'a view change refuses them, one per step');
  t.equal(r.core.heldForGap, 0);
  t.same(r.held, []);
});

t.test('commit executes up to its point and answers at once; refused off a serving backup', async (t) => {
  const r = replica();
  r.perform(r.core.receive(1, batch(1, 3), NONE));
  r.written(1);
  t.same(kinds(r.perform(r.core.commit(2, VID, at(2)))), ['execute', 'breakpoint1', 'reply OK']);
  t.same(kinds(r.perform(r.core.commit(3, VID, at(2)))), ['reply OK'], 'nothing more to execute: no breakpoint');
  t.same(kinds(r.perform(r.core.commit(4, VID + 1, at(3)))), ['reply ERR'], 'another view');
  t.same(seqnos(r.executed), [1, 2]);
});

t.test('property: every delivery answered once, never before its write, held requests consecutive, invariants after every step', async (t) => {
  type Op =
    /** `ahead`: how far past the viewstamp expected it starts (negative: before it); `commit`: how far before it the commit point is. */
    | { kind: 'batch'; ahead: number; count: number; commit: number }
    /** The last batch delivered, again (the primary's resend of a lost acknowledgement). */
    | { kind: 'again' }
    | { kind: 'commit'; point: number }
    | { kind: 'written'; pick: number }
    | { kind: 'fire'; pick: number }
    | { kind: 'moved'; viewChange: boolean };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('batch' as const), ahead: fc.oneof(fc.constant(0), fc.integer({ min: -4, max: 8 })), count: fc.integer({ min: 1, max: 4 }), commit: fc.integer({ min: 0, max: 6 }) }), weight: 5 },
    { arbitrary: fc.constant({ kind: 'again' as const }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('commit' as const), point: fc.integer({ min: 0, max: 24 }) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('written' as const), pick: fc.nat() }), weight: 4 },
    { arbitrary: fc.record({ kind: fc.constant('fire' as const), pick: fc.nat() }), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant('moved' as const), viewChange: fc.boolean() }), weight: 1 },
  );
  let answered = 0;
  let acknowledged = 0;
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const r = replica();
      let next = 1;
      let lastBatch: [BatchEntry[], Viewstamp] | undefined;
      const nth = <T>(set: Set<T>, pick: number): T | undefined => [...set][pick % Math.max(1, set.size)];
      for (const o of ops) {
        if (o.kind === 'batch') {
          const from = Math.max(1, r.model.expected.seqno + o.ahead);
          lastBatch = [batch(from, o.count), at(Math.max(0, r.model.expected.seqno - 1 - o.commit))];
          r.receive(next++, ...lastBatch);
        } else if (o.kind === 'again') {
          if (lastBatch !== undefined) r.receive(next++, ...lastBatch);
        } else if (o.kind === 'commit') {
          r.perform(r.core.commit(next++, VID, at(o.point)));
        } else if (o.kind === 'written') {
          const d = nth(r.writes, o.pick);
          if (d !== undefined) r.written(d);
        } else if (o.kind === 'fire') {
          const d = nth(r.timers, o.pick);
          if (d !== undefined) r.fire(d);
        } else {
          if (o.viewChange) r.model.inViewChange = true;
          r.perform(r.core.moved());
        }
        // The requests held and executed are exactly 1, 2, 3, ... up to the last one held.
        const all = [...seqnos(r.executed), ...seqnos(r.held)];
        if (!all.every((s, i) => s === i + 1)) throw new Error(`held out of order: ${all.join(' ')}`);
      }
      // Let every outcome happen: all timers fire, all writes complete.
      for (let rounds = 0; rounds < 1000 && (r.writes.size > 0 || r.timers.size > 0); rounds++) {
        const w = nth(r.writes, 0);
        if (w !== undefined) r.written(w);
        const d = nth(r.timers, 0);
        if (d !== undefined) r.fire(d);
      }
      for (let d = 1; d < next; d++) {
        const got = r.replies.get(d) ?? [];
        if (got.length !== 1) throw new Error(`delivery ${d} answered ${got.length} times`);
        answered++;
        if (got[0] === OK) acknowledged++;
      }
      if (r.core.heldForGap !== 0 || r.core.awaitingWrite !== 0) throw new Error('deliveries left tracked after every outcome');
    }),
    { numRuns: 300, seed: 20261207 },
  );
  t.ok(answered > 300, `${answered} deliveries answered over 300 random runs`);
  t.ok(acknowledged > answered / 10, `${acknowledged} of them OK: the runs reach the accepting paths, not only refusals`);
});
