/**
 * The snapshot a replica serves in chunks (rsm/snapshot-cache.ts): only a state larger than one
 * chunk is kept, chunks come from the same bytes until the state moves, a bad offset and an
 * unknown snapshot are told apart, and an idle snapshot is dropped while a used one stays.
 */
import t from 'tap';
import type { Clock, Timer } from '../lib/env.js';
import { SNAPSHOT_IDLE_MS, SnapshotCache } from '../rsm/snapshot-cache.js';

/** A clock that moves only when told, firing due timers in order. */
function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0;
  let timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  return {
    now: () => now,
    setTimer(delayMs: number, fn: () => void): Timer {
      const timer = { at: now + delayMs, fn, live: true };
      timers.push(timer);
      return { cancel: () => void (timer.live = false) };
    },
    advance(ms: number): void {
      const until = now + ms;
      for (;;) {
        const due = timers.filter((timer) => timer.live && timer.at <= until).sort((a, b) => a.at - b.at)[0];
        if (due === undefined) break;
        now = due.at;
        due.live = false;
        timers = timers.filter((timer) => timer.live);
        due.fn();
      }
      now = until;
    },
  };
}

t.test('a large state is kept and served in chunks; a small one is not kept', async (t) => {
  const clock = manualClock();
  const cache = new SnapshotCache(clock, 4);
  let marshalled = 0;
  const state = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const at = { vid: 2, seqno: 7 };
  t.same(cache.bytesAt(at, () => (marshalled++, state)), state);
  t.same(cache.bytesAt(at, () => (marshalled++, state)), state);
  t.equal(marshalled, 1, 'marshalled once for one viewstamp');
  t.same(cache.chunk(at, 4), { ok: true, bytes: Uint8Array.from([5, 6, 7, 8]) });
  t.same(cache.chunk(at, 8), { ok: true, bytes: Uint8Array.from([9, 10]) }, 'the last chunk is short');
  t.same(cache.chunk(at, 10), { ok: false, why: 'offset', size: 10 }, 'an offset past the end');
  t.same(cache.chunk(at, 0), { ok: false, why: 'offset', size: 10 }, 'offset 0 is in the transferreq answer, not a chunk');
  t.same(cache.chunk({ vid: 2, seqno: 8 }, 4), { ok: false, why: 'gone', size: 0 }, 'another viewstamp');
  cache.invariants();
  cache.bytesAt({ vid: 2, seqno: 8 }, () => Uint8Array.from([1, 2]));
  t.equal(cache.keptAt, undefined, 'a state within one chunk replaces the kept one and is not kept');
});

t.test('an idle snapshot is dropped; a used one stays', async (t) => {
  const clock = manualClock();
  const cache = new SnapshotCache(clock, 1);
  const at = { vid: 1, seqno: 1 };
  cache.bytesAt(at, () => new Uint8Array(8));
  clock.advance(SNAPSHOT_IDLE_MS - 1000);
  t.ok(cache.chunk(at, 1).ok, 'used just before the idle limit');
  clock.advance(SNAPSHOT_IDLE_MS - 1000);
  t.same(cache.keptAt, at, 'kept: it was used within the last idle period');
  cache.invariants();
  clock.advance(SNAPSHOT_IDLE_MS);
  t.equal(cache.keptAt, undefined, 'dropped once nobody asked for a whole idle period');
  t.same(cache.chunk(at, 1), { ok: false, why: 'gone', size: 0 });
  cache.invariants();
});
