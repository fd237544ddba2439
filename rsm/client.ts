/**
 * The RSM client (the lab's rsm_client): sends a service request to the primary of the replica
 * group and returns the service's status and reply.
 *
 * Finding the primary: `members` (0x9002) on any member returns its view with the primary last.
 * The client keeps a bounded list of member ids it knows (the ones it was opened with, then every
 * member list it is told, refreshed at least every `membersRefreshMs` of use). To find the
 * primary it asks all of them **in parallel** and goes to the first answer naming a primary that
 * has not just failed it (a *suspect*; after every answer is in, a suspect is better than
 * nothing). One search runs at a time, shared by every invoke waiting for it, so a client used
 * by many callers at once does not multiply members calls.
 *
 * invoke (0x9001) outcomes:
 * - OK: done; the result blob holds the service's status and reply.
 * - BUSY (a view change): back off briefly (`busyBackoffMsMin`.., tens of ms, jittered) and ask
 *   the same primary again; every few BUSYs, search again, in case another primary took over.
 * - NOTPRIMARY: the node is alive and not the primary: suspect it, search, go where told.
 * - no answer, ERR or any RPC failure (a refused or lost connection fails at once, see
 *   lib/rpc.ts): suspect it, search. Repeated failures back off (`backoffMsMin`..).
 *
 * Each RPC has its own deadline (`callTimeoutMs`, the lab's 5 s); the whole invoke has an overall
 * deadline (`timeoutMs`, default: none, as in the lab) and an AbortSignal. When the deadline
 * passes without a primary answering OK, the invoke fails with RSM_NO_QUORUM, whose message lists
 * what each node it tried last answered.
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
import { logger } from '../lib/log.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import { RsmError } from './errors.js';
import { RsmClientStatus, decodeInvokeReply, rsmClientProtocol, type InvokeReply } from './protocol.js';

const log = logger('rsm:client');

/**
 * First and longest retransmission interval of an invoke to the primary: soon after the round
 * trip of one batch (a lost request or reply costs its client the interval), doubling so a busy
 * primary is not flooded. A duplicate of a request in progress is dropped there.
 */
const INVOKE_RETRANSMIT_MS = 8;
const INVOKE_RETRANSMIT_MS_MAX = 160;

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
  /** Backoff after repeated failures: from min, doubling, up to max (jittered). */
  readonly backoffMsMin?: number;
  readonly backoffMsMax?: number;
  /** Backoff after BUSY (a view change in progress): from min, doubling, up to max (jittered). */
  readonly busyBackoffMsMin?: number;
  readonly busyBackoffMsMax?: number;
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
  backoffMsMin: 25,
  backoffMsMax: 500,
  busyBackoffMsMin: 10,
  busyBackoffMsMax: 200,
  invokeTimeoutMs: Infinity,
  knownMembersMax: 64,
  membersRefreshMs: 10_000,
} as const;

