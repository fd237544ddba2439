/**
 * The file service's client library: the specification's five calls, each blocking its caller
 * until the service's answer arrives.
 *
 * | call                 | resolves to                          | fails with (FileError.code)                         |
 * |----------------------|--------------------------------------|-----------------------------------------------------|
 * | `init()`             | `{ code: 0, message: 'Connected!' }` | the RSM client's error (no primary answered)         |
 * | `acquire(lockName?)` | `0` once the caller holds the lock   | the lock client's error (LOCK_TIMEOUT, …)            |
 * | `release()`          | `0`; the lock goes to the next waiter| FILE_NOT_LOCKED when nothing is held                 |
 * | `append(file, data)` | `0` appended, `1` no such file       | FILE_STALE_TOKEN, FILE_NOT_LOCKED, FILE_BAD_DATA, …  |
 * | `close()`            | `{ code: 0, message: 'Disconnected!' }` | —                                                  |
 *
 * The return codes 0 and 1 are the specification's (`FILE_OK`, `FILE_NOT_FOUND`); every other
 * outcome is a typed error with a stable code, as everywhere in this project.
 *
 * Exactly once: every append carries this client's id and the next sequence number, and the RSM
 * client resends it (to the same or a new primary) until it is answered; the service answers a
 * resent append from its record without appending again. An append the caller gave up on
 * (timeout, abort) may still be applied, but only before this client's next append, never after.
 *
 * Fencing: an append carries the token of the caller's current hold of the lock (0 when it holds
 * none), and the service refuses it unless that hold is still the lock's current one, so a client
 * that lost its lock without knowing (paused past its lease) cannot damage a file.
 *
 * Calls run one at a time per FileClient (the service requires it of one client id).
 */
import { ViewstampError } from '../../lib/errors.js';
import { SerialQueue } from '../../lib/serial-queue.js';
import {
  CONNECTED_MESSAGE,
  DISCONNECTED_MESSAGE,
  FILE_STATUS_CODES,
  FileProc,
  FileStatus,
  MAX_APPEND_BYTES,
  MAX_READ_BYTES,
  decodeReadReply,
  decodeStringReply,
  encodeAppendRequest,
  encodeClientRequest,
  encodeReadRequest,
} from './file-protocol.js';

/** The specification's return codes. */
export const FILE_OK = 0 as const;
export const FILE_NOT_FOUND = 1 as const;

/** The default lock: the specification's basic form, one lock protecting all 100 files. */
export const DEFAULT_FILE_LOCK = 'files';

export class FileError extends ViewstampError {
  override name = 'FileError';
}

/** What the file client needs of the RSM client (the lock client's, so both share one connection). */
export interface FileInvoker {
  invoke(proc: number, request: Uint8Array, options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<{ readonly status: number; readonly reply: Uint8Array }>;
}

/** What the file client needs of a held lock. */
export interface FileLockHold {
  readonly name: string;
  readonly token: number;
  release(): Promise<void>;
}

/** What the file client needs of the lock client. */
export interface FileLocks {
  acquire(name: string, options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal }): Promise<FileLockHold>;
}

export interface FileClientOptions {
  readonly rsm: FileInvoker;
  readonly locks: FileLocks;
  /** Unique among every client that ever talks to the group, e.g. the lock client's session id. */
  readonly clientId: string;
  /** Deadline of one call, fail-overs included (default: none — wait until the service answers). */
  readonly timeoutMs?: number;
  /** Called when the client closes (e.g. to close the lock client it was given). */
  readonly onClose?: () => Promise<void>;
}

export class FileClient {
  private readonly queue = new SerialQueue();
  private seq = 0;
  private hold: FileLockHold | undefined;
  private closed = false;

  constructor(private readonly options: FileClientOptions) {
    if (options.clientId === '' || new TextEncoder().encode(options.clientId).length > 256) {
      throw new FileError('FILE_BAD_ARGUMENT', 'the client id must be 1–256 bytes');
    }
  }

  /** The lock currently held through this client, if any. */
  get held(): FileLockHold | undefined {
    return this.hold;
  }

  /** Connects: one tiny replicated request, answered "Connected!" with code 0. */
  init(): Promise<{ code: 0; message: string }> {
    return this.run(async () => {
      const message = await this.greet(FileProc.HELLO);
      if (message !== CONNECTED_MESSAGE) throw new FileError('FILE_BAD_REPLY', `init: unexpected greeting ${JSON.stringify(message)}`);
      return { code: 0 as const, message };
    });
  }

