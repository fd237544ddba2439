/**
 * The lock API for applications: `connect()` to the replicated lock service, then `acquire`,
 * `tryAcquire` or `withLock` by name. Each `LockClient` owns one RsmClient and one callback
 * endpoint, shared by all its locks; a `Lock` carries the grant's fencing token and a signal.
 *
 *   const locks = await connect({ members: ['127.0.0.1:3772', '127.0.0.1:3774', '127.0.0.1:3776'] });
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
 * LOCK_CLIENT_CLOSED, and LOCK_LOST as the reason of `lock.signal` when the client lost the lock
 * (it was closed while the lock was held).
 */
import { EventEmitter } from 'node:events';
import { realClock } from '../lib/clock.js';
import type { Clock, Network, Random } from '../lib/env.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { RsmClient } from '../rsm/client.js';
import { CachingLockClient } from './cache-client.js';
import { CacheProc, LockStatus, decodeLockInspection, encodeCacheStatRequest, isLockName, type LockInspection } from './cache-protocol.js';
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
  /** Replica addresses ("127.0.0.1:3772"); one is enough, the client learns the others. */
  readonly members: readonly string[];
  /** Host of the callback endpoint (revoke/retry/grant arrive there). Default 127.0.0.1. */
  readonly host?: string;
  /** Default deadline of acquire (ms). Default 10 minutes. */
  readonly acquireTimeoutMs?: number;
  /** An environment other than real TCP, clock and randomness (tests, the simulator). */
  readonly env?: { readonly network: Network; readonly clock: Clock; readonly random: Random };
}

/** Limits checked by connect (LOCK_BAD_OPTION otherwise). */
export const MAX_CONNECT_MEMBERS = 64;

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

  constructor(
    private readonly client: CachingLockClient,
    private readonly rsm?: RsmClient,
  ) {
    super();
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
    const token = await this.client.acquire(name, options);
    return this.track(name, token);
  }

  /**
   * The lock `name` if it can be had without waiting for anyone, else null: no round trip when
   * this client caches it free, one otherwise (the service never queues a try).
   */
  async tryAcquire(name: string): Promise<Lock | null> {
    checkName(name);
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
    await this.client.close();
  }

  /** @internal */
  async releaseHandle(handle: HeldLock): Promise<void> {
    if (!this.handles.delete(handle)) return;
    await this.client.release(handle.name);
  }

  private track(name: string, token: number): Lock {
    const handle = new HeldLock(name, token, this);
    this.handles.add(handle);
    return handle;
  }
}

/**
 * Connects to the replicated lock service (`npm start` runs one at 127.0.0.1:3772/3774/3776).
 * Nothing is sent until the first acquire.
 */
export async function connect(options: ConnectOptions): Promise<LockClient> {
  const members = options.members;
  if (!Array.isArray(members) || members.length === 0 || members.length > MAX_CONNECT_MEMBERS || !members.every((m) => typeof m === 'string' && m.length > 0)) {
    throw new LockError('LOCK_BAD_OPTION', `connect: members must list 1 to ${MAX_CONNECT_MEMBERS} replica addresses`);
  }
  const timeout = options.acquireTimeoutMs;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout >= 0)) {
    throw new LockError('LOCK_BAD_OPTION', `connect: acquireTimeoutMs must be a number ≥ 0, got ${timeout}`);
  }
  const env = options.env ?? { network: tcpNetwork(), clock: realClock, random: osRandom() };
  const rpc = new RpcEndpoint(await env.network.listen(`${options.host ?? '127.0.0.1'}:0`), env.clock, env.random.fork());
  const rsm = new RsmClient({ rpc, knownMembers: [...members], clock: env.clock, addressOf: addressOfMember });
  const client = new CachingLockClient({
    rpc,
    clock: env.clock,
    server: rsmConnection(rsm),
    ownedEndpoints: [rpc],
    ...(timeout === undefined ? {} : { acquireTimeoutMs: timeout }),
  });
  return new LockClient(client, rsm);
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
