/**
 * The primary's pipeline core (rsm/pipeline.ts) against a model, driven by random event
 * sequences: a batch leaves as committed only when our write and every backup's acknowledgement
 * (counting a later batch's for the ones before it, struck by forget) are in; batches leave in
 * viewstamp order without a gap; every admitted client is handed back exactly once; admission
 * refuses exactly at its bounds; invariants() holds after every event.
 */
import fc from 'fast-check';
import t from 'tap';
import { successor } from '../rsm/invoke-rule.js';
import { Pipeline, PIPELINE_DEPTH, isComplete, lastOf, type PendingBatch, type WaitingRequest } from '../rsm/pipeline.js';
import { BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, compareViewstamp, type Viewstamp } from '../rsm/protocol.js';

const BACKUPS = ['b1', 'b2'];

type Event =
  | { kind: 'admit'; bytes: number }
  | { kind: 'stamp' }
  | { kind: 'durable'; index: number }
  | { kind: 'ack'; index: number; backup: number }
  | { kind: 'forget'; backup: number }
  | { kind: 'stall' }
  | { kind: 'recover' }
  | { kind: 'viewChange' };

const event: fc.Arbitrary<Event> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('admit' as const), bytes: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constant(BATCH_BYTES_MAX)) }) },
  { weight: 4, arbitrary: fc.constant({ kind: 'stamp' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('durable' as const), index: fc.nat(PIPELINE_DEPTH) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('ack' as const), index: fc.nat(PIPELINE_DEPTH), backup: fc.nat(BACKUPS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('forget' as const), backup: fc.nat(BACKUPS.length - 1) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'stall' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'recover' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'viewChange' as const }) },
);

/** Runs `events` on a pipeline with an admission bound of `bound`, checking it against a model at every step. */
function run(events: readonly Event[], bound: number, bytesMax: number): void {
  const pipeline = new Pipeline(bound, bytesMax);
  let vid = 1;
  let last: Viewstamp = { vid: 0, seqno: 0 };
  let next: Viewstamp = { vid, seqno: 1 };
  let admitted = 0;
  const answers = new Map<number, number>();
  // The model: what each pending batch's backups acknowledged (a later batch's counts for it).
  const ackedOf = new Map<PendingBatch, Set<string>>();
  const expectAcked = (index: number, backup: string): void => {
    pipeline.batches.forEach((batch, i) => {
      if (i <= index) ackedOf.get(batch)!.add(backup);
    });
  };
  const answer = (requests: readonly WaitingRequest[]): void => {
    for (const request of requests) request.answer({ status: 0, result: new Uint8Array(0) });
  };
  const execute = (batch: PendingBatch): void => {
    const first = batch.entries[0]!.vs;
    const expected = first.vid === last.vid ? successor(last) : { vid: first.vid, seqno: 1 };
    if (compareViewstamp(first, expected) !== 0) throw new Error(`executed ${first.vid}.${first.seqno} after ${last.vid}.${last.seqno}`);
    last = lastOf(batch);
    ackedOf.delete(batch);
    answer(pipeline.takeWaiters(batch));
  };
  const drainCommitted = (): void => {
    for (let batch = pipeline.takeCommitted(); batch !== undefined; batch = pipeline.takeCommitted()) {
      const acked = ackedOf.get(batch)!;
      if (!batch.durableHere || !BACKUPS.every((backup) => acked.has(backup))) throw new Error('a batch committed before every member held it');
      execute(batch);
    }
    const head = pipeline.batches[0];
    if (head !== undefined && BACKUPS.every((backup) => ackedOf.get(head)!.has(backup)) && head.durableHere) throw new Error('a complete head was left pending');
  };

  for (const e of events) {
    switch (e.kind) {
      case 'admit': {
        const id = admitted;
        const atBound = pipeline.unanswered() >= bound || pipeline.waitingBytes + e.bytes > bytesMax;
        const ok = pipeline.admit({ proc: 1, request: new Uint8Array(e.bytes), answer: () => answers.set(id, (answers.get(id) ?? 0) + 1) });
        if (ok === atBound) throw new Error(`admit ${ok} with ${pipeline.unanswered()} unanswered and ${pipeline.waitingBytes} bytes waiting`);
        if (ok) admitted++;
        break;
      }
      case 'stamp': {
        if (!pipeline.canStamp) break;
        const waiting = pipeline.waitingCount;
        const batch = pipeline.stamp(next, 7, BACKUPS);
        if (batch.entries.length < 1 || batch.entries.length > Math.min(waiting, BATCH_REQUESTS_MAX)) throw new Error(`a batch of ${batch.entries.length} from ${waiting} waiting`);
        ackedOf.set(batch, new Set());
        next = successor(lastOf(batch));
        break;
      }
      case 'durable': {
        const batch = pipeline.batches[e.index];
        if (batch !== undefined) pipeline.markDurable(batch);
        break;
      }
      case 'ack': {
        const batch = pipeline.batches[e.index];
        if (batch === undefined) break;
        expectAcked(e.index, BACKUPS[e.backup]!);
        pipeline.acknowledge(batch, BACKUPS[e.backup]!);
        break;
      }
      case 'forget':
        for (const acked of ackedOf.values()) acked.delete(BACKUPS[e.backup]!);
        pipeline.forget(BACKUPS[e.backup]!);
        break;
      case 'stall':
        answer(pipeline.stall());
        if (pipeline.canStamp) throw new Error('stamping while stalled');
        break;
      case 'recover':
        // A recovery round: every pending batch is resent and acknowledged by everyone.
        for (let i = pipeline.batches.length - 1; i >= 0; i--) {
          const batch = pipeline.batches[i]!;
          for (const backup of BACKUPS) {
            expectAcked(i, backup);
            pipeline.acknowledge(batch, backup);
          }
          pipeline.markDurable(batch);
        }
        drainCommitted();
        if (pipeline.batches.length === 0) pipeline.resume();
        break;
      case 'viewChange':
        // The view change executes the pending batches from the log without answering OK, and
        // stamping goes on in a new view.
        for (let batch = pipeline.takeHead(); batch !== undefined; batch = pipeline.takeHead()) execute(batch);
        answer(pipeline.takeWaiting());
        pipeline.resume();
        vid++;
        next = { vid, seqno: 1 };
        break;
    }
    drainCommitted();
    pipeline.invariants(last, next);
    for (const batch of pipeline.batches) {
      const acked = ackedOf.get(batch)!;
      if (acked.size !== batch.acked.size || [...acked].some((backup) => !batch.acked.has(backup))) throw new Error('acknowledgements differ from the model');
      if (isComplete(batch) !== (batch.durableHere && BACKUPS.every((backup) => acked.has(backup)))) throw new Error('isComplete differs from the model');
    }
  }
  answer(pipeline.takeClients());
  if (pipeline.unanswered() !== 0 || pipeline.waitingCount !== 0) throw new Error('clients left after takeClients');
  for (let id = 0; id < admitted; id++) if (answers.get(id) !== 1) throw new Error(`client ${id} answered ${answers.get(id) ?? 0} times`);
}

