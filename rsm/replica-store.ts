/**
 * The replica's durable record in the node's Storage (next to the Paxos keys): the service state,
 * the viewstamp of the last request reflected in it and that request, the last view this replica
 * finished synchronising, and on a primary the request it stamped but has not executed yet.
 * Written as one batch with `sync: true` before the replica acknowledges anything that depends on
 * it (see rsm/README.md, "Durability").
 *
 *   key rsm/replica:
 *     u8 version (2) | u32 last.vid | u32 last.seqno | u32 syncedVid | bytes state
 *     | u8 hasLastRequest [i32 proc | bytes request]
 *     | u8 hasPending [u32 vs.vid | u32 vs.seqno | i32 proc | bytes request | u64 timeMs]
 */
import { Writer, decode, type Decoded } from '../lib/codec.js';
import { BLOB_BYTES_MAX, type Viewstamp } from './protocol.js';

export const KEY_REPLICA = 'rsm/replica';
const VERSION = 2;

export interface StoredRequest {
  readonly proc: number;
  readonly request: Uint8Array;
}

export interface ReplicaRecord {
  readonly last: Viewstamp;
  /** The last view whose synchronisation this replica completed (0: none). */
  readonly syncedVid: number;
  readonly state: Uint8Array;
  /** The request executed at `last` (to recognise its duplicate), when known. */
  readonly lastRequest: StoredRequest | undefined;
  /** Primary only: the request stamped `vs` and sent to the backups, not yet executed here. */
  readonly pending: (StoredRequest & { readonly vs: Viewstamp; readonly timeMs: number }) | undefined;
}

export function encodeReplicaRecord(record: ReplicaRecord): Uint8Array {
  const w = new Writer(64 + record.state.length);
  w.u8(VERSION).u32(record.last.vid).u32(record.last.seqno).u32(record.syncedVid).bytes(record.state);
  w.bool(record.lastRequest !== undefined);
  if (record.lastRequest !== undefined) w.i32(record.lastRequest.proc).bytes(record.lastRequest.request);
  w.bool(record.pending !== undefined);
  if (record.pending !== undefined) {
    w.u32(record.pending.vs.vid).u32(record.pending.vs.seqno).i32(record.pending.proc).bytes(record.pending.request).u64(record.pending.timeMs);
  }
  return w.finish().slice();
}

/** Never throws: unreadable bytes are `{ ok: false, reason }`. */
export function decodeReplicaRecord(bytes: Uint8Array): Decoded<ReplicaRecord> {
  return decode(bytes, (r) => {
    const version = r.u8();
    if (version !== VERSION) r.fail(`unknown replica record version ${version}`);
    const last = { vid: r.u32(), seqno: r.u32() };
    const syncedVid = r.u32();
    const state = r.bytes(BLOB_BYTES_MAX).slice();
    const lastRequest = r.bool() ? { proc: r.i32(), request: r.bytes(BLOB_BYTES_MAX).slice() } : undefined;
    const pending = r.bool() ? { vs: { vid: r.u32(), seqno: r.u32() }, proc: r.i32(), request: r.bytes(BLOB_BYTES_MAX).slice(), timeMs: r.u64() } : undefined;
    return { last, syncedVid, state, lastRequest, pending };
  });
}
