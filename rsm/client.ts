/**
 * The RSM client (the lab's rsm_client): sends a service request to the primary of the replica
 * group and returns the service's status and reply.
 *
 * Finding the primary: `members` (0x9002) on any member returns its view with the primary last.
 * The client keeps a bounded list of member ids it knows (the ones it was opened with, then every
 * member list it is told, refreshed at least every `membersRefreshMs` of use) and asks them in
 * turn when it does not know the primary, so it never runs out of candidates while any member
 * answers.
 *
 * invoke (0x9001) outcomes:
 * - OK: done; the result blob holds the service's status and reply.
 * - BUSY (a view change): back off (exponential, jittered) and ask the same primary again; every
 *   few BUSYs, ask it for the members too, in case it learned of another primary.
 * - NOTPRIMARY: ask that node for the members and go to the primary it names.
 * - no answer, ERR or any RPC failure: forget the primary, find it again through the members.
 *
 * Each RPC has its own deadline (`callTimeoutMs`, the lab's 5 s); the whole invoke has an overall
 * deadline (`timeoutMs`, default: none, as in the lab) and an AbortSignal.
 *
 * A request may execute although the client never saw its reply (the primary died after its
 * backups executed it, or the reply was lost) and the client then sends it again, possibly to
 * another primary. The RPC layer's at-most-once does not span primaries: services must recognise
 * such retries themselves (the kv service and the lock service do, by client id and sequence
 * number). See rsm/README.md.
 *
 * Host-independent: time and randomness come from the injected Clock and Random.
 */
