/**
 * The caching lock client: the async API over `CachingLockClientCore` (cache-client-core.ts).
 *
 * Many local callers share one client. A lock the client has cached is handed from caller to
 * caller without touching the network; the client asks the server only when it does not have the
 * lock, and gives it back only when the server revokes it (or at close, or when the server answers
 * IOERR and it must make room: cache-client-core.ts rule 3). Revoke and retry arrive
 * as RPCs on the client's callback endpoint, whose address is the client's id at the server.
 *
 * The server is reached through a `LockServerConnection`: `directConnection` talks to an
 * unreplicated server over RPC; the RSM client will provide another implementation, so the same
 * client works in both setups.
 *
 * Errors (`LockError`, stable codes):
 * - LOCK_ABORTED: the caller's AbortSignal fired while it waited; it did not get the lock.
 * - LOCK_TIMEOUT: `timeoutMs` passed while it waited for a lock the server is busy with.
 * - LOCK_RPC_FAILED: the wait ended (timeout) while the server could not be reached; `cause` is the
 *   last failure. Also thrown by `directConnection` for a failed exchange.
 * - LOCK_CLIENT_CLOSED: the client was closed before or while the caller waited.
 * - LOCK_NOT_HELD: release of a lock no local caller holds.
 * A caller that gave up (abort, timeout) certainly did not get the lock: waiting callers are taken
 * off the queue synchronously, and a lock is handed to a caller only by resolving its promise.
 *
 * Host code: time comes only from the injected Clock.
 */
