/**
 * A replica's storage writes, in order, one running at a time, with the writes queued behind the
 * running one merged into one (group commit across requests):
 *
 * 1. With no write running, a write goes to storage at once, inside the caller's turn: the fsync
 *    then runs while the caller goes on (the primary answers nothing before it; a backup executes
 *    the batch meanwhile), instead of after the rest of the turn's work.
 * 2. Writes queued while another runs join one group (synced if any of them asked for it), which
 *    starts when the running one ends. With batches pipelined, a replica whose disk is busy with
 *    one batch's fsync makes every batch that arrived meanwhile durable with the next fsync,
 *    instead of one fsync each in turn.
 * 3. One storage write is atomic, and the ops keep their order, across groups too.
 * 4. A failed write is reported to `onError` (fatal to the replica); the promise of every write
 *    in its group rejects.
 */
import type { Storage, StorageOp } from '../lib/env.js';

/** Storage writes queued behind the running one, merged into one write. */
interface QueuedWrite {
  readonly ops: StorageOp[];
  sync: boolean;
  readonly written: Promise<void>;
  /** Settles `written` with the outcome of the storage write that carried the group. */
  readonly settle: (outcome: Promise<void>) => void;
}

export class WriteQueue {
  private writing = false;
  private next: QueuedWrite | undefined;
  private latest: Promise<void> = Promise.resolve();

  constructor(
    private readonly storage: Storage,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Settles once the latest write queued so far is durable (and with it every earlier one). */
  get durable(): Promise<void> {
    return this.latest;
  }

  /** Settles once no write queued before or while waiting is still running (rejects as `durable` does). */
  async drained(): Promise<void> {
    for (let latest = this.latest; ; latest = this.latest) {
      await latest;
      if (latest === this.latest) return;
    }
  }

  /** Queues `ops` after every earlier write; settles when they are durable (rejects if the write failed). */
  write(ops: readonly StorageOp[], sync: boolean): Promise<void> {
    if (!this.writing) return (this.latest = this.start(ops, sync));
    let next = this.next;
    if (next === undefined) {
      let settle: (outcome: Promise<void>) => void = () => undefined;
      const written = new Promise<void>((resolve) => {
        settle = resolve;
      });
      written.catch(() => undefined); // reported to onError already; callers may not wait
      this.next = next = { ops: [], sync: false, written, settle };
      this.latest = written;
    }
    for (const op of ops) next.ops.push(op);
    next.sync ||= sync;
    return next.written;
  }

  /** Starts one storage write now (none is running); the queued group follows when it ends. */
  private start(ops: readonly StorageOp[], sync: boolean): Promise<void> {
    this.writing = true;
    let written: Promise<void>;
    try {
      written = this.storage.write(ops, { sync });
    } catch (error) {
      written = Promise.reject(error);
    }
    written.then(
      () => this.ended(),
      (error: unknown) => {
        this.onError(error);
        this.ended();
      },
    );
    return written;
  }

  private ended(): void {
    this.writing = false;
    const next = this.next;
    if (next === undefined) return;
    this.next = undefined;
    next.settle(this.start(next.ops, next.sync));
  }
}
