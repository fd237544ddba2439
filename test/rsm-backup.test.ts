/**
 * The backup's side of the request path (rsm/backup.ts) against a fake replica on a virtual
 * clock: a batch in order is held and acknowledged once durable, and executes when a commit point
 * (the next batch's, or a `commit`) reaches it; a malformed one, one in a view change, on the
 * primary, of an older view or with a gap that does not fill is refused; a batch that overtook
 * the one before it waits and is held once the gap fills; a duplicate of the last batch is
 * acknowledged again without holding it twice, unless its request differs; the number waiting for
 * a gap is bounded.
 */
import t from 'tap';
import { SimWorld } from '../lib/sim/world.js';
import { AWAITING_COMMIT_MAX, GAP_WAIT_MS, GAP_WAITERS_MAX } from '../rsm/backup.js';
import { BackupHost, type BackupEffects } from '../rsm/backup-host.js';
import { successor } from '../rsm/invoke-rule.js';
import { BATCH_REQUESTS_MAX, compareViewstamp, RsmStatus, VIEWSTAMP_ZERO, type BatchEntry, type Viewstamp } from '../rsm/protocol.js';
import type { LogEntry } from '../rsm/replica-store.js';

const OK = RsmStatus.OK;
const ERR = RsmStatus.ERR;

/** A replica that serves view `vid` as a backup, at `last`, whose writes are durable at once. */
function fakeReplica(vid: number, last: Viewstamp = VIEWSTAMP_ZERO) {
  const world = new SimWorld('rsm-backup');
  const held: LogEntry[] = [];
  const executed: LogEntry[] = [];
  let breakpoints = 0;
  const replica = {
    world,
    held,
    executed,
    stopped: false,
    inViewChange: false,
    primary: false,
    expected: last.vid === vid ? successor(last) : { vid, seqno: 1 },
    last,
    lastRequest: undefined as LogEntry | undefined,
    get breakpoints() {
      return breakpoints;
    },
  };
  const host: BackupEffects = {
    me: 'b1',
    clock: world.clockFor('b1'),
    get isStopped() {
      return replica.stopped;
    },
    get inViewChange() {
      return replica.inViewChange;
    },
    get primary() {
      return replica.primary ? 'b1' : 'p0';
    },
    vidCommit: vid,
    get expected() {
      return replica.expected;
    },
    get lastHeld() {
      return replica.last;
    },
    get lastHeldRequest() {
      return replica.lastRequest;
    },
    get awaitingCommit() {
      return held.length;
    },
    durable: Promise.resolve(),
    holdBatch: (entries) => {
      const tail = entries[entries.length - 1]!;
      replica.expected = successor(tail.vs);
      for (const entry of entries) held.push(entry);
      replica.last = tail.vs;
      replica.lastRequest = tail;
      return Promise.resolve();
    },
    executable: (committed) => (replica.inViewChange || replica.primary || replica.stopped ? 0 : held.filter((entry) => compareViewstamp(entry.vs, committed) <= 0).length),
    executeCommitted: (committed) => {
      if (replica.inViewChange || replica.primary || replica.stopped) return 0;
      let count = 0;
      while (held.length > 0 && compareViewstamp(held[0]!.vs, committed) <= 0) {
        executed.push(held.shift()!);
        count++;
      }
      return count;
    },
    breakpoint1: () => void breakpoints++,
  };
  const backup = new BackupHost(host, true);
  return { replica, backup, world };
}

const batch = (vid: number, from: number, count: number, fill = 1): BatchEntry[] =>
  Array.from({ length: count }, (_, i) => ({ vs: { vid, seqno: from + i }, timeMs: 0, proc: 7, req: new Uint8Array([fill, i]) }));

/** Before anything in view 2 is committed. */
const NONE: Viewstamp = { vid: 2, seqno: 0 };
const at = (seqno: number): Viewstamp => ({ vid: 2, seqno });

/** Delivers `entries` with commit point `committed` and runs the virtual clock until it is answered (at most `ms`). */
async function deliver(world: SimWorld, backup: BackupHost, entries: BatchEntry[], committed = NONE, ms = GAP_WAIT_MS * 2): Promise<number | undefined> {
  let status: number | undefined;
  void backup.receive(entries, committed).then((reply) => (status = reply.status));
  await world.runUntil(() => status !== undefined, ms);
  return status;
}

