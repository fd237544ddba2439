/**
 * The five classic lock tests (LAB.md §5.2), against any lock client that fits
 * TesterLockClient: `cachingClientFactory` (the default of the lock_tester program) or
 * `basicClientFactory` (lock_tester --basic).
 *
 * Six clients; lock ids a = 1 and b = 2. Safety is checked with a shared counter per lock id,
 * incremented when an acquire returns and decremented around the release, as the lab does: a grant
 * while the counter is not 0 means the server granted the lock twice, a release while it is not 1
 * means the tester released a lock it does not hold. In test 1 the counter is decremented after the
 * release returns, in tests 2–5 before the release is sent (so the next holder may already be
 * granted while our release is in flight without a false alarm).
 *
 * Each thread of a test is one sequential actor; when a HistoryRecorder is given, every acquire
 * and release is recorded with owner `c<client>/w<thread>`, one file per test.
 *
 * JavaScript runs one callback at a time, so the counter checks need no lock: each check runs
 * synchronously right after the awaited acquire returns.
 */
import { sleep, realClock } from '../lib/clock.js';
import type { Clock, Network, Random, Timer } from '../lib/env.js';
import { RpcError } from '../lib/errors.js';
import { RpcEndpoint, type RpcOptions } from '../lib/rpc.js';
import { BasicLockClient, type BasicLockClientOptions } from '../lockserver/basic-client.js';
import {
  CachingLockClient,
  directConnection,
  type CachingLockClientOptions,
  type DirectConnectionOptions,
  type LockServerConnection,
} from '../lockserver/cache-client.js';
import { LockError, formatLockId } from '../lockserver/protocol.js';
import { rsmConnection, type RsmConnectionOptions } from '../lockserver/rsm-connection.js';
import { RsmClient, type RsmClientOptions } from '../rsm/client.js';
import { RsmClientStatus, rsmClientProtocol, rsmTestProtocol } from '../rsm/protocol.js';
import { describeNoQuorum } from '../paxos/identity.js';
import { quorum } from '../paxos/messages.js';
import { normalizeAddress } from '../lib/tcp.js';
import type { HistoryActor, HistoryRecorder } from './history.js';

/** What the tester needs of a lock client. Operations reject when they fail. */
export interface TesterLockClient {
  acquire(lid: number): Promise<void>;
  release(lid: number): Promise<void>;
  close(): Promise<void>;
}

/** Creates lock client number `index` (0..5). */
export type TesterClientFactory = (index: number) => Promise<TesterLockClient>;

export const TESTER_CLIENTS = 6;
export const LOCK_A = 1;
export const LOCK_B = 2;
export const ALL_TESTS: readonly TestNumber[] = [1, 2, 3, 4, 5];
export const DEFAULT_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_HOLD_MS = 1_000;
/** After a failure, how long closing the clients may take before we stop waiting for them. */
const CLOSE_GRACE_MS = 5_000;
const ITERATIONS = 10;

export type TestNumber = 1 | 2 | 3 | 4 | 5;

export function isTestNumber(n: number): n is TestNumber {
  return Number.isInteger(n) && n >= 1 && n <= 5;
}

export interface LockTesterOptions {
  readonly clients: TesterClientFactory;
  /** Which tests to run, in order. Default: all five. */
  readonly tests?: readonly TestNumber[];
  /** Progress lines. Default: stdout. */
  readonly print?: (line: string) => void;
  /** `error: …` lines. Default: stderr. */
  readonly printError?: (line: string) => void;
  /** Times test 2's hold and the run's deadline. Default: the real clock. */
  readonly clock?: Clock;
  /** How long test 2 holds the lock. Default 1 s, as in the lab. */
  readonly holdMs?: number;
  /** Bound on the whole run, client creation included. Default 10 minutes. */
  readonly timeoutMs?: number;
  /** A recorder for test `name` ("lock_tester-test3"), or undefined to record nothing. */
  readonly history?: (name: string) => HistoryRecorder | undefined;
  /**
   * Says why the run is waiting: while a test has not finished, every `everyMs` a line
   * `waiting: test3 for 10 s: <describe()>` is printed. Default: silent.
   */
  readonly waiting?: { readonly everyMs: number; readonly describe: () => Promise<string> };
}

