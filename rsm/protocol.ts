/**
 * The RSM wire protocols (the lab's rsm_client_protocol, rsm_protocol and rsm_test_protocol),
 * numbers and layouts as in LAB.md §4.1, and the Viewstamp value type.
 *
 * | protocol | proc            | id      | args (wire order)                         | result                                  |
 * |----------|-----------------|---------|-------------------------------------------|-----------------------------------------|
 * | client   | invoke          | 0x9001  | procno: i32, req: bytes                   | bytes: i32 app status + bytes body       |
 * | client   | members         | 0x9002  | dummy: i32                                | list<string>: view members, primary last |
 * | internal | invoke          | 0x10001 | proc: i32, vs: viewstamp, timeMs: u64, req: bytes | i32 (dummy)                     |
 * | internal | transferreq     | 0x10002 | src: string, last: viewstamp, vid: u32    | {state: bytes, last: viewstamp}         |
 * | internal | transferdonereq | 0x10003 | m: string, vid: u32                       | i32                                     |
 * | internal | joinreq         | 0x10004 | src: string, last: viewstamp, cluster: string | {history: list<{instance: u32, value}>, cluster: string} |
 * | internal | invokebatch     | 0x10005 | entries: list<{vs, timeMs: u64, proc: i32, req: bytes}>, committed: viewstamp | i32 (dummy) |
 * | internal | commit          | 0x10007 | vid: u32, committed: viewstamp            | i32 (dummy)                             |
 * | test     | net_repair      | 0x12001 | heal: i32                                 | i32                                     |
 * | test     | breakpoint      | 0x12002 | b: i32                                    | i32                                     |
 * | test     | status          | 0x12003 | dummy: i32                                | {vid, members, primary, inViewChange, phase, last, batches} |
 *
 * The status travels in the RPC reply header. NOTE: BUSY is 3 in the client protocol but 2 in the
 * internal one, as in the lab. The lab's std::string request/state blobs are `bytes` here (same
 * wire layout: u32 length + raw bytes), since they hold marshalled binary data.
 *
 * invokebatch is not in the lab: the primary sends each backup one message per batch of
 * consecutive viewstamps (rsm/README.md, "Client invoke"), with its commit point (the last
 * viewstamp it executed: every member holds everything up to it). `commit` carries the commit point
 * alone, when no batch follows to carry it. `invoke` stays, handled as a batch of one that is
 * committed on receipt (the lab's backup executes it at once).
 *
 * joinreq and joinres carry the sender's cluster id ("" while unknown, as on the Paxos messages):
 * a primary whose id is known refuses a joiner of another cluster with CLUSTER_MISMATCH (4), a
 * malformed id with ERR, and a joiner does not adopt the history of another cluster's node.
 *
 * Unlike the lab, joinres carries the decided view history as a list of (instance, value) rather
 * than the text of the joiner-to-be's log; the joiner writes its log from it.
 */
import { Writer, decode, type Decoded } from '../lib/codec.js';
import { codecs, procedure, type Codec } from '../lib/rpc.js';
import { ID_BYTES_MAX, VALUE_BYTES_MAX, clusterField } from '../paxos/messages.js';
import type { HistoryEntry } from '../paxos/view.js';

/** rsm_client_protocol statuses. */
export const RsmClientStatus = { OK: 0, ERR: 1, NOTPRIMARY: 2, BUSY: 3 } as const;
/** rsm_protocol (replica to replica) statuses. BUSY differs from the client protocol's. */
export const RsmStatus = { OK: 0, ERR: 1, BUSY: 2, CLUSTER_MISMATCH: 4 } as const;
/** rsm_test_protocol statuses. */
export const RsmTestStatus = { OK: 0, ERR: 1 } as const;

/** A request's position: the view it was stamped in and its sequence number within that view. */
export interface Viewstamp {
  readonly vid: number;
  readonly seqno: number;
}

