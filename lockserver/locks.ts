/**
 * The lock API for applications: `connect()` to the replicated lock service, then `acquire`,
 * `tryAcquire` or `withLock` by name. Each `LockClient` owns one RsmClient and one callback
 * endpoint, shared by all its locks; a `Lock` carries the grant's fencing token and a signal.
 *
 *   const locks = await connect({ members: ['127.0.0.1:3772', '127.0.0.1:3774', '127.0.0.1:3776'], session: { ttlMs: 10_000 } });
 *   await using lock = await locks.acquire('orders');
 *   await storage.write(data, { fencingToken: lock.token });
 *
 * Program/host file: it opens real TCP endpoints and reads the real clock and OS randomness
 * (through lib/tcp.ts, lib/clock.ts, lib/random.ts) unless an environment is passed in. The
 * protocol lives in cache-client-core.ts and cache-server.ts (README.md, "The caching lock service").
 *
 * Errors (`LockError`, stable codes): LOCK_BAD_NAME (a name that is not 1–256 UTF-8 bytes;
 * nothing is sent), LOCK_BAD_OPTION (connect options out of range), LOCK_NOT_HELD (release of a
 * Lock already released or lost), LOCK_TIMEOUT, LOCK_ABORTED, LOCK_RPC_FAILED,
 * LOCK_CLIENT_CLOSED, LOCK_SESSION_EXPIRED (the session is over: connect again), and LOCK_LOST
 * as the reason of `lock.signal` when the client lost the lock (it was closed while the lock was
 * held, or its session could not be renewed in time: session.ts).
 *
 * Session: connect opens one (a keepalive through the RSM, TTL `session.ttlMs`, default 10 s,
 * 1,000..300,000 ms) and renews it every TTL/3. When it is lost, every held lock's signal aborts
 * with LOCK_LOST, 'lost' is emitted for each, then 'sessionLost' (reason) once; the client gives out
 * no more locks (LOCK_SESSION_EXPIRED). close() releases, then ends the session (endsession).
 */
import { EventEmitter } from 'node:events';
import { realClock } from '../lib/clock.js';
import type { Clock, Network, Random } from '../lib/env.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { RsmClient } from '../rsm/client.js';
import { CachingLockClient } from './cache-client.js';
import {
  CacheProc,
  DEFAULT_SESSION_TTL_MS,
  LockStatus,
  MAX_SESSION_TTL_MS,
  MIN_SESSION_TTL_MS,
  decodeLockInspection,
  encodeCacheStatRequest,
  isLockName,
  isSessionTtl,
  type LockInspection,
} from './cache-protocol.js';
import { SessionKeeper } from './session.js';
import { KEEPALIVE_NOT_PRIMARY, sessionProtocol } from './cache-protocol.js';
import { LockError, formatLockName } from './protocol.js';
import { rsmConnection } from './rsm-connection.js';

