import { mkdir, open as openFile, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { Storage, StorageOp } from './env.js';
import { ViewstampError } from './errors.js';

/**
 * The real Storage: one LevelDB (classic-level) database per node directory. Keys are UTF-8
 * strings, values raw bytes. A `write` is one atomic LevelDB batch; `sync: true` makes LevelDB
 * fsync its log before resolving, which is what "durable before the reply leaves" relies on.
 *
 * Large values (LARGE_VALUE_BYTES and up: checkpoints of a big service state) live in files of
 * their own, in `<directory>/values/`, and the batch holds only their names:
 *
 * 1. write() writes each large value to `values/<n>.tmp`, fdatasyncs it, renames it to
 *    `values/<n>` and fsyncs the directory: the file is whole and durable before anything names it.
 * 2. The batch puts `LARGE_KEY_PREFIX + key` → `<n>` and deletes `key` (a small value it may have
 *    had); a small put or a del of a key that had a large value deletes its name record. The batch
 *    stays atomic: the key has the old value or the new one.
 * 3. A file no longer named is unlinked once the batch that dropped its name is durable: at once
 *    after a synced batch, else after the next synced one. A crash in between leaves files no
 *    record names; open() removes them, and any `.tmp`.
 * 4. Writes issued while a large one is on its way to its files wait for it and then go in
 *    order, so a later batch never lands before an earlier one; with no large write pending a
 *    write goes straight to LevelDB, as before.
 *
 * Why: a value in LevelDB is written to its log and then again to a table, compressed, and the
 * log is replayed at every open. A 33 MB checkpoint (1,000,000 locks) took 210 ms to write with
 * sync, 330 ms to reopen the database and 85 ms to read back; as a file, 55–85 ms to write with
 * fdatasync and 35 ms to read, measured on the 2-core VM. A restarting replica waits for all three.
 *
 * Keys starting with U+0000 are reserved for the name records (write refuses them, list skips
 * them).
 *
 * Errors are ViewstampErrors with `cause`: STORAGE_LOCKED when another process (or another open in
 * this one) holds the directory, STORAGE_FAILED for everything else, including use after close.
 */

/** Values this large or larger are kept in files of their own. */
export const LARGE_VALUE_BYTES = 1024 * 1024;
/** Name records of large values: this prefix + the key → the file's name. */
const LARGE_KEY_PREFIX = '\u0000large/';
const VALUES_DIR = 'values';

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export async function openLevelStorage(directory: string): Promise<Storage> {
  // 'buffer' is classic-level's native value encoding: a Uint8Array put is wrapped, not copied,
  // where 'view' costs a transcoding step on every put.
  const db = new ClassicLevel<string, Buffer>(directory, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  try {
    await mkdir(directory, { recursive: true });
    await db.open({ createIfMissing: true });
  } catch (error) {
    throw storageError(`cannot open storage in ${directory}`, error);
  }
  try {
    const values = path.join(directory, VALUES_DIR);
    await mkdir(values, { recursive: true });
    const named = new Map<string, string>();
    for await (const [key, file] of db.iterator({ gte: LARGE_KEY_PREFIX, lt: prefixEndString(LARGE_KEY_PREFIX) })) {
      named.set(key.slice(LARGE_KEY_PREFIX.length), file.toString('utf8'));
    }
    // Files no record names: written before a crash that lost their batch, or dropped by a batch
    // whose unlink did not happen.
    const kept = new Set(named.values());
    let nextFile = 1;
    for (const file of await readdir(values)) {
      const number = Number(file.endsWith('.tmp') ? file.slice(0, -4) : file);
      if (Number.isSafeInteger(number)) nextFile = Math.max(nextFile, number + 1);
      if (!kept.has(file)) await unlink(path.join(values, file));
    }
    for (const file of kept) {
      const number = Number(file);
      if (Number.isSafeInteger(number)) nextFile = Math.max(nextFile, number + 1);
    }
    return new LevelStorage(db, directory, named, nextFile);
  } catch (error) {
    await db.close().catch(() => undefined);
    throw storageError(`cannot open the large values of ${directory}`, error);
  }
}

class LevelStorage implements Storage {
  private readonly values: string;
  /** Writes issued but not yet handed to LevelDB because a large write went first. */
  private queued = 0;
  /** Settles when every queued write has settled. */
  private queue: Promise<void> = Promise.resolve();
  /** Files dropped by unsynced batches: unlinked after the next synced one. */
  private unlinkAfterSync: string[] = [];

  constructor(
    private readonly db: ClassicLevel<string, Buffer>,
    private readonly directory: string,
    /** key → file name of every large value. */
    private readonly named: Map<string, string>,
    private nextFile: number,
  ) {
    this.values = path.join(directory, VALUES_DIR);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      for (let attempt = 0; ; attempt++) {
        const file = this.named.get(key);
        if (file === undefined) {
          const value = await this.db.get(key);
          // The key may have become large meanwhile (its small value deleted in the same batch).
          if (value === undefined && this.named.has(key) && attempt < 3) continue;
          return value === undefined ? undefined : plainBytes(value);
        }
        const value = await this.readValue(file);
        // Replaced and unlinked while we read it: read what names it now.
        if (value === undefined && attempt < 3) continue;
        if (value === undefined) throw new Error(`large value file ${file} is missing`);
        return value;
      }
    } catch (error) {
      throw storageError(`get ${JSON.stringify(key)} in ${this.directory} failed`, error);
    }
  }

  async list(prefix: string): Promise<Array<[string, Uint8Array]>> {
    // The range is computed on the UTF-8 bytes LevelDB sorts by, so it is exact: every key that
    // starts with `prefix`, including keys continuing with characters beyond U+FFFF (which a
    // string bound like prefix + '\uffff' would miss).
    const start = textEncoder.encode(prefix);
    const end = prefixEnd(start);
    try {
      const entries = await this.db
        .iterator<Uint8Array, Uint8Array>({
          keyEncoding: 'view',
          gte: start,
          ...(end === undefined ? {} : { lt: end }),
        })
        .all();
      const small = entries.filter(([key]) => key[0] !== 0).map(([key, value]): [Uint8Array, Uint8Array] => [key, plainBytes(value)]);
      const large: Array<[Uint8Array, Uint8Array]> = [];
      for (const key of [...this.named.keys()].filter((k) => k.startsWith(prefix))) {
        const value = await this.get(key);
        if (value !== undefined) large.push([textEncoder.encode(key), value]);
      }
      const all = large.length === 0 ? small : [...small, ...large].sort(([a], [b]) => Buffer.compare(a, b));
      return all.map(([key, value]) => [textDecoder.decode(key), value]);
    } catch (error) {
      throw storageError(`list ${JSON.stringify(prefix)} in ${this.directory} failed`, error);
    }
  }

  write(ops: readonly StorageOp[], options: { readonly sync: boolean }): Promise<void> {
    for (const op of ops) {
      if (op.key.startsWith('\u0000')) return Promise.reject(storageError(`write in ${this.directory} failed`, new RangeError(`key ${JSON.stringify(op.key)}: keys starting with U+0000 are reserved`)));
    }
    const large = ops.some((op) => op.type === 'put' && op.value.byteLength >= LARGE_VALUE_BYTES);
    if (!large && this.queued === 0) return this.commit(ops, options, new Map());
    // The files are written now, in parallel with whatever is ahead; the batch waits its turn.
    const files = large ? this.writeValues(ops) : Promise.resolve(new Map<number, string>());
    files.catch(() => undefined); // observed below, after the queue
    this.queued++;
    const run = this.queue.then(async () => {
      try {
        await this.commit(ops, options, await files);
      } finally {
        this.queued--;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    try {
      await this.queue;
      await this.db.close(); // idempotent in abstract-level
    } catch (error) {
      throw storageError(`close of ${this.directory} failed`, error);
    }
  }

  /** Writes every large value of `ops` to its own durable file; op index → file name. */
  private async writeValues(ops: readonly StorageOp[]): Promise<Map<number, string>> {
    const files = new Map<number, string>();
    try {
      for (const [index, op] of ops.entries()) {
        if (op.type !== 'put' || op.value.byteLength < LARGE_VALUE_BYTES) continue;
        const file = String(this.nextFile++);
        const temporary = path.join(this.values, `${file}.tmp`);
        const handle = await openFile(temporary, 'w');
        try {
          await handle.writeFile(op.value);
          await handle.datasync();
        } finally {
          await handle.close();
        }
        await rename(temporary, path.join(this.values, file));
        files.set(index, file);
      }
      const dir = await openFile(this.values, 'r');
      try {
        await dir.sync(); // the renames are durable
      } finally {
        await dir.close();
      }
      return files;
    } catch (error) {
      throw storageError(`write of a large value in ${this.directory} failed`, error);
    }
  }

  private async commit(ops: readonly StorageOp[], options: { readonly sync: boolean }, files: ReadonlyMap<number, string>): Promise<void> {
    // A chained batch, not db.batch(array): the array form clones and re-validates every operation
    // in JavaScript and again in the binding, measured at about 9 µs of the event loop per put
    // against about 1 µs chained, and every replicated batch is one of these writes.
    let batch: ReturnType<ClassicLevel<string, Buffer>['batch']> | undefined;
    // What the name records become, and the files they stop naming (applied once it is written).
    const renamed = new Map<string, string | undefined>();
    const nameOf = (key: string): string | undefined => (renamed.has(key) ? renamed.get(key) : this.named.get(key));
    const dropped: string[] = [];
    try {
      batch = this.db.batch(); // throws when the database is not open
      for (const [index, op] of ops.entries()) {
        const before = nameOf(op.key);
        const file = files.get(index);
        if (file !== undefined) {
          batch.put(LARGE_KEY_PREFIX + op.key, Buffer.from(file));
          batch.del(op.key);
          renamed.set(op.key, file);
        } else {
          if (op.type === 'put') batch.put(op.key, Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength));
          else batch.del(op.key);
          if (before !== undefined) {
            batch.del(LARGE_KEY_PREFIX + op.key);
            renamed.set(op.key, undefined);
          }
        }
        if (before !== undefined) dropped.push(before);
      }
      await batch.write({ sync: options.sync });
    } catch (error) {
      await batch?.close().catch(() => undefined); // idempotent; write() closes it too
      // The files written for this batch stay: a failed write may still have reached the log
      // (a failed sync), and then they are named. The next open removes them if they are not.
      throw storageError(`write of ${ops.length} ops in ${this.directory} failed`, error);
    }
    for (const [key, file] of renamed) {
      if (file === undefined) this.named.delete(key);
      else this.named.set(key, file);
    }
    this.unlinkAfterSync.push(...dropped);
    if (options.sync && this.unlinkAfterSync.length > 0) {
      const unlinked = this.unlinkAfterSync;
      this.unlinkAfterSync = [];
      // A failed unlink leaves a file no record names: the next open removes it.
      await Promise.all(unlinked.map((file) => unlink(path.join(this.values, file)).catch(() => undefined)));
    }
  }

  /** A large value's bytes, or undefined when its file is gone (replaced meanwhile). */
  private async readValue(file: string): Promise<Uint8Array | undefined> {
    try {
      return plainBytes(await readFile(path.join(this.values, file)));
    } catch (error) {
      if (hasCode(error, 'ENOENT')) return undefined;
      throw error;
    }
  }
}

/**
 * classic-level hands back Node Buffers. Buffer#slice returns a view where Uint8Array#slice copies,
 * so callers would behave differently here than with the simulated storage; a zero-copy plain
 * Uint8Array over the same memory removes the difference.
 */
function plainBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The smallest byte string greater than every string starting with `prefix`, or undefined when
 * there is none (empty prefix: no upper bound). UTF-8 never contains 0xff, but the loop does not
 * rely on it.
 */
function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i]! += 1;
      return end;
    }
  }
  return undefined;
}

/** prefixEnd for a string bound (LevelDB compares UTF-8 bytes; the prefix here is ASCII). */
function prefixEndString(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

function storageError(message: string, error: unknown): ViewstampError {
  const code = hasCode(error, 'LEVEL_LOCKED') ? 'STORAGE_LOCKED' : 'STORAGE_FAILED';
  const detail = error instanceof Error ? `: ${error.message}` : '';
  return new ViewstampError(code, `${message}${detail}`, { cause: error });
}

/** Whether `error` or one of its causes carries `code` (abstract-level nests LEVEL_LOCKED). */
function hasCode(error: unknown, code: string): boolean {
  for (let depth = 0; depth < 8 && typeof error === 'object' && error !== null; depth++) {
    if ((error as { code?: unknown }).code === code) return true;
    error = (error as { cause?: unknown }).cause;
  }
  return false;
}