/** Total order on viewstamps: by vid, then by seqno. */
export function compareViewstamp(a: Viewstamp, b: Viewstamp): number {
  if (a.vid !== b.vid) return a.vid < b.vid ? -1 : 1;
  if (a.seqno !== b.seqno) return a.seqno < b.seqno ? -1 : 1;
  return 0;
}

export function describeViewstamp(vs: Viewstamp): string {
  return `${vs.vid}.${vs.seqno}`;
}

/** The viewstamp before any request: nothing executed. */
export const VIEWSTAMP_ZERO: Viewstamp = Object.freeze({ vid: 0, seqno: 0 });

/** Largest marshalled request, reply or state blob read from the network. */
export const BLOB_BYTES_MAX = 8 * 1024 * 1024;
/**
 * Most requests the primary stamps into one batch (one log write with sync, one invokebatch per
 * backup). More per batch amortises more, but every request of a batch waits for the slowest.
 */
export const BATCH_REQUESTS_MAX = 256;
/**
 * Most request bytes in one batch, unless the batch holds a single request (which may be up to
 * BLOB_BYTES_MAX and then travels alone). Keeps an invokebatch well inside the 10 MiB frame.
 */
export const BATCH_BYTES_MAX = 1024 * 1024;
/** Bytes of marshalled state per transferreq answer or transferchunk (well inside the 10 MiB frame). */
export const TRANSFER_CHUNK_BYTES = 4 * 1024 * 1024;
/** Largest marshalled state a replica fetches (in chunks) from another. */
export const TRANSFER_STATE_BYTES_MAX = 1024 * 1024 * 1024;
/** Most log entries, and bytes of their requests, that one transferreq answer carries. */
export const TRANSFER_ENTRIES_MAX = 8192;
export const TRANSFER_ENTRIES_BYTES_MAX = 4 * 1024 * 1024;
/** Most history entries a joinres may carry. */
export const HISTORY_ENTRIES_MAX = 1 << 20;

const id: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(ID_BYTES_MAX) };
/** The status reply's phase text: a status in words is far shorter. */
export const STATUS_PHASE_BYTES_MAX = 256;
const statusPhase: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(STATUS_PHASE_BYTES_MAX) };
const blob: Codec<Uint8Array> = { write: (w, v) => w.bytes(v), read: (r) => r.bytes(BLOB_BYTES_MAX) };
export const viewstampCodec: Codec<Viewstamp> = codecs.struct<Viewstamp>({ vid: codecs.u32, seqno: codecs.u32 });
const historyEntry: Codec<HistoryEntry> = codecs.struct<HistoryEntry>({
  instance: codecs.u32,
  value: { write: (w, v) => w.string(v), read: (r) => r.string(VALUE_BYTES_MAX) },
});

export interface ClientInvokeArgs {
  readonly procno: number;
  readonly req: Uint8Array;
}
export interface MembersArgs {
  readonly dummy: number;
}
export interface InvokeArgs {
  readonly proc: number;
  readonly vs: Viewstamp;
  /** The primary's clock when it stamped the request (ExecuteContext.timeMs on every replica). */
  readonly timeMs: number;
  readonly req: Uint8Array;
}
/** One stamped request of an invokebatch (the same fields as InvokeArgs). */
export interface BatchEntry {
  readonly vs: Viewstamp;
  readonly timeMs: number;
  readonly proc: number;
  readonly req: Uint8Array;
}
export interface InvokeBatchArgs {
  /** Consecutive viewstamps of one view, in order (checked by the backup: batchProblem). */
  readonly entries: BatchEntry[];
  /**
   * The primary's commit point when it sent the batch: the last viewstamp it executed, so every
   * member holds every request up to it. The backup executes what it holds up to there.
   */
  readonly committed: Viewstamp;
}
export interface CommitArgs {
  /** The view the commit point belongs to (a backup of another view ignores it). */
  readonly vid: number;
  readonly committed: Viewstamp;
}
export interface TransferArgs {
  readonly src: string;
  readonly last: Viewstamp;
  readonly vid: number;
}
/**
 * What a transferreq answer carries (`kind`):
 * - NONE: nothing; the asker's last is ours (or ours is not newer, for a primary collecting);
 * - ENTRIES: the stamped requests after the asker's last, up to ours (`entries`): the asker is a
 *   little behind and we still hold that part of our log;
 * - STATE: our marshalled state at `last`, `stateBytes` long. `state` holds its first
 *   TRANSFER_CHUNK_BYTES; the asker fetches the rest with transferchunk.
 */