  /** Blocks until this client holds `lockName` (default: the one lock of all files). */
  acquire(lockName: string = DEFAULT_FILE_LOCK): Promise<0> {
    return this.run(async () => {
      if (this.hold !== undefined) throw new FileError('FILE_ALREADY_LOCKED', `already holding ${JSON.stringify(this.hold.name)}; release it first`);
      this.hold = await this.options.locks.acquire(lockName, this.callOptions());
      return FILE_OK;
    });
  }

  /** Frees the lock; the lock service passes it to the next waiter. */
  release(): Promise<0> {
    return this.run(async () => {
      const hold = this.hold;
      if (hold === undefined) throw new FileError('FILE_NOT_LOCKED', 'release: no lock is held');
      this.hold = undefined;
      await hold.release();
      return FILE_OK;
    });
  }

  /** Appends `data` to `file` under the held lock: 0 appended, 1 no such file. */
  append(file: string, data: Uint8Array | string): Promise<0 | 1> {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return this.run(async () => {
      if (bytes.length === 0) throw new FileError('FILE_BAD_DATA', 'append: empty data');
      if (bytes.length > MAX_APPEND_BYTES) throw new FileError('FILE_BAD_DATA', `append: ${bytes.length} bytes, more than ${MAX_APPEND_BYTES}`);
      const hold = this.hold;
      const seq = ++this.seq;
      const request = encodeAppendRequest({
        client: this.options.clientId,
        seq,
        file,
        lock: hold?.name ?? DEFAULT_FILE_LOCK,
        token: hold?.token ?? 0,
        data: bytes,
      });
      const { status } = await this.options.rsm.invoke(FileProc.APPEND, request, this.callOptions());
      if (status === FileStatus.OK) return FILE_OK;
      if (status === FileStatus.NOT_FOUND) return FILE_NOT_FOUND;
      const code = FILE_STATUS_CODES[status] ?? 'FILE_FAILED';
      throw new FileError(code, `append to ${file}: ${code}${hold === undefined ? ' (no lock is held)' : ` (token ${hold.token} of ${JSON.stringify(hold.name)})`}`);
    });
  }

  /** The whole of `file` as the service holds it (a replicated read, page by page). */
  read(file: string): Promise<Uint8Array> {
    return this.run(async () => {
      const pages: Uint8Array[] = [];
      let offset = 0;
      for (;;) {
        const { status, reply } = await this.options.rsm.invoke(FileProc.READ, encodeReadRequest({ file, offset, maxBytes: MAX_READ_BYTES }), this.callOptions());
        if (status !== FileStatus.OK) throw new FileError(FILE_STATUS_CODES[status] ?? 'FILE_FAILED', `read ${file}: ${FILE_STATUS_CODES[status] ?? status}`);
        const decoded = decodeReadReply(reply);
        if (!decoded.ok) throw new FileError('FILE_BAD_REPLY', `read ${file}: ${decoded.reason}`);
        pages.push(decoded.value.data);
        offset += decoded.value.data.length;
        if (offset >= decoded.value.length || decoded.value.data.length === 0) break;
      }
      const out = new Uint8Array(offset);
      let at = 0;
      for (const page of pages) {
        out.set(page, at);
        at += page.length;
      }
      return out;
    });
  }

  /** Releases a held lock, says goodbye ("Disconnected!", code 0) and closes. */
  close(): Promise<{ code: 0; message: string }> {
    return this.run(async () => {
      const hold = this.hold;
      this.hold = undefined;
      if (hold !== undefined) await hold.release().catch(() => undefined);
      const message = await this.greet(FileProc.GOODBYE);
      this.closed = true;
      await this.options.onClose?.();
      return { code: 0 as const, message: message === DISCONNECTED_MESSAGE ? message : DISCONNECTED_MESSAGE };
    });
  }

  private async greet(proc: number): Promise<string> {
    const { status, reply } = await this.options.rsm.invoke(proc, encodeClientRequest(this.options.clientId), this.callOptions());
    const decoded = decodeStringReply(reply);
    if (status !== FileStatus.OK || !decoded.ok) throw new FileError(FILE_STATUS_CODES[status] ?? 'FILE_BAD_REPLY', `greeting answered status ${status}`);
    return decoded.value;
  }

  private callOptions(): { timeoutMs?: number } {
    return this.options.timeoutMs === undefined ? {} : { timeoutMs: this.options.timeoutMs };
  }

  private run<T>(call: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new FileError('FILE_CLOSED', 'the file client is closed'));
    return this.queue.run(call);
  }
}
