/**
 * The viewstamp rules of the RSM as pure functions, so they can be tested alone (property tests in
 * test/rsm-viewstamp.test.ts): the backup's accept rule for an internal invoke and for a batch,
 * the shape a batch must have, and the next expected viewstamp after a view is synchronised.
 */
import { assert } from '../lib/assert.js';
import { BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, compareViewstamp, describeViewstamp, type Viewstamp } from './protocol.js';

/** What a replica knows when an internal invoke arrives. */
export interface InvokePosition {
  /** Between a view commit and the end of that view's synchronisation. */
  readonly inViewChange: boolean;
  /** This replica is the primary of its committed view (primaries never accept invokes). */
  readonly isPrimary: boolean;
  /** The next viewstamp this backup may accept (the lab's myvs). */
  readonly expected: Viewstamp;
  /**
   * The viewstamp of the last request it holds (logged; executed, or waiting for the primary's
   * commit point). The lab's last_myvs, since the lab's backup executes on receipt.
   */
  readonly last: Viewstamp;
}

export type InvokeDecision =
  /** Hold (log) the request, then last = vs and expected = vs + 1. */
  | { readonly action: 'accept' }
  /**
   * The request held last, again: acknowledge it without holding it a second time. The
   * primary resends a request whose acknowledgement it did not get (see rsm/README.md, "Invoke").
   */
  | { readonly action: 'duplicate' }
  | { readonly action: 'reject'; readonly reason: string };

/**
 * The backup's accept rule. Exactly one viewstamp is accepted (held): the expected one. The one
 * held last is acknowledged again without holding it twice when it was stamped in the current view. Everything else
 * is rejected: any viewstamp while in a view change or on the primary, a gap (beyond the expected
 * one, including any later view), an older duplicate, an earlier view, and malformed viewstamps.
 */
export function classifyInvoke(position: InvokePosition, vs: Viewstamp): InvokeDecision {
  if (!isWellFormed(vs) || vs.seqno === 0) return reject(`malformed viewstamp ${describeViewstamp(vs)}`);
  if (position.inViewChange) return reject('in a view change');
  if (position.isPrimary) return reject('I am the primary');
  const { expected, last } = position;
  const order = compareViewstamp(vs, expected);
  if (order === 0) return { action: 'accept' };
  if (order > 0) return reject(`gap: expected ${describeViewstamp(expected)}, got ${describeViewstamp(vs)}`);
  if (compareViewstamp(vs, last) === 0 && last.vid === expected.vid) return { action: 'duplicate' };
  return reject(`old: expected ${describeViewstamp(expected)}, last ${describeViewstamp(last)}, got ${describeViewstamp(vs)}`);
}

/**
 * The backup's accept rule for a batch of consecutive viewstamps first..last (batchProblem has
 * checked its shape). The rule of one request, applied to the batch as a unit, since a replica
 * logs a batch whole:
 * - first is the expected viewstamp: accept the batch;
 * - last is the viewstamp held last, in this view: the batch is held here already (the
 *   primary resends a batch whose acknowledgement it did not get); acknowledge it again. A
 *   viewstamp is stamped once, into one batch, so a batch ending at our last is that batch;
 * - anything else (a gap before first, a batch older than our last, a batch that overlaps our last
 *   without ending there, another view, a view change, the primary): reject.
 */
export function classifyBatch(position: InvokePosition, first: Viewstamp, last: Viewstamp): InvokeDecision {
  const head = classifyInvoke(position, first);
  if (head.action === 'accept') return head;
  if (compareViewstamp(first, last) === 0 || !isWellFormed(first) || first.seqno === 0) return head;
  const tail = classifyInvoke(position, last);
  if (tail.action === 'duplicate') return tail;
  // Never acknowledge a batch that starts at our last but goes on: we lack the rest.
  if (head.action !== 'reject') return reject(`overlap: last ${describeViewstamp(position.last)}, got ${describeViewstamp(first)}..${last.seqno}`);
  return head;
}

/** The fields of a batch entry that batchProblem checks. */
export interface BatchShape {
  readonly vs: Viewstamp;
  readonly req: Uint8Array;
}

/**
 * Why a batch from the network is malformed, or undefined when it is well formed: at least one
 * entry and at most BATCH_REQUESTS_MAX; at most BATCH_BYTES_MAX of requests unless it holds one
 * request; well-formed viewstamps of one view with consecutive seqnos from ≥ 1.
 */
export function batchProblem(entries: readonly BatchShape[]): string | undefined {
  if (entries.length === 0) return 'empty batch';
  if (entries.length > BATCH_REQUESTS_MAX) return `batch of ${entries.length} requests (at most ${BATCH_REQUESTS_MAX})`;
  let bytes = 0;
  for (const entry of entries) bytes += entry.req.length;
  if (entries.length > 1 && bytes > BATCH_BYTES_MAX) return `batch of ${bytes} request bytes (at most ${BATCH_BYTES_MAX} unless one request)`;
  const first = entries[0]!.vs;
  if (!isWellFormed(first) || first.seqno === 0) return `malformed viewstamp ${describeViewstamp(first)}`;
  for (let i = 1; i < entries.length; i++) {
    const vs = entries[i]!.vs;
    if (!isWellFormed(vs) || vs.vid !== first.vid || vs.seqno !== first.seqno + i) {
      return `entry ${i} is ${describeViewstamp(vs)}, not ${describeViewstamp({ vid: first.vid, seqno: first.seqno + i })}`;
    }
  }
  return undefined;
}

/**
 * The viewstamp to expect (backup) or assign (primary) once view `vid` is synchronised: the one
 * after `last` if `last` was stamped in this view (a replica that re-synchronised in the middle of
 * the view), else (vid, 1).
 */
export function nextExpected(vid: number, last: Viewstamp): Viewstamp {
  assert(isWellFormed(last), `nextExpected: bad last ${describeViewstamp(last)}`);
  assert(Number.isSafeInteger(vid) && vid >= 1 && last.vid <= vid, `nextExpected: last ${describeViewstamp(last)} beyond view ${vid}`);
  return last.vid === vid ? { vid, seqno: last.seqno + 1 } : { vid, seqno: 1 };
}

/** The viewstamp after `vs` in the same view. */
export function successor(vs: Viewstamp): Viewstamp {
  return { vid: vs.vid, seqno: vs.seqno + 1 };
}

/** u32 fields, as on the wire. */
export function isWellFormed(vs: Viewstamp): boolean {
  return isU32(vs.vid) && isU32(vs.seqno);
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
}

function reject(reason: string): InvokeDecision {
  return { action: 'reject', reason };
}