const seqnos = (entries: readonly LogEntry[]): number[] => entries.map((e) => e.vs.seqno);

t.test('a batch in order is held and acknowledged once durable; it executes when the next batch brings the commit point past it', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 1, 3)), OK);
  t.same(seqnos(replica.held), [1, 2, 3], 'held');
  t.same(replica.executed, [], 'not executed before the primary commits it');
  t.same(replica.expected, { vid: 2, seqno: 4 });
  t.equal(replica.breakpoints, 0, 'breakpoint 1 comes after executing');
  t.equal(await deliver(world, backup, batch(2, 4, 1), at(2)), OK, 'the next one, committing 2.1..2');
  t.same(seqnos(replica.executed), [1, 2], 'executed up to the commit point, no further');
  t.same(seqnos(replica.held), [3, 4]);
  t.equal(replica.breakpoints, 1, 'breakpoint 1 passed once it executed');
  t.equal(await deliver(world, backup, batch(2, 5, 1), at(4)), OK);
  t.same(seqnos(replica.executed), [1, 2, 3, 4], 'in viewstamp order');
});

t.test('commit: the commit point alone executes what the backup holds up to it; refused off a serving backup', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 1, 3)), OK);
  t.equal(backup.commit(2, at(3)).status, OK);
  t.same(seqnos(replica.executed), [1, 2, 3]);
  t.equal(replica.breakpoints, 1);
  t.equal(backup.commit(2, at(3)).status, OK, 'again: nothing more to execute');
  t.equal(replica.breakpoints, 1, 'no breakpoint without an execution');
  t.equal(backup.commit(1, at(3)).status, ERR, 'another view');
  t.equal(backup.commit(2, { vid: 2, seqno: -1 }).status, ERR, 'a malformed commit point');
  replica.primary = true;
  t.equal(backup.commit(2, at(3)).status, ERR, 'on the primary');
  replica.primary = false;
  replica.inViewChange = true;
  t.equal(backup.commit(2, at(3)).status, ERR, 'in a view change');
  t.equal(replica.executed.length, 3, 'nothing else executed');
});

t.test('a commit point beyond what the backup holds executes only what it holds', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 1, 2)), OK);
  t.equal(backup.commit(2, at(9)).status, OK);
  t.same(seqnos(replica.executed), [1, 2]);
  t.same(replica.expected, at(3), 'still expecting the next one');
});

t.test('at most AWAITING_COMMIT_MAX requests are held beyond the commit point; a commit point makes room', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  const batches = AWAITING_COMMIT_MAX / BATCH_REQUESTS_MAX;
  for (let i = 0; i < batches; i++) t.equal(await deliver(world, backup, batch(2, 1 + i * BATCH_REQUESTS_MAX, BATCH_REQUESTS_MAX)), OK, `batch ${i + 1} of ${batches}`);
  t.equal(replica.held.length, AWAITING_COMMIT_MAX);
  const next = 1 + AWAITING_COMMIT_MAX;
  t.equal(await deliver(world, backup, batch(2, next, 1)), ERR, 'one more request without a commit point');
  t.equal(replica.held.length, AWAITING_COMMIT_MAX, 'not held');
  t.equal(await deliver(world, backup, batch(2, next, 1), at(BATCH_REQUESTS_MAX)), OK, 'with a commit point that executes one batch of them');
  t.equal(replica.executed.length, BATCH_REQUESTS_MAX);
  t.equal(replica.held.length, AWAITING_COMMIT_MAX - BATCH_REQUESTS_MAX + 1);
});

t.test('a batch with a malformed commit point is refused and holds nothing', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 1, 1), { vid: 2, seqno: 2 ** 32 }), ERR);
  t.same(replica.held, []);
});