export const TransferKind = { NONE: 0, ENTRIES: 1, STATE: 2 } as const;
export type TransferKind = (typeof TransferKind)[keyof typeof TransferKind];

export interface TransferRes {
  readonly kind: number;
  readonly last: Viewstamp;
  readonly stateBytes: number;
  readonly state: Uint8Array;
  readonly entries: readonly BatchEntry[];
}
export interface TransferChunkArgs {
  readonly src: string;
  readonly vid: number;
  /** The viewstamp of the state being fetched (the transferreq answer's last). */
  readonly last: Viewstamp;
  readonly offset: number;
}
export interface TransferDoneArgs {
  readonly m: string;
  readonly vid: number;
}
export interface JoinArgs {
  readonly src: string;
  readonly last: Viewstamp;
  /** The joiner's cluster id, "" while it knows none. */
  readonly cluster: string;
}
export interface JoinRes {
  /** The decided views 1..k of the node that admitted the joiner. */
  readonly history: HistoryEntry[];
  /** The answering node's cluster id, "" while it knows none. */
  readonly cluster: string;
}
export interface NetRepairArgs {
  readonly heal: number;
}
export interface BreakpointArgs {
  readonly b: number;
}
export interface StatusArgs {
  readonly dummy: number;
}
/** A replica's own view of itself (status 0x12003; not in the lab: for start_cluster and tools). */
export interface StatusRes {
  /** The committed view (0: none yet). */
  readonly vid: number;
  /** Its members in join order. */
  readonly members: string[];
  /** The primary this replica believes in ('' before any view). */
  readonly primary: string;
  /** True from a view commit until its synchronisation ends (the RSM answers BUSY meanwhile). */
  readonly inViewChange: boolean;
  /** Its status in words (rsm/replica-status.ts), e.g. "syncing view 4 as backup, pulling"; at most STATUS_PHASE_BYTES_MAX. */
  readonly phase: string;
  /** The viewstamp of the last request executed here (0.0: none). */
  readonly last: Viewstamp;
  /**
   * Batches this process executed since it started (as primary or backup; not durable). The
   * benchmarks divide its growth on the primary by their operations: replication rounds per one.
   */
  readonly batches: number;
}

const batchEntry: Codec<BatchEntry> = codecs.struct<BatchEntry>({ vs: viewstampCodec, timeMs: codecs.u64, proc: codecs.i32, req: blob });

/** What clients call on a replica's main port. */
export const rsmClientProtocol = {
  invoke: procedure<ClientInvokeArgs, Uint8Array>(
    0x9001,
    'rsm_client.invoke',
    codecs.struct<ClientInvokeArgs>({ procno: codecs.i32, req: blob }),
    blob,
  ),
  members: procedure<MembersArgs, string[]>(
    0x9002,
    'rsm_client.members',
    codecs.struct<MembersArgs>({ dummy: codecs.i32 }),
    codecs.list(id, 10_000),
  ),
} as const;