export type FailureKind = 'violation' | 'error' | 'timeout';

export interface LockTesterResult {
  readonly ok: boolean;
  /** Tests that passed, in order. */
  readonly passed: readonly TestNumber[];
  /** The first failure (later ones are consequences and are not reported). */
  readonly failure?: { readonly test: TestNumber | undefined; readonly kind: FailureKind; readonly message: string };
}

/** Thrown inside a thread to unwind it once the run has stopped. */
class Stopped extends Error {}

interface Thread {
  readonly index: number;
  readonly clientIndex: number;
  readonly client: TesterLockClient;
  readonly actor: HistoryActor | undefined;
}

/**
 * The lab's safety check: a counter of holders per lock id. Each method returns the `error: …`
 * line for a violation, or undefined.
 */
export class HolderCounters {
  private readonly counts = new Map<number, number>();

  /** check_grant: called when an acquire returned. */
  grant(lid: number): string | undefined {
    const count = this.counts.get(lid) ?? 0;
    this.counts.set(lid, count + 1);
    return count === 0 ? undefined : `error: server granted ${formatLockId(lid)} twice`;
  }

  /** check_release: called around a release (before or after, see the header comment). */
  release(lid: number): string | undefined {
    const count = this.counts.get(lid) ?? 0;
    this.counts.set(lid, count - 1);
    return count === 1 ? undefined : `error: client released un-held lock ${formatLockId(lid)}`;
  }
}

/** Shared state of one run: the counters, the first failure, and how to stop. */
class Run {
  failure: LockTesterResult['failure'];
  test: TestNumber | undefined;
  /** Resolves at the first failure (a violation, a client error or the deadline). */
  readonly failed: Promise<void>;
  private resolveFailed!: () => void;
  private readonly holders = new HolderCounters();

  constructor(
    readonly print: (line: string) => void,
    private readonly printError: (line: string) => void,
  ) {
    this.failed = new Promise((resolve) => (this.resolveFailed = resolve));
  }

  get stopped(): boolean {
    return this.failure !== undefined;
  }

  fail(kind: FailureKind, message: string): void {
    if (this.failure !== undefined) return;
    this.failure = { test: this.test, kind, message };
    this.printError(message);
    this.resolveFailed();
  }

  checkGrant(lid: number): void {
    const violation = this.holders.grant(lid);
    if (violation !== undefined) this.fail('violation', violation);
  }

  checkRelease(lid: number): void {
    const violation = this.holders.release(lid);
    if (violation !== undefined) this.fail('violation', violation);
  }

  throwIfStopped(): void {
    if (this.stopped) throw new Stopped();
  }

  async acquire(thread: Thread, lid: number): Promise<void> {
    this.throwIfStopped();
    const operation = thread.actor?.begin('acquire', lid);
    try {
      await thread.client.acquire(lid);
    } catch (error) {
      operation?.unknown(describeError(error));
      this.fail('error', `error: client ${thread.clientIndex} acquire ${formatLockId(lid)} failed: ${describeError(error)}`);
      throw new Stopped();
    }
    operation?.ok();
    // A grant that arrives after the run stopped is not checked: the failure is already reported.
    this.throwIfStopped();
    this.checkGrant(lid);
  }

  /** Releases `lid`; `checkFirst` decrements the counter before sending (tests 2–5). */
  async release(thread: Thread, lid: number, checkFirst: boolean): Promise<void> {
    this.throwIfStopped();
    if (checkFirst) this.checkRelease(lid);
    const operation = thread.actor?.begin('release', lid);
    try {
      await thread.client.release(lid);
    } catch (error) {
      // No outcome is certain here: even "not held" may come from a retransmitted release that
      // the server already executed.
      operation?.unknown(describeError(error));
      this.fail('error', `error: client ${thread.clientIndex} release ${formatLockId(lid)} failed: ${describeError(error)}`);
      throw new Stopped();
    }
    operation?.ok();
    this.throwIfStopped();
    if (!checkFirst) this.checkRelease(lid);
  }
}

