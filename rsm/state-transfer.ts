/**
 * State transfer, both sides, as pure functions plus the one fetch loop (rsm/README.md, "State
 * transfer"):
 *
 * - the answering side picks what to send for the asker's last viewstamp (`chooseTransfer`):
 *   nothing when the asker is where we are; the entries of our log after its last when it is a
 *   little behind and we still hold them (`logSuffix`); else our marshalled state, whose first
 *   chunk (at most TRANSFER_CHUNK_BYTES) travels in the answer and the rest in transferchunk calls;
 * - the asking side checks what arrived (`transferProblem`) and fetches the rest of a large
 *   state, two chunks in flight (`fetchTransfer`).
 *
 * Sending entries is exact, not a shortcut: a viewstamp is given to one request only, so a
 * replica whose last is L holds the state of every request up to L in the order of its history,
 * and the entries after L in ours take it to our last.
 */
import type { RpcEndpoint } from '../lib/rpc.js';
import {
  RsmStatus,
  TRANSFER_CHUNK_BYTES,
  TRANSFER_ENTRIES_BYTES_MAX,
  TRANSFER_ENTRIES_MAX,
  TRANSFER_STATE_BYTES_MAX,
  TransferKind,
  compareViewstamp,
  describeViewstamp,
  rsmProtocol,
  type BatchEntry,
  type TransferRes,
  type Viewstamp,
} from './protocol.js';
import { followsInHistory, type LogEntry } from './replica-store.js';

const EMPTY = new Uint8Array(0);

/** What the asking side adopts once a transfer is complete. */
export type Transfer =
  | { readonly kind: 'none' }
  | { readonly kind: 'entries'; readonly entries: readonly LogEntry[] }
  | { readonly kind: 'state'; readonly state: Uint8Array };

/**
 * The entries of `log` (ascending, this replica's history since some point) after `from`, up to
 * and including `last`, when the log holds the entry at `from` and every one after it without a
 * gap, within TRANSFER_ENTRIES_MAX and TRANSFER_ENTRIES_BYTES_MAX. Undefined otherwise: the asker
 * then needs the whole state.
 */
export function logSuffix(log: readonly { readonly entry: LogEntry }[], from: Viewstamp, last: Viewstamp): LogEntry[] | undefined {
  if (compareViewstamp(from, last) >= 0) return undefined;
  let low = 0;
  let high = log.length - 1;
  let at = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const order = compareViewstamp(log[middle]!.entry.vs, from);
    if (order === 0) {
      at = middle;
      break;
    }
    if (order < 0) low = middle + 1;
    else high = middle - 1;
  }
  if (at < 0) return undefined;
  const suffix: LogEntry[] = [];
  let bytes = 0;
  let previous = from;
  for (let i = at + 1; i < log.length; i++) {
    const entry = log[i]!.entry;
    if (compareViewstamp(entry.vs, last) > 0) break; // the primary's pending batch: not executed yet
    if (!followsInHistory(previous, entry.vs)) return undefined;
    bytes += entry.request.length;
    suffix.push(entry);
    if (suffix.length > TRANSFER_ENTRIES_MAX || bytes > TRANSFER_ENTRIES_BYTES_MAX) return undefined;
    previous = entry.vs;
  }
  return compareViewstamp(previous, last) === 0 ? suffix : undefined;
}

/**
 * The answer to a transferreq from a replica whose last is `theirs`, from one whose last is
 * `ours`. `onlyIfNewer`: a backup answering its primary's collection sends something only when
 * ours is newer (the primary adopts the newest state of the view); the primary answering its
 * backup sends whenever they differ (the backup takes the primary's state, even an older one).
 * `state()` marshals (or returns the cached) state at `ours`.
 */
export function chooseTransfer(
  theirs: Viewstamp,
  ours: Viewstamp,
  onlyIfNewer: boolean,
  log: readonly { readonly entry: LogEntry }[],
  state: () => Uint8Array,
  chunkBytes = TRANSFER_CHUNK_BYTES,
): TransferRes {
  const order = compareViewstamp(theirs, ours);
  if (order === 0 || (onlyIfNewer && order > 0)) return { kind: TransferKind.NONE, last: ours, stateBytes: 0, state: EMPTY, entries: [] };
  const suffix = order < 0 ? logSuffix(log, theirs, ours) : undefined;
  if (suffix !== undefined) {
    const entries = suffix.map(({ vs, timeMs, proc, request }): BatchEntry => ({ vs, timeMs, proc, req: request }));
    return { kind: TransferKind.ENTRIES, last: ours, stateBytes: 0, state: EMPTY, entries };
  }
  const bytes = state();
  return { kind: TransferKind.STATE, last: ours, stateBytes: bytes.length, state: bytes.subarray(0, Math.min(chunkBytes, TRANSFER_CHUNK_BYTES)), entries: [] };
}

/**
 * What is wrong with a transferreq answer to an asker whose last is `asked`, if anything. It must
 * be one of the three kinds; entries must continue the asker's history from `asked` without a gap
 * and end at the answer's last; a state must be within TRANSFER_STATE_BYTES_MAX, its first chunk
 * no longer than the whole and at most TRANSFER_CHUNK_BYTES.
 */
