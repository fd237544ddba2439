/**
 * The disk floor of bench (d): real synced writes are timed, the medians come back, and the
 * scratch directory is gone afterwards.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { describeFloor, measureSyncedWrites } from '../tester/bench/disk-floor.js';

t.test('measureSyncedWrites times synced writes and removes its directory', async (t) => {
  const parent = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-floor-test-'));
  t.teardown(() => fsp.rm(parent, { recursive: true, force: true }));
  const floor = await measureSyncedWrites(5, parent);
  t.equal(floor.writes, 5);
  t.ok(Number.isFinite(floor.aloneMs) && floor.aloneMs > 0, `alone: ${floor.aloneMs} ms`);
  t.ok(Number.isFinite(floor.threeAtOnceMs) && floor.threeAtOnceMs > 0, `three at once: ${floor.threeAtOnceMs} ms`);
  t.same(await fsp.readdir(parent), [], 'the scratch directory was removed');
  t.match(describeFloor(floor), /^a synced 100-byte write on this disk \(classic-level, 5 per writer\): p50 \d+\.\d{3} ms alone, \d+\.\d{3} ms with three writers at once$/);
});
