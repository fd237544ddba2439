/**
 * The state a replica serves to another in chunks (transferchunk). A state larger than one
 * transfer answer is marshalled once and kept, so that every chunk comes from the same bytes:
 *
 * 1. `bytesAt(last, marshal)` gives the marshalled state at `last`: the kept one if it is at
 *    `last`, otherwise a new one (which replaces it, and is kept when larger than one chunk).
 * 2. `chunk(last, offset)` serves the kept bytes from `offset`: gone when nothing is kept at
 *    `last` (the asker starts over with transferreq), a bad offset when outside it.
 * 3. Each use renews it; nobody asking for SNAPSHOT_IDLE_MS drops it (its memory is the whole
 *    state), and so does `drop` (the replica stops).
 */
import { assert } from '../lib/assert.js';
import type { Clock, Timer } from '../lib/env.js';
import { compareViewstamp, describeViewstamp, type Viewstamp } from './protocol.js';

/** A snapshot nobody fetched from for this long is dropped. */
export const SNAPSHOT_IDLE_MS = 30_000;

interface Snapshot {
  readonly last: Viewstamp;
  readonly bytes: Uint8Array;
  /** Our clock when a replica last asked for it. */
  usedAt: number;
}

export type ChunkAnswer = { readonly ok: true; readonly bytes: Uint8Array } | { readonly ok: false; readonly why: 'gone' | 'offset'; readonly size: number };

export class SnapshotCache {
  private kept: Snapshot | undefined;
  private timer: Timer | undefined;

  constructor(
    private readonly clock: Clock,
    /** Bytes per chunk (and per transfer answer): only a larger state is kept. */
    readonly chunkBytes: number,
  ) {
    assert(Number.isSafeInteger(chunkBytes) && chunkBytes >= 1, `chunk size ${chunkBytes}`);
  }

  /** The viewstamp of the kept state, if any. */
  get keptAt(): Viewstamp | undefined {
    return this.kept?.last;
  }

  /** The marshalled state at `last` (see the header, step 1). */
  bytesAt(last: Viewstamp, marshal: () => Uint8Array): Uint8Array {
    const kept = this.kept;
    if (kept !== undefined && compareViewstamp(kept.last, last) === 0) {
      kept.usedAt = this.clock.now();
      return kept.bytes;
    }
    const bytes = marshal();
    this.drop();
    if (bytes.length > this.chunkBytes) {
      this.kept = { last, bytes, usedAt: this.clock.now() };
      this.arm();
    }
    return bytes;
  }

  /** The kept state at `last` from `offset`, at most one chunk (see the header, step 2). */
  chunk(last: Viewstamp, offset: number): ChunkAnswer {
    const kept = this.kept;
    if (kept === undefined || compareViewstamp(kept.last, last) !== 0) return { ok: false, why: 'gone', size: 0 };
    if (!Number.isSafeInteger(offset) || offset <= 0 || offset >= kept.bytes.length) return { ok: false, why: 'offset', size: kept.bytes.length };
    kept.usedAt = this.clock.now();
    return { ok: true, bytes: kept.bytes.subarray(offset, offset + this.chunkBytes) };
  }

  drop(): void {
    this.kept = undefined;
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** A kept state is larger than one chunk, and its idle timer runs. `who` starts the message. */
  invariants(who = 'snapshot invariants'): void {
    const kept = this.kept;
    if (kept === undefined) return;
    const ok = kept.bytes.length > this.chunkBytes && this.timer !== undefined;
    assert(ok, ok ? '' : `${who}: a snapshot at ${describeViewstamp(kept.last)} of ${kept.bytes.length} bytes (chunks of ${this.chunkBytes}), timer ${this.timer !== undefined}`);
  }

  private arm(): void {
    this.timer = this.clock.setTimer(SNAPSHOT_IDLE_MS, () => {
      this.timer = undefined;
      const kept = this.kept;
      if (kept === undefined) return;
      if (this.clock.now() - kept.usedAt >= SNAPSHOT_IDLE_MS) this.kept = undefined;
      else this.arm();
    });
  }
}