type TestBody = (context: TestContext) => Promise<void>;

interface TestContext {
  readonly run: Run;
  readonly holdMs: number;
  readonly clock: Clock;
  thread(index: number, clientIndex: number): Thread;
  /** Runs `count` threads; resolves when all finished or the run stopped. */
  concurrently(count: number, clientOf: (thread: number) => number, body: (thread: Thread) => Promise<void>): Promise<void>;
}

const tests: Record<TestNumber, TestBody> = {
  1: async ({ run, thread }) => {
    const t = thread(0, 0);
    run.print('test1: acquire a release a acquire a release a');
    await run.acquire(t, LOCK_A);
    await run.release(t, LOCK_A, false);
    await run.acquire(t, LOCK_A);
    await run.release(t, LOCK_A, false);
    run.print('test1: acquire a acquire b release b release a');
    await run.acquire(t, LOCK_A);
    await run.acquire(t, LOCK_B);
    await run.release(t, LOCK_B, false);
    await run.release(t, LOCK_A, false);
  },

  2: async ({ run, concurrently, clock, holdMs }) => {
    run.print(`test2: ${TESTER_CLIENTS} clients acquire a, hold ${holdMs} ms, release`);
    await concurrently(TESTER_CLIENTS, (i) => i, async (t) => {
      run.print(`test2: client ${t.clientIndex} acquire a release a`);
      await run.acquire(t, LOCK_A);
      run.print(`test2: client ${t.clientIndex} acquire done`);
      await sleep(clock, holdMs);
      run.print(`test2: client ${t.clientIndex} release`);
      await run.release(t, LOCK_A, true);
      run.print(`test2: client ${t.clientIndex} release done`);
    });
  },

  3: async ({ run, concurrently }) => {
    run.print(`test3: ${TESTER_CLIENTS} clients acquire a release a concurrently, ${ITERATIONS} times`);
    await concurrently(TESTER_CLIENTS, (i) => i, async (t) => {
      for (let j = 0; j < ITERATIONS; j++) {
        await run.acquire(t, LOCK_A);
        run.print(`test3: client ${t.clientIndex} got lock`);
        await run.release(t, LOCK_A, true);
      }
    });
  },

  4: async ({ run, concurrently }) => {
    run.print(`test4: 2 threads on client 0 acquire a release a concurrently, ${ITERATIONS} times`);
    await concurrently(2, () => 0, async (t) => {
      for (let j = 0; j < ITERATIONS; j++) {
        await run.acquire(t, LOCK_A);
        run.print(`test4: thread ${t.index} on client 0 got lock`);
        await run.release(t, LOCK_A, true);
      }
    });
  },

  5: async ({ run, concurrently }) => {
    run.print(`test5: threads 0-4 on client 0, thread 5 on client 1, acquire a release a, ${ITERATIONS} times`);
    await concurrently(TESTER_CLIENTS, (i) => (i < 5 ? 0 : 1), async (t) => {
      for (let j = 0; j < ITERATIONS; j++) {
        await run.acquire(t, LOCK_A);
        run.print(`test5: thread ${t.index} on client ${t.clientIndex} got lock`);
        await run.release(t, LOCK_A, true);
      }
    });
  },
};

