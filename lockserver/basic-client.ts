/**
 * The basic (lab 1) lock client: a thin stub over the three RPCs, with the retries a user should
 * not have to write. Its client id `clt` is the nonce of its own RpcClient, so every BasicLockClient
 * is a distinct client to the server, even when several share one RpcEndpoint.
 *
 * Retries (all bounded by the operation's deadline):
 * - RETRY from the server (table full) and RPC_OVERLOADED (the server refused without running the
 *   request): back off with jitter and send again; neither had any effect.
 * - RPC_OLDSRV (the server restarted; the request did not run on the new instance): send once more
 *   to the new instance. The lock table was lost with the old instance anyway.
 * Everything else fails the operation with a LockError.
 */
import { sleep } from '../lib/clock.js';
import { RpcError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import type { Procedure, RpcClient, RpcEndpoint } from '../lib/rpc.js';
import { LockError, LockStatus, formatLockId, isLockId, lockProtocol, type AcquireOptions, type LockArgs } from './protocol.js';

const log = logger('lockclient');

export interface BasicLockClientOptions {
  /** Deadline of one acquire, time spent waiting for the lock included. */
  readonly acquireTimeoutMs: number;
  /** Deadline of one release or stat. Default: the endpoint's `callTimeoutMs`. */
  readonly callTimeoutMs: number;
  /** Backoff before re-sending after RETRY or RPC_OVERLOADED: doubles from min to max. */
  readonly retryMsMin: number;
  readonly retryMsMax: number;
}

export const DEFAULT_ACQUIRE_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_RETRY_MS_MIN = 100;
export const DEFAULT_RETRY_MS_MAX = 5_000;

type Reply = { readonly status: number; readonly result: number };

export class BasicLockClient {
  readonly options: BasicLockClientOptions;
  private readonly rpcClient: RpcClient;
  /** Fires on close(): stops backoff sleeps; closing the RpcClient fails calls in flight. */
  private readonly closing = new AbortController();

  constructor(
    private readonly rpc: RpcEndpoint,
    readonly server: string,
    options: Partial<BasicLockClientOptions> = {},
  ) {
    this.options = {
      acquireTimeoutMs: DEFAULT_ACQUIRE_TIMEOUT_MS,
      callTimeoutMs: rpc.options.callTimeoutMs,
      retryMsMin: DEFAULT_RETRY_MS_MIN,
      retryMsMax: DEFAULT_RETRY_MS_MAX,
      ...options,
    };
    // A client of our own (not the endpoint's cached one): its nonce is our identity at the server.
    this.rpcClient = rpc.newClient(server);
  }

  /** This client's id at the server (the lab's clt). */
  get clt(): number {
    return this.rpcClient.nonce;
  }

  /**
   * Resolves once the server has granted `lid` to this client. Waits as long as needed, up to
   * `acquireTimeoutMs`, unless `signal` aborts (LOCK_ABORTED).
   *
   * The protocol cannot withdraw an acquire the server has queued, so an abort only stops this
   * caller's wait: the request stays queued at the server, and if the server grants it later this
   * client releases the lock again at once, so that an abandoned acquire does not keep the lock
   * forever. Until then the lock may be held in this client's name (an aborted acquire's outcome is
   * unknown, not "failed").
   */
  async acquire(lid: number, options: AcquireOptions = {}): Promise<void> {
    checkLockId(lid);
    const { signal } = options;
    if (signal?.aborted) throw this.stoppedError('acquire', lid, signal);
    // The call itself does not get the signal: aborting it would forget a request that is queued
    // at the server. The signal only stops the waiting below and further attempts in invoke().
    const attempt = this.invoke(lockProtocol.acquire, lid, options.timeoutMs ?? this.options.acquireTimeoutMs, signal, false);
    if (signal === undefined) return expectGranted(await attempt, lid);

    return new Promise<void>((resolve, reject) => {
      let abandoned = false;
      const onAbort = (): void => {
        abandoned = true;
        reject(this.stoppedError('acquire', lid, signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      attempt.then(
        (reply) => {
          signal.removeEventListener('abort', onAbort);
          if (!abandoned) {
            try {
              resolve(expectGranted(reply, lid));
            } catch (error) {
              reject(error);
            }
          } else if (reply.status === LockStatus.OK) {
            this.releaseAbandoned(lid);
          }
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          if (!abandoned) reject(error);
        },
      );
    });
  }

  /** Releases `lid`. LOCK_NOT_HELD if the server says this client does not hold it. */
  async release(lid: number): Promise<void> {
    checkLockId(lid);
    const reply = await this.invoke(lockProtocol.release, lid, this.options.callTimeoutMs, undefined, true);
    if (reply.status === LockStatus.OK) return;
    if (reply.status === LockStatus.NOENT) {
      throw new LockError('LOCK_NOT_HELD', `release ${formatLockId(lid)}: not held by client ${this.clt}`);
    }
    throw unexpectedStatus('release', lid, reply.status);
  }

  /** The number of acquires the server has granted on `lid`. */
  async stat(lid: number): Promise<number> {
    checkLockId(lid);
    const reply = await this.invoke(lockProtocol.stat, lid, this.options.callTimeoutMs, undefined, true);
    if (reply.status !== LockStatus.OK) throw unexpectedStatus('stat', lid, reply.status);
    return reply.result;
  }

  /**
   * Fails every operation in progress with LOCK_CLIENT_CLOSED and refuses new ones. Locks this
   * client holds stay held at the server (the basic protocol has no leases). The RpcEndpoint is the
   * caller's and stays open.
   */
  close(): void {
    if (this.closing.signal.aborted) return;
    this.closing.abort();
    this.rpcClient.close();
  }

  /**
   * Sends one request until it gets an answer other than RETRY, retrying as the header comment
   * says. `signal` stops backoff sleeps and further attempts; it is passed to the RPC call itself
   * only when `abortCall` is true.
   */
  private async invoke(
    proc: Procedure<LockArgs, number>,
    lid: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    abortCall: boolean,
  ): Promise<Reply> {
    const { clock, random } = this.rpc;
    const deadline = clock.now() + timeoutMs;
    const stop = signal === undefined ? this.closing.signal : AbortSignal.any([signal, this.closing.signal]);
    const args: LockArgs = { clt: this.clt, lid };
    let resentAfterRestart = false;
    let backoffMs = this.options.retryMsMin;
    let lastRefusal = 'no attempt';
    for (;;) {
      if (stop.aborted) throw this.stoppedError(proc.name, lid, signal);
      const remainingMs = deadline - clock.now();
      if (remainingMs <= 0) {
        const cause = new RpcError('RPC_TIMEOUT', `${proc.name} ${formatLockId(lid)}: deadline passed (last: ${lastRefusal})`);
        throw new LockError('LOCK_RPC_FAILED', cause.message, { cause });
      }
      const reply = await this.rpcClient.call(proc, args, { timeoutMs: remainingMs, signal: abortCall ? stop : undefined });
      if (reply.ok) {
        if (reply.status !== LockStatus.RETRY) return reply;
        lastRefusal = 'RETRY';
      } else {
        const { error } = reply;
        // RPC_CLOSED without close() means the endpoint was closed under us: this client is done too.
        if (error.code === 'RPC_CLOSED') this.close();
        if (error.code === 'RPC_ABORTED' || error.code === 'RPC_CLOSED') throw this.stoppedError(proc.name, lid, signal, error);
        if (error.code === 'RPC_OLDSRV' && !resentAfterRestart) {
          log('%s %s: server %s restarted, sending to the new instance', proc.name, formatLockId(lid), this.server);
          resentAfterRestart = true;
          continue;
        }
        if (error.code !== 'RPC_OVERLOADED') {
          throw new LockError('LOCK_RPC_FAILED', `${proc.name} ${formatLockId(lid)}: ${error.message}`, { cause: error });
        }
        lastRefusal = error.code;
      }
      const delayMs = Math.min(backoffMs / 2 + random.float() * (backoffMs / 2), Math.max(0, deadline - clock.now()));
      log('%s %s: %s, retrying in %d ms', proc.name, formatLockId(lid), lastRefusal, Math.round(delayMs));
      try {
        await sleep(clock, delayMs, stop);
      } catch {
        throw this.stoppedError(proc.name, lid, signal);
      }
      backoffMs = Math.min(backoffMs * 2, this.options.retryMsMax);
    }
  }

  /** The error for an operation stopped by close() or by the caller's signal. */
  private stoppedError(what: string, lid: number, signal: AbortSignal | undefined, cause?: unknown): LockError {
    if (this.closing.signal.aborted) {
      return new LockError('LOCK_CLIENT_CLOSED', `${what} ${formatLockId(lid)}: lock client closed`, { cause });
    }
    return new LockError('LOCK_ABORTED', `${what} ${formatLockId(lid)}: aborted`, { cause: signal?.reason ?? cause });
  }

  private releaseAbandoned(lid: number): void {
    log('acquire %s: granted after the caller gave up; releasing', formatLockId(lid));
    this.release(lid).catch((error: unknown) => {
      log('release of abandoned %s failed: %O', formatLockId(lid), error);
    });
  }
}

function checkLockId(lid: number): void {
  if (!isLockId(lid)) throw new RangeError(`lock id must be a safe integer ≥ 0, got ${lid}`);
}

function expectGranted(reply: Reply, lid: number): void {
  if (reply.status !== LockStatus.OK) throw unexpectedStatus('acquire', lid, reply.status);
}

function unexpectedStatus(what: string, lid: number, status: number): LockError {
  return new LockError('LOCK_RPC_FAILED', `${what} ${formatLockId(lid)}: unexpected lock status ${status}`);
}
