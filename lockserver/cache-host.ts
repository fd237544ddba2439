/**
 * Runs a lock `StateMachine` (normally `CachingLockServer`) as a service on an `RpcEndpoint`,
 * without replication: `lock_server PORT` in caching mode. Two parts:
 *
 * - `CachingLockHost` registers acquire, release and stat; each handler turns its arguments back
 *   into the request bytes the state machine takes (as the RSM will hand them over), calls
 *   `execute`, answers with the status and pokes the notifier. Handlers never wait.
 * - `Notifier` sends the state machine's `pendingNotices()` as revoke/retry RPCs to the client ids
 *   (callback addresses), only while `isPrimary()` holds. It is separate so that the replicated
 *   host can run it on the primary; see its comment for the driver obligations.
 *
 * This is host code: it does I/O through the RpcEndpoint and reads time only from the injected
 * Clock.
 */
import { assert } from '../lib/assert.js';
import type { Clock, Network, Random, Timer } from '../lib/env.js';
import { logger } from '../lib/log.js';
import { RpcEndpoint, type HandlerReply, type RpcClient, type RpcOptions } from '../lib/rpc.js';
import { localContext, type StateMachine } from '../rsm/state-machine.js';
import type { Decoded } from '../lib/codec.js';
import {
  CacheProc,
  cacheCallbackProtocol,
  cacheLockProtocol,
  decodeI32Reply,
  decodeTokenReply,
  describeNotice,
  encodeCacheLockRequest,
  encodeCacheStatRequest,
  type Notice,
} from './cache-protocol.js';
import { CachingLockServer, type CachingLockServerLimits } from './cache-server.js';

const log = logger('lockserver:notifier');
const hostLog = logger('lockserver:host');

/** A lock service state machine: a StateMachine whose state implies revoke/retry notices. */
export interface LockStateMachine extends StateMachine {
  pendingNotices(): readonly Notice[];
}

export const DEFAULT_NOTICE_RESEND_MS = 1_000;
export const DEFAULT_MAX_OUTSTANDING_NOTICES = 64;
export const DEFAULT_NOTICE_CALL_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_NOTICE_DESTINATIONS = 1_024;

export interface NotifierOptions {
  /** The endpoint that calls clients' callback addresses. */
  readonly rpc: RpcEndpoint;
  readonly clock: Clock;
  /** The notices owed right now (a pure function of the service state). */
  readonly pendingNotices: () => readonly Notice[];
  /** Only the primary sends; unreplicated hosts pass `() => true`. */
  readonly isPrimary: () => boolean;
  /** A notice still pending this long after it was sent is sent again. Default 1000 ms. */
  readonly noticeResendMs?: number;
  /** Notice RPCs in flight at once; the rest wait for a slot. Default 64. */
  readonly maxOutstanding?: number;
  /** Deadline of one notice RPC (it retransmits meanwhile). Default 5000 ms. */
  readonly callTimeoutMs?: number;
  /**
   * RpcClients kept for client callback addresses, least recently used evicted (and closed, which
   * fails a notice in flight to it; the notice is sent again later). Default 1024.
   */
  readonly maxDestinations?: number;
}

/**
 * Sends revoke and retry notices.
 *
 * Driver obligations (what the host must do):
 * 1. Call `poke()` after every `execute` (and after a state transfer or a view change): a pass
 *    then runs once the caller's synchronous work is done (a microtask), never inside it. Every
 *    execute of one batch shares that pass, and the notices go out in the same turn as the
 *    batch's replies: a grant to the next holder is on the hand-off's critical path.
 * 2. Make `isPrimary()` true only on the node that should talk to clients. While it is false the
 *    notifier sends nothing and forgets what it sent, so a node that becomes primary sends every
 *    pending notice at once on its next pass (poke it on the view change).
 * 3. Call `stop()` when the node stops (before closing the endpoint); in-flight notice RPCs end.
 *
 * A pass sends each pending notice that is not in flight and was not sent in the last
 * `noticeResendMs`, up to `maxOutstanding` in flight; while anything is pending it re-runs every
 * `noticeResendMs`. Replies are not interpreted, with one exception: a `grant` the client answered
 * is not sent again (until the next `resendAll`). A grant stays owed until the holder's next
 * request on the lock, and a holder that got it uses the lock without asking again, so that
 * request may be a long time coming; every other notice the state implies is resent, since the
 * state says whether it is still owed and clients ignore the duplicates.
 */
export class Notifier {
  readonly noticeResendMs: number;
  readonly maxOutstanding: number;
  readonly callTimeoutMs: number;
  readonly maxDestinations: number;
  /** Notice RPCs sent so far (for tests and statistics). */
  sent = 0;
  /** Notice key → when last sent (only notices still pending at the last pass). */
  private readonly lastSent = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  /** Grant notices the client answered (so it has acted on them): not resent. */
  private readonly delivered = new Set<string>();
  /** Callback address → its RpcClient, least recently used first. */
  private readonly destinations = new Map<string, RpcClient>();
  private passTimer: Timer | undefined;
  private passDue = Infinity;
  /** A poke's pass is queued as a microtask. */
  private pokeQueued = false;
  /** A pass left notices unsent for want of a slot: a finishing call pokes. */
  private starved = false;
  private stopped = false;

