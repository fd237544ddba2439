/**
 * State transfer (rsm/README.md, "State transfer"): what the sender chooses (nothing, the log
 * entries the asker lacks, or the state in chunks), how the asker checks an answer, and, in the
 * simulator, a replica a little behind catching up from log entries, one far behind getting the
 * whole state in chunks, and bad transferchunk calls refused with a status.
 */
import t from 'tap';
import { RpcEndpoint } from '../lib/rpc.js';
import { RsmStatus, TRANSFER_CHUNK_BYTES, TRANSFER_ENTRIES_MAX, TransferKind, rsmProtocol, type TransferRes, type Viewstamp } from '../rsm/protocol.js';
import type { LogEntry } from '../rsm/replica-store.js';
import { CHUNKS_IN_FLIGHT, chooseTransfer, fetchTransfer, logSuffix, transferProblem, type ChunkSource } from '../rsm/state-transfer.js';
import { KvClient } from '../rsm/kv/kv-client.js';
import { KvService } from '../rsm/kv/kv-service.js';
import { SimCluster, portIds } from '../tester/sim/cluster.js';
import { RsmChecker } from '../tester/sim/rsm-checkers.js';
import { RSM_SIM_TIMING } from '../tester/sim/rsm-sim.js';
import { rsmClient, settle, settledOn, stateDigests } from './helpers/rsm.js';

const vs = (vid: number, seqno: number): Viewstamp => ({ vid, seqno });
const entry = (vid: number, seqno: number, bytes = 4): { entry: LogEntry } => ({
  entry: { vs: vs(vid, seqno), timeMs: 10 * seqno, proc: 7, request: new Uint8Array(bytes).fill(seqno) },
});
/** A history across views 2, 3 and 5: 2.1 2.2 2.3 | 3.1 3.2 | 5.1 5.2. */
const history = [entry(2, 1), entry(2, 2), entry(2, 3), entry(3, 1), entry(3, 2), entry(5, 1), entry(5, 2)];
const seqs = (entries: readonly LogEntry[] | undefined): string[] | undefined => entries?.map((e) => `${e.vs.vid}.${e.vs.seqno}`);

t.test('logSuffix: the entries after the asker\'s last, across views, only when the log holds all of them', async (t) => {
  t.same(seqs(logSuffix(history, vs(2, 2), vs(5, 2))), ['2.3', '3.1', '3.2', '5.1', '5.2'], 'from inside the log, across views');
  t.same(seqs(logSuffix(history, vs(3, 2), vs(5, 1))), ['5.1'], 'stops at our last: later entries (a pending batch) are not executed yet');
  t.equal(logSuffix(history, vs(2, 0), vs(5, 2)), undefined, 'the asker\'s last is before the log: the state is needed');
  t.equal(logSuffix(history, vs(4, 1), vs(5, 2)), undefined, 'a last we never executed (another history): the state is needed');
  t.equal(logSuffix(history, vs(5, 2), vs(5, 2)), undefined, 'nothing to send at our own last');
  const gap = [entry(2, 1), entry(2, 2), entry(2, 4)];
  t.equal(logSuffix(gap, vs(2, 1), vs(2, 4)), undefined, 'a gap in what we hold: the state is needed');
  const long = Array.from({ length: TRANSFER_ENTRIES_MAX + 2 }, (_, i) => entry(9, i + 1, 1));
  t.equal(logSuffix(long, vs(9, 1), vs(9, TRANSFER_ENTRIES_MAX + 2)), undefined, 'more than TRANSFER_ENTRIES_MAX entries: the state instead');
  t.equal(logSuffix(long, vs(9, 2), vs(9, TRANSFER_ENTRIES_MAX + 2))?.length, TRANSFER_ENTRIES_MAX, 'exactly the bound is sent');
});