/** Runs the tests. Never throws for test failures: they are in the result (and printed). */
export async function runLockTester(options: LockTesterOptions): Promise<LockTesterResult> {
  const clock = options.clock ?? realClock;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const holdMs = options.holdMs ?? DEFAULT_HOLD_MS;
  const selected = options.tests ?? ALL_TESTS;
  const run = new Run(
    options.print ?? ((line) => process.stdout.write(`${line}\n`)),
    options.printError ?? ((line) => process.stderr.write(`${line}\n`)),
  );
  const deadline: Timer = clock.setTimer(timeoutMs, () => {
    const what = run.test === undefined ? 'client setup' : `test${run.test}`;
    run.fail('timeout', `error: ${what} hung: the run did not finish within ${timeoutMs} ms`);
  });

  let testStartedAt = clock.now();
  let waitingTimer: Timer | undefined;
  const waiting = options.waiting;
  const scheduleWaiting = (): void => {
    if (waiting === undefined || run.stopped) return;
    waitingTimer = clock.setTimer(waiting.everyMs, () => {
      const what = run.test === undefined ? 'client setup' : `test${run.test}`;
      const seconds = Math.round((clock.now() - testStartedAt) / 1000);
      void waiting
        .describe()
        .catch((error: unknown) => describeError(error))
        .then((why) => {
          if (!run.stopped) run.print(`waiting: ${what} for ${seconds} s: ${why}`);
          scheduleWaiting();
        });
    });
  };
  scheduleWaiting();

  const clients: TesterLockClient[] = [];
  let closed: Promise<void> | undefined;
  const closeAll = (): Promise<void> => (closed ??= closeClients(clients, clock));
  const passed: TestNumber[] = [];
  try {
    const created = (async () => {
      for (let i = 0; i < TESTER_CLIENTS; i++) {
        const client = await options.clients(i);
        if (run.stopped) {
          // Created after the deadline, too late for closeAll: close it here.
          void client.close().catch(() => undefined);
          return;
        }
        clients.push(client);
      }
    })().catch((error: unknown) => run.fail('error', `error: creating lock clients failed: ${describeError(error)}`));
    await Promise.race([created, run.failed]);

    for (const test of selected) {
      if (run.stopped) break;
      run.test = test;
      testStartedAt = clock.now();
      const recorder = options.history?.(`lock_tester-test${test}`);
      try {
        await runOne(test, run, clients, recorder, clock, holdMs);
      } finally {
        // On failure, settle what can settle before the recorder writes the rest as unknown.
        if (run.stopped) await closeAll();
        recorder?.close();
      }
      if (!run.stopped) {
        run.print(`test${test}: passed`);
        passed.push(test);
      }
    }
  } finally {
    deadline.cancel();
    waitingTimer?.cancel();
    await closeAll();
  }
  return run.failure === undefined ? { ok: true, passed } : { ok: false, passed, failure: run.failure };
}

async function runOne(
  test: TestNumber,
  run: Run,
  clients: readonly TesterLockClient[],
  recorder: HistoryRecorder | undefined,
  clock: Clock,
  holdMs: number,
): Promise<void> {
  const thread = (index: number, clientIndex: number): Thread => ({
    index,
    clientIndex,
    client: clients[clientIndex]!,
    actor: recorder?.actor(`c${clientIndex}/w${index}`),
  });
  const context: TestContext = {
    run,
    holdMs,
    clock,
    thread,
    concurrently: async (count, clientOf, body) => {
      const threads = Array.from({ length: count }, (_, i) => guard(run, body(thread(i, clientOf(i)))));
      await Promise.race([Promise.all(threads), run.failed]);
    },
  };
  await Promise.race([guard(run, tests[test](context)), run.failed]);
}

/** Turns a thread's rejection into a run failure (Stopped is just unwinding). Never rejects. */
async function guard(run: Run, thread: Promise<void>): Promise<void> {
  try {
    await thread;
  } catch (error) {
    if (!(error instanceof Stopped)) run.fail('error', `error: tester thread failed: ${describeError(error)}`);
  }
}