  constructor(private readonly options: NotifierOptions) {
    this.noticeResendMs = options.noticeResendMs ?? DEFAULT_NOTICE_RESEND_MS;
    this.maxOutstanding = options.maxOutstanding ?? DEFAULT_MAX_OUTSTANDING_NOTICES;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_NOTICE_CALL_TIMEOUT_MS;
    this.maxDestinations = options.maxDestinations ?? DEFAULT_MAX_NOTICE_DESTINATIONS;
    assert(Number.isInteger(this.maxDestinations) && this.maxDestinations >= 1, 'maxDestinations must be an integer ≥ 1');
    assert(this.noticeResendMs > 0, 'noticeResendMs must be > 0');
    assert(Number.isInteger(this.maxOutstanding) && this.maxOutstanding >= 1, 'maxOutstanding must be an integer ≥ 1');
    assert(this.callTimeoutMs > 0, 'callTimeoutMs must be > 0');
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Notice RPCs in flight. */
  get outstanding(): number {
    return this.inFlight.size;
  }

  /** Runs a pass once the caller's synchronous work is done (pokes meanwhile share it). */
  poke(): void {
    if (this.pokeQueued || this.stopped) return;
    this.pokeQueued = true;
    queueMicrotask(() => {
      this.pokeQueued = false;
      this.pass();
    });
  }

  /**
   * Forgets when each notice was last sent and runs a pass soon: every pending notice not in
   * flight goes out again. For view and primary changes, where nobody knows whether the old
   * primary's notices arrived.
   */
  resendAll(): void {
    this.lastSent.clear();
    this.delivered.clear();
    this.poke();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.passTimer?.cancel();
    this.passTimer = undefined;
    this.passDue = Infinity;
    // Closing the RpcClients ends the notice calls in flight (RPC_CLOSED).
    for (const client of this.destinations.values()) client.close();
    this.destinations.clear();
  }

  private schedule(delayMs: number): void {
    if (this.isStopped) return;
    const due = this.options.clock.now() + Math.max(0, delayMs);
    if (this.passTimer !== undefined && this.passDue <= due) return; // an earlier pass is coming
    this.passTimer?.cancel();
    this.passDue = due;
    this.passTimer = this.options.clock.setTimer(Math.max(0, delayMs), () => {
      this.passTimer = undefined;
      this.passDue = Infinity;
      this.pass();
    });
  }

  private pass(): void {
    if (this.isStopped) return;
    const notices = this.options.pendingNotices();
    if (notices.length === 0) {
      this.lastSent.clear();
      this.delivered.clear();
      return;
    }
    if (!this.options.isPrimary()) {
      this.lastSent.clear();
      this.delivered.clear();
      this.schedule(this.noticeResendMs); // keep looking: this node may become primary
      return;
    }
    const now = this.options.clock.now();
    const pending = new Set<string>();
    let nextDue = Infinity;
    this.starved = false;
    for (const notice of notices) {
      const key = describeNotice(notice);
      pending.add(key);
      if (this.inFlight.has(key) || this.delivered.has(key)) continue; // in flight: the timer resends it if still owed; delivered: never
      const last = this.lastSent.get(key);
      if (last !== undefined && now - last < this.noticeResendMs) {
        nextDue = Math.min(nextDue, last + this.noticeResendMs);
        continue;
      }
      if (this.inFlight.size >= this.maxOutstanding) {
        this.starved = true;
        continue;
      }
      this.send(notice, key);
      this.lastSent.set(key, now);
      nextDue = Math.min(nextDue, now + this.noticeResendMs);
    }
    for (const key of [...this.lastSent.keys()]) if (!pending.has(key)) this.lastSent.delete(key);
    for (const key of [...this.delivered]) if (!pending.has(key)) this.delivered.delete(key);
    // In-flight notices are pending too: look again one interval from now in any case.
    this.schedule(Number.isFinite(nextDue) ? nextDue - now : this.noticeResendMs);
  }

  private send(notice: Notice, key: string): void {
    const procedure = cacheCallbackProtocol[notice.kind];
    this.inFlight.add(key);
    this.sent++;
    log('sending %s', key);
    void this.destination(notice.to)
      .call(procedure, { lid: notice.lid, xid: notice.xid, token: notice.token }, { timeoutMs: this.callTimeoutMs })
      .then((reply) => {
        this.inFlight.delete(key);
        if (!reply.ok) log('%s: %s', key, reply.error.code);
        else if (notice.kind === 'grant' && !this.stopped) this.delivered.add(key);
        if (this.starved) this.poke();
      });
  }

  private destination(address: string): RpcClient {
    let client = this.destinations.get(address);
    if (client !== undefined && !client.isClosed) {
      this.destinations.delete(address); // re-inserted below: Map order is the LRU order
    } else {
      client = this.options.rpc.newClient(address);
      if (this.destinations.size >= this.maxDestinations) {
        const [oldest, evicted] = this.destinations.entries().next().value as [string, RpcClient];
        this.destinations.delete(oldest);
        evicted.close();
      }
    }
    this.destinations.set(address, client);
    return client;
  }
}

export interface CachingLockHostOptions {
  /** The endpoint clients call (and from which notices go out). */
  readonly rpc: RpcEndpoint;
  /** The service; default a new CachingLockServer with `limits`. */
  readonly stateMachine?: LockStateMachine;
  readonly limits?: Partial<CachingLockServerLimits>;
  /** Default: the endpoint's clock. */
  readonly clock?: Clock;
  /** Default: always (unreplicated). */
  readonly isPrimary?: () => boolean;
  readonly noticeResendMs?: number;
  readonly maxOutstandingNotices?: number;
  readonly noticeCallTimeoutMs?: number;
}

/** The unreplicated caching lock service on one RpcEndpoint. */
export class CachingLockHost {
  readonly stateMachine: LockStateMachine;
  readonly notifier: Notifier;
  /** Requests executed, by procedure id (for tests and statistics). */
  readonly executed = new Map<number, number>();
  private readonly clock: Clock;
  private executedCount = 0;

