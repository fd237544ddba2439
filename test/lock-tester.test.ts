import { randomBytes } from 'node:crypto';
import { startChild, waitForOutput, type Child } from './helpers/child.js';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import { tcpNetwork } from '../lib/tcp.js';
import { BasicLockServer, CacheProc, CachingLockHost, CachingLockServer, LockError, lockProtocol } from '../lockserver/index.js';
import { HistoryRecorder, memoryHistorySink, type HistoryRecord } from '../tester/history.js';
import {
  HolderCounters,
  basicClientFactory,
  cachingClientFactory,
  runLockTester,
  type LockTesterOptions,
  type LockTesterResult,
  type TesterLockClient,
} from '../tester/lock-tester.js';

// ---------------------------------------------------------------------------------------------
// Helpers

/** Output of a tester run, split like the bin splits it. */
interface Output {
  lines: string[];
  errors: string[];
}

function output(): Output & Pick<LockTesterOptions, 'print' | 'printError'> {
  const out = { lines: [] as string[], errors: [] as string[] };
  return { ...out, print: (line) => out.lines.push(line), printError: (line) => out.errors.push(line) };
}

/** Runs the world until `promise` settles (bounded in virtual time). */
async function settle<T>(world: SimWorld, promise: Promise<T>, limitMs = 3_600_000): Promise<T> {
  let done = false;
  let value: T | undefined;
  let failure: unknown;
  promise.then(
    (v) => ((done = true), (value = v)),
    (e: unknown) => ((done = true), (failure = e)),
  );
  if (!(await world.runUntil(() => done, limitMs))) throw new Error(`not settled within ${limitMs} virtual ms`);
  if (failure !== undefined) throw failure;
  return value as T;
}

interface SimSetup {
  world: SimWorld;
  net: SimNetwork;
  /** Clients for the tester (one endpoint each, owned by "tester"). */
  options: Pick<LockTesterOptions, 'clients' | 'clock'>;
}

/** A sim world with a lock server at "server:1", built by `install` (default: the basic server). */
async function simSetup(seed: string, install: (rpc: RpcEndpoint) => void = (rpc) => new BasicLockServer(rpc)): Promise<SimSetup> {
  const world = new SimWorld(seed);
  const net = new SimNetwork(world);
  install(new RpcEndpoint(await net.forOwner('server').listen('server:1'), world.clockFor('server'), world.random.fork()));
  const clock = world.clockFor('tester');
  const clients = basicClientFactory('server:1', { network: net.forOwner('tester'), clock, random: world.random.fork() });
  return { world, net, options: { clients, clock } };
}

/** Problems with one history line, per history-format.md. */
function recordProblems(record: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const decimal = (v: unknown): boolean => typeof v === 'string' && /^\d+$/.test(v);
  if (!Number.isInteger(record['client']) || (record['client'] as number) < 0) problems.push('client');
  if (!['acquire', 'release', 'try_acquire'].includes(record['op'] as string)) problems.push('op');
  if (!decimal(record['lock'])) problems.push('lock');
  if (typeof record['owner'] !== 'string' || record['owner'] === '') problems.push('owner');
  if (!['ok', 'fail', 'unknown'].includes(record['outcome'] as string)) problems.push('outcome');
  if (!decimal(record['call'])) problems.push('call');
  if (record['outcome'] === 'unknown') {
    if (record['ret'] !== undefined) problems.push('unknown with ret');
  } else if (!decimal(record['ret']) || BigInt(record['ret'] as string) < BigInt(record['call'] as string)) {
    problems.push('ret');
  }
  return problems;
}

/**
 * Parses and validates a whole file: every line well-formed, each client sequential (its
 * operations do not overlap), retired after an unknown outcome, and one owner per client.
 */