/** Closes every client; waits at most CLOSE_GRACE_MS for them (a hung client must not hang us). */
async function closeClients(clients: readonly TesterLockClient[], clock: Clock): Promise<void> {
  const all = clients.map((client) => client.close().catch(() => undefined));
  let timer: Timer | undefined;
  const grace = new Promise<void>((resolve) => (timer = clock.setTimer(CLOSE_GRACE_MS, resolve)));
  await Promise.race([Promise.all(all), grace]);
  timer?.cancel();
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

/** What basic lock clients need to run: each gets its own endpoint on `network`. */
export interface BasicClientEnv {
  readonly network: Network;
  readonly clock: Clock;
  /** Forked once per client, so each RpcEndpoint has its own stream. */
  readonly random: Random;
  readonly rpcOptions?: Partial<RpcOptions>;
  readonly clientOptions?: Partial<BasicLockClientOptions>;
}

/**
 * A factory of basic lock clients talking to `server`. Each has its own RpcEndpoint on its own
 * `network.connect()` endpoint, so the six are independent clients, like the lab's separate rpccs.
 * A server that does not speak the basic protocol fails the operation with LOCK_PROTOCOL_MISMATCH.
 */
export function basicClientFactory(server: string, env: BasicClientEnv): TesterClientFactory {
  return async () => {
    const rpc = new RpcEndpoint(env.network.connect(), env.clock, env.random.fork(), env.rpcOptions);
    const client = new BasicLockClient(rpc, server, env.clientOptions);
    const explain = (error: unknown): never => {
      const mismatch = protocolMismatchOf(error);
      throw mismatch === undefined ? error : new ProtocolMismatchError('basic', server, mismatch);
    };
    return {
      acquire: (lid) => client.acquire(lid).catch(explain),
      release: (lid) => client.release(lid).catch(explain),
      close: async () => {
        client.close();
        await rpc.close();
      },
    };
  };
}

/** What caching lock clients need to run: each listens on its own ephemeral port of `network`. */
export interface CachingClientEnv {
  readonly network: Network;
  readonly clock: Clock;
  /** Forked once per client, so each RpcEndpoint has its own stream. */
  readonly random: Random;
  /** Host part of each client's callback address (its id at the server). Default 127.0.0.1. */
  readonly host?: string;
  readonly rpcOptions?: Partial<RpcOptions>;
  readonly connection?: DirectConnectionOptions;
  readonly clientOptions?: Partial<Omit<CachingLockClientOptions, 'rpc' | 'server' | 'clock' | 'callbackEndpoint' | 'ownedEndpoints'>>;
}

/**
 * A factory of caching lock clients talking directly to the unreplicated caching server at
 * `server`. Each client has its own RpcEndpoint listening on `host:0` (an ephemeral port): the
 * server sends revoke and retry there, and its address is the client's id.
 *
 * A caching client retries a failed acquire forever (until its deadline), so a server that does
 * not speak the caching protocol (a basic server answers RPC_BAD_ARGS, a replica without the lock
 * service RPC_NO_SUCH_PROC) would hang the tester; such an answer fails every waiting and later
 * acquire of that client at once with LOCK_PROTOCOL_MISMATCH instead.
 */
export function cachingClientFactory(server: string, env: CachingClientEnv): TesterClientFactory {
  return async () => {
    const rpc = new RpcEndpoint(await env.network.listen(`${env.host ?? '127.0.0.1'}:0`), env.clock, env.random.fork(), env.rpcOptions);
    let reportMismatch!: (error: ProtocolMismatchError) => void;
    const mismatch = new Promise<never>((_, reject) => (reportMismatch = reject));
    mismatch.catch(() => {}); // observed through the races below
    const direct = directConnection(rpc, server, env.connection);
    const watch = async <T>(exchange: Promise<T>): Promise<T> => {
      try {
        return await exchange;
      } catch (error) {
        const cause = protocolMismatchOf(error);
        if (cause !== undefined) reportMismatch(new ProtocolMismatchError('caching', server, cause));
        throw error;
      }
    };
    const connection: LockServerConnection = {
      acquire: (lid, id, xid, tryOnly) => watch(direct.acquire(lid, id, xid, tryOnly)),
      release: (lid, id, xid) => watch(direct.release(lid, id, xid)),
      close: () => direct.close(),
    };
    const client = new CachingLockClient({ ...env.clientOptions, rpc, clock: env.clock, server: connection, ownedEndpoints: [rpc] });
    return {
      // The race subscribes to the acquire too, so its later rejection (at close) is handled.
      // The classic numeric ids are lock names in decimal.
      acquire: async (lid) => void (await Promise.race([client.acquire(String(lid)), mismatch])),
      release: (lid) => client.release(String(lid)),
      close: () => client.close(),
    };
  };
}

/** The server answered a lock procedure in a way that means it serves another protocol. */
export class ProtocolMismatchError extends Error {
  override name = 'ProtocolMismatchError';
  readonly code = 'LOCK_PROTOCOL_MISMATCH';

  constructor(kind: 'basic' | 'caching', server: string, cause: RpcError) {
    const hint =
      cause.code !== 'RPC_BAD_ARGS'
        ? ''
        : kind === 'caching'
          ? '; if it is a basic lock server (lock_server --basic), use lock_tester --basic'
          : '; if it is a caching lock server (lock_server without --basic), use lock_tester without --basic';
    super(`the server at ${server} does not serve the ${kind} lock protocol (${cause.code})${hint}`, { cause });
  }
}

/** The RpcError behind `error` if it says the server speaks another protocol. */
function protocolMismatchOf(error: unknown): RpcError | undefined {
  const cause = error instanceof LockError ? error.cause : error;
  return cause instanceof RpcError && (cause.code === 'RPC_BAD_ARGS' || cause.code === 'RPC_NO_SUCH_PROC') ? cause : undefined;
}

// -----------------------------------------------------------------------------------------------
// The replicated service: which kind of server is at a port, and clients through the RSM.

/** What answers at a lock service port. */
export type LockServiceKind =
  /** A replica of the RSM (`lock_server MASTER ME`): `members` answered with its view. */
  | { readonly kind: 'replicated'; readonly members: readonly string[]; readonly primary: string }
  /** An unreplicated lock server (`lock_server PORT`): `members` is not one of its procedures. */
  | { readonly kind: 'unreplicated' }
  /** A replica's test-control port (ME+1): it serves `status` but not `members`. */
  | { readonly kind: 'control'; readonly mainPort: string }
  | { readonly kind: 'unknown'; readonly reason: string };

/** Deadline of the detection call (it retransmits meanwhile, so RPC_LOSSY is fine). */
export const DETECT_TIMEOUT_MS = 10_000;

/**
 * Asks `server` for the RSM `members` (0x9002): a replica answers with its view (primary last),
 * an unreplicated lock server answers RPC_NO_SUCH_PROC. Anything else (no answer) is unknown.
 */
export async function detectLockService(rpc: RpcEndpoint, server: string, timeoutMs = DETECT_TIMEOUT_MS): Promise<LockServiceKind> {
  const client = rpc.newClient(server);
  try {
    const reply = await client.call(rsmClientProtocol.members, { dummy: 0 }, { timeoutMs });
    if (!reply.ok) {
      if (reply.error.code !== 'RPC_NO_SUCH_PROC') return { kind: 'unknown', reason: `${server} did not answer: ${reply.error.code}` };
      // Not a replica's main port: a control port answers `status`, an unreplicated server does not.
      const status = await client.call(rsmTestProtocol.status, { dummy: 0 }, { timeoutMs });
      if (status.ok) {
        const colon = server.lastIndexOf(':');
        return { kind: 'control', mainPort: `${server.slice(0, colon + 1)}${Number(server.slice(colon + 1)) - 1}` };
      }
      return { kind: 'unreplicated' };
    }
    if (reply.status !== RsmClientStatus.OK) return { kind: 'unknown', reason: `${server} answered members with status ${reply.status}` };
    return { kind: 'replicated', members: reply.result.slice(0, -1), primary: reply.result.at(-1) ?? '' };
  } finally {
    client.close();
  }
}

/** Deadline of each probe of `describeReplicaWait`. */
export const WAIT_PROBE_TIMEOUT_MS = 1_000;

/**
 * Why a client of the replicated service may be waiting, from fresh probes of `members`: each
 * member's `members` call on its main port and its host's `quorum` verdict on its control port.
 * "no primary answers (tried 3772, 3774, 3776); 3772: RPC_TIMEOUT; 3776: primary 3772; no quorum: …".
 */
export async function describeReplicaWait(rpc: RpcEndpoint, members: readonly string[]): Promise<string> {
  const answers = await Promise.all(
    members.map(async (member) => {
      const address = addressOfMember(member);
      const client = rpc.newClient(address);
      const controlClient = rpc.newClient(controlAddressOfMember(address));
      try {
        const [view, verdict] = await Promise.all([
          client.call(rsmClientProtocol.members, { dummy: 0 }, { timeoutMs: WAIT_PROBE_TIMEOUT_MS }),
          controlClient.call(quorum, { dummy: 0 }, { timeoutMs: WAIT_PROBE_TIMEOUT_MS }),
        ]);
        if (!view.ok) return { member, up: false, primary: '', text: `${member}: ${view.error.code}` };
        if (view.status !== RsmClientStatus.OK) return { member, up: true, primary: '', text: `${member}: status ${view.status}` };
        const primary = view.result.at(-1) ?? '';
        const noQuorum = verdict.ok && !verdict.result.quorum ? `; ${describeNoQuorum(verdict.result)}` : '';
        return { member, up: true, primary, text: `${member}: primary ${primary || '-'}${noQuorum}` };
      } finally {
        client.close();
        controlClient.close();
      }
    }),
  );
  const primaries = new Set(answers.map((a) => a.primary).filter((p) => p !== ''));
  const primaryUp = [...primaries].some((p) => answers.some((a) => a.member === p && a.up));
  const head = primaryUp ? 'the primary answers' : `no primary answers (tried ${members.join(', ')})`;
  return `${head}; ${answers.map((a) => a.text).join('; ')}`;
}

function controlAddressOfMember(address: string): string {
  const colon = address.lastIndexOf(':');
  return `${address.slice(0, colon)}:${Number(address.slice(colon + 1)) + 1}`;
}

/** A replica id ("3772" or host:port) to its address; ids that are no address map to themselves. */
function addressOfMember(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}

export interface RsmCachingClientEnv extends CachingClientEnv {
  /** RsmClient settings (timeouts, backoff). */
  readonly rsm?: Partial<Omit<RsmClientOptions, 'rpc' | 'knownMembers' | 'clock' | 'random' | 'addressOf'>>;
  readonly rsmConnection?: RsmConnectionOptions;
}

export interface RsmFactoryOptions {
  /** More replicas each client knows from the start, after `server` (the members lock_tester saw). */
  readonly alsoKnown?: readonly string[];
  /** Collects every RSM client made, so a waiting test can say what each one believes. */
  readonly created?: RsmClient[];
}

/** What each RSM client believes, for the waiting line: "client 1: primary 3774, knows 3772,3774,3776". */
export function describeRsmClients(clients: readonly RsmClient[]): string {
  return clients
    .map((client, i) => `client ${i}: primary ${client.primary ?? '-'}, knows ${client.knownMembers.join(',')}, ${client.stats.invokes} invokes, ${client.stats.busy} BUSY, ${client.stats.primaryFailures} failures`)
    .join('; ');
}

/**
 * A factory of caching lock clients talking to the REPLICATED lock service through the RSM: each
 * client has its own RpcEndpoint on an ephemeral port (its id and callback address), an RsmClient
 * on it that starts from `server` (any replica) and finds the primary, and `rsmConnection` carrying
 * acquire and release as RSM requests. Revoke and retry come from whichever replica is primary.
 */
export function rsmCachingClientFactory(server: string, env: RsmCachingClientEnv, options: RsmFactoryOptions = {}): TesterClientFactory {
  return async () => {
    const rpc = new RpcEndpoint(await env.network.listen(`${env.host ?? '127.0.0.1'}:0`), env.clock, env.random.fork(), env.rpcOptions);
    const knownMembers = [server, ...(options.alsoKnown ?? []).filter((id) => addressOfMember(id) !== addressOfMember(server))];
    const rsm = new RsmClient({ ...env.rsm, rpc, knownMembers, clock: env.clock, addressOf: addressOfMember });
    options.created?.push(rsm);
    const client = new CachingLockClient({
      ...env.clientOptions,
      rpc,
      clock: env.clock,
      server: rsmConnection(rsm, env.rsmConnection),
      ownedEndpoints: [rpc],
    });
    return {
      // The classic numeric ids are lock names in decimal.
      acquire: async (lid) => void (await client.acquire(String(lid))),
      release: (lid) => client.release(String(lid)),
      close: () => client.close(),
    };
  };
}