// Node 20 defines Symbol.asyncDispose (used by `await using`); older runtimes get the registered
// symbol that TypeScript's downlevel helpers look up too.
(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for('Symbol.asyncDispose');

/** A held lock. Release it once: `release()`, or leave the `await using` block. */
export interface Lock {
  readonly name: string;
  /**
   * The fencing token of the grant: strictly increasing per lock name. A resource the lock
   * protects should reject a write carrying a token lower than the highest it has seen.
   */
  readonly token: number;
  /** Aborts (reason: a LockError LOCK_LOST) if the client loses the lock while it is held. */
  readonly signal: AbortSignal;
  /** Whether this handle still holds the lock. */
  readonly held: boolean;
  /** Gives the lock back; a second call rejects with LOCK_NOT_HELD. */
  release(): Promise<void>;
  /** `await using`: releases unless already released or lost. */
  [Symbol.asyncDispose](): Promise<void>;
}

export interface LockAcquireOptions {
  /** Give up after this long: LOCK_TIMEOUT (default 10 minutes). */
  readonly timeoutMs?: number;
  /** Give up when it aborts: LOCK_ABORTED. */
  readonly signal?: AbortSignal;
}

export interface ConnectOptions {
  /**
   * Replica addresses ("127.0.0.1:3772"); one is enough, the client learns the others. Not
   * needed with `connection`, which has its own.
   */
  readonly members?: readonly string[];
  /**
   * Send through this shared connection (`openLockConnection`) instead of one of the client's
   * own. Each client keeps its own id, callback endpoint, session and locks; only the requests
   * to the replicas share one RSM client (one TCP connection per replica, one primary search on
   * fail-over). Close the clients before the connection.
   */
  readonly connection?: LockConnection;
  /** Host of the callback endpoint (revoke/retry/grant arrive there). Default 127.0.0.1. */
  readonly host?: string;
  /** Default deadline of acquire (ms). Default 10 minutes. */
  readonly acquireTimeoutMs?: number;
  /** The session (lease): TTL in ms, 1,000..300,000, default 10,000. */
  readonly session?: { readonly ttlMs?: number };
  /** How long connect waits for the session to open (ms). Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** An environment other than real TCP, clock and randomness (tests, the simulator). */
  readonly env?: { readonly network: Network; readonly clock: Clock; readonly random: Random };
}

/** Limits checked by connect (LOCK_BAD_OPTION otherwise). */
export const MAX_CONNECT_MEMBERS = 64;

export interface LockConnectionOptions {
  /** Replica addresses, as for connect. */
  readonly members: readonly string[];
  /** An environment other than real TCP, clock and randomness (tests, the simulator). */
  readonly env?: { readonly network: Network; readonly clock: Clock; readonly random: Random };
}

/**
 * One connection to the replicas that many LockClients of a process share
 * (`connect({ connection })`): their acquires and releases travel on one RSM client, so the
 * primary sees one connection from this process instead of one per client and answers the
 * requests of a batch on it together.
 */
export class LockConnection {
  readonly members: readonly string[];
  /** @internal The environment its clients use too. */
  readonly env: { readonly network: Network; readonly clock: Clock; readonly random: Random };
  /** @internal */
  readonly rsm: RsmClient;
  private readonly rpc: RpcEndpoint;

  /** Prefer openLockConnection; this is the same. */
  constructor(options: LockConnectionOptions) {
    this.members = checkMembers(options.members, 'openLockConnection');
    this.env = options.env ?? { network: tcpNetwork(), clock: realClock, random: osRandom() };
    this.rpc = new RpcEndpoint(this.env.network.connect(), this.env.clock, this.env.random.fork());
    this.rsm = new RsmClient({ rpc: this.rpc, knownMembers: [...this.members], clock: this.env.clock, addressOf: addressOfMember });
  }

  get isClosed(): boolean {
    return this.rsm.isClosed;
  }

  /** Closes the shared RSM client: requests of clients still using it fail (LOCK_RPC_FAILED). */
  async close(): Promise<void> {
    this.rsm.close();
    await this.rpc.close();
  }
}

/** Opens a connection that LockClients share (see LockConnection); nothing is sent until they are. */
export function openLockConnection(options: LockConnectionOptions): LockConnection {
  return new LockConnection(options);
}

function checkMembers(members: unknown, where: string): readonly string[] {
  if (!Array.isArray(members) || members.length === 0 || members.length > MAX_CONNECT_MEMBERS || !members.every((m) => typeof m === 'string' && m.length > 0)) {
    throw new LockError('LOCK_BAD_OPTION', `${where}: members must list 1 to ${MAX_CONNECT_MEMBERS} replica addresses`);
  }
  return members as string[];
}

class HeldLock implements Lock {
  private readonly controller = new AbortController();
  private state: 'held' | 'released' | 'lost' = 'held';

  constructor(
    readonly name: string,
    readonly token: number,
    private readonly owner: LockClient,
  ) {}

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get held(): boolean {
    return this.state === 'held';
  }

  async release(): Promise<void> {
    if (this.state !== 'held') throw new LockError('LOCK_NOT_HELD', `release ${formatLockName(this.name)}: this lock was already ${this.state}`);
    this.state = 'released';
    await this.owner.releaseHandle(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.state === 'held') await this.release();
  }

  /** The client lost it: the holder learns through the signal. */
  lose(): void {
    if (this.state !== 'held') return;
    this.state = 'lost';
    this.controller.abort(new LockError('LOCK_LOST', `lock ${formatLockName(this.name)} (token ${this.token}) was lost`));
  }
}

/**
 * A connection to the lock service. Events: 'lost' (lock: Lock) when a held lock is lost.
 */
export class LockClient extends EventEmitter {
  private readonly handles = new Set<HeldLock>();
  private session: SessionKeeper | undefined;
  private sessionLostWith: LockError | undefined;

  constructor(
    private readonly client: CachingLockClient,
    private readonly rsm?: RsmClient,
  ) {
    super();
  }

  /** @internal connect() attaches the session it opened. */
  attachSession(session: SessionKeeper): void {
    this.session = session;
  }

  /** The session's keeper (undefined for a client without a session). */
  get sessionKeeper(): SessionKeeper | undefined {
    return this.session;
  }

  /** Whether the session is over: no more locks from this client. */
  get sessionLost(): boolean {
    return this.sessionLostWith !== undefined;
  }

  /**
   * @internal The session is lost: every held lock is lost (signals abort first, then 'lost' per
   * lock), the cache forgets everything without sending, and 'sessionLost' is emitted once.
   */
  loseSession(reason: LockError): void {
    if (this.sessionLostWith !== undefined) return;
    this.sessionLostWith = new LockError('LOCK_SESSION_EXPIRED', `the session of ${this.id} is over: ${reason.message}; connect again`, { cause: reason });
    const lost = [...this.handles];
    this.handles.clear();
    for (const handle of lost) handle.lose();
    for (const handle of lost) this.emit('lost', handle);
    void this.client.abandon(this.sessionLostWith);
    this.emit('sessionLost', reason);
  }

  private checkSession(): void {
    if (this.sessionLostWith !== undefined) throw this.sessionLostWith;
  }

  /**
   * Who holds `name` (session id, fencing token, since when in the primary's clock), who waits
   * for it, and how many sessions the service knows: a replicated read (one RSM request).
   */
  async inspect(name: string, options: { timeoutMs?: number } = {}): Promise<LockInspection> {
    checkName(name);
    if (this.rsm === undefined) throw new LockError('LOCK_BAD_OPTION', 'inspect needs a client made by connect()');
    let answer: { status: number; reply: Uint8Array };
    try {
      answer = await this.rsm.invoke(CacheProc.INSPECT, encodeCacheStatRequest({ lid: name }), options);
    } catch (error) {
      throw new LockError('LOCK_RPC_FAILED', `inspect ${formatLockName(name)}: ${(error as Error).message}`, { cause: error });
    }
    const decoded = decodeLockInspection(answer.reply);
    if (answer.status !== LockStatus.OK || !decoded.ok) throw new LockError('LOCK_RPC_FAILED', `inspect ${formatLockName(name)}: status ${answer.status}`);
    return decoded.value;
  }

  /**
   * The RSM client this lock client sends through. A service replicated beside the lock service
   * (the file service) sends its requests on it too, so both share one connection and fail-over.
   */
  get rsmClient(): RsmClient {
    if (this.rsm === undefined) throw new LockError('LOCK_BAD_OPTION', 'this lock client was not made by connect()');
    return this.rsm;
  }

  /** The client's id at the service (its callback address). */
  get id(): string {
    return this.client.id;
  }

  /** Waits for the lock `name` and resolves with it held. */
  async acquire(name: string, options: LockAcquireOptions = {}): Promise<Lock> {
    checkName(name);
    this.checkSession();
    const token = await this.client.acquire(name, options);
    return this.track(name, token);
  }

  /**
   * The lock `name` if it can be had without waiting for anyone, else null: no round trip when
   * this client caches it free, one otherwise (the service never queues a try).
   */
  async tryAcquire(name: string): Promise<Lock | null> {
    checkName(name);
    this.checkSession();
    const token = await this.client.tryAcquire(name);
    return token === null ? null : this.track(name, token);
  }

  /** Runs `fn` holding `name` and releases afterwards, also when `fn` throws. */
  async withLock<T>(name: string, fn: (lock: Lock) => Promise<T> | T, options: LockAcquireOptions = {}): Promise<T> {
    const lock = await this.acquire(name, options);
    try {
      return await fn(lock);
    } finally {
      if (lock.held) await lock.release();
    }
  }

  /** RPC counters of the underlying caching client. */
  stats(): ReturnType<CachingLockClient['stats']> {
    return this.client.stats();
  }

  /** Locks held through this client right now. */
  get heldLocks(): readonly Lock[] {
    return [...this.handles];
  }

  /**
   * Gives every cached and held lock back to the service and closes the connection. Locks still
   * held are lost (their signals abort with LOCK_LOST, 'lost' is emitted for each).
   */
  async close(): Promise<void> {
    for (const handle of [...this.handles]) {
      this.handles.delete(handle);
      handle.lose();
      this.emit('lost', handle);
    }
    if (this.sessionLostWith !== undefined) {
      await this.client.abandon(this.sessionLostWith);
      return;
    }
    await this.client.close(); // gives cached locks back, then ends the session (beforeStop)
  }

  /** @internal */
  async releaseHandle(handle: HeldLock): Promise<void> {
    if (!this.handles.delete(handle)) return;
    await this.client.release(handle.name);
  }

  private track(name: string, token: number): Lock {
    const handle = new HeldLock(name, token, this);
    // Granted just as the session was lost: it is lost too.
    if (this.sessionLostWith !== undefined) {
      handle.lose();
      return handle;
    }
    this.handles.add(handle);
    return handle;
  }
}

/**
 * Connects to the replicated lock service (`npm start` runs one at 127.0.0.1:3772/3774/3776).
 * It opens the session (one keepalive, within `connectTimeoutMs`) before it resolves.
 */
export async function connect(options: ConnectOptions): Promise<LockClient> {
  const shared = options.connection;
  if (shared !== undefined && !(shared instanceof LockConnection)) throw new LockError('LOCK_BAD_OPTION', 'connect: connection must come from openLockConnection');
  if (shared?.isClosed === true) throw new LockError('LOCK_BAD_OPTION', 'connect: the connection is closed');
  const members = options.members === undefined && shared !== undefined ? shared.members : checkMembers(options.members, 'connect');
  const timeout = options.acquireTimeoutMs;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout >= 0)) {
    throw new LockError('LOCK_BAD_OPTION', `connect: acquireTimeoutMs must be a number ≥ 0, got ${timeout}`);
  }
  const ttlMs = options.session?.ttlMs ?? DEFAULT_SESSION_TTL_MS;
  if (!isSessionTtl(ttlMs)) {
    throw new LockError('LOCK_BAD_OPTION', `connect: session.ttlMs must be an integer from ${MIN_SESSION_TTL_MS} to ${MAX_SESSION_TTL_MS} ms, got ${String(ttlMs)}`);
  }
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const env = options.env ?? shared?.env ?? { network: tcpNetwork(), clock: realClock, random: osRandom() };
  const rpc = new RpcEndpoint(await env.network.listen(`${options.host ?? '127.0.0.1'}:0`), env.clock, env.random.fork());
  const rsm = shared?.rsm ?? new RsmClient({ rpc, knownMembers: [...members], clock: env.clock, addressOf: addressOfMember });
  let lockClient: LockClient | undefined;
  let session: SessionKeeper | undefined;
  const client = new CachingLockClient({
    rpc,
    clock: env.clock,
    server: rsmConnection(rsm, { closeClient: shared === undefined }),
    ownedEndpoints: [rpc],
    ...(timeout === undefined ? {} : { acquireTimeoutMs: timeout }),
    onSessionExpired: () => session?.expiredAtService(),
    beforeStop: async () => session?.end(2_000),
  });
  lockClient = new LockClient(client, rsm);
  // Keepalives go to the believed primary's host first, which batches them (one replicated
  // request for many clients); the RSM path is the fallback.
  const viaPrimary = async (entry: { id: string; ttlMs: number }, timeoutMs: number): Promise<number | undefined> => {
    const primary = rsm.primary;
    if (primary === undefined) return undefined;
    const reply = await rpc.call(addressOfMember(primary), sessionProtocol.keepalive, entry, { timeoutMs: Math.min(timeoutMs, 2_000) });
    return reply.ok && reply.status !== KEEPALIVE_NOT_PRIMARY ? reply.result : undefined;
  };
  session = new SessionKeeper({ rsm, clock: env.clock, id: client.id, ttlMs, viaPrimary, onLost: (reason) => lockClient?.loseSession(reason) });
  try {
    await session.open(connectTimeoutMs);
  } catch (error) {
    session.stop();
    await client.abandon(error as LockError);
    throw error;
  }
  lockClient.attachSession(session);
  return lockClient;
}

function checkName(name: unknown): asserts name is string {
  if (!isLockName(name)) throw new LockError('LOCK_BAD_NAME', 'a lock name is a string of 1 to 256 UTF-8 bytes');
}

/** A replica id ("3772" or host:port) to its address; anything else is used as it is. */
function addressOfMember(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}
