/**
 * Property tests of the viewstamp rules (rsm/protocol.ts, rsm/invoke-rule.ts): the viewstamp
 * order, the backup's accept rule for one request and for a batch, the shape of a batch, the
 * expected viewstamp after a synchronisation, and the replica record and invoke reply codecs.
 */
import fc from 'fast-check';
import t from 'tap';
import { batchProblem, classifyBatch, classifyInvoke, nextExpected, successor, type InvokePosition } from '../rsm/invoke-rule.js';
import {
  BATCH_BYTES_MAX,
  BATCH_REQUESTS_MAX,
  VIEWSTAMP_ZERO,
  compareViewstamp,
  decodeInvokeReply,
  encodeInvokeReply,
  type Viewstamp,
} from '../rsm/protocol.js';
import { decodeCheckpoint, decodeLogEntry, decodeSynced, encodeCheckpoint, encodeLogEntry, encodeSynced, logKey, logProblem } from '../rsm/replica-store.js';

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const small = fc.integer({ min: 0, max: 6 });
/** Viewstamps from a small range (many ties) or the whole u32 range. */
const viewstamp = fc.oneof(
  fc.record({ vid: small, seqno: small }),
  fc.record({ vid: u32, seqno: u32 }),
) as fc.Arbitrary<Viewstamp>;

const sign = (n: number): number => (n > 0 ? 1 : n < 0 ? -1 : 0);

t.test('compareViewstamp is a total order equal to (vid, seqno) lexicographic order', async (t) => {
  fc.assert(
    fc.property(viewstamp, viewstamp, viewstamp, (a, b, c) => {
      const ab = compareViewstamp(a, b);
      const lexicographic = a.vid !== b.vid ? sign(a.vid - b.vid) : sign(a.seqno - b.seqno);
      if (sign(ab) !== lexicographic) return false; // consistent with (vid, seqno)
      if (sign(compareViewstamp(b, a)) !== -sign(ab)) return false; // antisymmetric
      if ((ab === 0) !== (a.vid === b.vid && a.seqno === b.seqno)) return false; // equal only when equal
      if (compareViewstamp(a, a) !== 0) return false; // reflexive
      // transitive
      if (compareViewstamp(a, b) <= 0 && compareViewstamp(b, c) <= 0 && compareViewstamp(a, c) > 0) return false;
      return true;
    }),
    { numRuns: 5000 },
  );
  const sorted = [{ vid: 2, seqno: 1 }, { vid: 1, seqno: 9 }, VIEWSTAMP_ZERO, { vid: 1, seqno: 2 }].sort(compareViewstamp);
  t.same(sorted, [VIEWSTAMP_ZERO, { vid: 1, seqno: 2 }, { vid: 1, seqno: 9 }, { vid: 2, seqno: 1 }]);
});

/** Positions a backup can be in: out of a view change, expecting the one after its last. */
const steadyBackup = fc
  .record({ vid: fc.integer({ min: 1, max: 6 }), executedInView: fc.boolean(), seqno: fc.integer({ min: 1, max: 6 }), lastVid: fc.integer({ min: 0, max: 5 }) })
  .map(({ vid, executedInView, seqno, lastVid }): InvokePosition => {
    const last = executedInView ? { vid, seqno } : { vid: Math.min(lastVid, vid - 1), seqno };
    return { inViewChange: false, isPrimary: false, expected: nextExpected(vid, last), last };
  });

t.test('the accept rule takes exactly the expected viewstamp and rejects every gap and old duplicate', async (t) => {
  fc.assert(
    fc.property(steadyBackup, viewstamp, (position, vs) => {
      const decision = classifyInvoke(position, vs).action;
      const order = compareViewstamp(vs, position.expected);
      if (order === 0) return decision === 'accept';
      if (order > 0) return decision === 'reject'; // a gap (later seqno, or any later view)
      // Older than expected: only the last held, stamped in this view, is acknowledged again
      // (never held twice); everything else older is rejected.
      const lastAgain = compareViewstamp(vs, position.last) === 0 && position.last.vid === position.expected.vid;
      return decision === (lastAgain ? 'duplicate' : 'reject');
    }),
    { numRuns: 5000 },
  );
  t.pass();
});

