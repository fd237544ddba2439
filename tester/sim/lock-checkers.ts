/**
 * LockChecker: the lock workload's safety checks in rsm_sim, from outside the service.
 *
 * 1. Mutual exclusion at the API: an owner (lock client and local caller, e.g. "lc2/w1") holds a
 *    lock from the moment its acquire returned OK until it calls release. At no time may two
 *    owners hold one lock (checked at every acquire return, so at every step).
 * 2. Replica agreement: every replica that reaches viewstamp vs (by executing it, by state
 *    transfer or by restoring its durable state) has the same holder (client id and xid) for every
 *    lock of the workload (CachingLockServer.holderOf). The RsmChecker compares whole states too;
 *    this names the lock.
 * 3. Client cache against the table, checked after every simulated event where it is decidable:
 *    when the primary of the newest decided view is serving (not in a view change), it has executed
 *    every request any client got an answer for, and nobody but the caching client can move a hold
 *    it caches. So a client whose cache says a lock is `free` or `locked` must be that lock's holder
 *    in the primary's table; and an owner that holds a lock at the API must be on a client whose
 *    cache says `locked`.
 *    A hold also ends without a release when its client's session is lost or the client crashes
 *    (`lost`): so with sessions, check 1 is "no two unexpired holders of one lock".
 * 4. Fencing tokens increase: at the API, a grant to another client than the last grant of the
 *    lock carries a strictly larger token (a local re-grant from the cache carries the token of
 *    the client's hold, so an equal token is legal only on the same client); in the replicas,
 *    a lock's holder at a later viewstamp of the same view never has a smaller token than its
 *    holder at an earlier one (same grant: same token; a later grant: a larger one), checked at
 *    every replica step. (Across views a replica's unanswered requests may be dropped with it, so
 *    the cross-view guarantee is the API one: tokens clients were given.)
 */
import type { CacheState } from '../../lockserver/cache-client-core.js';
import type { Notice } from '../../lockserver/cache-protocol.js';
import type { CachingLockServer } from '../../lockserver/cache-server.js';
import { describeViewstamp, type Viewstamp } from '../../rsm/protocol.js';

/** What the checker sees of one lock client. */
export interface CheckedLockClient {
  /** The client id at the server (its callback address). */
  readonly id: string;
  cacheStateOf(lid: string): CacheState;
  /** The xid of its current attempt or cached hold of `lid` (0 when none). */
  xidOf(lid: string): number;
}

/**
 * The notices `server` still owes that could change anything: all of them except a `grant` whose
 * client already holds the lock under that grant's xid (it acted on the notice; the state keeps
 * the notice until that client's next request on the lock, which may never be needed).
 */
export function noticesOwed(server: CachingLockServer, clients: readonly CheckedLockClient[]): Notice[] {
  const byId = new Map(clients.map((c) => [c.id, c]));
  return server.pendingNotices().filter((notice) => {
    if (notice.kind !== 'grant') return true;
    const client = byId.get(notice.to);
    if (client === undefined) return true;
    const state = client.cacheStateOf(notice.lid);
    return !(state === 'free' || state === 'locked' || state === 'releasing') || client.xidOf(notice.lid) !== notice.xid;
  });
}

export interface PrimaryView {
  readonly id: string;
  readonly vid: number;
  readonly last: Viewstamp;
  readonly server: CachingLockServer;
}

export class LockChecker {
  readonly violations: string[] = [];
  /** Acquires that returned OK, releases called. */
  grants = 0;
  releases = 0;
  /** Holds that ended by session loss or a client crash (see `lost`). */
  expiredHolds = 0;
  /** Steps at which the client/table check was decidable (and ran). */
  decidedSteps = 0;
  /** lid → the owner holding it at the API, and its lock client's id. */
  private readonly held = new Map<number, { owner: string; client: string }>();
  /** viewstamp → the holders of every workload lock, as one string. */
  private readonly holdersAt = new Map<string, string>();
  /** lid → the last API grant's token and client. */
  private readonly lastGrant = new Map<number, { token: number; client: string }>();
  /** lid → (viewstamp, holder token) seen in replicas, for check 4. */
  private readonly tokensAt = new Map<number, Array<{ vs: Viewstamp; token: number }>>();

  constructor(
    private readonly now: () => number,
    private readonly locks: readonly number[],
  ) {}

  get ok(): boolean {
    return this.violations.length === 0;
  }

  /** Who holds `lid` at the API (undefined: nobody). */
  holderOf(lid: number): string | undefined {
    return this.held.get(lid)?.owner;
  }