t.test('chooseTransfer: nothing, the entries, or the state with its first chunk', async (t) => {
  let marshalled = 0;
  const state = (): Uint8Array => {
    marshalled++;
    return new Uint8Array(1000).fill(1);
  };
  const none = chooseTransfer(vs(5, 2), vs(5, 2), false, history, state);
  t.equal(none.kind, TransferKind.NONE, 'same last: nothing');
  t.equal(chooseTransfer(vs(6, 1), vs(5, 2), true, history, state).kind, TransferKind.NONE, 'a collecting primary newer than us gets nothing');
  const entries = chooseTransfer(vs(3, 1), vs(5, 2), false, history, state);
  t.equal(entries.kind, TransferKind.ENTRIES);
  t.same(entries.entries.map((e) => `${e.vs.vid}.${e.vs.seqno}`), ['3.2', '5.1', '5.2']);
  t.equal(marshalled, 0, 'neither marshals the state');
  const whole = chooseTransfer(vs(1, 9), vs(5, 2), false, history, state, 300);
  t.equal(whole.kind, TransferKind.STATE, 'behind the log: the state');
  t.equal(whole.stateBytes, 1000);
  t.equal(whole.state.length, 300, 'the first chunk only');
  t.equal(chooseTransfer(vs(6, 1), vs(5, 2), false, history, state).kind, TransferKind.STATE, 'a backup ahead of its primary gets the primary\'s state');
  t.equal(chooseTransfer(vs(1, 9), vs(5, 2), false, history, state, 10 * TRANSFER_CHUNK_BYTES).state.length, 1000, 'never more than TRANSFER_CHUNK_BYTES, and never more than the state');
});

t.test('transferProblem: malformed answers are refused', async (t) => {
  const base = { last: vs(5, 2), stateBytes: 0, state: new Uint8Array(0), entries: [] };
  const batch = (v: number, s: number) => ({ vs: vs(v, s), timeMs: 1, proc: 0, req: new Uint8Array(1) });
  const cases: Array<[string, TransferRes, boolean]> = [
    ['none', { ...base, kind: TransferKind.NONE }, true],
    ['none with entries', { ...base, kind: TransferKind.NONE, entries: [batch(5, 1)] }, false],
    ['entries that continue the asker', { ...base, kind: TransferKind.ENTRIES, entries: [batch(5, 1), batch(5, 2)] }, true],
    ['entries with a gap', { ...base, kind: TransferKind.ENTRIES, entries: [batch(5, 2)] }, false],
    ['entries that stop short of last', { ...base, kind: TransferKind.ENTRIES, entries: [batch(5, 1)] }, false],
    ['a duplicate entry', { ...base, kind: TransferKind.ENTRIES, entries: [batch(5, 1), batch(5, 1), batch(5, 2)] }, false],
    ['no entries', { ...base, kind: TransferKind.ENTRIES }, false],
    ['a state', { ...base, kind: TransferKind.STATE, stateBytes: 10, state: new Uint8Array(4) }, true],
    ['a first chunk longer than the state', { ...base, kind: TransferKind.STATE, stateBytes: 2, state: new Uint8Array(4) }, false],
    ['an empty first chunk of a large state', { ...base, kind: TransferKind.STATE, stateBytes: 10 }, false],
    ['a state beyond the bound', { ...base, kind: TransferKind.STATE, stateBytes: 2 ** 40, state: new Uint8Array(4) }, false],
    ['an unknown kind', { ...base, kind: 9 }, false],
  ];
  for (const [name, answer, fine] of cases) t.equal(transferProblem(vs(4, 7), answer) === undefined, fine, name);
});

/** A kv cluster whose replicas report to `events` how they got each state. */
async function cluster(seed: string): Promise<{ cluster: SimCluster; ids: string[]; checker: RsmChecker; installs: Map<string, string[]>; executed: Map<string, number> }> {
  const ids = portIds(3);
  const installs = new Map<string, string[]>();
  const executed = new Map<string, number>();
  let checker: RsmChecker | undefined;
  const sim: SimCluster = new SimCluster({
    seed,
    ids,
    timing: RSM_SIM_TIMING,
    stateMachine: () => new KvService(),
    onNodeStart: (id, node, incarnation) => {
      checker!.attach(id, incarnation, node, sim.slot(id).stateMachine!);
      node.onStateInstalled((event) => installs.set(id, [...(installs.get(id) ?? []), event.from]));
      node.onExecuted(() => executed.set(id, (executed.get(id) ?? 0) + 1));
    },
  });
  checker = new RsmChecker(() => sim.world.now());
  for (let i = 0; i < ids.length; i++) {
    await sim.start(ids[i]!);
    if (!(await sim.runUntil(() => sim.converged(ids.slice(0, i + 1)), 30_000))) throw new Error(`bootstrap: ${sim.describe()}`);
  }
  sim.network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 5 });
  return { cluster: sim, ids, checker, installs, executed };
}

/**
 * A fake sender of a state in chunks of `chunk` bytes: replies come back in an order set by
 * `delayOf(call number)`, and `answer` can replace a reply.
 */