t.test('refused: malformed, in a view change, on the primary, an older view, a later view, an older batch', async (t) => {
  const cases: Array<[string, (r: ReturnType<typeof fakeReplica>['replica']) => void, BatchEntry[]]> = [
    ['empty', () => {}, []],
    ['not consecutive', () => {}, [...batch(2, 1, 1), ...batch(2, 3, 1)]],
    ['two views', () => {}, [...batch(2, 1, 1), ...batch(3, 2, 1)]],
    ['in a view change', (r) => (r.inViewChange = true), batch(2, 1, 1)],
    ['on the primary', (r) => (r.primary = true), batch(2, 1, 1)],
    ['an older view', () => {}, batch(1, 1, 1)],
    ['a later view', () => {}, batch(3, 1, 1)],
  ];
  for (const [what, setup, entries] of cases) {
    const { replica, backup, world } = fakeReplica(2);
    setup(replica);
    t.equal(await deliver(world, backup, entries), ERR, what);
    t.equal(replica.held.length, 0, `${what}: nothing held`);
  }
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 1, 4)), OK);
  t.equal(await deliver(world, backup, batch(2, 2, 2)), ERR, 'an older batch inside the held ones');
  t.equal(replica.held.length, 4);
});

t.test('a batch that overtook the one before it waits until the gap fills, then is held in order', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  let laterStatus: number | undefined;
  void backup.receive(batch(2, 3, 2), NONE).then((reply) => (laterStatus = reply.status));
  await world.runFor(GAP_WAIT_MS / 2);
  t.equal(laterStatus, undefined, 'held while the gap is open');
  t.equal(backup.heldForGap, 1);
  t.equal(await deliver(world, backup, batch(2, 1, 2)), OK, 'the missing batch');
  await world.runFor(1);
  t.equal(laterStatus, OK, 'the waiting batch was held after it');
  t.same(seqnos(replica.held), [1, 2, 3, 4]);
  t.equal(backup.heldForGap, 0);
});

t.test('a gap that does not fill in time is refused, and nothing executes', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  t.equal(await deliver(world, backup, batch(2, 5, 1), NONE, GAP_WAIT_MS * 4), ERR);
  t.ok(world.now() >= GAP_WAIT_MS, 'after waiting for the gap');
  t.equal(replica.held.length, 0);
  t.equal(backup.heldForGap, 0);
});

t.test('a held batch is refused at once when the replica enters a view change', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  let status: number | undefined;
  void backup.receive(batch(2, 3, 1), NONE).then((reply) => (status = reply.status));
  await world.runFor(10);
  replica.inViewChange = true;
  backup.moved();
  await world.runFor(1);
  t.equal(status, ERR);
  t.ok(world.now() < GAP_WAIT_MS, 'without waiting out the gap wait');
});

t.test('at most GAP_WAITERS_MAX batches are held; the next gap is refused at once', async (t) => {
  const { backup, world } = fakeReplica(2);
  const statuses: Array<number | undefined> = [];
  for (let i = 0; i < GAP_WAITERS_MAX + 1; i++) {
    const index = i;
    statuses.push(undefined);
    void backup.receive(batch(2, 10 + i, 1), NONE).then((reply) => (statuses[index] = reply.status));
  }
  await world.runFor(1);
  t.equal(backup.heldForGap, GAP_WAITERS_MAX);
  t.equal(statuses[GAP_WAITERS_MAX], ERR, 'the one beyond the bound');
  t.equal(statuses.filter((s) => s === undefined).length, GAP_WAITERS_MAX, 'the others still held');
  await world.runFor(GAP_WAIT_MS * 2);
  t.equal(backup.heldForGap, 0);
});

t.test('a duplicate of the last batch is acknowledged again without holding it twice, unless its request differs', async (t) => {
  const { replica, backup, world } = fakeReplica(2);
  const first = batch(2, 1, 2);
  t.equal(await deliver(world, backup, first), OK);
  t.equal(await deliver(world, backup, first), OK, 'the same batch again');
  t.equal(replica.held.length, 2, 'held once');
  t.equal(await deliver(world, backup, first, at(2)), OK, 'again, now with the commit point past it');
  t.same(seqnos(replica.executed), [1, 2], 'which executes it, once');
  t.equal(await deliver(world, backup, batch(2, 1, 2, 9)), ERR, 'other requests at the same viewstamps');
  replica.stopped = true;
  t.equal(await deliver(world, backup, first), ERR, 'a stopped replica acknowledges nothing');
});
