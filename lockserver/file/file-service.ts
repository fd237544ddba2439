/**
 * The append-only file service as a deterministic StateMachine: 100 files (file_0 … file_99) whose
 * contents are replicated state, appended to under a lock with a fencing token, exactly once per
 * client request. No clock, no randomness, no I/O: the files a person can `cat` are written by the
 * host from the `FileObserver` events (lockserver/file/file-mirror.ts).
 *
 * State:
 * - per file: its bytes, kept as the list of appended chunks (an append never copies the file);
 * - per lock name: the highest fencing token an append under it has carried;
 * - per client id: the last append's seq with its status and reply (duplicate suppression), least
 *   recently active first, at most `maxClients`.
 *
 * append(client, seq, file, lock, token, data), in this order (the first rule that applies answers):
 * 1. undecodable bytes, an empty client id or lock name → BAD_REQUEST;
 * 2. seq equal to the client's last → the remembered status and reply, not executed again;
 *    seq lower → OLD_REQUEST, no effect;
 * 3. a file name outside file_0 … file_99 → NOT_FOUND (the specification's 1);
 * 4. empty data or more than 1 MiB → BAD_DATA;
 * 5. token lower than the highest this lock has seen → STALE_TOKEN (a newer holder has written);
 * 6. fenced mode: token 0, or no current hold of the lock → NOT_LOCKED; a current hold with a
 *    higher token → STALE_TOKEN; with another token → NOT_LOCKED;
 *    unfenced mode (the specification's basic form): token 0 skips rules 5 and 6;
 * 7. the file would exceed `maxFileBytes`, or all files together `maxTotalBytes` → FULL;
 * 8. otherwise the data is appended, the lock's highest token becomes this token, OK with the
 *    file's length before the append.
 * Every answer from rule 3 on is remembered for the client (rule 2), so a retry gets it again.
 *
 * Nothing in `execute` or `unmarshalState` throws on bad input; a thrown AssertionError is a bug.
 */
import { assert } from '../../lib/assert.js';
import { Reader, Writer } from '../../lib/codec.js';
import type { ExecuteContext, ExecuteResult, StateMachine } from '../../rsm/state-machine.js';
import {
  CONNECTED_MESSAGE,
  DISCONNECTED_MESSAGE,
  FILE_COUNT,
  FileProc,
  FileStatus,
  MAX_APPEND_BYTES,
  MAX_CLIENT_ID_BYTES,
  MAX_LOCK_NAME_BYTES,
  MAX_READ_BYTES,
  decodeAppendRequest,
  decodeClientRequest,
  decodeReadRequest,
  encodeOffsetReply,
  encodeReadReply,
  encodeStringReply,
  fileIndex,
} from './file-protocol.js';

/** What the file service needs to know of the lock service it is fenced by. */
export interface LockHolds {
  /** The fencing token of the current hold of `lock`, or undefined when nobody holds it. */
  holdToken(lock: string): number | undefined;
}

/** Events for the host that mirrors the files to disk. Called synchronously, in execution order. */
export interface FileObserver {
  /** `data` was appended to file `index` at `offset`. */
  appended(index: number, offset: number, data: Uint8Array): void;
  /** Every file was replaced (state installed): rewrite them all from `contents(index)`. */
  reset(contents: (index: number) => readonly Uint8Array[]): void;
}

export interface FileServiceOptions {
  /**
   * Fenced (default): every append must carry the token of a current hold of its lock. Unfenced is
   * the specification's basic form: appends without a token are accepted, so a client that lost
   * its lock without knowing can still write. Replicas must agree: it is recorded in the state.
   */
  readonly fenced?: boolean;
  readonly maxFileBytes?: number;
  /**
   * All files together. The whole state travels in one message at a state transfer, so it must
   * stay well inside the transport's frame bound (10 MiB) until transfers are chunked.
   */
  readonly maxTotalBytes?: number;
  readonly maxClients?: number;
  readonly maxLocks?: number;
  readonly observer?: FileObserver;
}

export const DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_MAX_TOTAL_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_CLIENTS = 10_000;
export const DEFAULT_MAX_LOCKS = 100_000;

const STATE_VERSION = 1;

interface ClientRecord {
  seq: number;
  status: number;
  reply: Uint8Array;
}

interface StoredFile {
  chunks: Uint8Array[];
  length: number;
}

export class FileService implements StateMachine {
  readonly fenced: boolean;
  readonly maxFileBytes: number;
  readonly maxTotalBytes: number;
  readonly maxClients: number;
  readonly maxLocks: number;
  private files: StoredFile[] = emptyFiles();
  /** Insertion order = least recently active first (a touched client is moved to the end). */
  private clients = new Map<string, ClientRecord>();
  private highestToken = new Map<string, number>();
  private observer: FileObserver | undefined;

  constructor(
    private readonly locks: LockHolds,
    options: FileServiceOptions = {},
  ) {
    this.fenced = options.fenced ?? true;
    this.maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.maxTotalBytes = options.maxTotalBytes ?? DEFAULT_MAX_TOTAL_BYTES;
    this.maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.maxLocks = options.maxLocks ?? DEFAULT_MAX_LOCKS;
    this.observer = options.observer;
  }