t.test('the pipeline commits only what every member holds, in order, and answers every client once', async (t) => {
  fc.assert(fc.property(fc.array(event, { maxLength: 200 }), fc.integer({ min: 1, max: 12 }), (events, bound) => run(events, bound, 32 * 1024 * 1024)), { numRuns: 400 });
  t.pass('400 random event sequences');
});

t.test('the byte bound refuses a request that would cross it, and a batch keeps within BATCH_BYTES_MAX', async (t) => {
  fc.assert(fc.property(fc.array(event, { maxLength: 120 }), (events) => run(events, 64, 2 * BATCH_BYTES_MAX)), { numRuns: 200 });
  const pipeline = new Pipeline(8, 100);
  t.ok(pipeline.admit({ proc: 1, request: new Uint8Array(60), answer: () => undefined }), 'a request within the byte bound is admitted');
  t.notOk(pipeline.admit({ proc: 1, request: new Uint8Array(41), answer: () => undefined }), 'one that would cross it is refused');
  t.ok(pipeline.admit({ proc: 1, request: new Uint8Array(40), answer: () => undefined }), 'one that reaches it exactly is admitted');
  t.equal(pipeline.waitingBytes, 100);
  const batch = pipeline.stamp({ vid: 1, seqno: 1 }, 0, ['b1']);
  t.same(batch.entries.map((entry) => entry.vs.seqno), [1, 2], 'both are stamped into one batch, consecutively');
  t.equal(pipeline.waitingBytes, 0);
});

t.test('an acknowledgement counts for the batches before it, and forget strikes a backup from all', async (t) => {
  const pipeline = new Pipeline(16);
  const stampOne = (first: Viewstamp): PendingBatch => {
    pipeline.admit({ proc: 1, request: new Uint8Array(1), answer: () => undefined });
    return pipeline.stamp(first, 0, ['b1']);
  };
  const a = stampOne({ vid: 1, seqno: 1 });
  const b = stampOne({ vid: 1, seqno: 2 });
  pipeline.markDurable(a);
  pipeline.markDurable(b);
  pipeline.acknowledge(b, 'b1');
  t.ok(a.acked.has('b1') && b.acked.has('b1'), "b1's acknowledgement of the second batch covers the first");
  pipeline.forget('b1');
  t.equal(pipeline.takeCommitted(), undefined, 'after forget nothing is committed');
  pipeline.acknowledge(a, 'b1');
  t.equal(pipeline.takeCommitted(), a, 'the first batch commits once b1 acknowledges it again');
  t.equal(pipeline.takeCommitted(), undefined, 'the second still lacks b1');
  t.throws(() => pipeline.stamp({ vid: 1, seqno: 9 }, 0, ['b1']), 'stamping with nothing waiting is a bug');
  pipeline.invariants({ vid: 1, seqno: 1 }, { vid: 1, seqno: 3 });
});
