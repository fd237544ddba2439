/**
 * Wire protocol of the two-server primary/backup lock service (lockserver/README.md, "The
 * primary/backup lock service"): procedure numbers, argument layouts, status codes, limits and the
 * errors a clerk user sees. Everything travels over the at-most-once RPC layer of lib/rpc.ts.
 *
 * | proc    | id     | args                                              | statuses                     | result |
 * |---------|--------|---------------------------------------------------|------------------------------|--------|
 * | lock    | 0xa001 | clerk: u64, seq: u64, name: string                | OK, UNAVAILABLE, BAD_NAME, STALE, TABLE_FULL | bool |
 * | unlock  | 0xa002 | clerk: u64, seq: u64, name: string                | OK, UNAVAILABLE, BAD_NAME, STALE | bool |
 * | forward | 0xa003 | clerk: u64, seq: u64, op: u8, name: string, result: bool | OK, NOT_BACKUP, UNAVAILABLE, BAD_NAME, TABLE_FULL | bool (always false) |
 *
 * (clerk, seq) is the request id: a clerk draws its id at random and numbers its requests from 1,
 * one at a time.
 */
import { ViewstampError } from '../../lib/errors.js';
import { codecs, procedure, type Codec } from '../../lib/rpc.js';

/** Application statuses (the RPC reply's `ret` ≥ 0). */
export const PbStatus = {
  /** Done: `result` is the answer. */
  OK: 0,
  /** This server is not serving (killed, dying, or a primary whose backup has taken over). The
   *  request was not executed here, except the one request a dying server swallows (see README). */
  UNAVAILABLE: 1,
  /** The lock name is empty or longer than MAX_NAME_BYTES in UTF-8. Nothing was executed. */
  BAD_NAME: 2,
  /** A request older than this clerk's latest: its caller has moved on; nothing was executed. */
  STALE: 3,
  /** forward only: the receiver is not (or no longer) the backup. Nothing was applied. */
  NOT_BACKUP: 4,
  /** lock (and forward of a lock): the table already holds its maximum of locks. Nothing was executed. */
  TABLE_FULL: 5,
} as const;
export type PbStatus = (typeof PbStatus)[keyof typeof PbStatus];

export type PbOp = 'lock' | 'unlock';
const OP_CODES: Record<PbOp, number> = { lock: 1, unlock: 2 };

/** Longest lock name, in UTF-8 bytes. Names are 1..MAX_NAME_BYTES bytes. */
export const MAX_NAME_BYTES = 256;
/** The decoder refuses (RPC_BAD_ARGS) names beyond this many bytes before looking at them. */
export const MAX_WIRE_NAME_BYTES = 64 * 1024;

const textEncoder = new TextEncoder();

/** True for names this service accepts: 1..256 bytes of UTF-8. */
export function isValidLockName(name: string): boolean {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_BYTES) return false;
  return textEncoder.encode(name).length <= MAX_NAME_BYTES;
}

export interface PbRequest {
  /** The clerk's id: a random integer below 2^52. */
  readonly clerk: number;
  /** The clerk's request number, from 1. */
  readonly seq: number;
  readonly name: string;
}

export interface PbForward extends PbRequest {
  readonly op: PbOp;
  /** The answer the primary computed (and will give the clerk once this is applied). */
  readonly result: boolean;
}

const nameCodec: Codec<string> = {
  write: (w, v) => w.string(v),
  read: (r) => r.string(MAX_WIRE_NAME_BYTES),
};

const opCodec: Codec<PbOp> = {
  write: (w, v) => w.u8(OP_CODES[v]),
  read: (r) => {
    const code = r.u8();
    if (code === OP_CODES.lock) return 'lock';
    if (code !== OP_CODES.unlock) r.fail(`bad op ${code}`);
    return 'unlock';
  },
};

const requestCodec = codecs.struct<PbRequest>({ clerk: codecs.u64, seq: codecs.u64, name: nameCodec });
const forwardCodec = codecs.struct<PbForward>({
  clerk: codecs.u64,
  seq: codecs.u64,
  op: opCodec,
  name: nameCodec,
  result: codecs.bool,
});

export const pbProtocol = {
  lock: procedure(0xa001, 'pb.lock', requestCodec, codecs.bool),
  unlock: procedure(0xa002, 'pb.unlock', requestCodec, codecs.bool),
  forward: procedure(0xa003, 'pb.forward', forwardCodec, codecs.bool),
} as const;

/**
 * Errors of this service's users. Codes are stable (lockserver/README.md):
 * - PB_BAD_NAME: the lock name is empty or longer than 256 UTF-8 bytes;
 * - PB_SAME_ADDRESS: the primary and backup addresses are the same server;
 * - PB_UNAVAILABLE: neither server answered within the clerk's bounded attempts (more than the one
 *   failure this service tolerates); the outcome of the operation is unknown;
 * - PB_CLERK_BUSY: a second call on a clerk while one is running (a clerk makes one call at a time);
 * - PB_CLERK_CLOSED: the clerk was closed;
 * - PB_TABLE_FULL: the server holds its maximum number of locks; the Lock was not executed;
 * - PB_PROTOCOL: a server answered something this clerk cannot use (a bug or a foreign server).
 */
export type PbErrorCode = 'PB_BAD_NAME' | 'PB_SAME_ADDRESS' | 'PB_UNAVAILABLE' | 'PB_CLERK_BUSY' | 'PB_CLERK_CLOSED' | 'PB_TABLE_FULL' | 'PB_PROTOCOL';

export class PbLockError extends ViewstampError {
  override name = 'PbLockError';
  declare readonly code: PbErrorCode;
  constructor(code: PbErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