function chunkSender(state: Uint8Array, chunk: number, delayOf: (call: number) => number, answer?: (offset: number, bytes: Uint8Array) => { status: number; result: Uint8Array }) {
  const stats = { calls: 0, inFlight: 0, mostInFlight: 0, offsets: [] as number[] };
  const rpc = {
    call: async (_address: string, _procedure: unknown, args: { offset: number }) => {
      const call = stats.calls++;
      stats.offsets.push(args.offset);
      stats.inFlight++;
      stats.mostInFlight = Math.max(stats.mostInFlight, stats.inFlight);
      await new Promise((resolve) => setTimeout(resolve, delayOf(call)));
      stats.inFlight--;
      const bytes = state.subarray(args.offset, args.offset + chunk);
      return { ok: true as const, ...(answer?.(args.offset, bytes) ?? { status: RsmStatus.OK, result: bytes }) };
    },
  };
  const source = { rpc, address: 'p', src: 'b', vid: 1, timeoutMs: 1000, abandoned: () => false } as unknown as ChunkSource;
  const first: TransferRes = { kind: TransferKind.STATE, last: vs(1, 9), stateBytes: state.length, state: state.subarray(0, chunk), entries: [] };
  return { source, first, stats };
}

t.test('fetchTransfer: the chunks of a state, two in flight, assembled in place whatever order the replies come in', async (t) => {
  const state = Uint8Array.from({ length: 10_007 }, (_, i) => (i * 31) % 251);
  // Every other reply is slow, so later chunks often complete first.
  const { source, first, stats } = chunkSender(state, 1000, (call) => (call % 2 === 0 ? 6 : 1));
  const fetched = await fetchTransfer(source, first);
  t.ok(fetched.ok && fetched.transfer.kind === 'state', 'a state');
  if (fetched.ok && fetched.transfer.kind === 'state') t.equal(Buffer.compare(Buffer.from(fetched.transfer.state), Buffer.from(state)), 0, 'byte for byte');
  t.same([...stats.offsets].sort((a, b) => a - b), [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000], 'each chunk asked for once');
  t.equal(stats.mostInFlight, CHUNKS_IN_FLIGHT, `${CHUNKS_IN_FLIGHT} calls in flight at most, and that many used`);
});

t.test('fetchTransfer: a chunk of another length than the first, or a BUSY, gives the transfer up', async (t) => {
  const state = new Uint8Array(5000).fill(7);
  const short = chunkSender(state, 1000, () => 1, (offset, bytes) => ({ status: RsmStatus.OK, result: offset === 3000 ? bytes.subarray(0, 999) : bytes }));
  t.match(await fetchTransfer(short.source, short.first), { ok: false, reason: /transferchunk at 3000: 999 bytes, 1000 expected/ });
  const last = chunkSender(state.subarray(0, 4500), 1000, () => 1, (offset, bytes) => ({ status: RsmStatus.OK, result: offset === 4000 ? new Uint8Array(1000) : bytes }));
  t.match(await fetchTransfer(last.source, last.first), { ok: false, reason: /transferchunk at 4000: 1000 bytes, 500 expected/ }, 'the last chunk must end the state');
  // 19 chunks to fetch; the second answers BUSY, so at most the one in flight beside it and one
  // more claimed before the BUSY arrived are asked for.
  const large = new Uint8Array(20_000).fill(7);
  const busy = chunkSender(large, 1000, () => 1, (offset, bytes) => (offset === 2000 ? { status: RsmStatus.BUSY, result: new Uint8Array(0) } : { status: RsmStatus.OK, result: bytes }));
  t.match(await fetchTransfer(busy.source, busy.first), { ok: false, reason: /transferchunk at 2000: status/ });
  t.ok(busy.stats.calls <= 3, `no chunk asked for after the BUSY (${busy.stats.calls} calls of 19)`);
});

t.test('a replica a little behind gets the log entries it lacks, not the state', async (t) => {
  const { cluster: sim, ids, checker, installs, executed } = await cluster('transfer-entries');
  const kv = new KvClient(rsmClient(sim, 'c1'), 'c1');
  for (let i = 0; i < 3; i++) await settle(sim, kv.put(`k${i}`, `v${i}`));
  const behind = ids[2]!;
  sim.crash(behind);
  const missed = 3;
  for (let i = 0; i < missed; i++) await settle(sim, kv.put(`m${i}`, `w${i}`));
  installs.delete(behind);
  executed.delete(behind);
  await sim.start(behind);
  t.ok(await settledOn(sim, ids), sim.describe());
  t.same(installs.get(behind), ['storage'], 'no state installed from another replica, only its own from storage');
  t.ok((executed.get(behind) ?? 0) >= missed, `it executed the ${missed} requests it missed (${executed.get(behind)} executions)`);
  t.equal(new Set(stateDigests(sim).values()).size, 1, 'one state');
  t.same(checker.violations, []);
});