import { AssertionError, assert } from '../lib/assert.js';
import type { Clock, Network, Random, Timer } from '../lib/env.js';
import { RpcError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import { RpcEndpoint, type RpcClient, type RpcOptions } from '../lib/rpc.js';
import { CallbackStatus, LockStatus, cacheCallbackProtocol, cacheLockProtocol, isLockName, type CacheLockArgs } from './cache-protocol.js';
import { CachingLockClientCore, type CacheState, type ClientAction } from './cache-client-core.js';
import { LockError, formatLockName, type AcquireOptions } from './protocol.js';

const log = logger('lockclient:cache');

/** An answer to acquire or tryacquire: the lock status and, with OK, the grant's fencing token. */
export interface AcquireAnswer {
  readonly status: number;
  readonly token: number;
}

/** How the client reaches the lock service. */
export interface LockServerConnection {
  /**
   * Resolves with the status (OK, RETRY, …) and token; rejects when no answer came (outcome
   * unknown). `tryOnly`: a tryacquire, which the server never queues.
   */
  acquire(lid: string, id: string, xid: number, tryOnly?: boolean): Promise<AcquireAnswer>;
  /** Resolves with the status (OK, NOENT, …). */
  release(lid: string, id: string, xid: number): Promise<number>;
  /** Optional: called by the client's close(). */
  close?(): void;
}

export interface DirectConnectionOptions {
  /** Deadline of one acquire or release exchange (retransmissions included). Default: the endpoint's. */
  readonly callTimeoutMs?: number;
}

/**
 * A connection to an unreplicated caching lock server at `serverAddress`, through an RpcClient of
 * its own on `rpc`. A failed exchange rejects with LOCK_RPC_FAILED (cause: the RpcError).
 */
export function directConnection(
  rpc: RpcEndpoint,
  serverAddress: string,
  options: DirectConnectionOptions = {},
): LockServerConnection & { close(): void } {
  const client: RpcClient = rpc.newClient(serverAddress);
  const callTimeoutMs = options.callTimeoutMs ?? rpc.options.callTimeoutMs;
  const call = async (which: 'acquire' | 'release' | 'tryacquire', args: CacheLockArgs): Promise<AcquireAnswer> => {
    const reply = await client.call(cacheLockProtocol[which], args, { timeoutMs: callTimeoutMs });
    if (reply.ok) return { status: reply.status, token: reply.result };
    throw new LockError('LOCK_RPC_FAILED', `${which} ${formatLockName(args.lid)}: ${reply.error.message}`, { cause: reply.error });
  };
  return {
    acquire: (lid, id, xid, tryOnly) => call(tryOnly === true ? 'tryacquire' : 'acquire', { lid, id, xid }),
    release: async (lid, id, xid) => (await call('release', { lid, id, xid })).status,
    close: () => client.close(),
  };
}

export const DEFAULT_RETRY_INTERVAL_MS = 1_000;
export const DEFAULT_CACHE_ACQUIRE_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;

export interface CachingLockClientOptions {
  /**
   * The client's RPC endpoint. Revoke and retry are served on it unless `callbackEndpoint` is
   * given, so it must then be a listening endpoint; its address is the client id.
   */
  readonly rpc: RpcEndpoint;
  readonly server: LockServerConnection;
  /** Default: the endpoint's clock. */
  readonly clock?: Clock;
  /** A listening endpoint for revoke and retry (its address is the client id). One client per endpoint. */
  readonly callbackEndpoint?: RpcEndpoint;
  /** Re-ask this long after RETRY (in case the retry callback is lost) or after a failure. Default 1000 ms. */
  readonly retryIntervalMs?: number;
  /** Default deadline of acquire(). Default 10 minutes. */
  readonly acquireTimeoutMs?: number;
  /** How long close() waits for cached locks to go back to the server. Default 2000 ms. */
  readonly closeTimeoutMs?: number;
  /** The first xid (≥ 1). Default 1. */
  readonly firstXid?: number;
  /** Check the core's invariants after every event (tests). Default false. */
  readonly checkInvariants?: boolean;
  /** Endpoints to close with the client (those it opened itself). */
  readonly ownedEndpoints?: readonly RpcEndpoint[];
  /**
   * Called (once per answer) when the service answers SESSION_EXPIRED: this client's session is
   * over. The answer is not fed to the cache; the owner is expected to `abandon` the client.
   */
  readonly onSessionExpired?: () => void;
  /** Runs in close() after the cached locks went back and before the endpoints close (endsession). */
  readonly beforeStop?: () => Promise<void>;
}

export interface CachingLockClientStats {
  /** Acquire RPCs sent (resends included). */
  readonly acquireRpcs: number;
  /** Release RPCs sent (resends and orphan releases included). */
  readonly releaseRpcs: number;
  readonly revokesReceived: number;
  readonly retriesReceived: number;
  /** Grant notices received (FIFO hand-offs to this client). */
  readonly grantsReceived: number;
  /** Local acquires granted. */
  readonly grants: number;
}

/** One local caller waiting for a lock: the core's token. */
interface Waiter {
  readonly lid: string;
  settled: boolean;
  /** Granted with the hold's fencing token, or (a try that found the lock taken) null. */
  resolve(fencingToken: number | null): void;
  reject(error: LockError): void;
}

export interface OpenCachingLockClientOptions extends Omit<CachingLockClientOptions, 'rpc' | 'server' | 'callbackEndpoint' | 'ownedEndpoints' | 'clock'> {
  readonly network: Network;
  readonly clock: Clock;
  readonly random: Random;
  /** The server to talk to directly, or a connection to use. */
  readonly server: string | LockServerConnection;
  /** Host part of the callback address; the port is ephemeral. Default 127.0.0.1. */
  readonly host?: string;
  readonly rpcOptions?: Partial<RpcOptions>;
  readonly connection?: DirectConnectionOptions;
}

export class CachingLockClient {
  /** The client id at the server: the callback address. */
  readonly id: string;
  readonly clock: Clock;
  readonly retryIntervalMs: number;
  readonly acquireTimeoutMs: number;
  readonly closeTimeoutMs: number;
  private readonly core: CachingLockClientCore<Waiter>;
  private readonly server: LockServerConnection;
  private readonly timers = new Set<Timer>();
  /** The last failed exchange per lock, for LOCK_RPC_FAILED; cleared by any answer. */
  private readonly lastFailure = new Map<string, unknown>();
  private readonly checkInvariants: boolean;
  private readonly ownedEndpoints: readonly RpcEndpoint[];
  private counters = { acquireRpcs: 0, releaseRpcs: 0, revokesReceived: 0, retriesReceived: 0, grantsReceived: 0, grants: 0 };
  private closing: Promise<void> | undefined;
  private onQuiet: (() => void) | undefined;
  /** Set once close() has finished waiting: events are ignored from then on. */
  private stopped = false;
  /** Set by abandon(): why waiting callers fail (instead of LOCK_CLIENT_CLOSED). */
  private abandonedWith: LockError | undefined;
  private readonly onSessionExpired: (() => void) | undefined;
  private readonly beforeStop: (() => Promise<void>) | undefined;

  constructor(options: CachingLockClientOptions) {
    const callbacks = options.callbackEndpoint ?? options.rpc;
    this.id = callbacks.address;
    this.clock = options.clock ?? options.rpc.clock;
    this.server = options.server;
    this.retryIntervalMs = options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_CACHE_ACQUIRE_TIMEOUT_MS;
    this.closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.checkInvariants = options.checkInvariants ?? false;
    this.ownedEndpoints = options.ownedEndpoints ?? [];
    this.onSessionExpired = options.onSessionExpired;
    this.beforeStop = options.beforeStop;
    assert(this.retryIntervalMs > 0 && this.acquireTimeoutMs >= 0 && this.closeTimeoutMs >= 0, 'bad CachingLockClient timings');
    this.core = new CachingLockClientCore<Waiter>(options.firstXid === undefined ? {} : { firstXid: options.firstXid });
    callbacks.handle(cacheCallbackProtocol.revoke, ({ lid, xid }) => {
      this.counters.revokesReceived++;
      if (!this.stopped) this.apply(this.core.revoke(lid, xid));
      return { status: CallbackStatus.OK, result: 0 };
    });
    callbacks.handle(cacheCallbackProtocol.retry, ({ lid, xid }) => {
      this.counters.retriesReceived++;
      if (!this.stopped) this.apply(this.core.retry(lid, xid));
      return { status: CallbackStatus.OK, result: 0 };
    });
    callbacks.handle(cacheCallbackProtocol.grant, ({ lid, xid, token }) => {
      this.counters.grantsReceived++;
      if (!this.stopped) this.apply(this.core.granted(lid, xid, token));
      return { status: CallbackStatus.OK, result: 0 };
    });
  }

  /**
   * Opens a client with its own listening endpoint on an ephemeral port (`host:0`), talking to
   * `server` directly (an address) or through the given connection. close() closes the endpoint.
   */
  static async open(options: OpenCachingLockClientOptions): Promise<CachingLockClient> {
    const { network, clock, random, server, host, rpcOptions, connection, ...rest } = options;
    const rpc = new RpcEndpoint(await network.listen(`${host ?? '127.0.0.1'}:0`), clock, random, rpcOptions);
    const conn = typeof server === 'string' ? directConnection(rpc, server, connection) : server;
    return new CachingLockClient({ ...rest, rpc, clock, server: conn, ownedEndpoints: [rpc] });
  }

  stats(): CachingLockClientStats {
    return { ...this.counters };
  }

  /** Acquire RPCs sent so far (a cached lock is re-acquired without any). */
  get acquireRpcCount(): number {
    return this.counters.acquireRpcs;
  }

  get isClosed(): boolean {
    return this.closing !== undefined;
  }

  /** The cache state of `lid` (for tests and diagnostics). */
  cacheStateOf(lid: string): CacheState {
    return this.core.stateOf(lid);
  }

  /** The xid of the current attempt or cached hold of `lid` (0 when none; for tests and diagnostics). */
  xidOf(lid: string): number {
    return this.core.xidOf(lid);
  }

  /** The fencing token of the cached hold of `lid` (0 when not cached). */
  fencingTokenOf(lid: string): number {
    return this.core.fencingTokenOf(lid);
  }

  /**
   * Resolves with the hold's fencing token once a local caller (this one) holds `lid`. See the
   * header for the errors.
   */
  async acquire(lid: string, options: AcquireOptions = {}): Promise<number> {
    return (await this.request(lid, false, options))!;
  }

  /**
   * Resolves with the fencing token if `lid` could be had without waiting for anyone, else null:
   * from the cache without any RPC, or after one tryacquire, which the server never queues.
   */
  async tryAcquire(lid: string, options: AcquireOptions = {}): Promise<number | null> {
    return this.request(lid, true, options);
  }

  private async request(lid: string, tryOnly: boolean, options: AcquireOptions): Promise<number | null> {
    checkLockName(lid);
    const { signal } = options;
    const timeoutMs = options.timeoutMs ?? this.acquireTimeoutMs;
    if (this.closing !== undefined) throw new LockError('LOCK_CLIENT_CLOSED', `acquire ${formatLockName(lid)}: lock client closed`);
    if (signal?.aborted) throw new LockError('LOCK_ABORTED', `acquire ${formatLockName(lid)}: aborted`, { cause: signal.reason });

    return new Promise<number | null>((resolve, reject) => {
      let timer: Timer | undefined;
      // Every answer reaches its caller in a turn of the event loop of its own, after the pending
      // I/O, never in the microtasks of the event that decided it. Otherwise callers looping
      // acquire → release on a cached lock (one caller, or several handing it to each other)
      // would never yield: the revoke that hands the lock to a remote waiter, the session's
      // keepalives and every timer (the lease deadline among them) would starve.
      const deliver = (answer: () => void): void => void this.clock.setTimer(0, answer);
      const cleanup = (): void => {
        timer?.cancel();
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        lid,
        settled: false,
        resolve: (fencingToken) => {
          cleanup();
          deliver(() => resolve(fencingToken));
        },
        reject: (error) => {
          cleanup();
          deliver(() => reject(error));
        },
      };
      const giveUp = (error: LockError): void => {
        if (waiter.settled) return;
        // Still queued (a grant settles the waiter synchronously), so it never gets the lock.
        const removed = this.core.localAbandon(lid, waiter);
        assert(removed, `waiter for ${lid} neither settled nor queued`);
        waiter.settled = true;
        waiter.reject(error);
        this.afterEvent();
      };
      const onAbort = (): void => giveUp(new LockError('LOCK_ABORTED', `acquire ${formatLockName(lid)}: aborted`, { cause: signal?.reason }));
      timer = this.clock.setTimer(timeoutMs, () => {
        const failure = this.lastFailure.get(lid);
        giveUp(
          failure === undefined
            ? new LockError('LOCK_TIMEOUT', `acquire ${formatLockName(lid)}: not granted within ${timeoutMs} ms`)
            : new LockError('LOCK_RPC_FAILED', `acquire ${formatLockName(lid)}: lock server unreachable`, { cause: failure }),
        );
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.apply(tryOnly ? this.core.localTryAcquire(lid, waiter) : this.core.localAcquire(lid, waiter));
    });
  }

  /**
   * Releases `lid`, held by a local caller (locks belong to the client, as in the lab, so any of
   * its callers may release). Local: it resolves at once; the lock goes back to the server only
   * if the server asked for it.
   */
  async release(lid: string): Promise<void> {
    checkLockName(lid);
    if (!this.core.isLocallyHeld(lid)) {
      const code = this.closing !== undefined ? 'LOCK_CLIENT_CLOSED' : 'LOCK_NOT_HELD';
      throw new LockError(code, `release ${formatLockName(lid)}: not held by a caller of ${this.id}`);
    }
    this.apply(this.core.localRelease(lid));
  }

  /**
   * Fails every waiting caller with LOCK_CLIENT_CLOSED, gives every cached lock back to the server
   * (a caller still holding one loses it), waits up to `closeTimeoutMs` for that, then stops and
   * closes the endpoints it owns. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    const quiet = new Promise<void>((resolve) => (this.onQuiet = resolve));
    this.apply(this.core.close());
    let graceTimer: Timer | undefined;
    const grace = new Promise<void>((resolve) => (graceTimer = this.clock.setTimer(this.closeTimeoutMs, resolve)));
    await Promise.race([quiet, grace]);
    graceTimer?.cancel();
    if (!this.core.isQuiet) log('%s: closing with locks still in flight', this.id);
    if (this.beforeStop !== undefined) {
      try {
        await this.beforeStop();
      } catch (error) {
        log('%s: before stop: %s', this.id, describe(error));
      }
    }
    this.stopped = true;
    for (const timer of this.timers) timer.cancel();
    this.timers.clear();
    this.server.close?.();
    await Promise.all(this.ownedEndpoints.map((rpc) => rpc.close()));
  }

  /**
   * The session is over (expired at the service, or not renewed in time): the cache forgets every
   * lock without giving anything back (the service frees them itself), waiting callers fail with
   * `error`, and the endpoints close. Idempotent; after close() it does nothing.
   */
  abandon(error: LockError): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.abandonedWith = error;
    this.closing = (async () => {
      const actions = this.core.close();
      this.stopped = true;
      for (const action of actions) {
        if (action.type !== 'failLocal' || action.token.settled) continue;
        action.token.settled = true;
        action.token.reject(error);
      }
      for (const timer of this.timers) timer.cancel();
      this.timers.clear();
      this.server.close?.();
      await Promise.all(this.ownedEndpoints.map((rpc) => rpc.close()));
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------
  // Carrying out the core's actions

  private apply(actions: ReadonlyArray<ClientAction<Waiter>>): void {
    for (const action of actions) {
      switch (action.type) {
        case 'sendAcquire':
          this.sendAcquire(action.lid, action.xid, action.tryOnly === true);
          break;
        case 'sendRelease':
          this.sendRelease(action.lid, action.xid, action.orphan === true);
          break;
        case 'grantLocal': {
          const waiter = action.token;
          assert(!waiter.settled, `grant of ${action.lid} to a settled caller`);
          waiter.settled = true;
          this.counters.grants++;
          waiter.resolve(action.fencingToken);
          break;
        }
        case 'failLocal': {
          const waiter = action.token;
          if (waiter.settled) break;
          waiter.settled = true;
          if (action.reason === 'busy') waiter.resolve(null);
          else waiter.reject(this.abandonedWith ?? new LockError('LOCK_CLIENT_CLOSED', `acquire ${formatLockName(action.lid)}: lock client closed`));
          break;
        }
        case 'startRetryTimer': {
          const { lid } = action;
          const timer = this.clock.setTimer(this.retryIntervalMs, () => {
            this.timers.delete(timer);
            if (!this.stopped) this.apply(this.core.retryTimerFired(lid));
          });
          this.timers.add(timer);
          break;
        }
      }
    }
    this.afterEvent();
  }

  private afterEvent(): void {
    if (this.checkInvariants) this.core.invariants();
    if (this.onQuiet !== undefined && this.core.isQuiet) {
      this.onQuiet();
      this.onQuiet = undefined;
    }
  }

  private sendAcquire(lid: string, xid: number, tryOnly: boolean): void {
    this.counters.acquireRpcs++;
    log('%s: %s %s xid %d', this.id, tryOnly ? 'tryacquire' : 'acquire', formatLockName(lid), xid);
    settleOf(() => this.server.acquire(lid, this.id, xid, tryOnly)).then(
      ({ status, token }) => {
        this.lastFailure.delete(lid);
        if (status === LockStatus.SESSION_EXPIRED) {
          this.onSessionExpired?.();
          return;
        }
        if (!this.stopped) this.apply(this.core.acquireReplied(lid, xid, status, token));
      },
      (error: unknown) => {
        if (error instanceof AssertionError) throw error; // a bug: crash (unhandled rejection)
        log('%s: acquire %s xid %d failed: %s', this.id, formatLockName(lid), xid, describe(error));
        this.lastFailure.set(lid, error);
        if (!this.stopped) this.apply(this.core.acquireFailed(lid, xid));
        this.closeIfPermanent(error);
      },
    );
  }

  private sendRelease(lid: string, xid: number, orphan: boolean): void {
    this.counters.releaseRpcs++;
    log('%s: release %s xid %d%s', this.id, formatLockName(lid), xid, orphan ? ' (orphan)' : '');
    settleOf(() => this.server.release(lid, this.id, xid)).then(
      (status) => {
        if (status === LockStatus.SESSION_EXPIRED) {
          this.onSessionExpired?.();
          return;
        }
        if (orphan) return;
        this.lastFailure.delete(lid);
        if (!this.stopped) this.apply(this.core.releaseReplied(lid, xid, status));
      },
      (error: unknown) => {
        if (error instanceof AssertionError) throw error; // a bug: crash (unhandled rejection)
        if (orphan) return; // the server will revoke again if it still thinks we hold it
        this.lastFailure.set(lid, error);
        if (!this.stopped) this.apply(this.core.releaseFailed(lid, xid));
        this.closeIfPermanent(error);
      },
    );
  }

  /** An endpoint closed under us cannot recover: close the client (callers get LOCK_CLIENT_CLOSED). */
  private closeIfPermanent(error: unknown): void {
    const cause = error instanceof LockError ? error.cause : error;
    if (cause instanceof RpcError && cause.code === 'RPC_CLOSED' && this.closing === undefined) {
      log('%s: connection closed; closing the client', this.id);
      void this.close();
    }
  }
}

/** Calls `fn` now; a synchronous throw becomes a rejection (a connection must not break `apply`). */
function settleOf<T>(fn: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}

/** A bad name is refused before anything is sent. */
function checkLockName(lid: string): void {
  if (!isLockName(lid)) throw new LockError('LOCK_BAD_NAME', 'a lock name is a string of 1 to 256 UTF-8 bytes');
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${(error as { code?: string }).code ?? error.name}: ${error.message}`;
  return String(error);
}
