/**
 * The lock protocol of the basic (lab 1, non-caching) lock service: procedure numbers, argument
 * layouts, status codes, and the errors a lock-client user sees.
 *
 * | proc    | id     | args                | RPC status (ret)     | result                       |
 * |---------|--------|---------------------|----------------------|------------------------------|
 * | acquire | 0x7001 | clt: u32, lid: u64  | OK, RETRY            | 0                            |
 * | release | 0x7002 | clt: u32, lid: u64  | OK, NOENT            | 0                            |
 * | stat    | 0x7003 | clt: u32, lid: u64  | OK                   | acquires granted for `lid`   |
 *
 * The lock status travels in the RPC reply's `ret` (≥ 0), the i32 result carries the value, as in
 * the lab where `ret` is the lock_protocol status and `r` the int result. `clt` is the caller's
 * client id: its RpcClient nonce (the lab's rpcc clt_nonce).
 *
 * Lock ids are u64 on the wire, but this implementation limits them to JavaScript safe integers
 * (0 ≤ lid ≤ 2^53 − 1): the codec refuses to encode larger values (RangeError) and a request
 * carrying one is answered RPC_BAD_ARGS by the server's decoder. Numbers keep the API simple and
 * every id the classic testers use is tiny.
 */
import { ViewstampError } from '../lib/errors.js';
import { codecs, procedure } from '../lib/rpc.js';

/** lock_protocol status codes (lab values). */
export const LockStatus = {
  OK: 0,
  /** Not granted now; the caller may try again later (basic server: the waiter queue is full). */
  RETRY: 1,
  RPCERR: 2,
  /** release: the caller does not hold the lock. */
  NOENT: 3,
  IOERR: 4,
  /**
   * (caching service with sessions) the client's session expired or ended: the request had no
   * effect, its locks were freed, and this id gets no more locks (connect again).
   */
  SESSION_EXPIRED: 5,
} as const;
export type LockStatus = (typeof LockStatus)[keyof typeof LockStatus];

/** The arguments of every basic lock procedure. */
export interface LockArgs {
  /** The caller's client id (its RpcClient nonce). */
  readonly clt: number;
  /** The lock id, a safe integer. */
  readonly lid: number;
}

const lockArgs = codecs.struct<LockArgs>({ clt: codecs.u32, lid: codecs.u64 });

export const lockProtocol = {
  acquire: procedure(0x7001, 'acquire', lockArgs, codecs.i32),
  release: procedure(0x7002, 'release', lockArgs, codecs.i32),
  stat: procedure(0x7003, 'stat', lockArgs, codecs.i32),
} as const;

/** True for the lock ids this implementation accepts (see the header comment). */
export function isLockId(lid: number): boolean {
  return Number.isSafeInteger(lid) && lid >= 0;
}

/** A lock name for messages: quoted, with control characters escaped. */
export function formatLockName(name: string): string {
  return JSON.stringify(name);
}

/** A lock id as the lab prints it (`%016llx`): 1 → "0000000000000001". */
export function formatLockId(lid: number): string {
  return lid.toString(16).padStart(16, '0');
}

/**
 * Errors of the lock clients. Codes are stable (see lockserver/README.md):
 * - LOCK_ABORTED: the caller's AbortSignal fired before the operation finished;
 * - LOCK_RPC_FAILED: the exchange with the server failed (`cause` is the RpcError) or the server
 *   answered something this client cannot use;
 * - LOCK_NOT_HELD: release of a lock the server says this client does not hold (NOENT);
 * - LOCK_CLIENT_CLOSED: the lock client was closed before or during the operation;
 * - LOCK_TIMEOUT: (caching client) its deadline passed while it waited for a lock the server is
 *   busy with.
 * - LOCK_BAD_NAME: (caching client) a lock name that is not 1–256 UTF-8 bytes; nothing was sent.
 * - LOCK_BAD_OPTION: (connect) an option out of its documented range.
 * - LOCK_LOST: (Lock.signal's reason) the client lost a lock while it was held (closed, or its
 *   session could not be renewed in time, or the service expired it).
 * - LOCK_SESSION_EXPIRED: (connect) the client's session is over (expired, lost or ended): the
 *   client gives out no more locks; connect again. The basic client cannot tell waiting from an unreachable server: it reports
 *   LOCK_RPC_FAILED with an RPC_TIMEOUT cause.
 */
export type LockErrorCode =
  | 'LOCK_ABORTED'
  | 'LOCK_RPC_FAILED'
  | 'LOCK_NOT_HELD'
  | 'LOCK_CLIENT_CLOSED'
  | 'LOCK_TIMEOUT'
  | 'LOCK_BAD_NAME'
  | 'LOCK_BAD_OPTION'
  | 'LOCK_LOST'
  | 'LOCK_SESSION_EXPIRED';

export class LockError extends ViewstampError {
  override name = 'LockError';
  declare readonly code: LockErrorCode;
  constructor(code: LockErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Options of a lock client's acquire (basic and caching clients alike). */
export interface AcquireOptions {
  readonly signal?: AbortSignal;
  /** Give up after this long (default: the client's acquire timeout). */
  readonly timeoutMs?: number;
}