  /** Installs the host's mirror (after construction, since the host needs the service first). */
  observe(observer: FileObserver | undefined): void {
    this.observer = observer;
    observer?.reset((index) => this.chunksOf(index));
  }

  execute(proc: number, request: Uint8Array, _context?: ExecuteContext): ExecuteResult {
    switch (proc) {
      case FileProc.HELLO:
        return this.greet(request, CONNECTED_MESSAGE, false);
      case FileProc.GOODBYE:
        return this.greet(request, DISCONNECTED_MESSAGE, true);
      case FileProc.APPEND:
        return this.append(request);
      case FileProc.READ:
        return this.read(request);
      default:
        return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    }
  }

  /** The bytes of file `index` (for tests and the checker). */
  contents(index: number): Uint8Array {
    return concat(this.chunksOf(index), this.files[index]!.length);
  }

  length(index: number): number {
    return this.files[index]!.length;
  }

  /** The highest token appends under `lock` have carried (0: none). */
  highestTokenOf(lock: string): number {
    return this.highestToken.get(lock) ?? 0;
  }

  /** The bytes of all files together. */
  totalBytes(): number {
    return this.files.reduce((sum, file) => sum + file.length, 0);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  invariants(): void {
    assert(this.files.length === FILE_COUNT, 'file count');
    for (const file of this.files) {
      assert(file.chunks.reduce((sum, chunk) => sum + chunk.length, 0) === file.length, 'file length matches its chunks');
      assert(file.length <= this.maxFileBytes, 'file within its bound');
    }
    assert(this.totalBytes() <= this.maxTotalBytes, 'files within their total bound');
    assert(this.clients.size <= this.maxClients, 'clients within bound');
    assert(this.highestToken.size <= this.maxLocks, 'locks within bound');
  }

  private chunksOf(index: number): readonly Uint8Array[] {
    const file = this.files[index];
    assert(file !== undefined, `no file ${index}`);
    return file.chunks;
  }

  /** hello and goodbye: answered without effect except that goodbye forgets the client's record. */
  private greet(request: Uint8Array, message: string, forget: boolean): ExecuteResult {
    const client = decodeClientRequest(request);
    if (!client.ok || client.value.length === 0) return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    if (forget) this.clients.delete(client.value);
    return { status: FileStatus.OK, reply: encodeStringReply(message) };
  }

  private append(request: Uint8Array): ExecuteResult {
    const decoded = decodeAppendRequest(request);
    if (!decoded.ok) return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    const args = decoded.value;
    if (args.client.length === 0 || args.lock.length === 0 || args.seq === 0) return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    if (utf8Length(args.client) > MAX_CLIENT_ID_BYTES || utf8Length(args.lock) > MAX_LOCK_NAME_BYTES) {
      return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    }

    const record = this.clients.get(args.client);
    if (record !== undefined) {
      if (args.seq === record.seq) {
        this.touch(args.client, record);
        return { status: record.status, reply: record.reply };
      }
      if (args.seq < record.seq) return { status: FileStatus.OLD_REQUEST, reply: new Uint8Array(0) };
    } else if (this.clients.size >= this.maxClients) {
      // Make room: the least recently active client's record goes (see the README's limits).
      const oldest = this.clients.keys().next().value as string;
      this.clients.delete(oldest);
    }

    const result = this.decideAppend(args);
    this.clients.delete(args.client);
    this.clients.set(args.client, { seq: args.seq, status: result.status, reply: result.reply });
    return result;
  }

  private decideAppend(args: {
    readonly file: string;
    readonly lock: string;
    readonly token: number;
    readonly data: Uint8Array;
  }): ExecuteResult {
    const none = new Uint8Array(0);
    const index = fileIndex(args.file);
    if (index === undefined) return { status: FileStatus.NOT_FOUND, reply: none };
    if (args.data.length === 0 || args.data.length > MAX_APPEND_BYTES) return { status: FileStatus.BAD_DATA, reply: none };
    const checked = this.fenced || args.token !== 0;
    if (checked) {
      if (args.token === 0) return { status: FileStatus.NOT_LOCKED, reply: none };
      if (args.token < this.highestTokenOf(args.lock)) return { status: FileStatus.STALE_TOKEN, reply: none };
      if (this.fenced) {
        const current = this.locks.holdToken(args.lock);
        if (current === undefined) return { status: FileStatus.NOT_LOCKED, reply: none };
        if (current > args.token) return { status: FileStatus.STALE_TOKEN, reply: none };
        if (current !== args.token) return { status: FileStatus.NOT_LOCKED, reply: none };
      }
      if (!this.highestToken.has(args.lock) && this.highestToken.size >= this.maxLocks) return { status: FileStatus.FULL, reply: none };
    }
    const file = this.files[index]!;
    if (file.length + args.data.length > this.maxFileBytes) return { status: FileStatus.FULL, reply: none };
    if (this.totalBytes() + args.data.length > this.maxTotalBytes) return { status: FileStatus.FULL, reply: none };

    const offset = file.length;
    // The request buffer may be reused by the caller; the state keeps its own copy.
    const data = args.data.slice();
    file.chunks.push(data);
    file.length += data.length;
    if (checked) this.highestToken.set(args.lock, args.token);
    this.observer?.appended(index, offset, data);
    return { status: FileStatus.OK, reply: encodeOffsetReply(offset) };
  }

  private read(request: Uint8Array): ExecuteResult {
    const decoded = decodeReadRequest(request);
    if (!decoded.ok) return { status: FileStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    const index = fileIndex(decoded.value.file);
    if (index === undefined) return { status: FileStatus.NOT_FOUND, reply: new Uint8Array(0) };
    const file = this.files[index]!;
    const start = Math.min(decoded.value.offset, file.length);
    const end = Math.min(file.length, start + Math.min(decoded.value.maxBytes, MAX_READ_BYTES));
    return { status: FileStatus.OK, reply: encodeReadReply({ length: file.length, data: slice(file.chunks, start, end) }) };
  }

  private touch(client: string, record: ClientRecord): void {
    this.clients.delete(client);
    this.clients.set(client, record);
  }

  marshalState(): Uint8Array {
    const w = new Writer(1024);
    w.u8(STATE_VERSION).bool(this.fenced).u64(this.maxFileBytes).u64(this.maxTotalBytes).u32(this.maxClients).u32(this.maxLocks);
    for (const file of this.files) {
      w.u32(file.chunks.length);
      for (const chunk of file.chunks) w.bytes(chunk);
    }
    w.u32(this.highestToken.size);
    for (const [lock, token] of this.highestToken) w.string(lock).u64(token);
    w.u32(this.clients.size);
    for (const [client, record] of this.clients) w.string(client).u64(record.seq).u32(record.status).bytes(record.reply);
    return w.finish();
  }

  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    const r = new Reader(state);
    const version = r.u8();
    if (r.error === undefined && version !== STATE_VERSION) return { ok: false, reason: `file service state version ${version}, expected ${STATE_VERSION}` };
    const fenced = r.bool();
    const maxFileBytes = r.u64();
    const maxTotalBytes = r.u64();
    const maxClients = r.u32();
    const maxLocks = r.u32();
    if (r.error === undefined && (fenced !== this.fenced || maxFileBytes !== this.maxFileBytes || maxTotalBytes !== this.maxTotalBytes || maxClients !== this.maxClients || maxLocks !== this.maxLocks)) {
      return { ok: false, reason: 'file service state was written with other settings (fenced mode or limits); every replica must use the same' };
    }
    const files: StoredFile[] = [];
    for (let i = 0; i < FILE_COUNT && r.error === undefined; i++) {
      const chunks = r.list((reader) => reader.bytes(MAX_APPEND_BYTES).slice(), 4);
      const length = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      if (length > maxFileBytes) r.fail(`file_${i} longer than its bound`);
      files.push({ chunks, length });
    }
    if (files.reduce((sum, file) => sum + file.length, 0) > maxTotalBytes) r.fail('files longer than their total bound');
    const highestToken = new Map<string, number>();
    const lockCount = r.u32();
    if (lockCount > maxLocks) r.fail('too many locks');
    for (let i = 0; i < lockCount && r.error === undefined; i++) highestToken.set(r.string(MAX_LOCK_NAME_BYTES), r.u64());
    const clients = new Map<string, ClientRecord>();
    const clientCount = r.u32();
    if (clientCount > maxClients) r.fail('too many clients');
    for (let i = 0; i < clientCount && r.error === undefined; i++) {
      clients.set(r.string(MAX_CLIENT_ID_BYTES), { seq: r.u64(), status: r.u32(), reply: r.bytes(64).slice() });
    }
    const done = r.finish(undefined);
    if (!done.ok) return { ok: false, reason: `file service state: ${done.reason}` };
    this.files = files;
    this.highestToken = highestToken;
    this.clients = clients;
    this.observer?.reset((index) => this.chunksOf(index));
    return { ok: true };
  }
}

function emptyFiles(): StoredFile[] {
  return Array.from({ length: FILE_COUNT }, () => ({ chunks: [], length: 0 }));
}

function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** Bytes [start, end) of a chunked file. */
function slice(chunks: readonly Uint8Array[], start: number, end: number): Uint8Array {
  const out = new Uint8Array(end - start);
  let position = 0;
  let written = 0;
  for (const chunk of chunks) {
    const chunkEnd = position + chunk.length;
    if (chunkEnd > start && position < end) {
      const from = Math.max(start, position) - position;
      const to = Math.min(end, chunkEnd) - position;
      out.set(chunk.subarray(from, to), written);
      written += to - from;
    }
    position = chunkEnd;
    if (position >= end) break;
  }
  return out;
}

const encoder = new TextEncoder();
function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