/** Consecutive BUSY answers after which the client searches for the primary again. */
const BUSY_REFRESH_EVERY = 5;
/** A node that failed as primary is avoided by searches for this long. */
const SUSPECT_MS = 2_000;
/** Nodes listed in an RSM_NO_QUORUM message. */
const TRIED_LISTED_MAX = 8;

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
  /** When a members reply last arrived. */
  private refreshedAt = -Infinity;
  /** Why the last members call failed (the cause of an RSM_NO_QUORUM when nobody answers). */
  private membersFailure: unknown = new RsmError('RSM_NO_QUORUM', 'no member answered');
  /** Nodes that failed as primary lately (id → when), avoided by searches for SUSPECT_MS. */
  private readonly suspects = new Map<string, number>();
  /** The search in progress, shared by every invoke that needs the primary. */
  private search: Promise<string | undefined> | undefined;
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
      busyBackoffMsMin: options.busyBackoffMsMin ?? RSM_CLIENT_DEFAULTS.busyBackoffMsMin,
      busyBackoffMsMax: options.busyBackoffMsMax ?? RSM_CLIENT_DEFAULTS.busyBackoffMsMax,
      invokeTimeoutMs: options.invokeTimeoutMs ?? RSM_CLIENT_DEFAULTS.invokeTimeoutMs,
      knownMembersMax: options.knownMembersMax ?? RSM_CLIENT_DEFAULTS.knownMembersMax,
      membersRefreshMs: options.membersRefreshMs ?? RSM_CLIENT_DEFAULTS.membersRefreshMs,
    };
    for (const [name, value] of Object.entries(this.settings)) {
      if (!(value > 0)) throw new RangeError(`RsmClient: ${name} must be > 0, got ${value}`);
    }
    if (this.settings.backoffMsMin > this.settings.backoffMsMax) throw new RangeError('RsmClient: backoffMsMin > backoffMsMax');
    if (this.settings.busyBackoffMsMin > this.settings.busyBackoffMsMax) throw new RangeError('RsmClient: busyBackoffMsMin > busyBackoffMsMax');
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
    const deadline = client.clock.now() + client.settings.membersTimeoutMs;
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
   * RsmError: RSM_NO_QUORUM, RSM_ABORTED, RSM_CLOSED, RSM_NO_MEMBERS, RSM_BAD_REPLY.
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
    const attempt = new Attempt(this.clock.now());
    this.checkLive(userSignal, deadline, attempt);
    if (this.known.length === 0) throw new RsmError('RSM_NO_MEMBERS', 'the RSM client knows no member');
    if (this.clock.now() - this.refreshedAt >= this.settings.membersRefreshMs) await this.findPrimary(deadline, signal, attempt);
    for (;;) {
      this.checkLive(userSignal, deadline, attempt);
      const target = this.primaryId ?? (await this.findPrimary(deadline, signal, attempt));
      if (target === undefined) {
        // Nobody named a primary: wait, then go round again.
        await this.backoff(failuresInARow++, this.settings.backoffMsMin, this.settings.backoffMsMax, deadline, signal, userSignal, attempt);
        continue;
      }
      const reply = await this.rpc.call(
        this.addressOf(target),
        rsmClientProtocol.invoke,
        { procno: proc, req: request },
        // A lost or delayed message is retried soon: the primary answers within a batch round or
        // two, and a duplicate of a request still in progress is dropped there at little cost.
        { timeoutMs: Math.min(this.settings.callTimeoutMs, Math.max(1, deadline - this.clock.now())), signal, retransmitMs: INVOKE_RETRANSMIT_MS, retransmitMsMax: INVOKE_RETRANSMIT_MS_MAX },
      );
      if (reply.ok) this.learnMembersSoon(deadline);
      if (reply.ok && reply.status === RsmClientStatus.OK) {
        this.suspects.delete(target);
        const decoded = decodeInvokeReply(reply.result);
        if (!decoded.ok) throw new RsmError('RSM_BAD_REPLY', `invoke ${proc} at ${target}: ${decoded.reason}`);
        return decoded.value;
      }
      if (reply.ok && reply.status === RsmClientStatus.BUSY) {
        this.stats.busy++;
        attempt.note(target, 'invoke: BUSY');
        await this.backoff(busyInARow++, this.settings.busyBackoffMsMin, this.settings.busyBackoffMsMax, deadline, signal, userSignal, attempt);
        if (busyInARow % BUSY_REFRESH_EVERY === 0) await this.findPrimary(deadline, signal, attempt);
        continue;
      }
      if (reply.ok && reply.status === RsmClientStatus.NOTPRIMARY) {
        this.stats.notPrimary++;
        attempt.note(target, 'invoke: NOTPRIMARY');
      } else {
        if (!reply.ok && reply.error.code === 'RPC_ABORTED') this.checkLive(userSignal, deadline, attempt);
        const what = reply.ok ? `status ${reply.status}` : reply.error.code;
        attempt.note(target, `invoke: ${what}`, reply.ok ? undefined : reply.error);
        log('invoke %d at %s: %s', proc, target, what);
        this.stats.primaryFailures++;
      }
      this.primaryFailed(target);
      // The first failure fails over at once; repeated ones back off.
      if (failuresInARow > 0) await this.backoff(failuresInARow - 1, this.settings.backoffMsMin, this.settings.backoffMsMax, deadline, signal, userSignal, attempt);
      failuresInARow++;
    }
  }

  /**
   * Asks every known member for the current view, in parallel, and adopts the first answer that
   * names a primary not suspected (or, once all answered, any primary named). One search at a
   * time: concurrent callers share it. Resolves the primary, or undefined if nobody named one.
   */
  private async findPrimary(deadline: number, signal: AbortSignal | undefined, attempt?: Attempt): Promise<string | undefined> {
    if (this.known.length === 0) throw new RsmError('RSM_NO_MEMBERS', 'the RSM client knows no member');
    if (signal?.aborted || this.clock.now() >= deadline) return undefined;
    this.search ??= this.searchMembers(deadline).finally(() => (this.search = undefined));
    const found = await untilAborted(this.search, signal);
    if (found === undefined) attempt?.note('*', 'members: nobody named a primary', this.membersFailure);
    return found;
  }

  private searchMembers(deadline: number): Promise<string | undefined> {
    const now = this.clock.now();
    for (const [id, at] of this.suspects) if (now - at >= SUSPECT_MS) this.suspects.delete(id);
    const timeoutMs = Math.min(this.settings.membersTimeoutMs, deadline - now);
    const candidates = [...this.known];
    return new Promise((resolve) => {
      let pending = candidates.length;
      let fallback: { ids: string[] } | undefined;
      let done = false;
      const finish = (ids: string[] | undefined): void => {
        done = true;
        resolve(ids === undefined ? undefined : this.adoptMembers(ids));
      };
      for (const node of candidates) {
        void this.askMembers(node, timeoutMs).then((ids) => {
          pending--;
          if (done) return;
          if (ids !== undefined) {
            if (!this.suspects.has(ids[ids.length - 1]!)) return finish(ids);
            fallback ??= { ids };
          }
          if (pending === 0) finish(fallback?.ids);
        });
      }
    });
  }

  /** members from `node`: its member ids, primary last, or undefined when it gave none. */
  private async askMembers(node: string, timeoutMs: number): Promise<string[] | undefined> {
    if (timeoutMs <= 0 || this.closer.signal.aborted) return undefined;
    const reply = await this.rpc.call(this.addressOf(node), rsmClientProtocol.members, { dummy: 0 }, { timeoutMs, signal: this.closer.signal });
    const ids = reply.ok && reply.status === RsmClientStatus.OK ? reply.result.filter((id) => id !== '') : [];
    if (ids.length === 0) {
      log('members at %s: %s', node, reply.ok ? `status ${reply.status}` : reply.error.code);
      this.membersFailure = reply.ok ? new RsmError('RSM_NO_QUORUM', `members at ${node}: status ${reply.status}`) : reply.error;
      return undefined;
    }
    return ids;
  }

  /**
   * A client that has never had a members answer (its first search found nobody: the one node it
   * was told of was slow to answer, say) but now reached a node that answers invokes asks for the
   * view in the background: otherwise it would know that one node only, and could never find the
   * next primary once that node is gone.
   */
  private learnMembersSoon(deadline: number): void {
    if (this.refreshedAt !== -Infinity || this.search !== undefined || this.isClosed) return;
    void this.findPrimary(deadline, this.closer.signal);
  }

  /** Adopts a members answer: its primary (last), and its ids first in the known list. */
  private adoptMembers(ids: readonly string[]): string {
    this.stats.refreshes++;
    this.refreshedAt = this.clock.now();
    this.primaryId = ids[ids.length - 1]!;
    const told = [...new Set([...ids.slice(0, -1), this.primaryId])];
    this.known = [...new Set([...told, ...this.known])].slice(0, this.settings.knownMembersMax);
    return this.primaryId;
  }

  private primaryFailed(target: string): void {
    if (this.primaryId === target) this.primaryId = undefined;
    this.suspects.set(target, this.clock.now());
  }

  /** Sleeps a jittered exponential backoff (attempt 0 = min), bounded by the deadline. */
  private async backoff(attempt: number, backoffMsMin: number, backoffMsMax: number, deadline: number, signal: AbortSignal, userSignal: AbortSignal | undefined, tried: Attempt): Promise<void> {
    const ceiling = Math.min(backoffMsMax, backoffMsMin * 2 ** Math.min(attempt, 30));
    const delay = Math.min(Math.round(ceiling / 2 + this.random.float() * (ceiling / 2)), Math.max(0, deadline - this.clock.now()));
    try {
      await sleep(this.clock, delay, signal);
    } catch {
      // Aborted: checkLive says by whom.
    }
    this.checkLive(userSignal, deadline, tried);
  }

  private checkLive(userSignal: AbortSignal | undefined, deadline: number, tried: Attempt): void {
    if (this.isClosed) throw new RsmError('RSM_CLOSED', 'RSM client closed');
    if (userSignal?.aborted) throw new RsmError('RSM_ABORTED', 'invoke aborted', { cause: userSignal.reason });
    if (this.clock.now() >= deadline) {
      throw new RsmError('RSM_NO_QUORUM', `no primary answered within ${Math.round(this.clock.now() - tried.startedAt)} ms; tried ${tried.describe()}`, { cause: tried.lastFailure });
    }
  }
}

