/**
 * The held log (rsm/held-log.ts): a checkpoint keeps every entry after its viewstamp, the entry
 * at it and the newest entries before it within the retain bounds, and drops exactly the rest; an
 * installed state drops everything; the counts since the checkpoint follow; invariants() holds
 * throughout and catches a gap.
 */
import fc from 'fast-check';
import t from 'tap';
import { HeldLog } from '../rsm/held-log.js';
import { successor } from '../rsm/invoke-rule.js';
import { compareViewstamp, type Viewstamp } from '../rsm/protocol.js';
import type { LogEntry } from '../rsm/replica-store.js';

const entry = (vs: Viewstamp, bytes: number): LogEntry => ({ vs, timeMs: 0, proc: 1, request: new Uint8Array(bytes) });
const key = (vs: Viewstamp): string => `${vs.vid}.${vs.seqno}`;

t.test('a checkpoint keeps what the rule keeps and returns the rest', async (t) => {
  const step = fc.record({
    sizes: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 12 }),
    newView: fc.boolean(),
    executed: fc.nat(),
    installed: fc.boolean(),
    retainRequests: fc.integer({ min: 0, max: 6 }),
    retainBytes: fc.integer({ min: 0, max: 120 }),
  });
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 8 }), (steps) => {
      const log = new HeldLog();
      let next: Viewstamp = { vid: 1, seqno: 1 };
      let last: Viewstamp = { vid: 0, seqno: 0 };
      for (const s of steps) {
        if (s.newView) next = { vid: next.vid + 1, seqno: 1 };
        for (const size of s.sizes) {
          log.add(entry(next, size));
          next = successor(next);
        }
        // Execute some of the held entries beyond last (the rest stay logged, not executed).
        const beyond = log.entries.filter((held) => compareViewstamp(held.vs, last) > 0);
        if (beyond.length > 0) last = beyond[Math.min(beyond.length - 1, s.executed % (beyond.length + 1))]?.vs ?? last;
        log.invariants(last);
        const before = log.entries.map((held) => held);
        const dropped = log.checkpoint(last, s);
        // The model: what the rule keeps.
        const expected = new Set<string>();
        if (!s.installed) {
          let retained = 0;
          let retainedBytes = 0;
          for (let i = before.length - 1; i >= 0; i--) {
            const held = before[i]!;
            if (compareViewstamp(held.vs, last) >= 0) expected.add(key(held.vs));
            else if (retained < s.retainRequests && retainedBytes + held.bytes <= s.retainBytes) {
              expected.add(key(held.vs));
              retained++;
              retainedBytes += held.bytes;
            } else break; // the newest that fit, without a gap
          }
        }
        const kept = log.entries.map((held) => key(held.vs));
        if (kept.length !== expected.size || kept.some((k) => !expected.has(k))) return false;
        if (dropped.length + kept.length !== before.length || dropped.some((vs) => expected.has(key(vs)))) return false;
        const after = log.entries.filter((held) => compareViewstamp(held.vs, last) > 0);
        if (log.sinceRequests !== after.length || log.sinceBytes !== after.reduce((sum, held) => sum + held.bytes, 0)) return false;
        if (log.bytes !== log.entries.reduce((sum, held) => sum + held.bytes, 0)) return false;
        if (s.installed) {
          // The replica installs a state at last and logs on from there.
          if (log.entries.length !== 0) return false;
        } else {
          log.invariants(last);
        }
      }
      return true;
    }),
    { numRuns: 500 },
  );
  t.pass('500 random histories');
});

t.test('invariants() catch a gap and an entry missing at the last executed viewstamp', async (t) => {
  const log = new HeldLog();
  log.add(entry({ vid: 1, seqno: 1 }, 3));
  log.add(entry({ vid: 1, seqno: 3 }, 3));
  t.throws(() => log.invariants({ vid: 1, seqno: 3 }), /log held 1\.3 right after 1\.1/);
  const other = new HeldLog();
  other.add(entry({ vid: 1, seqno: 1 }, 3));
  other.add(entry({ vid: 1, seqno: 2 }, 3));
  t.same(other.invariants({ vid: 1, seqno: 1 }).after, [{ vid: 1, seqno: 2 }], 'the entries after the last executed');
  t.throws(() => other.invariants({ vid: 1, seqno: 5 }), /end before it/, 'held entries that end before the last executed');
  t.same(other.checkpoint({ vid: 1, seqno: 2 }, { installed: false, retainRequests: 0, retainBytes: 0 }), [{ vid: 1, seqno: 1 }]);
  t.equal(other.sinceRequests, 0, 'nothing since a checkpoint at the newest entry');
});