export function transferProblem(asked: Viewstamp, answer: TransferRes): string | undefined {
  switch (answer.kind) {
    case TransferKind.NONE:
      return answer.entries.length === 0 && answer.stateBytes === 0 ? undefined : 'a NONE answer carrying data';
    case TransferKind.ENTRIES: {
      if (answer.entries.length === 0) return 'an ENTRIES answer without entries';
      let previous = asked;
      for (const entry of answer.entries) {
        if (!followsInHistory(previous, entry.vs)) return `entry ${describeViewstamp(entry.vs)} does not follow ${describeViewstamp(previous)}`;
        previous = entry.vs;
      }
      if (compareViewstamp(previous, answer.last) !== 0) return `entries end at ${describeViewstamp(previous)}, not at last ${describeViewstamp(answer.last)}`;
      return undefined;
    }
    case TransferKind.STATE:
      if (answer.entries.length !== 0) return 'a STATE answer carrying entries';
      if (answer.stateBytes > TRANSFER_STATE_BYTES_MAX) return `a state of ${answer.stateBytes} bytes (at most ${TRANSFER_STATE_BYTES_MAX})`;
      if (answer.state.length > answer.stateBytes || answer.state.length > TRANSFER_CHUNK_BYTES) return `a first chunk of ${answer.state.length} bytes for a state of ${answer.stateBytes}`;
      if (answer.state.length === 0 && answer.stateBytes > 0) return 'an empty first chunk';
      return undefined;
    default:
      return `unknown transfer kind ${answer.kind}`;
  }
}

/** The asker's side of transferchunk: where to fetch, and when to stop trying. */
export interface ChunkSource {
  readonly rpc: RpcEndpoint;
  readonly address: string;
  readonly src: string;
  readonly vid: number;
  readonly timeoutMs: number;
  /** Whether to give up (the view is gone, the node stopped). */
  readonly abandoned: () => boolean;
}

/** Attempts per chunk before the whole transfer is given up (and retried from transferreq). */
const CHUNK_ATTEMPTS = 3;

/**
 * transferchunk calls in flight at once. With one, each 4 MiB chunk cost a full round trip on top
 * of its transmission, the sender idle while the asker copied and the asker idle while the sender
 * encoded; with two, one is prepared while the other travels.
 */
export const CHUNKS_IN_FLIGHT = 2;

/**
 * Completes a checked transferreq answer into a Transfer: for a state longer than its first
 * chunk, fetches the rest with transferchunk, CHUNKS_IN_FLIGHT at a time. Every chunk but the last
 * is as long as the first (the sender's chunk size), so the offsets are known ahead. Resolves
 * `{ ok: false, reason }` when a chunk cannot be had (the sender moved on, or the network failed
 * CHUNK_ATTEMPTS times) or is malformed; the caller starts over with a new transferreq.
 */
export async function fetchTransfer(
  source: ChunkSource,
  answer: TransferRes,
): Promise<{ readonly ok: true; readonly transfer: Transfer } | { readonly ok: false; readonly reason: string }> {
  switch (answer.kind) {
    case TransferKind.NONE:
      return { ok: true, transfer: { kind: 'none' } };
    case TransferKind.ENTRIES: {
      const entries = answer.entries.map(({ vs, timeMs, proc, req }): LogEntry => ({ vs, timeMs, proc, request: req.slice() }));
      return { ok: true, transfer: { kind: 'entries', entries } };
    }
  }
  if (answer.state.length === answer.stateBytes) return { ok: true, transfer: { kind: 'state', state: answer.state.slice() } };
  const state = new Uint8Array(answer.stateBytes);
  state.set(answer.state, 0);
  const chunkBytes = answer.state.length;
  let next = chunkBytes;
  let failure: string | undefined;
  /** Fetches chunks at `next` (claimed in turn) until the state is complete or one fails. */
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < state.length) {
      const offset = next;
      next += chunkBytes;
      const expected = Math.min(chunkBytes, state.length - offset);
      let chunk: Uint8Array | undefined;
      let why = '';
      for (let attempt = 0; attempt < CHUNK_ATTEMPTS && chunk === undefined; attempt++) {
        if (failure !== undefined) return;
        if (source.abandoned()) {
          failure = 'abandoned';
          return;
        }
        const reply = await source.rpc.call(
          source.address,
          rsmProtocol.transferchunk,
          { src: source.src, vid: source.vid, last: answer.last, offset },
          { timeoutMs: source.timeoutMs },
        );
        if (reply.ok && reply.status === RsmStatus.OK) chunk = reply.result;
        else if (reply.ok) {
          failure ??= `transferchunk at ${offset}: status ${reply.status}`;
          return;
        } else why = reply.error.code;
      }
      if (failure !== undefined) return;
      if (chunk === undefined) {
        failure = `transferchunk at ${offset}: ${why}`;
        return;
      }
      if (chunk.length !== expected) {
        failure = `transferchunk at ${offset}: ${chunk.length} bytes, ${expected} expected`;
        return;
      }
      state.set(chunk, offset);
    }
  };
  await Promise.all(Array.from({ length: CHUNKS_IN_FLIGHT }, worker));
  if (failure !== undefined) return { ok: false, reason: failure };
  return { ok: true, transfer: { kind: 'state', state } };
}
