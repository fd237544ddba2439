/**
 * Host code (real file system): mirrors a replica's FileService to real files
 * `<dir>/file_0 … file_99`, so a person can `cat` them and tests can compare replicas byte for byte.
 *
 * The mirror is derived state, never read back by the service: the replicated state (in the RSM's
 * durable storage) is the truth. So:
 * 1. every installed state (a restart's recovery, a state transfer) rewrites every file from the
 *    state (`reset`);
 * 2. every executed append writes its bytes at its offset (`appended`): a positional write, so
 *    writing the same append twice leaves the same file;
 * 3. writes are applied in the order the service executed them, one at a time, off the request
 *    path; `flush()` waits for those queued so far.
 * A crash between execution and the write loses only mirror bytes that step 1 rewrites at restart.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { logger } from '../../lib/log.js';
import { FILE_COUNT, fileName } from './file-protocol.js';
import type { FileObserver } from './file-service.js';

const log = logger('file:mirror');

export class FileMirror implements FileObserver {
  private queue: Promise<void> = Promise.resolve();
  private failures = 0;

  constructor(readonly dir: string) {}

  /** The path of file `index` in the mirror. */
  pathOf(index: number): string {
    return path.join(this.dir, fileName(index));
  }

  appended(index: number, offset: number, data: Uint8Array): void {
    this.enqueue(async () => {
      const handle = await fs.open(this.pathOf(index), 'r+').catch(async () => fs.open(this.pathOf(index), 'w'));
      try {
        await handle.write(data, 0, data.length, offset);
      } finally {
        await handle.close();
      }
    });
  }

  reset(contents: (index: number) => readonly Uint8Array[]): void {
    // Copy the chunk lists now: the service may append to them before this write runs.
    const snapshot = Array.from({ length: FILE_COUNT }, (_, index) => contents(index).slice());
    this.enqueue(async () => {
      await fs.mkdir(this.dir, { recursive: true });
      for (let index = 0; index < FILE_COUNT; index++) await fs.writeFile(this.pathOf(index), snapshot[index]!);
    });
  }

  /** Resolves once every write queued so far is done. */
  flush(): Promise<void> {
    return this.queue;
  }

  /** Writes that failed (logged; the next reset repairs them). */
  get failedWrites(): number {
    return this.failures;
  }

  private enqueue(write: () => Promise<void>): void {
    this.queue = this.queue.then(write).catch((error: unknown) => {
      this.failures++;
      log('mirror write in %s failed: %s', this.dir, (error as Error).message);
    });
  }
}