function parseHistory(lines: readonly string[]): HistoryRecord[] {
  const records = lines
    .filter((line) => line.trim() !== '' && !line.startsWith('#'))
    .map((line) => JSON.parse(line) as HistoryRecord);
  const byClient = new Map<number, HistoryRecord[]>();
  for (const record of records) {
    const problems = recordProblems(record as unknown as Record<string, unknown>);
    if (problems.length > 0) throw new Error(`bad record (${problems.join(', ')}): ${JSON.stringify(record)}`);
    byClient.set(record.client, [...(byClient.get(record.client) ?? []), record]);
  }
  const ownerOfClient = new Map<string, number>();
  for (const [client, ops] of byClient) {
    ops.sort((x, y) => (BigInt(x.call) < BigInt(y.call) ? -1 : 1));
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.owner !== ops[0]!.owner) throw new Error(`client ${client} has two owners`);
      if (i + 1 < ops.length) {
        if (op.outcome === 'unknown') throw new Error(`client ${client} used after an unknown outcome`);
        if (BigInt(op.ret!) > BigInt(ops[i + 1]!.call)) throw new Error(`client ${client} overlaps itself`);
      }
    }
    const other = ownerOfClient.get(ops[0]!.owner);
    if (other !== undefined) throw new Error(`owner ${ops[0]!.owner} used by clients ${other} and ${client}`);
    ownerOfClient.set(ops[0]!.owner, client);
  }
  return records;
}

// ---------------------------------------------------------------------------------------------
// The tester logic

t.test('the five tests pass against the basic server (simulated network with faults)', async (t) => {
  const run = async (): Promise<{ result: LockTesterResult; out: Output; events: number }> => {
    const { world, net, options } = await simSetup('tester-sim');
    net.setLinkFaults({ loss: 0.1, duplicate: 0.1, delayMinMs: 1, delayMaxMs: 100 });
    const out = output();
    const result = await settle(world, runLockTester({ ...options, ...out }));
    return { result, out, events: world.eventsRun };
  };
  const first = await run();
  t.ok(first.result.ok, 'passed');
  t.same(first.result.passed, [1, 2, 3, 4, 5]);
  t.same(first.out.errors, []);
  for (const n of [1, 2, 3, 4, 5]) t.ok(first.out.lines.includes(`test${n}: passed`), `test${n}: passed printed`);
  t.equal(first.out.lines.filter((l) => l.startsWith('test3: client') && l.endsWith('got lock')).length, 60);

  const second = await run();
  t.same(second.out.lines, first.out.lines, 'the same seed gives the same run');
  t.equal(second.events, first.events);
});

/** A sim world with a caching lock server at "server:1" and caching clients for the tester. */
async function cachingSimSetup(seed: string): Promise<SimSetup & { host: CachingLockHost; table: CachingLockServer }> {
  const world = new SimWorld(seed);
  const net = new SimNetwork(world);
  const rpc = new RpcEndpoint(await net.forOwner('server').listen('server:1'), world.clockFor('server'), world.random.fork());
  const table = new CachingLockServer();
  const host = new CachingLockHost({ rpc, stateMachine: table });
  const clock = world.clockFor('tester');
  const clients = cachingClientFactory('server:1', {
    network: net.forOwner('tester'),
    clock,
    random: world.random.fork(),
    host: 'tester',
    clientOptions: { checkInvariants: true },
  });
  return { world, net, host, table, options: { clients, clock } };
}

t.test('the five tests pass with caching clients against the caching server (simulated network with faults)', async (t) => {
  const { world, net, host, table, options } = await cachingSimSetup('tester-cache-sim');
  net.setLinkFaults({ loss: 0.1, duplicate: 0.1, delayMinMs: 1, delayMaxMs: 100 });
  const out = output();
  const result = await settle(world, runLockTester({ ...options, ...out }));
  t.same(out.errors, []);
  t.same(result, { ok: true, passed: [1, 2, 3, 4, 5] });
  table.invariants();
  host.close();
});

t.test('caching clients hand a cached lock between their threads without asking the server', async (t) => {
  const { world, host, options } = await cachingSimSetup('tester-cache-test4');
  const out = output();
  // Test 4: two threads of client 0 acquire and release lock a ten times each.
  const result = await settle(world, runLockTester({ ...options, ...out, tests: [4] }));
  t.same(result, { ok: true, passed: [4] });
  t.equal(out.lines.filter((line) => /^test4: thread \d on client 0 got lock$/.test(line)).length, 20, '20 grants to the tester');
  t.equal(host.executed.get(CacheProc.ACQUIRE), 1, 'one acquire reached the server');
  t.equal(host.executed.get(CacheProc.RELEASE), 1, 'one release: the cached lock given back when the client closed');
  host.close();
});