  /** `owner` (a caller of lock client `client`) got `lid`: its acquire just returned OK. */
  acquired(lid: number, owner: string, client: string, token?: number): void {
    this.grants++;
    if (token !== undefined) {
      const last = this.lastGrant.get(lid);
      if (last !== undefined && (token < last.token || (token === last.token && client !== last.client))) {
        this.violation(`fencing: ${owner} on ${client} got lock ${lid} with token ${token} after token ${last.token} on ${last.client}`);
      }
      this.lastGrant.set(lid, { token, client });
    }
    const other = this.held.get(lid);
    if (other !== undefined) {
      this.violation(`mutual exclusion: ${owner} acquired lock ${lid} while ${other.owner} holds it`);
    }
    this.held.set(lid, { owner, client });
  }

  /** `owner` is about to call release(lid). */
  releasing(lid: number, owner: string): void {
    this.releases++;
    const holder = this.held.get(lid);
    if (holder?.owner !== owner) {
      this.violation(`${owner} releases lock ${lid}, held by ${holder?.owner ?? 'nobody'} (tester bug)`);
      return;
    }
    this.held.delete(lid);
  }

  /**
   * `owner` no longer holds `lid` without releasing it: its client's session was lost (locally,
   * before the service could expire it) or its client crashed. Another owner may get it next.
   */
  lost(lid: number, owner: string): void {
    this.expiredHolds++;
    const holder = this.held.get(lid);
    if (holder?.owner !== owner) {
      this.violation(`${owner} lost lock ${lid}, held by ${holder?.owner ?? 'nobody'} (tester bug)`);
      return;
    }
    this.held.delete(lid);
  }

  /** Replica `who` is at viewstamp `vs` with this service state. */
  replicaAt(who: string, vs: Viewstamp, server: CachingLockServer, what: string): void {
    const holders = this.locks
      .map((lid) => {
        const holder = server.holderOf(String(lid));
        return `${lid}:${holder === undefined ? '-' : `${holder.id}#${holder.xid}@${holder.token}`}`;
      })
      .join(' ');
    for (const lid of this.locks) {
      const holder = server.holderOf(String(lid));
      if (holder === undefined) continue;
      const seen = this.tokensAt.get(lid) ?? [];
      for (const earlier of seen) {
        // Within one view the requests form one sequence (one primary stamps them). Across views
        // a state may be dropped: requests some backups executed but the primary never answered
        // are lost when those backups are not in the next view, so only the API check compares
        // tokens across views (what clients were actually given).
        const before = earlier.vs.vid === vs.vid && earlier.vs.seqno < vs.seqno;
        if (before && holder.token < earlier.token) {
          this.violation(`${who} ${what}: lock ${lid} at ${describeViewstamp(vs)} has token ${holder.token}, below ${earlier.token} at ${describeViewstamp(earlier.vs)}`);
        }
      }
      if (seen.length < 10_000) seen.push({ vs, token: holder.token });
      this.tokensAt.set(lid, seen);
    }
    const key = describeViewstamp(vs);
    const existing = this.holdersAt.get(key);
    if (existing === undefined) this.holdersAt.set(key, holders);
    else if (existing !== holders) this.violation(`${who} ${what}: at ${key} its holders are [${holders}], another replica's were [${existing}]`);
    try {
      server.invariants();
    } catch (error) {
      this.violation(`${who} ${what}: lock table invariant broken: ${(error as Error).message}`);
    }
  }

  /**
   * One step's cross-check of the clients' caches against the serving primary of the newest view
   * (undefined when that is not decidable now).
   */
  step(primary: PrimaryView | undefined, clients: readonly CheckedLockClient[]): void {
    for (const [lid, { owner, client }] of this.held) {
      const holderClient = clients.find((c) => c.id === client);
      const state = holderClient?.cacheStateOf(String(lid));
      if (state !== 'locked') this.violation(`${owner} holds lock ${lid} but its client's cache says ${state ?? 'unknown client'}`);
    }
    if (primary === undefined) return;
    this.decidedSteps++;
    for (const client of clients) {
      for (const lid of this.locks) {
        const state = client.cacheStateOf(String(lid));
        if (state !== 'free' && state !== 'locked') continue;
        const holder = primary.server.holderOf(String(lid));
        if (holder?.id !== client.id) {
          this.violation(
            `client ${client.id} caches lock ${lid} (${state}) but the primary ${primary.id} of view ${primary.vid} ` +
              `at ${describeViewstamp(primary.last)} has holder ${holder === undefined ? 'none' : `${holder.id}#${holder.xid}`}`,
          );
        }
      }
    }
  }

  private violation(message: string): void {
    if (this.violations.length < 100) this.violations.push(`t=${this.now()}ms ${message}`);
  }
}