  constructor(options: CachingLockHostOptions) {
    const { rpc } = options;
    this.clock = options.clock ?? rpc.clock;
    this.stateMachine = options.stateMachine ?? new CachingLockServer(options.limits);
    this.notifier = new Notifier({
      rpc,
      clock: options.clock ?? rpc.clock,
      pendingNotices: () => this.stateMachine.pendingNotices(),
      isPrimary: options.isPrimary ?? (() => true),
      ...(options.noticeResendMs === undefined ? {} : { noticeResendMs: options.noticeResendMs }),
      ...(options.maxOutstandingNotices === undefined ? {} : { maxOutstanding: options.maxOutstandingNotices }),
      ...(options.noticeCallTimeoutMs === undefined ? {} : { callTimeoutMs: options.noticeCallTimeoutMs }),
    });
    rpc.handle(cacheLockProtocol.acquire, (args) => this.run(CacheProc.ACQUIRE, encodeCacheLockRequest(args), decodeTokenReply));
    rpc.handle(cacheLockProtocol.tryacquire, (args) => this.run(CacheProc.TRY_ACQUIRE, encodeCacheLockRequest(args), decodeTokenReply));
    rpc.handle(cacheLockProtocol.release, (args) => this.run(CacheProc.RELEASE, encodeCacheLockRequest(args), decodeTokenReply));
    rpc.handle(cacheLockProtocol.stat, (args) => this.run(CacheProc.STAT, encodeCacheStatRequest(args), decodeI32Reply));
  }

  /** Stops the notifier. The RpcEndpoint is the caller's and stays open. */
  close(): void {
    this.notifier.stop();
  }

  private run(proc: number, request: Uint8Array, decodeReply: (bytes: Uint8Array) => Decoded<number>): HandlerReply<number> {
    // Unreplicated: this host is its own "primary" and stamps its own clock.
    const { status, reply } = this.stateMachine.execute(proc, request, localContext(this.clock.now(), ++this.executedCount));
    this.executed.set(proc, (this.executed.get(proc) ?? 0) + 1);
    this.notifier.poke();
    const decoded = decodeReply(reply);
    // A reply we cannot forward is the state machine's bug; the RPC layer answers HANDLER_FAILED.
    if (!decoded.ok) throw new Error(`proc ${proc.toString(16)}: undecodable reply: ${decoded.reason}`);
    hostLog('proc %s → status %d', proc.toString(16), status);
    return { status, result: decoded.value };
  }
}

export interface StartCachingLockServerOptions extends Omit<CachingLockHostOptions, 'rpc' | 'clock'> {
  readonly network: Network;
  readonly clock: Clock;
  readonly random: Random;
  /** "host:port"; port 0 picks a free one. */
  readonly address: string;
  readonly rpcOptions?: Partial<RpcOptions>;
}

export interface RunningCachingLockServer {
  readonly address: string;
  readonly rpc: RpcEndpoint;
  readonly host: CachingLockHost;
  close(): Promise<void>;
}

/** Listens at `address` and serves the caching lock service there (the `lock_server PORT` body). */
export async function startCachingLockServer(options: StartCachingLockServerOptions): Promise<RunningCachingLockServer> {
  const { network, clock, random, address, rpcOptions, ...hostOptions } = options;
  const rpc = new RpcEndpoint(await network.listen(address), clock, random, rpcOptions);
  const host = new CachingLockHost({ ...hostOptions, rpc, clock });
  return {
    address: rpc.address,
    rpc,
    host,
    close: async () => {
      host.close();
      await rpc.close();
    },
  };
}