t.test('a caching client against a basic server fails at once with LOCK_PROTOCOL_MISMATCH', async (t) => {
  const world = new SimWorld('mismatch');
  const net = new SimNetwork(world);
  new BasicLockServer(new RpcEndpoint(await net.forOwner('server').listen('server:1'), world.clockFor('server'), world.random.fork()));
  const clock = world.clockFor('tester');
  const out = output();
  const clients = cachingClientFactory('server:1', { network: net.forOwner('tester'), clock, random: world.random.fork(), host: 'tester' });
  const started = world.now();
  const result = await settle(world, runLockTester({ clients, clock, ...out, tests: [1] }));
  t.equal(result.failure?.kind, 'error');
  t.match(out.errors, [/^error: client 0 acquire 0000000000000001 failed: LOCK_PROTOCOL_MISMATCH: .* does not serve the caching lock protocol \(RPC_BAD_ARGS\); .*lock_tester --basic/]);
  t.ok(world.now() - started < 60_000, 'long before any acquire deadline');
});

t.test('a server that grants twice is caught', async (t) => {
  const broken = (rpc: RpcEndpoint): void => {
    rpc.handle(lockProtocol.acquire, () => ({ status: 0, result: 0 }));
    rpc.handle(lockProtocol.release, () => ({ status: 0, result: 0 }));
  };
  const { world, options } = await simSetup('broken', broken);
  const out = output();
  const result = await settle(world, runLockTester({ ...options, ...out }));
  t.notOk(result.ok);
  t.same(result.passed, [1], 'test 1 is sequential and cannot notice');
  t.same(result.failure, { test: 2, kind: 'violation', message: 'error: server granted 0000000000000001 twice' });
  t.same(out.errors, ['error: server granted 0000000000000001 twice'], 'reported once, exactly');
  t.notOk(out.lines.includes('test2: passed'));
});

t.test('the holder counters report both violations as the lab does', async (t) => {
  const counters = new HolderCounters();
  t.equal(counters.grant(1), undefined);
  t.equal(counters.grant(1), 'error: server granted 0000000000000001 twice');
  t.equal(counters.release(0x2a), 'error: client released un-held lock 000000000000002a');
  t.equal(counters.grant(2), undefined);
  t.equal(counters.release(2), undefined);
});

/** Fake clients for failure paths: `acquire` does what `behaviour` says. */
function fakeClients(acquire: (lid: number) => Promise<void>): { factory: LockTesterOptions['clients']; closed: () => number } {
  let closed = 0;
  return {
    closed: () => closed,
    factory: async (): Promise<TesterLockClient> => ({
      acquire,
      release: async () => {},
      close: async () => void closed++,
    }),
  };
}

t.test('a hung test is named when the deadline passes', async (t) => {
  const world = new SimWorld('hang');
  const fakes = fakeClients(() => new Promise<void>(() => {})); // acquire never returns
  const out = output();
  const sink = memoryHistorySink();
  const result = await settle(
    world,
    runLockTester({
      clients: fakes.factory,
      clock: world.clockFor('tester'),
      tests: [3],
      timeoutMs: 60_000,
      ...out,
      history: () => new HistoryRecorder(sink, () => BigInt(world.now()) * 1_000_000n),
    }),
  );
  t.notOk(result.ok);
  t.equal(result.failure?.kind, 'timeout');
  t.equal(result.failure?.test, 3);
  t.same(out.errors, ['error: test3 hung: the run did not finish within 60000 ms']);
  t.equal(fakes.closed(), 6, 'every client is closed');
  const records = parseHistory(sink.lines);
  t.equal(records.length, 6, 'one pending acquire per thread');
  t.ok(records.every((r) => r.outcome === 'unknown' && r.op === 'acquire'), 'written as unknown');
});

