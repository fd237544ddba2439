/**
 * The caching lock protocol (lab 7 shapes): procedure numbers, argument layouts, status codes,
 * the server's revoke/retry notices, and the request encoding a `StateMachine` receives.
 * lockserver/README.md ("The caching lock service") describes the protocol in full.
 *
 * | proc    | id     | from → to       | args                          | status (RPC ret)            | result  |
 * |---------|--------|-----------------|-------------------------------|-----------------------------|---------|
 * | acquire     | 0x7001 | client → server | lid: string, id: string, xid: u64 | OK, RETRY, IOERR, RPCERR | u64 token |
 * | release     | 0x7002 | client → server | lid: string, id: string, xid: u64 | OK, NOENT, RPCERR        | u64 0     |
 * | stat        | 0x7003 | client → server | lid: string                   | OK, RPCERR                  | i32 grants |
 * | tryacquire  | 0x7004 | client → server | lid: string, id: string, xid: u64 | OK, RETRY (not queued), IOERR, RPCERR | u64 token |
 * | revoke      | 0x8001 | server → client | lid: string, xid: u64, token: u64 | CallbackStatus.OK        | i32 0   |
 * | retry       | 0x8002 | server → client | lid: string, xid: u64, token: u64 | CallbackStatus.OK        | i32 0   |
 * | inspect     | 0x7005 | client → server | lid: string                   | OK, RPCERR                  | LockInspection |
 * | grant       | 0x8003 | server → client | lid: string, xid: u64, token: u64 | CallbackStatus.OK        | i32 0   |
 * | keepalive   | 0x7006 | client → server | sessions: list of {id: string, ttlMs: u32} (1–1000) | OK, RPCERR | list of u8 (OK, SESSION_EXPIRED, RPCERR per session) |
 * | endsession  | 0x7007 | client → server | id: string                    | OK, RPCERR                  | u64 0   |
 * | tick        | 0x7008 | primary host → RSM | (empty)                    | OK                          | u64 0   |
 * | sessionkeepalive | 0x7009 | client → primary's host (plain RPC) | id: string, ttlMs: u32 | OK, NOT_PRIMARY (100) | u32 keepalive status |
 *
 * `lid` is the lock's name: UTF-8, 1–256 bytes (the classic numeric ids travel as decimal
 * strings). `token` is the fencing token of a grant: strictly increasing per lock, across view
 * changes and restarts of the replicated service (one counter for the whole table, replicated
 * with it). `grant` tells the first waiter that a released lock was handed to it (FIFO hand-off).
 *
 * `id` is the client's callback address ("127.0.0.1:40123"): the server sends revoke and retry
 * there. `xid` numbers the client's acquire attempts (≥ 1, increasing per client across all its
 * locks); a release carries the xid of the acquire that got the lock; revoke and retry carry the
 * xid of the hold or wait they refer to.
 *
 * Through the RSM a request reaches the service as (proc, bytes): the bytes are the arguments
 * exactly as the RPC layer marshals them, without any RPC header (LAB.md §4.2). The helpers
 * at the bottom encode and decode that form, and never throw on bad input.
 */
import { decode, encode, utf8ByteLength, type Decoded } from '../lib/codec.js';
import { codecs, procedure, type Codec } from '../lib/rpc.js';
import { LockStatus } from './protocol.js';

/** lock_protocol status codes, shared with the basic lock service (lockserver/protocol.ts). */
export { LockStatus };

/** rlock_protocol status codes: what a client answers to revoke and retry. */
export const CallbackStatus = {
  OK: 0,
  RPCERR: 1,
} as const;

/** Client ids are addresses; longer ones are refused (RPCERR) so that state stays bounded. */
export const MAX_CLIENT_ID_BYTES = 256;
/** Lock names: UTF-8, 1 … 256 bytes. */
export const MAX_LOCK_NAME_BYTES = 256;