import { setMaxListeners } from 'node:events';
import { sleep } from '../lib/clock.js';
import type { Clock, Random } from '../lib/env.js';
import { RpcError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import { RsmError } from './errors.js';
import { RsmClientStatus, decodeInvokeReply, rsmClientProtocol, type InvokeReply } from './protocol.js';

const log = logger('rsm:client');

export interface RsmClientOptions {
  /** The endpoint the client calls through (a client-only endpoint is enough). */
  readonly rpc: RpcEndpoint;
  /** Member ids to start from (one id, e.g. the MASTER argument, is enough). */
  readonly knownMembers: readonly string[] | string;
  /** Default: the endpoint's clock. */
  readonly clock?: Clock;
  /** Jitter for the backoff. Default: the endpoint's PRNG. */
  readonly random?: Random;
  /** Maps a member id to its network address (default: the id itself). */
  readonly addressOf?: (id: string) => string;
  /** Deadline of one invoke RPC (default 5000 ms, the lab's). */
  readonly callTimeoutMs?: number;
  /** Deadline of one members RPC (default 1000 ms, the lab's). */
  readonly membersTimeoutMs?: number;
  /** Backoff after BUSY or after every candidate failed: from min, doubling, up to max (jittered). */
  readonly backoffMsMin?: number;
  readonly backoffMsMax?: number;
  /** Overall deadline of an invoke that does not give its own (default: none). */
  readonly invokeTimeoutMs?: number;
  /** Member ids remembered (default 64). */
  readonly knownMembersMax?: number;
  /**
   * An invoke first asks for the members when the client last heard them this long ago (default
   * 10 s), so the list of candidates follows the group even while the primary never fails.
   */
  readonly membersRefreshMs?: number;
}

export interface RsmInvokeOptions {
  readonly signal?: AbortSignal;
  /** Overall deadline of this invoke, retries included. */
  readonly timeoutMs?: number;
}

export interface RsmClientStats {
  invokes: number;
  busy: number;
  notPrimary: number;
  /** Calls to a believed primary that failed (no answer, ERR, RPC error). */
  primaryFailures: number;
  /** members calls that answered. */
  refreshes: number;
}

export const RSM_CLIENT_DEFAULTS = {
  callTimeoutMs: 5000,
  membersTimeoutMs: 1000,
  backoffMsMin: 100,
  backoffMsMax: 3000,
  invokeTimeoutMs: Infinity,
  knownMembersMax: 64,
  membersRefreshMs: 10_000,
} as const;

/** Consecutive BUSY answers after which the client asks the busy node for the members. */
const BUSY_REFRESH_EVERY = 3;
/** NOTPRIMARY redirections in a row followed without a pause. */
const NOT_PRIMARY_HOPS_MAX = 3;

export class RsmClient {
  readonly stats: RsmClientStats = { invokes: 0, busy: 0, notPrimary: 0, primaryFailures: 0, refreshes: 0 };
  private readonly rpc: RpcEndpoint;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly addressOf: (id: string) => string;
  private readonly settings: { -readonly [K in keyof typeof RSM_CLIENT_DEFAULTS]: number };
  /** Known member ids, most recently told first. */
  private known: string[];
  /** The believed primary, or undefined when it must be found. */
  private primaryId: string | undefined;
  /** Where the next search for the primary starts in `known`. */
  private cursor = 0;
  /** When a members reply last arrived. */
  private refreshedAt = -Infinity;
  /** Why the last members call failed (the cause of an RSM_TIMEOUT when nobody answers). */
  private membersFailure: unknown = new RsmError('RSM_TIMEOUT', 'no member answered');
  private readonly closer = new AbortController();

  constructor(options: RsmClientOptions) {
    // Every invoke in progress listens on the closer (through its RPC calls), and a shared client
    // legitimately has many at once (a lock client: one per lock): not a leak, so no warning.
    setMaxListeners(0, this.closer.signal);
    this.rpc = options.rpc;
    this.clock = options.clock ?? options.rpc.clock;
    this.random = options.random ?? options.rpc.random;
    this.addressOf = options.addressOf ?? ((id) => id);
    this.settings = {
      callTimeoutMs: options.callTimeoutMs ?? RSM_CLIENT_DEFAULTS.callTimeoutMs,
      membersTimeoutMs: options.membersTimeoutMs ?? RSM_CLIENT_DEFAULTS.membersTimeoutMs,
      backoffMsMin: options.backoffMsMin ?? RSM_CLIENT_DEFAULTS.backoffMsMin,
      backoffMsMax: options.backoffMsMax ?? RSM_CLIENT_DEFAULTS.backoffMsMax,
      invokeTimeoutMs: options.invokeTimeoutMs ?? RSM_CLIENT_DEFAULTS.invokeTimeoutMs,
      knownMembersMax: options.knownMembersMax ?? RSM_CLIENT_DEFAULTS.knownMembersMax,
      membersRefreshMs: options.membersRefreshMs ?? RSM_CLIENT_DEFAULTS.membersRefreshMs,
    };
    for (const [name, value] of Object.entries(this.settings)) {
      if (!(value > 0)) throw new RangeError(`RsmClient: ${name} must be > 0, got ${value}`);
    }
    if (this.settings.backoffMsMin > this.settings.backoffMsMax) throw new RangeError('RsmClient: backoffMsMin > backoffMsMax');
    const initial = typeof options.knownMembers === 'string' ? [options.knownMembers] : [...options.knownMembers];
    this.known = [...new Set(initial.filter((id) => id !== ''))].slice(0, this.settings.knownMembersMax);
    // Like the lab's constructor, the first known member is taken for the primary until told.
    this.primaryId = this.known[0];
  }

  /**
   * A client that has asked its known members for the current view once (best effort: it works
   * even if nobody answered; invoke keeps looking).
   */
  static async open(options: RsmClientOptions & { readonly signal?: AbortSignal }): Promise<RsmClient> {
    const client = new RsmClient(options);
    const deadline = client.clock.now() + client.settings.membersTimeoutMs * Math.max(1, client.known.length);
    await client.findPrimary(deadline, options.signal).catch(() => undefined);
    return client;
  }

  /** The believed primary (undefined: not known). */
  get primary(): string | undefined {
    return this.primaryId;
  }

  /** The member ids the client knows, most recently told first. */
  get knownMembers(): readonly string[] {
    return this.known;
  }

  get isClosed(): boolean {
    return this.closer.signal.aborted;
  }

  /** Fails every invoke in progress with RSM_CLOSED and refuses new ones. Does not close the endpoint. */
  close(): void {
    if (!this.isClosed) this.closer.abort(new RsmError('RSM_CLOSED', 'RSM client closed'));
  }

  /**
   * Sends `request` for service procedure `proc` to the primary, retrying as described above
   * until a primary answers OK. Resolves with the service's status and reply. Rejects with
   * RsmError: RSM_TIMEOUT, RSM_ABORTED, RSM_CLOSED, RSM_NO_MEMBERS, RSM_BAD_REPLY.
   */
  async invoke(proc: number, request: Uint8Array, options: RsmInvokeOptions = {}): Promise<InvokeReply> {
    this.stats.invokes++;
    const deadline = this.clock.now() + (options.timeoutMs ?? this.settings.invokeTimeoutMs);
    const combined = anySignal(options.signal, this.closer.signal);
    try {
      return await this.invokeLoop(proc, request, deadline, combined.signal, options.signal);
    } finally {
      combined.dispose();
    }
  }

  private async invokeLoop(proc: number, request: Uint8Array, deadline: number, signal: AbortSignal, userSignal: AbortSignal | undefined): Promise<InvokeReply> {
    let busyInARow = 0;
    let failuresInARow = 0;
    let notPrimaryInARow = 0;
    let lastFailure: unknown;
    this.checkLive(userSignal, deadline, lastFailure);
    if (this.known.length === 0) throw new RsmError('RSM_NO_MEMBERS', 'the RSM client knows no member');
    if (this.clock.now() - this.refreshedAt >= this.settings.membersRefreshMs && (await this.findPrimary(deadline, signal)) === undefined) {
      lastFailure = this.membersFailure;
    }
    for (;;) {
      this.checkLive(userSignal, deadline, lastFailure);
      const target = this.primaryId ?? (await this.findPrimary(deadline, signal));
      if (target === undefined) {
        // Nobody answered: wait, then go round again.
        lastFailure = this.membersFailure;
        await this.backoff(failuresInARow++, deadline, signal, userSignal, lastFailure);
        continue;
      }
      const reply = await this.rpc.call(
        this.addressOf(target),
        rsmClientProtocol.invoke,
        { procno: proc, req: request },
        { timeoutMs: Math.min(this.settings.callTimeoutMs, Math.max(1, deadline - this.clock.now())), signal },
      );
      if (reply.ok && reply.status === RsmClientStatus.OK) {
        const decoded = decodeInvokeReply(reply.result);
        if (!decoded.ok) throw new RsmError('RSM_BAD_REPLY', `invoke ${proc} at ${target}: ${decoded.reason}`);
        return decoded.value;
      }
      if (reply.ok && reply.status === RsmClientStatus.BUSY) {
        this.stats.busy++;
        lastFailure = new RsmError('RSM_TIMEOUT', `${target} answered BUSY`);
        await this.backoff(busyInARow++, deadline, signal, userSignal, lastFailure);
        if (busyInARow % BUSY_REFRESH_EVERY === 0) await this.refreshFrom(target, deadline, signal);
        continue;
      }
      if (reply.ok && reply.status === RsmClientStatus.NOTPRIMARY) {
        this.stats.notPrimary++;
        lastFailure = new RsmError('RSM_TIMEOUT', `${target} answered NOTPRIMARY`);
        const told = await this.refreshFrom(target, deadline, signal);
        if (told && this.primaryId !== target) {
          // Go to the primary it names. Members that disagree (views in flux) make us back off.
          if (++notPrimaryInARow > NOT_PRIMARY_HOPS_MAX) await this.backoff(notPrimaryInARow - NOT_PRIMARY_HOPS_MAX - 1, deadline, signal, userSignal, lastFailure);
          continue;
        }
        // It names itself, or does not answer: its view is stale; look elsewhere.
        this.primaryFailed(target);
      } else {
        if (!reply.ok && reply.error.code === 'RPC_ABORTED') this.checkLive(userSignal, deadline, reply.error);
        lastFailure = reply.ok ? new RsmError('RSM_TIMEOUT', `${target} answered status ${reply.status}`) : reply.error;
        log('invoke %d at %s: %s', proc, target, reply.ok ? `status ${reply.status}` : reply.error.code);
        this.primaryFailed(target);
      }
      // The first failure fails over at once; repeated ones back off.
      if (failuresInARow > 0) await this.backoff(failuresInARow, deadline, signal, userSignal, lastFailure);
      failuresInARow++;
    }
  }

  /**
   * Asks known members in turn, starting at the cursor, for the current view; stops at the first
   * that answers. Resolves the primary it named, or undefined if nobody answered.
   */
  private async findPrimary(deadline: number, signal: AbortSignal | undefined): Promise<string | undefined> {
    if (this.known.length === 0) throw new RsmError('RSM_NO_MEMBERS', 'the RSM client knows no member');
    const count = this.known.length;
    for (let i = 0; i < count; i++) {
      if (signal?.aborted || this.clock.now() >= deadline) return undefined;
      const candidate = this.known[this.cursor % this.known.length]!;
      this.cursor = (this.cursor + 1) % Math.max(1, this.known.length);
      if (await this.refreshFrom(candidate, deadline, signal)) return this.primaryId;
    }
    return undefined;
  }

  /** members from `node`; on an answer adopt its primary and remember its members. */
  private async refreshFrom(node: string, deadline: number, signal: AbortSignal | undefined): Promise<boolean> {
    const remaining = deadline - this.clock.now();
    if (remaining <= 0 || signal?.aborted) return false;
    const reply = await this.rpc.call(
      this.addressOf(node),
      rsmClientProtocol.members,
      { dummy: 0 },
      { timeoutMs: Math.min(this.settings.membersTimeoutMs, remaining), ...(signal === undefined ? {} : { signal }) },
    );
    if (!reply.ok || reply.status !== RsmClientStatus.OK || reply.result.length === 0) {
      log('members at %s: %s', node, reply.ok ? `status ${reply.status}` : reply.error.code);
      this.membersFailure = reply.ok ? new RsmError('RSM_TIMEOUT', `members at ${node}: status ${reply.status}`) : reply.error;
      return false;
    }
    const ids = reply.result.filter((id) => id !== '');
    if (ids.length === 0) return false;
    this.stats.refreshes++;
    this.refreshedAt = this.clock.now();
    this.primaryId = ids[ids.length - 1]!;
    const told = [...new Set([...ids.slice(0, -1), this.primaryId])];
    this.known = [...new Set([...told, ...this.known])].slice(0, this.settings.knownMembersMax);
    return true;
  }

  private primaryFailed(target: string): void {
    this.stats.primaryFailures++;
    if (this.primaryId === target) this.primaryId = undefined;
    // Start the next search after the failed node.
    const at = this.known.indexOf(target);
    if (at >= 0) this.cursor = (at + 1) % this.known.length;
  }

  /** Sleeps a jittered exponential backoff (attempt 0 = min), bounded by the deadline. */
  private async backoff(attempt: number, deadline: number, signal: AbortSignal, userSignal: AbortSignal | undefined, lastFailure: unknown): Promise<void> {
    const { backoffMsMin, backoffMsMax } = this.settings;
    const ceiling = Math.min(backoffMsMax, backoffMsMin * 2 ** Math.min(attempt, 30));
    const delay = Math.min(Math.round(ceiling / 2 + this.random.float() * (ceiling / 2)), Math.max(0, deadline - this.clock.now()));
    try {
      await sleep(this.clock, delay, signal);
    } catch {
      // Aborted: checkLive says by whom.
    }
    this.checkLive(userSignal, deadline, lastFailure);
  }

  private checkLive(userSignal: AbortSignal | undefined, deadline: number, lastFailure: unknown): void {
    if (this.isClosed) throw new RsmError('RSM_CLOSED', 'RSM client closed');
    if (userSignal?.aborted) throw new RsmError('RSM_ABORTED', 'invoke aborted', { cause: userSignal.reason });
    if (this.clock.now() >= deadline) {
      const why = lastFailure instanceof RpcError || lastFailure instanceof RsmError ? `: ${lastFailure.message}` : '';
      throw new RsmError('RSM_TIMEOUT', `invoke timed out${why}`, { cause: lastFailure });
    }
  }
}

/** A signal that fires when either input fires; `dispose` detaches it. */
function anySignal(a: AbortSignal | undefined, b: AbortSignal): { signal: AbortSignal; dispose(): void } {
  if (a === undefined) return { signal: b, dispose: () => {} };
  const controller = new AbortController();
  const onA = (): void => controller.abort(a.reason);
  const onB = (): void => controller.abort(b.reason);
  if (a.aborted) onA();
  else if (b.aborted) onB();
  else {
    a.addEventListener('abort', onA, { once: true });
    b.addEventListener('abort', onB, { once: true });
  }
  return {
    signal: controller.signal,
    dispose: () => {
      a.removeEventListener('abort', onA);
      b.removeEventListener('abort', onB);
    },
  };
}