t.test('a client error fails the run and records the operation as unknown', async (t) => {
  const world = new SimWorld('client-error');
  let calls = 0;
  const fakes = fakeClients(async () => {
    if (++calls === 3) throw new LockError('LOCK_RPC_FAILED', 'acquire 0000000000000001: RPC_TIMEOUT');
  });
  const out = output();
  const sink = memoryHistorySink();
  const result = await settle(
    world,
    runLockTester({
      clients: fakes.factory,
      clock: world.clockFor('tester'),
      tests: [1],
      ...out,
      history: () => new HistoryRecorder(sink, () => BigInt(world.now())),
    }),
  );
  t.equal(result.failure?.kind, 'error');
  t.match(out.errors[0], /^error: client 0 acquire 0000000000000001 failed: LOCK_RPC_FAILED/);
  const records = parseHistory(sink.lines);
  t.same(
    records.map((r) => `${r.op}:${r.outcome}`),
    ['acquire:ok', 'release:ok', 'acquire:ok', 'release:ok', 'acquire:unknown'],
  );
});

t.test('histories of a passing run are well-formed, one actor per thread', async (t) => {
  const { world, options } = await simSetup('history');
  const sinks = new Map<string, ReturnType<typeof memoryHistorySink>>();
  const history = (name: string): HistoryRecorder => {
    const sink = memoryHistorySink();
    sinks.set(name, sink);
    return new HistoryRecorder(sink, () => BigInt(world.now()) * 1_000_000n);
  };
  const result = await settle(world, runLockTester({ ...options, ...output(), history }));
  t.ok(result.ok);
  t.same([...sinks.keys()], [1, 2, 3, 4, 5].map((n) => `lock_tester-test${n}`));
  const owners = (name: string): string[] =>
    [...new Set(parseHistory(sinks.get(name)!.lines).map((r) => r.owner))].sort();
  t.same(owners('lock_tester-test1'), ['c0/w0']);
  t.same(owners('lock_tester-test2'), ['c0/w0', 'c1/w1', 'c2/w2', 'c3/w3', 'c4/w4', 'c5/w5']);
  t.same(owners('lock_tester-test4'), ['c0/w0', 'c0/w1']);
  t.same(owners('lock_tester-test5'), ['c0/w0', 'c0/w1', 'c0/w2', 'c0/w3', 'c0/w4', 'c1/w5']);
  const test1 = parseHistory(sinks.get('lock_tester-test1')!.lines);
  t.same(
    test1.map((r) => `${r.op} ${r.lock}`),
    ['acquire 1', 'release 1', 'acquire 1', 'release 1', 'acquire 1', 'acquire 2', 'release 2', 'release 1'],
  );
  const test3 = parseHistory(sinks.get('lock_tester-test3')!.lines);
  t.equal(test3.length, 120, '6 threads × 10 × (acquire, release)');
  t.ok(test3.every((r) => r.outcome === 'ok'));
});

// ---------------------------------------------------------------------------------------------
// HistoryRecorder

t.test('HistoryRecorder writes the format, unknown for pending, and retires actors', async (t) => {
  let now = 1_000n;
  const sink = memoryHistorySink();
  const recorder = new HistoryRecorder(sink, () => (now += 10n));
  const w0 = recorder.actor('c0/w0');
  const w1 = recorder.actor('c0/w1');
  t.equal(w0.client, 0);
  t.equal(w1.client, 1);

  const a = w0.begin('acquire', 1);
  a.ok({ token: 7 });
  t.throws(() => w1.begin('acquire', -1), 'lock ids are non-negative integers');
  const b = w1.begin('acquire', 2n ** 60n);
  b.unknown('RPC_TIMEOUT');
  b.ok(); // a second finish is ignored
  t.equal(w1.client, 2, 'retired: a new client number');
  t.equal(w1.owner, 'c0/w1/r1', 'and a new owner');
  const c = w1.begin('release', 2);
  c.fail();
  const d = w0.begin('release', 1);
  t.throws(() => w0.begin('acquire', 3), 'an actor is sequential');
  recorder.close();
  d.ok(); // after close: already written as unknown
  w0.begin('acquire', 5).ok(); // nothing is written after close

  const records = sink.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  t.same(records, [
    { client: 0, op: 'acquire', lock: '1', owner: 'c0/w0', outcome: 'ok', token: 7, call: '1010', ret: '1020' },
    { client: 1, op: 'acquire', lock: String(2n ** 60n), owner: 'c0/w1', outcome: 'unknown', call: '1030', note: 'RPC_TIMEOUT' },
    { client: 2, op: 'release', lock: '2', owner: 'c0/w1/r1', outcome: 'fail', call: '1040', ret: '1050' },
    { client: 0, op: 'release', lock: '1', owner: 'c0/w0', outcome: 'unknown', call: '1060', note: 'pending when the recorder closed' },
  ]);
  for (const record of records) t.same(recordProblems(record), [], `valid: ${JSON.stringify(record)}`);
  t.doesNotThrow(() => parseHistory(sink.lines));
});