/** True for acceptable lock names: a non-empty string of at most 256 UTF-8 bytes. */
export function isLockName(name: unknown): name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_LOCK_NAME_BYTES) return false;
  // Counted, not encoded: every lock request and every entry of a state transfer checks a name.
  return utf8ByteLength(name) <= MAX_LOCK_NAME_BYTES;
}

/** Arguments of acquire and release. */
export interface CacheLockArgs {
  /** The lock's name (see isLockName). */
  readonly lid: string;
  /** The client id: its callback address. */
  readonly id: string;
  /** The acquire attempt (for release: the attempt that got the lock), ≥ 1. */
  readonly xid: number;
}

/** Arguments of stat. */
export interface CacheStatArgs {
  readonly lid: string;
}

/** Arguments of the server → client callbacks revoke and retry. */
export interface CallbackArgs {
  readonly lid: string;
  /** The xid of the hold (revoke, grant) or of the waiting acquire (retry) this callback is about. */
  readonly xid: number;
  /** grant: the fencing token of the hold; 0 otherwise. */
  readonly token: number;
}

const cacheLockArgs: Codec<CacheLockArgs> = {
  write: (w, { lid, id, xid }) => {
    w.string(lid).string(id).u64(xid);
  },
  read: (r) => {
    const lid = r.string(MAX_LOCK_NAME_BYTES);
    const id = r.string(MAX_CLIENT_ID_BYTES);
    const xid = r.u64();
    return { lid, id, xid };
  },
};

const lockName: Codec<string> = { write: (w, v) => void w.string(v), read: (r) => r.string(MAX_LOCK_NAME_BYTES) };
const cacheStatArgs = codecs.struct<CacheStatArgs>({ lid: lockName });
const callbackArgs = codecs.struct<CallbackArgs>({ lid: lockName, xid: codecs.u64, token: codecs.u64 });

export const cacheLockProtocol = {
  acquire: procedure(0x7001, 'acquire', cacheLockArgs, codecs.u64),
  release: procedure(0x7002, 'release', cacheLockArgs, codecs.u64),
  stat: procedure(0x7003, 'stat', cacheStatArgs, codecs.i32),
  tryacquire: procedure(0x7004, 'tryacquire', cacheLockArgs, codecs.u64),
} as const;

export const cacheCallbackProtocol = {
  revoke: procedure(0x8001, 'revoke', callbackArgs, codecs.i32),
  retry: procedure(0x8002, 'retry', callbackArgs, codecs.i32),
  grant: procedure(0x8003, 'grant', callbackArgs, codecs.i32),
} as const;

/** Procedure numbers as `StateMachine.execute` receives them. */
export const CacheProc = {
  ACQUIRE: cacheLockProtocol.acquire.id,
  RELEASE: cacheLockProtocol.release.id,
  STAT: cacheLockProtocol.stat.id,
  TRY_ACQUIRE: cacheLockProtocol.tryacquire.id,
  /** A replicated read: who holds `lid`, who waits, how many sessions (clients) the table knows. */
  INSPECT: 0x7005,
  /** Opens or renews sessions (one request may carry many: the host or client may batch). */
  KEEPALIVE: 0x7006,
  /** Ends a session: its locks are freed (handed to their first waiters) and the id is done. */
  END_SESSION: 0x7007,
  /**
   * No operation but the table's clock: the primary's host sends it when sessions exist and no
   * request executed for a while, so that leases expire even when nothing else flows.
   */
  TICK: 0x7008,
} as const;

/** The documented range of a session's TTL (ms); connect refuses others, the server answers RPCERR. */
export const MIN_SESSION_TTL_MS = 1_000;
export const MAX_SESSION_TTL_MS = 300_000;
export const DEFAULT_SESSION_TTL_MS = 10_000;
/** Sessions one keepalive request may renew. */
export const MAX_KEEPALIVE_SESSIONS = 1_000;

