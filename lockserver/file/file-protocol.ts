/**
 * The lock-protected append-only file service: its requests, replies and status codes. Requests
 * travel as RSM requests (`RsmClient.invoke(proc, bytes)`): the primary stamps them and every
 * replica's FileService executes them in the same order.
 *
 * | request | proc   | arguments                                                         | statuses                                                  | reply            |
 * |---------|--------|-------------------------------------------------------------------|-----------------------------------------------------------|------------------|
 * | hello   | 0x7201 | client: string                                                    | OK                                                        | string "Connected!" |
 * | append  | 0x7202 | client: string, seq: u64, file: string, lock: string, token: u64, data: bytes | OK, NOT_FOUND, STALE_TOKEN, NOT_LOCKED, BAD_DATA, OLD_REQUEST, BAD_REQUEST, FULL | u64 offset (the file's length before this append) |
 * | read    | 0x7203 | file: string, offset: u64, maxBytes: u32                           | OK, NOT_FOUND, BAD_REQUEST                                | u64 file length, bytes |
 * | goodbye | 0x7204 | client: string                                                    | OK                                                        | string "Disconnected!" |
 *
 * `token` 0 means "no token" (fencing tokens start at 1). `seq` starts at 1 and grows by one per
 * append of a client; a client has at most one append outstanding.
 */
import { decode, encode, type Decoded } from '../../lib/codec.js';

export const FileProc = {
  HELLO: 0x7201,
  APPEND: 0x7202,
  READ: 0x7203,
  GOODBYE: 0x7204,
} as const;

/**
 * Status codes. OK (0) and NOT_FOUND (1) are the specification's return codes for append; the
 * others refine its "error" into reasons a program can act on.
 */
export const FileStatus = {
  OK: 0,
  /** The file name is not one of file_0 … file_99. */
  NOT_FOUND: 1,
  /** The token is lower than one this lock has already seen: the caller lost the lock. */
  STALE_TOKEN: 2,
  /** No token, or a token that is not the current hold of the lock. */
  NOT_LOCKED: 3,
  /** Empty data, or more than MAX_APPEND_BYTES. */
  BAD_DATA: 4,
  /** A late duplicate: the client has since sent a newer request. Nothing changed. */
  OLD_REQUEST: 5,
  /** Undecodable request, unknown procedure, bad client id or lock name. */
  BAD_REQUEST: 6,
  /** A bound was reached (file size, clients remembered). Nothing changed. */
  FULL: 7,
} as const;
export type FileStatus = (typeof FileStatus)[keyof typeof FileStatus];

export const FILE_STATUS_CODES: Readonly<Record<number, string>> = {
  [FileStatus.OK]: 'OK',
  [FileStatus.NOT_FOUND]: 'FILE_NOT_FOUND',
  [FileStatus.STALE_TOKEN]: 'FILE_STALE_TOKEN',
  [FileStatus.NOT_LOCKED]: 'FILE_NOT_LOCKED',
  [FileStatus.BAD_DATA]: 'FILE_BAD_DATA',
  [FileStatus.OLD_REQUEST]: 'FILE_OLD_REQUEST',
  [FileStatus.BAD_REQUEST]: 'FILE_BAD_REQUEST',
  [FileStatus.FULL]: 'FILE_FULL',
};

/** The number of files, named file_0 … file_(FILE_COUNT − 1). */
export const FILE_COUNT = 100;
/** The largest append: 1 MiB. */
export const MAX_APPEND_BYTES = 1024 * 1024;
/** Client ids and lock names on the wire. */
export const MAX_CLIENT_ID_BYTES = 256;
export const MAX_LOCK_NAME_BYTES = 256;
/** The largest read reply. */
export const MAX_READ_BYTES = 4 * 1024 * 1024;

export const CONNECTED_MESSAGE = 'Connected!';
export const DISCONNECTED_MESSAGE = 'Disconnected!';

/** file_N → N for 0 ≤ N < FILE_COUNT written without leading zeros; anything else → undefined. */
export function fileIndex(name: string): number | undefined {
  const match = /^file_(0|[1-9][0-9]?)$/.exec(name);
  if (match === null) return undefined;
  const index = Number(match[1]);
  return index < FILE_COUNT ? index : undefined;
}

export function fileName(index: number): string {
  return `file_${index}`;
}

export interface AppendArgs {
  readonly client: string;
  readonly seq: number;
  readonly file: string;
  readonly lock: string;
  readonly token: number;
  readonly data: Uint8Array;
}

export interface ReadArgs {
  readonly file: string;
  readonly offset: number;
  readonly maxBytes: number;
}

export function encodeClientRequest(client: string): Uint8Array {
  return encode((w) => w.string(client));
}

export function decodeClientRequest(bytes: Uint8Array): Decoded<string> {
  return decode(bytes, (r) => r.string(MAX_CLIENT_ID_BYTES));
}

export function encodeAppendRequest(args: AppendArgs): Uint8Array {
  return encode((w) => w.string(args.client).u64(args.seq).string(args.file).string(args.lock).u64(args.token).bytes(args.data));
}

export function decodeAppendRequest(bytes: Uint8Array): Decoded<AppendArgs> {
  return decode(bytes, (r) => ({
    client: r.string(MAX_CLIENT_ID_BYTES),
    seq: r.u64(),
    // A longer "file name" cannot name a file; it is read with a small bound and then not found.
    file: r.string(64),
    lock: r.string(MAX_LOCK_NAME_BYTES),
    token: r.u64(),
    // Read with one byte of slack so that an oversized append is answered BAD_DATA, not BAD_REQUEST.
    data: r.bytes(MAX_APPEND_BYTES + 1),
  }));
}

export function encodeReadRequest(args: ReadArgs): Uint8Array {
  return encode((w) => w.string(args.file).u64(args.offset).u32(args.maxBytes));
}

export function decodeReadRequest(bytes: Uint8Array): Decoded<ReadArgs> {
  return decode(bytes, (r) => ({ file: r.string(64), offset: r.u64(), maxBytes: r.u32() }));
}

export function encodeStringReply(text: string): Uint8Array {
  return encode((w) => w.string(text));
}

export function decodeStringReply(bytes: Uint8Array): Decoded<string> {
  return decode(bytes, (r) => r.string(1024));
}

export function encodeOffsetReply(offset: number): Uint8Array {
  return encode((w) => w.u64(offset));
}

export function decodeOffsetReply(bytes: Uint8Array): Decoded<number> {
  return decode(bytes, (r) => r.u64());
}

export interface ReadReply {
  readonly length: number;
  readonly data: Uint8Array;
}

export function encodeReadReply(reply: ReadReply): Uint8Array {
  return encode((w) => w.u64(reply.length).bytes(reply.data));
}

export function decodeReadReply(bytes: Uint8Array): Decoded<ReadReply> {
  return decode(bytes, (r) => ({ length: r.u64(), data: r.bytes(MAX_READ_BYTES) }));
}
