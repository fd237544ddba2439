/**
 * The operation log and checkpoints (rsm/README.md, "The operation log, checkpoints and
 * recovery"), in the simulator: every request is a log entry carrying the primary's stamped time,
 * checkpoints keep the log short (they retain a few entries before them for state transfer), a restart of every replica replays checkpoint + log without
 * losing anything acknowledged, and a log with a gap is refused at open.
 */
import t from 'tap';
import { ViewstampError } from '../lib/errors.js';
import { CHECKPOINT_PACE_FACTOR, KEY_CHECKPOINT, LOG_PREFIX, checkpointDelayMs, decodeCheckpoint, decodeLogEntry, encodeLogEntry, logKey } from '../rsm/replica-store.js';
import { RSM_SIM_TIMING } from '../tester/sim/rsm-sim.js';
import { kvClient, kvCluster, settle, settledOn, stateDigests, valueAt } from './helpers/rsm.js';

t.test('requests are logged with the stamped time, checkpoints drop the prefix, a crash of every replica loses nothing', async (t) => {
  const { cluster, ids, checker } = await kvCluster('rsm-log', 3);
  const kv = kvClient(cluster, 'c1');
  const appended: string[] = [];
  for (let i = 1; i <= 30; i++) {
    await settle(cluster, kv.append('k', `${i};`));
    appended.push(`${i};`);
  }
  await cluster.runFor(1000);
  // kill -9 of every replica; what their disks kept is what a restart replays.
  for (const id of ids) cluster.crash(id);
  const every = RSM_SIM_TIMING.checkpointEveryRequests!;
  const retain = RSM_SIM_TIMING.logRetainRequests!;
  const stamps = new Map<string, number>();
  for (const id of ids) {
    const storage = cluster.disk.open(id);
    const entries = await storage.list(LOG_PREFIX);
    // At most: the entries since the checkpoint, the one at it, and those it retains before it.
    t.ok(entries.length <= every + 1 + retain, `${id}: ${entries.length} log entries left after checkpoints (bound ${every} + the last one + ${retain} retained)`);
    const checkpoint = await storage.get(KEY_CHECKPOINT);
    t.ok(checkpoint !== undefined && decodeCheckpoint(checkpoint).ok, `${id}: a checkpoint`);
    for (const [key, bytes] of entries) {
      const entry = decodeLogEntry(bytes);
      t.ok(entry.ok, `${key} decodes`);
      if (!entry.ok) continue;
      const seen = stamps.get(key);
      if (seen === undefined) stamps.set(key, entry.value.timeMs);
      else t.equal(entry.value.timeMs, seen, `${key}: every replica logged the primary's stamped time`);
    }
    await storage.close();
  }
  t.ok([...stamps.values()].some((ms) => ms > 0), 'stamped times come from the primary clock (not 0)');

  for (const id of ids) await cluster.start(id);
  t.ok(await settledOn(cluster, ids), cluster.describe());
  t.equal(valueAt(cluster, ids[0]!, 'k'), appended.join(''), 'every acknowledged append survived the crash of every replica');
  await settle(cluster, kv.append('k', 'after;'));
  t.ok(await settledOn(cluster, ids), cluster.describe());
  t.equal(new Set(stateDigests(cluster).values()).size, 1, 'one state after the restart');
  t.same(checker.violations, []);
});

t.test('a log with a gap, or an entry that does not decode, is refused at open (RSM_STATE_CORRUPT)', async (t) => {
  for (const damage of ['gap', 'junk'] as const) {
    const { cluster, ids } = await kvCluster(`rsm-log-${damage}`, 3);
    const kv = kvClient(cluster, 'c1');
    await settle(cluster, kv.append('k', 'a;'));
    const victim = ids[2]!;
    cluster.crash(victim);
    const storage = cluster.disk.open(victim);
    const vs = { vid: 999, seqno: 5 };
    const bytes = damage === 'gap' ? encodeLogEntry({ vs, timeMs: 1, proc: 0, request: new Uint8Array(0) }) : new Uint8Array([2, 0, 1]);
    await storage.write([{ type: 'put', key: logKey(vs), value: bytes }], { sync: true });
    await storage.close();
    const outcome = await cluster.start(victim).then(
      () => 'opened',
      (error: unknown) => (error instanceof ViewstampError ? error.code : String(error)),
    );
    t.equal(outcome, 'RSM_STATE_CORRUPT', `${damage}: refused`);
  }
});

t.test('checkpoints are paced by their cost: at most a tenth of the time marshalling, however large the state', async (t) => {
  t.equal(checkpointDelayMs(5000, 0, 0), 0, 'a state that costs nothing to marshal: no wait');
  t.equal(checkpointDelayMs(5000, 4990, 1), 0, 'a cheap one: no wait once 9× its cost has passed');
  t.equal(checkpointDelayMs(5000, 4900, 1000), 8900, 'after a 1 s checkpoint that ended at 4.9 s, the next waits until 13.8 s');
  t.equal(checkpointDelayMs(20_000, 4900, 1000), 0, 'and not once that time has passed');
  // Checkpoints due back to back (a busy replica with a large state): each starts when the pace
  // allows, so marshalling takes about 1 / (1 + CHECKPOINT_PACE_FACTOR) of the time.
  let now = 0;
  let busy = 0;
  let lastEnd = 0;
  let lastCost = 0;
  for (let i = 0; i < 100; i++) {
    const start = now + checkpointDelayMs(now, lastEnd, lastCost);
    const cost = 50 + ((i * 37) % 900);
    busy += cost;
    lastEnd = start + cost;
    lastCost = cost;
    now = lastEnd;
  }
  t.ok(busy / now <= 1.1 / (1 + CHECKPOINT_PACE_FACTOR), `checkpoints took ${((100 * busy) / now).toFixed(1)} % of the time`);
});