export function isSessionTtl(ttlMs: unknown): ttlMs is number {
  return typeof ttlMs === 'number' && Number.isSafeInteger(ttlMs) && ttlMs >= MIN_SESSION_TTL_MS && ttlMs <= MAX_SESSION_TTL_MS;
}

/** One session a keepalive renews (or opens). */
export interface KeepaliveEntry {
  readonly id: string;
  readonly ttlMs: number;
}

/** Keepalive request bytes. Only shapes are checked by the decoder; the server checks ranges per entry. */
export function encodeKeepaliveRequest(entries: readonly KeepaliveEntry[]): Uint8Array {
  return encode((w) => w.list(entries, (w2, e) => void w2.string(e.id).u32(e.ttlMs)));
}

export function decodeKeepaliveRequest(bytes: Uint8Array): Decoded<KeepaliveEntry[]> {
  const decoded = decode(bytes, (r) => r.list((r2) => ({ id: r2.string(MAX_CLIENT_ID_BYTES), ttlMs: r2.u32() }), 5, MAX_KEEPALIVE_SESSIONS));
  if (!decoded.ok) return decoded;
  return decoded.value.length === 0 ? { ok: false, reason: 'keepalive without sessions' } : decoded;
}

/** Keepalive reply: one status per session, in request order. */
export function encodeKeepaliveReply(statuses: readonly number[]): Uint8Array {
  return encode((w) => w.list(statuses, (w2, s) => void w2.u8(s)));
}

export function decodeKeepaliveReply(bytes: Uint8Array): Decoded<number[]> {
  return decode(bytes, (r) => r.list((r2) => r2.u8(), 1, MAX_KEEPALIVE_SESSIONS));
}

const clientIdCodec: Codec<string> = { write: (w, v) => void w.string(v), read: (r) => r.string(MAX_CLIENT_ID_BYTES) };

/**
 * Keepalive coalescing: a client sends its keepalive as a plain RPC to the primary's lock host,
 * which batches every keepalive that arrives while its previous batch is in flight into one
 * replicated keepalive request (replicated-host.ts). Answered with the session's keepalive status
 * once that request executed; RPC status KEEPALIVE_NOT_PRIMARY when this replica cannot batch
 * (not the serving primary, or too many waiting): the client then sends keepalive through the RSM.
 */
export const sessionProtocol = {
  keepalive: procedure(0x7009, 'sessionkeepalive', codecs.struct<KeepaliveEntry>({ id: clientIdCodec, ttlMs: codecs.u32 }), codecs.u32),
} as const;

export const KEEPALIVE_NOT_PRIMARY = 100;

export function encodeEndSessionRequest(id: string): Uint8Array {
  return encode((w) => void w.string(id));
}

export function decodeEndSessionRequest(bytes: Uint8Array): Decoded<string> {
  const decoded = decode(bytes, (r) => r.string(MAX_CLIENT_ID_BYTES));
  if (!decoded.ok) return decoded;
  return decoded.value.length === 0 ? { ok: false, reason: 'empty client id' } : decoded;
}

/** The answer of inspect: the holder (session id, token, since when), the waiters, the sessions. */
export interface LockInspection {
  readonly holder: { readonly session: string; readonly token: number; readonly sinceMs: number } | undefined;
  /** Session ids (client ids) waiting, first first. */
  readonly waiters: readonly string[];
  /** Clients (sessions) the table remembers. */
  readonly sessions: number;
}

/** At most this many waiters are listed by inspect (the table allows more). */
export const MAX_INSPECT_WAITERS = 1_000;

export function encodeLockInspection(inspection: LockInspection): Uint8Array {
  return encode((w) => {
    w.bool(inspection.holder !== undefined);
    if (inspection.holder !== undefined) w.string(inspection.holder.session).u64(inspection.holder.token).u64(inspection.holder.sinceMs);
    w.list(inspection.waiters.slice(0, MAX_INSPECT_WAITERS), (w2, id) => void w2.string(id));
    w.u32(inspection.sessions);
  });
}

