/**
 * The replica's durable records in the node's Storage (next to the Paxos keys): an operation log
 * of stamped requests, a checkpoint of the service state, and the last view this replica finished
 * synchronising (see rsm/README.md, "The operation log").
 *
 *   key rsm/ckpt:    u8 version (2) | u32 last.vid | u32 last.seqno | bytes state
 *                    (the marshalled state after every request up to `last`)
 *   key rsm/synced:  u8 version (2) | u32 syncedVid
 *   key rsm/log/VVVVVVVVSSSSSSSS (vid and seqno as 8 hex digits each, so keys sort in viewstamp
 *                    order): u8 version (2) | u32 vs.vid | u32 vs.seqno | u64 timeMs | i32 proc
 *                    | bytes request
 *
 * A batch of log entries is written in one batch with `sync: true`: on a backup before it
 * acknowledges it, on the primary in parallel with the sends to its backups and before it answers
 * any client of the batch (group commit). A checkpoint is written in one batch with the deletion of every log entry it covers,
 * so a crash leaves either the old checkpoint and the entries or the new checkpoint without them.
 */
import { Writer, decode, type Decoded } from '../lib/codec.js';
import { BLOB_BYTES_MAX, compareViewstamp, type Viewstamp } from './protocol.js';

export const KEY_CHECKPOINT = 'rsm/ckpt';
export const KEY_SYNCED = 'rsm/synced';
export const LOG_PREFIX = 'rsm/log/';
const VERSION = 2;

/** One stamped request, as the primary stamped it; every replica executes it with this context. */
export interface LogEntry {
  readonly vs: Viewstamp;
  /** The stamping primary's clock (ms, whole, ≥ 0) when it stamped the request. */
  readonly timeMs: number;
  readonly proc: number;
  readonly request: Uint8Array;
}

export interface Checkpoint {
  /** The viewstamp of the last request reflected in `state` (VIEWSTAMP_ZERO: none). */
  readonly last: Viewstamp;
  readonly state: Uint8Array;
}

/** The storage key of the log entry at `vs`; keys sort like their viewstamps. */
export function logKey(vs: Viewstamp): string {
  return LOG_PREFIX + hex8(vs.vid) + hex8(vs.seqno);
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

export function encodeLogEntry(entry: LogEntry): Uint8Array {
  const w = new Writer(32 + entry.request.length);
  w.u8(VERSION).u32(entry.vs.vid).u32(entry.vs.seqno).u64(entry.timeMs).i32(entry.proc).bytes(entry.request);
  return w.finish().slice();
}

/** Never throws: unreadable bytes are `{ ok: false, reason }`. */
export function decodeLogEntry(bytes: Uint8Array): Decoded<LogEntry> {
  return decode(bytes, (r) => {
    const version = r.u8();
    if (version !== VERSION) r.fail(`unknown log entry version ${version}`);
    const vs = { vid: r.u32(), seqno: r.u32() };
    const timeMs = r.u64();
    const proc = r.i32();
    const request = r.bytes(BLOB_BYTES_MAX).slice();
    return { vs, timeMs, proc, request };
  });
}

export function encodeCheckpoint(checkpoint: Checkpoint): Uint8Array {
  const w = new Writer(16 + checkpoint.state.length);
  w.u8(VERSION).u32(checkpoint.last.vid).u32(checkpoint.last.seqno).bytes(checkpoint.state);
  return w.finish().slice();
}

/** Never throws. The state blob is bounded by the storage, not the network: no 8 MiB cap here. */
export function decodeCheckpoint(bytes: Uint8Array): Decoded<Checkpoint> {
  return decode(bytes, (r) => {
    const version = r.u8();
    if (version !== VERSION) r.fail(`unknown checkpoint version ${version}`);
    const last = { vid: r.u32(), seqno: r.u32() };
    const state = r.bytes(0xffff_ffff).slice();
    return { last, state };
  });
}

export function encodeSynced(syncedVid: number): Uint8Array {
  return new Writer(8).u8(VERSION).u32(syncedVid).finish().slice();
}

export function decodeSynced(bytes: Uint8Array): Decoded<number> {
  return decode(bytes, (r) => {
    const version = r.u8();
    if (version !== VERSION) r.fail(`unknown synced-view record version ${version}`);
    return r.u32();
  });
}

/**
 * A periodic checkpoint marshals the whole state on the event loop, so its cost grows with the
 * state (about a second for a 33 MB lock table) and the replica answers nothing meanwhile. It is
 * therefore paced: the next one starts no sooner than CHECKPOINT_PACE_FACTOR times the last one's
 * cost after the last one ended, which keeps checkpoints to at most a tenth of a replica's time
 * however large the state. A small state costs about nothing, so the request and byte bounds
 * alone decide. The log grows meanwhile by what arrives in that time, and is held to it.
 */
export const CHECKPOINT_PACE_FACTOR = 9;

/** How long a checkpoint that is due by the request or byte bound waits (see CHECKPOINT_PACE_FACTOR). */
export function checkpointDelayMs(nowMs: number, lastEndedAtMs: number, lastCostMs: number): number {
  return Math.max(0, lastEndedAtMs + CHECKPOINT_PACE_FACTOR * lastCostMs - nowMs);
}

/**
 * Whether `next` can come right after `previous` in a replica's history: the next seqno of the
 * same view, or seqno 1 of a later view (each view's primary stamps 1, 2, … and a view that
 * executed nothing leaves no trace).
 */
export function followsInHistory(previous: Viewstamp, next: Viewstamp): boolean {
  return next.vid === previous.vid ? next.seqno === previous.seqno + 1 : next.vid > previous.vid && next.seqno === 1;
}

/**
 * Checks a restored log against its checkpoint: entries must follow `last` without a gap (the
 * next seqno of the same view, or seqno 1 of a later view) and their keys must match their
 * viewstamps. Returns the entries to replay (those after `last`), or a reason.
 */
export function logProblem(last: Viewstamp, entries: ReadonlyArray<readonly [string, LogEntry]>): string | undefined {
  let prev = last;
  for (const [key, entry] of entries) {
    if (key !== logKey(entry.vs)) return `log key ${key} holds entry ${entry.vs.vid}.${entry.vs.seqno}`;
    if (!followsInHistory(prev, entry.vs)) {
      return compareViewstamp(entry.vs, prev) <= 0
        ? `log entry ${entry.vs.vid}.${entry.vs.seqno} not after ${prev.vid}.${prev.seqno}`
        : `gap in the log after ${prev.vid}.${prev.seqno} (next ${entry.vs.vid}.${entry.vs.seqno})`;
    }
    prev = entry.vs;
  }
  return undefined;
}