t.test('HistoryRecorder.fromEnv writes <dir>/<name>-<pid>.jsonl only when LOCK_HISTORY_DIR is set', async (t) => {
  t.equal(HistoryRecorder.fromEnv('x', {}), undefined);
  const dir = mkdtempSync(join(tmpdir(), 'history-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const recorder = HistoryRecorder.fromEnv('lock_tester-test9', { LOCK_HISTORY_DIR: join(dir, 'sub') })!;
  recorder.actor('c0/w0').begin('acquire', 1).ok();
  recorder.close();
  const path = join(dir, 'sub', `lock_tester-test9-${process.pid}.jsonl`);
  const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
  t.match(lines[0], /^# lock_tester-test9/);
  t.equal(parseHistory(lines).length, 1);
});

// ---------------------------------------------------------------------------------------------
// Real TCP, in process

async function tcpRun(t: Test, lossyPercent: number): Promise<void> {
  const serverRpc = new RpcEndpoint(await tcpNetwork({ lossyPercent }).listen('127.0.0.1:0'), realClock, osRandom());
  new BasicLockServer(serverRpc);
  t.teardown(() => serverRpc.close());
  const out = output();
  const result = await runLockTester({
    clients: basicClientFactory(serverRpc.address, { network: tcpNetwork({ lossyPercent }), clock: realClock, random: osRandom() }),
    holdMs: 200,
    timeoutMs: 120_000,
    ...out,
  });
  t.same(out.errors, []);
  t.ok(result.ok, 'passed');
  t.same(result.passed, [1, 2, 3, 4, 5]);
}

t.test('lock_tester logic over real TCP', (t) => tcpRun(t, 0));
t.test('lock_tester logic over real TCP with RPC_LOSSY 5 on both sides', (t) => tcpRun(t, 5));

// ---------------------------------------------------------------------------------------------
// The programs, as processes

const bin = (name: string): string =>
  fileURLToPath(new URL(name === 'lock_server' ? '../lockserver/bin/lock_server.js' : `../tester/bin/${name}.js`, import.meta.url));

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function start(name: string, args: string[], env: Record<string, string> = {}): Child {
  return startChild(bin(name), args, { LOCK_HISTORY_DIR: '', ...env });
}

type Mode = 'caching' | 'basic';

/** The mode's command-line flag (none for the default, caching). */
const modeArgs = (mode: Mode): string[] => (mode === 'basic' ? ['--basic'] : []);

/** Starts `lock_server [--basic] PORT` on a free port and waits for its startup line. */
async function startServer(t: Test, mode: Mode, env: Record<string, string> = {}): Promise<{ server: Child; port: number }> {
  const port = await freePort();
  const server = start('lock_server', [...modeArgs(mode), String(port)], env);
  t.teardown(() => {
    if (server.process.exitCode === null && server.process.signalCode === null) process.kill(server.process.pid!, 'SIGKILL');
  });
  await waitForOutput(server, new RegExp(`^lock_server: serving ${mode} locks on 127\\.0\\.0\\.1:${port}$`, 'm'), 10_000);
  return { server, port };
}

async function processRun(t: Test, mode: Mode, env: Record<string, string>): Promise<void> {
  const { server, port } = await startServer(t, mode, env);

  const historyDir = mkdtempSync(join(tmpdir(), 'lock-history-'));
  t.teardown(() => rmSync(historyDir, { recursive: true, force: true }));
  const tester = start('lock_tester', [...modeArgs(mode), '--timeout-ms', '120000', String(port)], { ...env, LOCK_HISTORY_DIR: historyDir });
  t.teardown(() => {
    if (tester.process.exitCode === null && tester.process.signalCode === null) process.kill(tester.process.pid!, 'SIGKILL');
  });
  const code = await tester.exited(150_000);
  t.equal(code, 0, 'lock_tester exits 0');
  // Caching mode detects the kind of server first and says so.
  const detected = mode === 'caching' ? ': an unreplicated lock server; direct' : '';
  t.match(tester.output(), new RegExp(`^lock_tester: 6 ${mode} lock clients against 127\\.0\\.0\\.1:${port}${detected}$`, 'm'));
  t.match(tester.output(), /^lock_tester: passed all tests successfully$/m);
  t.notMatch(tester.output(), /^error:/m);

  const files = readdirSync(historyDir).sort();
  t.same(files, [1, 2, 3, 4, 5].map((n) => `lock_tester-test${n}-${tester.process.pid}.jsonl`));
  for (const file of files) {
    const records = parseHistory(readFileSync(join(historyDir, file), 'utf8').split('\n'));
    t.ok(records.length > 0 && records.every((r) => r.outcome === 'ok'), `${file}: all operations ok`);
  }

  process.kill(server.process.pid!, 'SIGTERM');
  t.equal(await server.exited(10_000), 0, 'lock_server exits 0 on SIGTERM');
}

t.test('caching lock_server and lock_tester as processes', (t) => processRun(t, 'caching', {}));
t.test('caching lock_server and lock_tester as processes, RPC_LOSSY=5 on both', (t) => processRun(t, 'caching', { RPC_LOSSY: '5' }));
t.test('lock_server --basic and lock_tester --basic as processes', (t) => processRun(t, 'basic', {}));

t.test('caching lock_server: RPC_COUNT shows that cached locks never reach the server again', async (t) => {
  const { server, port } = await startServer(t, 'caching', { RPC_COUNT: '1' });
  // Test 1 acquires a three times and b once on client 0: a and b reach the server once each,
  // and the two releases are the cached locks given back when the client closes.
  const tester = start('lock_tester', [String(port), '1']);
  t.equal(await tester.exited(60_000), 0);
  await waitForOutput(server, /^RPC STATS: 7001:2 7002:2$/m, 10_000);
  process.kill(server.process.pid!, 'SIGINT');
  t.equal(await server.exited(10_000), 0, 'lock_server exits 0 on SIGINT');
  const stats = server.output().split('\n').filter((line) => line.startsWith('RPC STATS'));
  t.same(stats, ['RPC STATS: 7001:1', 'RPC STATS: 7001:2', 'RPC STATS: 7001:2 7002:1', 'RPC STATS: 7001:2 7002:2']);
});

t.test('lock_server --basic prints RPC STATS with RPC_COUNT', async (t) => {
  const { server, port } = await startServer(t, 'basic', { RPC_COUNT: '4' });
  const tester = start('lock_tester', ['--basic', `127.0.0.1:${port}`, '1']);
  t.equal(await tester.exited(60_000), 0);
  // Test 1: every acquire and release reaches the basic server: a, a, a+b, then b, a.
  await waitForOutput(server, /^RPC STATS: 7001:4 7002:4$/m, 10_000);
  t.match(server.output(), /^RPC STATS: 7001:2 7002:2$/m);
  process.kill(server.process.pid!, 'SIGINT');
  t.equal(await server.exited(10_000), 0, 'lock_server exits 0 on SIGINT');
});

t.test('lock_tester against a server of the other kind fails at once and says which flag to use', async (t) => {
  for (const [serverMode, testerMode, hint] of [
    ['basic', 'caching', /does not serve the caching lock protocol \(RPC_BAD_ARGS\); .*use lock_tester --basic/],
    ['caching', 'basic', /does not serve the basic lock protocol \(RPC_BAD_ARGS\); .*use lock_tester without --basic/],
  ] as const) {
    const { server, port } = await startServer(t, serverMode);
    const tester = start('lock_tester', [...modeArgs(testerMode), '--timeout-ms', '60000', String(port), '1']);
    t.equal(await tester.exited(60_000), 1, `${testerMode} lock_tester against a ${serverMode} server exits 1`);
    t.match(tester.output(), /^error: client 0 acquire 0000000000000001 failed: LOCK_PROTOCOL_MISMATCH: /m);
    t.match(tester.output(), hint);
    t.notMatch(tester.output(), /hung/, 'it did not wait for the deadline');
    process.kill(server.process.pid!, 'SIGTERM');
    t.equal(await server.exited(10_000), 0);
  }
});

t.test('lock_server survives 100 KB of random bytes and a frame announcing 4 GB, then passes lock_tester', async (t) => {
  const { server, port } = await startServer(t, 'caching');

  // Each hostile connection must be closed by the server (bounded wait), never crash it.
  async function hostile(bytes: Uint8Array): Promise<void> {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {}); // a reset from the server is the expected outcome
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(bytes);
    const timer = setTimeout(() => socket.destroy(), 10_000);
    await closed;
    clearTimeout(timer);
  }
  await hostile(randomBytes(100 * 1024));
  const announce4GB = Buffer.alloc(8);
  announce4GB.writeUInt32BE(0xffff_ffff, 0);
  await hostile(announce4GB);
  t.equal(server.process.exitCode, null, 'the server is still running');

  const tester = start('lock_tester', ['--timeout-ms', '120000', String(port)]);
  t.equal(await tester.exited(150_000), 0, 'lock_tester exits 0');
  t.match(tester.output(), /^lock_tester: passed all tests successfully$/m);
});

t.test('lock_tester says why it is waiting while a test does not finish', async (t) => {
  const lines: string[] = [];
  let probes = 0;
  const result = await runLockTester({
    clients: () => new Promise(() => {}), // a service that never lets a client in
    timeoutMs: 1_200,
    print: (line) => lines.push(line),
    printError: (line) => lines.push(line),
    waiting: { everyMs: 300, describe: async () => `no primary answers (tried 3772, 3774; probe ${++probes})` },
  });
  t.equal(result.ok, false);
  const waiting = lines.filter((line) => line.startsWith('waiting: '));
  t.ok(waiting.length >= 2, `a line every interval (${waiting.length})`);
  t.match(waiting[0], /^waiting: client setup for \d+ s: no primary answers \(tried 3772, 3774; probe 1\)$/);
  t.match(lines.join('\n'), /client setup hung/);
});

t.test('command-line errors exit 2, --help exits 0', async (t) => {
  const cases: Array<[string, string[], Record<string, string>, number, RegExp]> = [
    ['lock_server', [], {}, 2, /usage: lock_server/],
    ['lock_server', ['--bogus', '1'], {}, 2, /usage: lock_server/],
    ['lock_server', ['not-a-port'], {}, 2, /PORT must be/],
    ['lock_server', ['1', 'x'], {}, 2, /ME must be/],
    ['lock_server', ['--basic', '1', '2'], {}, 2, /--basic applies to the one-argument form/],
    ['lock_server', ['1'], { RPC_LOSSY: 'x' }, 2, /RPC_LOSSY/],
    ['lock_server', ['--help'], {}, 0, /--basic[\s\S]*RPC_COUNT/],
    ['lock_tester', ['1', '6'], {}, 2, /^lock_tester: USAGE: test number must be an integer 1\.\.5, got "6" \(usage: lock_tester .*\)\n$/],
    ['lock_tester', ['--bogus', '1'], {}, 2, /^lock_tester: USAGE: unknown option --bogus \(usage: /],
    ['lock_tester', ['1', '2', '3'], {}, 2, /usage: lock_tester/],
    ['lock_tester', ['--basic', '--callback-host', '127.0.0.1', '1'], {}, 2, /--callback-host applies to caching clients only/],
    ['lock_tester', ['--callback-host', 'no place', '1'], {}, 2, /--callback-host must be/],
    ['lock_tester', ['--help'], {}, 0, /--basic[\s\S]*LOCK_HISTORY_DIR/],
  ];
  for (const [name, args, env, expected, pattern] of cases) {
    const child = start(name, args, env);
    t.equal(await child.exited(20_000), expected, `${name} ${args.join(' ')}: exit ${expected}`);
    t.match(child.output(), pattern);
  }
});