export function decodeLockInspection(bytes: Uint8Array): Decoded<LockInspection> {
  return decode(bytes, (r) => {
    const holder = r.bool() ? { session: r.string(MAX_CLIENT_ID_BYTES), token: r.u64(), sinceMs: r.u64() } : undefined;
    const waiters = r.list((r2) => r2.string(MAX_CLIENT_ID_BYTES), 4, MAX_INSPECT_WAITERS);
    const sessions = r.u32();
    return { holder, waiters, sessions };
  });
}

/**
 * What the server owes a client, derived from its state: `revoke` asks the holder `to` to give
 * `lid` back (xid = its hold), `retry` tells the waiter `to` that `lid` is free now (xid = its
 * waiting acquire). Only the primary sends them (see `Notifier`).
 */
export interface Notice {
  /** grant: `lid` was handed to `to` (its waiting attempt `xid`) with fencing token `token`. */
  readonly kind: 'revoke' | 'retry' | 'grant';
  readonly to: string;
  readonly lid: string;
  readonly xid: number;
  /** grant: the token of the hold; 0 for revoke and retry. */
  readonly token: number;
}

/** A stable text form for logs and as a map key. */
export function describeNotice(notice: Notice): string {
  return `${notice.kind} ${JSON.stringify(notice.lid)}/${notice.xid}${notice.token > 0 ? `#${notice.token}` : ''} to ${notice.to}`;
}

/** True for acceptable xids: safe integers ≥ 1 (0 means "none" in the server's records). */
export function isXid(xid: number): boolean {
  return Number.isSafeInteger(xid) && xid >= 1;
}

/** Whether `args` is a well-formed acquire/release (the wire codec checks only the shapes). */
export function validCacheLockArgs(args: CacheLockArgs): string | undefined {
  if (!isLockName(args.lid)) return 'bad lock name';
  if (!isXid(args.xid)) return `bad xid ${args.xid}`;
  if (args.id.length === 0) return 'empty client id';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The request bytes a StateMachine receives (RSM path) and the reply bytes it returns.

/** acquire/release arguments as the bytes `execute(proc, request)` receives. Throws RangeError for an xid beyond 2^53. */
export function encodeCacheLockRequest(args: CacheLockArgs): Uint8Array {
  return encode((w) => cacheLockArgs.write(w, args));
}

/** Decodes acquire/release request bytes. Never throws; checks the value ranges too. */
export function decodeCacheLockRequest(bytes: Uint8Array): Decoded<CacheLockArgs> {
  const decoded = decode(bytes, (r) => cacheLockArgs.read(r));
  if (!decoded.ok) return decoded;
  const invalid = validCacheLockArgs(decoded.value);
  return invalid === undefined ? decoded : { ok: false, reason: invalid };
}

export function encodeCacheStatRequest(args: CacheStatArgs): Uint8Array {
  return encode((w) => cacheStatArgs.write(w, args));
}

export function decodeCacheStatRequest(bytes: Uint8Array): Decoded<CacheStatArgs> {
  const decoded = decode(bytes, (r) => cacheStatArgs.read(r));
  if (!decoded.ok) return decoded;
  return isLockName(decoded.value.lid) ? decoded : { ok: false, reason: 'bad lock name' };
}

/** The reply body of acquire, tryacquire and release: the fencing token of the grant (0: none). */
export function encodeTokenReply(token: number): Uint8Array {
  return encode((w) => w.u64(token));
}

export function decodeTokenReply(bytes: Uint8Array): Decoded<number> {
  return decode(bytes, (r) => r.u64());
}

/** The reply body of every caching-lock procedure: one i32 (the lab's `int &r`). */
export function encodeI32Reply(value: number): Uint8Array {
  return encode((w) => w.i32(value));
}

export function decodeI32Reply(bytes: Uint8Array): Decoded<number> {
  return decode(bytes, (r) => r.i32());
}