/** What replicas call on each other's main port. */
export const rsmProtocol = {
  invoke: procedure<InvokeArgs, number>(
    0x10001,
    'rsm.invoke',
    codecs.struct<InvokeArgs>({ proc: codecs.i32, vs: viewstampCodec, timeMs: codecs.u64, req: blob }),
    codecs.i32,
  ),
  invokebatch: procedure<InvokeBatchArgs, number>(
    0x10005,
    'rsm.invokebatch',
    codecs.struct<InvokeBatchArgs>({
      entries: codecs.list(batchEntry, BATCH_REQUESTS_MAX),
      committed: viewstampCodec,
    }),
    codecs.i32,
  ),
  /** Not in the lab: the primary's commit point, sent when it went idle after executing (no batch to carry it). */
  commit: procedure<CommitArgs, number>(
    0x10007,
    'rsm.commit',
    codecs.struct<CommitArgs>({ vid: codecs.u32, committed: viewstampCodec }),
    codecs.i32,
  ),
  transferreq: procedure<TransferArgs, TransferRes>(
    0x10002,
    'rsm.transferreq',
    codecs.struct<TransferArgs>({ src: id, last: viewstampCodec, vid: codecs.u32 }),
    codecs.struct<TransferRes>({
      kind: codecs.u32,
      last: viewstampCodec,
      stateBytes: codecs.u64,
      state: blob,
      entries: codecs.list(batchEntry, TRANSFER_ENTRIES_MAX),
    }),
  ),
  /** Not in the lab: the rest of a state too large for one transferreq answer. */
  transferchunk: procedure<TransferChunkArgs, Uint8Array>(
    0x10006,
    'rsm.transferchunk',
    codecs.struct<TransferChunkArgs>({ src: id, vid: codecs.u32, last: viewstampCodec, offset: codecs.u64 }),
    blob,
  ),
  transferdonereq: procedure<TransferDoneArgs, number>(
    0x10003,
    'rsm.transferdonereq',
    codecs.struct<TransferDoneArgs>({ m: id, vid: codecs.u32 }),
    codecs.i32,
  ),
  joinreq: procedure<JoinArgs, JoinRes>(
    0x10004,
    'rsm.joinreq',
    codecs.struct<JoinArgs>({ src: id, last: viewstampCodec, cluster: clusterField }),
    codecs.struct<JoinRes>({ history: codecs.list(historyEntry, HISTORY_ENTRIES_MAX), cluster: clusterField }),
  ),
} as const;

/** The test-control protocol, served on a separate endpoint at port ME+1. */
export const rsmTestProtocol = {
  net_repair: procedure<NetRepairArgs, number>(
    0x12001,
    'rsm_test.net_repair',
    codecs.struct<NetRepairArgs>({ heal: codecs.i32 }),
    codecs.i32,
  ),
  breakpoint: procedure<BreakpointArgs, number>(
    0x12002,
    'rsm_test.breakpoint',
    codecs.struct<BreakpointArgs>({ b: codecs.i32 }),
    codecs.i32,
  ),
  /** Not in the lab: the replica's committed view, primary and last executed viewstamp. */
  status: procedure<StatusArgs, StatusRes>(
    0x12003,
    'rsm_test.status',
    codecs.struct<StatusArgs>({ dummy: codecs.i32 }),
    codecs.struct<StatusRes>({ vid: codecs.u32, members: codecs.list(id, 10_000), primary: id, inViewChange: codecs.bool, phase: statusPhase, last: viewstampCodec, batches: codecs.u32 }),
  ),
} as const;

/**
 * The result blob of a client invoke (LAB.md §4.2): the service's status as an i32, then
 * its reply as bytes. The RPC header carries the RSM status (OK, NOTPRIMARY, BUSY); this blob is
 * meaningful only when that status is OK.
 */
export interface InvokeReply {
  /** The service status (≥ 0; 0 is conventionally OK). */
  readonly status: number;
  /** The service's marshalled reply. */
  readonly reply: Uint8Array;
}

export function encodeInvokeReply(result: InvokeReply): Uint8Array {
  return new Writer().i32(result.status).bytes(result.reply).finish();
}

/** Never throws: a malformed blob (or a negative status) is `{ ok: false, reason }`. */
export function decodeInvokeReply(bytes: Uint8Array): Decoded<InvokeReply> {
  const decoded = decode(bytes, (r) => ({ status: r.i32(), reply: r.bytes(BLOB_BYTES_MAX).slice() }));
  if (decoded.ok && decoded.value.status < 0) return { ok: false, reason: `negative service status ${decoded.value.status}` };
  return decoded;
}