/** What one invoke tried, for the RSM_NO_QUORUM message: per node, its last answer and how often. */
class Attempt {
  private readonly outcomes = new Map<string, { what: string; count: number }>();
  lastFailure: unknown;

  constructor(readonly startedAt: number) {}

  note(node: string, what: string, failure?: unknown): void {
    const entry = this.outcomes.get(node);
    if (entry !== undefined && entry.what === what) entry.count++;
    else if (entry !== undefined || this.outcomes.size < TRIED_LISTED_MAX) this.outcomes.set(node, { what, count: 1 });
    this.lastFailure = failure ?? new RsmError('RSM_NO_QUORUM', `${node === '*' ? 'the members' : node}: ${what}`);
  }

  describe(): string {
    if (this.outcomes.size === 0) return 'nothing (no time left)';
    return [...this.outcomes]
      .map(([node, { what, count }]) => `${node === '*' ? 'all known members' : node} (${what}${count > 1 ? ` ×${count}` : ''})`)
      .join(', ');
  }
}

/** `promise`, or undefined as soon as `signal` fires (the shared search goes on for the others). */
function untilAborted<T>(promise: Promise<T | undefined>, signal: AbortSignal | undefined): Promise<T | undefined> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    void promise.then((value) => {
      signal.removeEventListener('abort', onAbort);
      resolve(value);
    });
  });
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