t.test('the accept rule never takes or acknowledges anything in a view change or on the primary', async (t) => {
  fc.assert(
    fc.property(steadyBackup, fc.boolean(), viewstamp, (position, primary, vs) => {
      const changed = primary ? { ...position, isPrimary: true } : { ...position, inViewChange: true };
      return classifyInvoke(changed, vs).action === 'reject';
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

t.test('a sequence of invokes is held once per viewstamp, in order, whatever is resent or reordered', async (t) => {
  // A backup receives an arbitrary mix of the primary's stamps 1..n (resends, reordering, gaps):
  // it must hold 1, 2, …, k for some k with no repeat and nothing skipped.
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 8 }), { maxLength: 40 }), (arrivals) => {
      const vid = 3;
      let last: Viewstamp = { vid: 2, seqno: 7 };
      let expected = nextExpected(vid, last);
      const executed: number[] = [];
      for (const seqno of arrivals) {
        const decision = classifyInvoke({ inViewChange: false, isPrimary: false, expected, last }, { vid, seqno });
        if (decision.action === 'accept') {
          executed.push(seqno);
          last = { vid, seqno };
          expected = successor(last);
        }
      }
      return executed.every((seqno, i) => seqno === i + 1);
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

t.test('the batch rule: accept when the first entry is expected, acknowledge again when the last is our last, else reject', async (t) => {
  fc.assert(
    fc.property(steadyBackup, viewstamp, fc.integer({ min: 1, max: 5 }), (position, first, size) => {
      const last = { vid: first.vid, seqno: first.seqno + size - 1 };
      const decision = classifyBatch(position, first, last).action;
      if (compareViewstamp(first, position.expected) === 0) return decision === 'accept';
      const endsAtLast = compareViewstamp(last, position.last) === 0 && position.last.vid === position.expected.vid && first.seqno >= 1;
      return decision === (endsAtLast ? 'duplicate' : 'reject');
    }),
    { numRuns: 5000 },
  );
  // In a view change or on the primary, nothing.
  const position: InvokePosition = { inViewChange: true, isPrimary: false, expected: { vid: 2, seqno: 1 }, last: { vid: 1, seqno: 4 } };
  t.equal(classifyBatch(position, { vid: 2, seqno: 1 }, { vid: 2, seqno: 3 }).action, 'reject');
  t.equal(classifyBatch({ ...position, inViewChange: false, isPrimary: true }, { vid: 2, seqno: 1 }, { vid: 2, seqno: 3 }).action, 'reject');
});

t.test('a sequence of batches is held once per viewstamp, in order, whatever is resent, reordered or overlapping', async (t) => {
  // A backup receives arbitrary (first, size) batches of view 3 (resends, reordering, gaps and
  // batches that overlap what it has): it must hold 1, 2, …, k with no repeat and nothing skipped.
  fc.assert(
    fc.property(fc.array(fc.record({ first: fc.integer({ min: 0, max: 8 }), size: fc.integer({ min: 1, max: 4 }) }), { maxLength: 40 }), (arrivals) => {
      const vid = 3;
      let last: Viewstamp = { vid: 2, seqno: 7 };
      let expected = nextExpected(vid, last);
      const executed: number[] = [];
      for (const { first, size } of arrivals) {
        const entries = Array.from({ length: size }, (_, i) => ({ vs: { vid, seqno: first + i }, req: new Uint8Array(0) }));
        if (batchProblem(entries) !== undefined) continue;
        const decision = classifyBatch({ inViewChange: false, isPrimary: false, expected, last }, entries[0]!.vs, entries.at(-1)!.vs);
        if (decision.action === 'accept') {
          for (const entry of entries) executed.push(entry.vs.seqno);
          last = entries.at(-1)!.vs;
          expected = successor(last);
        }
      }
      return executed.every((seqno, i) => seqno === i + 1);
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

t.test('batchProblem refuses empty, oversized, non-consecutive and mixed-view batches', async (t) => {
  const entry = (vid: number, seqno: number, bytes = 0): { vs: Viewstamp; req: Uint8Array } => ({ vs: { vid, seqno }, req: new Uint8Array(bytes) });
  const run = (count: number, bytes = 0): Array<{ vs: Viewstamp; req: Uint8Array }> => Array.from({ length: count }, (_, i) => entry(4, 10 + i, bytes));
  t.equal(batchProblem([entry(4, 10)]), undefined, 'one request');
  t.equal(batchProblem(run(BATCH_REQUESTS_MAX)), undefined, `${BATCH_REQUESTS_MAX} requests`);
  t.equal(batchProblem([entry(4, 1, BATCH_BYTES_MAX + 1)]), undefined, 'one request beyond the byte bound travels alone');
  t.equal(batchProblem(run(2, BATCH_BYTES_MAX / 2)), undefined, 'exactly the byte bound');
  t.match(batchProblem([]), /empty/);
  t.match(batchProblem(run(BATCH_REQUESTS_MAX + 1)), /at most 256/);
  t.match(batchProblem(run(2, BATCH_BYTES_MAX / 2 + 1)), /request bytes/);
  t.match(batchProblem([entry(4, 10), entry(4, 12)]), /entry 1 is 4\.12, not 4\.11/);
  t.match(batchProblem([entry(4, 10), entry(4, 10)]), /entry 1/);
  t.match(batchProblem([entry(4, 10), entry(5, 11)]), /entry 1 is 5\.11/);
  t.match(batchProblem([entry(4, 0), entry(4, 1)]), /malformed viewstamp/);
  t.match(batchProblem([entry(4, 0xffff_ffff), entry(4, 2 ** 32)]), /entry 1/);
  t.match(batchProblem([entry(-1, 3)]), /malformed/);
});

t.test('malformed viewstamps are rejected', async (t) => {
  const position: InvokePosition = { inViewChange: false, isPrimary: false, expected: { vid: 1, seqno: 1 }, last: VIEWSTAMP_ZERO };
  for (const vs of [{ vid: 1, seqno: 0 }, { vid: -1, seqno: 1 }, { vid: 1.5, seqno: 1 }, { vid: 2 ** 32, seqno: 1 }, { vid: 1, seqno: NaN }]) {
    t.equal(classifyInvoke(position, vs).action, 'reject', JSON.stringify(vs));
  }
});

t.test('nextExpected: the one after last in the same view, else seqno 1', async (t) => {
  t.same(nextExpected(4, { vid: 4, seqno: 7 }), { vid: 4, seqno: 8 });
  t.same(nextExpected(4, { vid: 2, seqno: 7 }), { vid: 4, seqno: 1 });
  t.same(nextExpected(1, VIEWSTAMP_ZERO), { vid: 1, seqno: 1 });
  t.throws(() => nextExpected(3, { vid: 4, seqno: 1 }), 'last beyond the view is a programmer error');
});

t.test('log entries, checkpoints, synced records and invoke replies round-trip, and bad bytes are refused without throwing', async (t) => {
  const bytes = fc.uint8Array({ maxLength: 40 });
  const vs = fc.record({ vid: u32, seqno: u32 });
  const entry = fc.record({ vs, timeMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), proc: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), request: bytes });
  const checkpoint = fc.record({ last: vs, state: bytes });
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  fc.assert(
    fc.property(entry, checkpoint, u32, (e, c, synced) => {
      const de = decodeLogEntry(encodeLogEntry(e));
      const dc = decodeCheckpoint(encodeCheckpoint(c));
      const ds = decodeSynced(encodeSynced(synced));
      return de.ok && same(de.value, e) && dc.ok && same(dc.value, c) && ds.ok && ds.value === synced;
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(vs, vs, (a, b) => (logKey(a) < logKey(b)) === (compareViewstamp(a, b) < 0) && (logKey(a) === logKey(b)) === (compareViewstamp(a, b) === 0)),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), bytes, (status, reply) => {
      const decoded = decodeInvokeReply(encodeInvokeReply({ status, reply }));
      return decoded.ok && decoded.value.status === status && Buffer.compare(decoded.value.reply, reply) === 0;
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(bytes, (junk) => {
      decodeLogEntry(junk);
      decodeCheckpoint(junk);
      decodeSynced(junk);
      decodeInvokeReply(junk);
      return true;
    }),
    { numRuns: 2000 },
  );
  t.notOk(decodeLogEntry(encodeLogEntry({ vs: { vid: 1, seqno: 1 }, timeMs: 0, proc: 0, request: new Uint8Array(3) }).subarray(0, 10)).ok, 'a truncated log entry is refused');
  t.notOk(decodeInvokeReply(encodeInvokeReply({ status: -1, reply: new Uint8Array(0) })).ok, 'a negative service status is refused');
});

t.test('a restored log must follow its checkpoint without a gap', async (t) => {
  const e = (vid: number, seqno: number) => [logKey({ vid, seqno }), { vs: { vid, seqno }, timeMs: 0, proc: 0, request: new Uint8Array(0) }] as const;
  t.equal(logProblem(VIEWSTAMP_ZERO, []), undefined, 'an empty log');
  t.equal(logProblem(VIEWSTAMP_ZERO, [e(1, 1), e(1, 2), e(3, 1), e(3, 2)]), undefined, 'consecutive seqnos, then seqno 1 of a later view');
  t.equal(logProblem({ vid: 2, seqno: 7 }, [e(2, 8), e(4, 1)]), undefined, 'after a checkpoint');
  t.match(logProblem(VIEWSTAMP_ZERO, [e(1, 1), e(1, 3)]), /gap/, 'a missing seqno');
  t.match(logProblem(VIEWSTAMP_ZERO, [e(1, 1), e(2, 2)]), /gap/, 'a later view not starting at seqno 1');
  t.match(logProblem({ vid: 2, seqno: 7 }, [e(2, 7)]), /not after/, 'an entry the checkpoint covers');
  const [, entry] = e(1, 2);
  t.match(logProblem(VIEWSTAMP_ZERO, [[logKey({ vid: 1, seqno: 1 }), entry]]), /holds entry/, 'a key that does not match its entry');
});