t.test('a replica far behind gets the whole state, in chunks when it is larger than one', async (t) => {
  const { cluster: sim, ids, checker, installs } = await cluster('transfer-state');
  const kv = new KvClient(rsmClient(sim, 'c1'), 'c1');
  const behind = ids[2]!;
  sim.crash(behind);
  // More requests than a checkpoint interval plus the entries it retains: the log no longer
  // reaches back to the replica's last.
  const requests = RSM_SIM_TIMING.checkpointEveryRequests! + RSM_SIM_TIMING.logRetainRequests! + 8;
  for (let i = 0; i < requests; i++) await settle(sim, kv.put(`k${i}`, 'x'.repeat(40)));
  await sim.runFor(1000); // the periodic checkpoint runs off the request path
  const stateBytes = sim.slot(ids[0]!).stateMachine!.marshalState().length;
  t.ok(stateBytes > 2 * RSM_SIM_TIMING.transferChunkBytes!, `the state (${stateBytes} bytes) spans several chunks of ${RSM_SIM_TIMING.transferChunkBytes}`);
  installs.delete(behind);
  await sim.start(behind);
  t.ok(await settledOn(sim, ids), sim.describe());
  const from = (installs.get(behind) ?? []).filter((source) => source !== 'storage');
  t.ok(from.length >= 1, `it installed another replica's state (${from.join(', ')})`);
  t.equal(new Set(stateDigests(sim).values()).size, 1, 'one state');
  t.same(checker.violations, []);
  t.same(sim.fatalErrors, []);
});

t.test('transferchunk: an unknown snapshot is BUSY, a bad offset ERR, and the replica keeps serving', async (t) => {
  const { cluster: sim, ids } = await cluster('transfer-bad-chunk');
  const kv = new KvClient(rsmClient(sim, 'c1'), 'c1');
  for (let i = 0; i < 20; i++) await settle(sim, kv.put(`k${i}`, 'y'.repeat(40)));
  const rpc = new RpcEndpoint(sim.network.forOwner('prober').connect(), sim.world.clockFor('prober'), sim.world.random.fork());
  const primary = ids[0]!;
  const vid = sim.node(primary)!.status().vid;
  const last = sim.node(primary)!.lastExecuted;
  const call = (offset: number, from = ids[1]!, at = last) =>
    settle(sim, rpc.call(primary, rsmProtocol.transferchunk, { src: from, vid, last: at, offset }, { timeoutMs: 1000 }));
  const unknown = await call(256);
  t.ok(unknown.ok && unknown.status === RsmStatus.BUSY, 'no snapshot kept: BUSY (the asker starts over)');
  // A transferreq from a backup far behind makes the primary keep a snapshot of its state.
  const answer = await settle(sim, rpc.call(primary, rsmProtocol.transferreq, { src: ids[1]!, last: { vid: 0, seqno: 0 }, vid }, { timeoutMs: 1000 }));
  t.ok(answer.ok && answer.status === RsmStatus.OK && answer.result.kind === TransferKind.STATE, 'the state, in chunks');
  const total = answer.ok ? answer.result.stateBytes : 0;
  const good = await call(answer.ok ? answer.result.state.length : 1);
  t.ok(good.ok && good.status === RsmStatus.OK && good.result.length > 0, 'the next chunk');
  for (const offset of [0, total, total + 5, 2 ** 52]) {
    const bad = await call(offset);
    t.ok(bad.ok && bad.status === RsmStatus.ERR, `offset ${offset} of ${total}: ERR`);
  }
  const stranger = await call(256, 'nobody:1');
  t.ok(stranger.ok && stranger.status === RsmStatus.BUSY, 'a node outside the view: BUSY');
  const other = await call(256, ids[1]!, { vid: last.vid, seqno: last.seqno + 100 });
  t.ok(other.ok && other.status === RsmStatus.BUSY, 'a snapshot we do not keep: BUSY');
  // The replica still serves; the backup that "asked" is fine too (it never installed anything).
  await settle(sim, kv.put('after', 'z'));
  t.ok(await settledOn(sim, ids), sim.describe());
  t.same(sim.fatalErrors, []);
});
