import type { Storage, StorageOp } from '../env.js';
import { ViewstampError } from '../errors.js';
import type { SimWorld } from './world.js';

/**
 * In-memory storage with the crash semantics the `Storage` contract allows and no more: a batch
 * written with `sync: true` is durable together with every earlier batch; unsynced batches sit in
 * a volatile list, and a crash keeps a random prefix of that list (batches are atomic, so a crash
 * loses a suffix of whole batches, never part of one and never a batch before a kept one).
 *
 * A SimDisk holds the durable contents of every node across crashes, like the node's directory.
 */

/**
 * Unsynced batches kept before the oldest is written back, like an OS flushing dirty pages. It
 * bounds memory and keeps the crash model intact: what is written back is always a prefix.
 */
export const UNSYNCED_BATCHES_MAX = 1000;

type Contents = Map<string, Uint8Array>;

export class SimDisk {
  /** Durable contents by node name. Values are private copies and never mutated. */
  private readonly images = new Map<string, Contents>();
  private readonly opened = new Map<string, SimStorage>();

  /** `world.crash(owner)` crashes the storage opened under the same name, if any. */
  constructor(private readonly world: SimWorld) {
    world.onCrash((owner) => this.opened.get(owner)?.crash());
  }

  /** Opens the node's storage with whatever survived. One open storage per name at a time. */
  open(name: string): SimStorage {
    if (this.opened.has(name)) {
      // Same code as the real storage when LevelDB's lock is held by another open instance.
      throw new ViewstampError('STORAGE_LOCKED', `SimDisk.open: storage "${name}" is already open`);
    }
    let durable = this.images.get(name);
    if (durable === undefined) this.images.set(name, (durable = new Map()));
    const storage = new SimStorage(this.world, name, durable, () => this.opened.delete(name));
    this.opened.set(name, storage);
    this.world.trace(`disk-open ${name} keys=${durable.size}`);
    return storage;
  }

  /** Crashes the open storage `name` (no-op if none is open). */
  crash(name: string): void {
    this.opened.get(name)?.crash();
  }

  /** Names that have ever been opened, sorted. */
  names(): string[] {
    return [...this.images.keys()].sort();
  }
}

export class SimStorage implements Storage {
  /** What reads see: the durable contents with every unsynced batch applied. */
  private readonly current: Contents;
  private unsynced: StorageOp[][] = [];
  private state: 'open' | 'closed' | 'crashed' = 'open';
  /**
   * Virtual ms a synced write takes to become durable (default 0: at once). While it runs, the
   * batch is visible to reads but not durable: a crash keeps a random prefix of the unsynced
   * batches, this one included or not, like a crash during an fsync. The completion is a timer of
   * the owner `name`, so set it only once the owner's code runs under the world's scheduler (a
   * write awaited outside runUntil/runFor would never complete).
   */
  syncDelayMs = 0;

  /** Use `SimDisk.open`. */
  constructor(
    private readonly world: SimWorld,
    readonly name: string,
    private readonly durable: Contents,
    private readonly onRelease: () => void,
  ) {
    this.current = new Map(durable);
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.perform(() => this.current.get(key)?.slice());
  }

  list(prefix: string): Promise<Array<[string, Uint8Array]>> {
    return this.perform(() => {
      const entries: Array<[string, Uint8Array]> = [];
      for (const [key, value] of this.current) if (key.startsWith(prefix)) entries.push([key, value.slice()]);
      return entries.sort(([a], [b]) => compareKeys(a, b));
    });
  }

  write(ops: readonly StorageOp[], options: { readonly sync: boolean }): Promise<void> {
    // A storage opened under a name the world does not run (a test reading a crashed node's
    // disk) has no clock: its syncs complete at once.
    const delayed = options.sync && this.syncDelayMs > 0 && !this.world.isDown(this.name);
    const written = this.perform(() => {
      // Copy first: the batch must not change if the caller reuses its buffers afterwards.
      const batch = ops.map(copyOp);
      apply(this.current, batch);
      this.unsynced.push(batch);
      if (options.sync && !delayed) this.writeBack(this.unsynced.length);
      else if (!options.sync && this.unsynced.length > UNSYNCED_BATCHES_MAX) this.writeBack(1);
      return batch;
    });
    if (!delayed) return written.then(() => undefined);
    // The sync completes later; then this batch and every one before it are durable. A crash
    // first leaves the promise unsettled, as a dead process never sees its fsync return.
    return written.then(
      (batch) =>
        new Promise<void>((resolve) => {
          // The process died in the turn that wrote (it killed itself at a breakpoint): the sync
          // never returns to it.
          if (this.state === 'crashed' || this.world.isDown(this.name)) return;
          this.world.clockFor(this.name).setTimer(this.syncDelayMs, () => {
            if (this.state === 'crashed') return;
            // Written back already by a later sync, the unsynced bound or a clean close: durable.
            const index = this.unsynced.indexOf(batch);
            if (index >= 0) this.writeBack(index + 1);
            resolve();
          });
        }),
    );
  }

  /** A clean close writes everything back (the process ended normally). Idempotent. */
  close(): Promise<void> {
    if (this.state === 'closed') return Promise.resolve();
    return this.perform(() => {
      this.writeBack(this.unsynced.length);
      this.state = 'closed';
      this.onRelease();
    });
  }

  /**
   * Crashes the storage: a random prefix of the unsynced batches (possibly none, possibly all)
   * becomes durable and the rest is lost. Afterwards every call on this object returns a promise
   * that never settles, as a dead process never sees its I/O finish; reopen it through the disk.
   */
  crash(): void {
    if (this.state !== 'open') return;
    const total = this.unsynced.length;
    const kept = this.world.random.int(total + 1);
    this.writeBack(kept);
    this.unsynced = [];
    this.state = 'crashed';
    this.onRelease();
    this.world.trace(`disk-crash ${this.name} kept ${kept}/${total} unsynced batches`);
  }

  /** Makes the oldest `count` unsynced batches durable. */
  private writeBack(count: number): void {
    for (const batch of this.unsynced.splice(0, count)) apply(this.durable, batch);
  }

  private perform<T>(op: () => T): Promise<T> {
    if (this.state === 'crashed') return new Promise<T>(() => {});
    if (this.state === 'closed') {
      return Promise.reject(new ViewstampError('STORAGE_CLOSED', `SimStorage "${this.name}": used after close`));
    }
    try {
      return Promise.resolve(op());
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

function copyOp(op: StorageOp): StorageOp {
  if (typeof op.key !== 'string') throw new TypeError(`SimStorage: key must be a string`);
  if (op.type === 'del') return { type: 'del', key: op.key };
  if (op.type !== 'put' || !(op.value instanceof Uint8Array)) {
    throw new TypeError(`SimStorage: bad op for key "${op.key}"`);
  }
  return { type: 'put', key: op.key, value: op.value.slice() };
}

function apply(contents: Contents, batch: readonly StorageOp[]): void {
  for (const op of batch) {
    if (op.type === 'put') contents.set(op.key, op.value);
    else contents.delete(op.key);
  }
}

/**
 * Code-point order, which equals the UTF-8 byte order LevelDB (classic-level) sorts keys in.
 * Plain `<` compares UTF-16 code units and differs for characters beyond U+FFFF.
 */
function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++; // both strings hold the same surrogate pair here
  }
  return a.length - b.length;
}
