/**
 * The disk's floor for the benchmarks that replicate: how long one synced write takes on the disk
 * the replicas write to, measured in the same run. Every replication round waits for a synced log
 * write on each of the three replicas, and on this kind of machine all three share one disk, so a
 * day with slower fsyncs gives lower figures whatever the code does. Printing the floor next to a
 * figure tells a slow disk from a slow change.
 *
 * Measured with the replicas' storage engine (classic-level, `sync: true`), 100-byte values, one
 * writer alone and then three at once (one per replica, as in a round), in a fresh directory that
 * is removed afterwards.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ClassicLevel } from 'classic-level';

export interface SyncedWriteFloor {
  /** Median time (ms) of one synced write with no other writer. */
  readonly aloneMs: number;
  /** Median time (ms) of one synced write while two other stores write synced too. */
  readonly threeAtOnceMs: number;
  /** Writes timed per writer. */
  readonly writes: number;
}

const VALUE = new Uint8Array(100);

function median(samples: number[]): number {
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

async function timeSyncedPuts(db: ClassicLevel<string, Uint8Array>, writes: number): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < writes; i++) {
    const started = performance.now();
    await db.put(`k${i}`, VALUE, { sync: true });
    samples.push(performance.now() - started);
  }
  return samples;
}

/** Times `writes` synced writes alone, then as many on each of three stores at once, under `parent` (default the temp folder). */
export async function measureSyncedWrites(writes = 200, parent = os.tmpdir()): Promise<SyncedWriteFloor> {
  const dir = await fsp.mkdtemp(path.join(parent, 'viewstamp-disk-floor-'));
  const stores = [0, 1, 2].map((i) => new ClassicLevel<string, Uint8Array>(path.join(dir, String(i)), { keyEncoding: 'utf8', valueEncoding: 'view' }));
  try {
    await Promise.all(stores.map((db) => db.open()));
    const alone = await timeSyncedPuts(stores[0]!, writes);
    const together = (await Promise.all(stores.map((db) => timeSyncedPuts(db, writes)))).flat();
    return { aloneMs: median(alone), threeAtOnceMs: median(together), writes };
  } finally {
    await Promise.all(stores.map((db) => db.close().catch(() => undefined)));
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

export function describeFloor(floor: SyncedWriteFloor): string {
  return `a synced 100-byte write on this disk (classic-level, ${floor.writes} per writer): p50 ${floor.aloneMs.toFixed(3)} ms alone, ${floor.threeAtOnceMs.toFixed(3)} ms with three writers at once`;
}
