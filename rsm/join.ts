/**
 * Joins, both sides, as a synchronous core (`Join`): a replica outside the committed view asks to
 * be admitted (`attempt`), and a member answers the request (`answer`). Events in, actions out:
 * it does no I/O, reads no clock and never awaits. Its host (JoinHost, rsm/join-host.ts) carries
 * out the actions, in order, and feeds the outcome of each one that has an outcome back as
 * exactly one event.
 *
 * The asking side, one attempt at a time (the recovery loop of rsm/node.ts starts one while the
 * replica's status is `joining`, and the next once the last has finished):
 *
 * 1. Pick the next candidate (membership.ts: the believed primary, the MASTER argument, then the
 *    members of known views from the newest back); rotate through them while asking fails.
 *    Nobody to ask: finish after joinRetryMs.
 * 2. `ask`: joinreq(me, last, cluster) to it; `answered` with the reply.
 * 3. CLUSTER_MISMATCH, or an answer from another cluster: adopt nothing and report the peer to
 *    config (`reportClusterMismatch`: the host stops this node if no peer of its own cluster ever
 *    confirmed it).
 * 4. OK: check the history it sent; `adoptHistory` if newer than ours (it replaces our views,
 *    `adopted`), then `commitNewest` (`committed`). Finished at once when that view has us; the
 *    recovery loop then synchronises it.
 * 5. BUSY (or another status): `catchUp` on the views we missed from the candidate (`caughtUp`)
 *    and `commitNewest`, so the next attempt goes to the right primary: after a busy primary (mid
 *    view change, still the one to ask) or on learning of another primary, start the rotation
 *    again.
 * 6. Otherwise (no answer), or when not admitted: finish after joinRetryMs.
 *
 * The admitting side, `answer` to joinreq(src, last, cluster), each delivery on its own:
 *
 * 1. A bad joiner id (or our own) gets ERR; another cluster CLUSTER_MISMATCH, a malformed cluster
 *    id ERR: another cluster's node is never admitted.
 * 2. A member of the committed view gets OK with the history (it asks again after a lost reply),
 *    once the history is durable here (`flush`, `flushed`).
 * 3. Only the primary of a synchronised view admits (BUSY otherwise): then every member but the
 *    joiner holds the state, and a later view that drops members still contains one that does.
 * 4. `add` runs the Paxos round for the view with `src` (`added`); OK with the history once it is
 *    a member and the history is durable here (step 2), BUSY otherwise.
 *
 * Once stopped, an outcome finishes the attempt (or answers BUSY) without another action. An
 * action that fails (a storage error in config) is fed back as `failed`: the core forgets the
 * attempt or delivery and the host passes the error on. `invariants()` holds after every step.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { Config } from '../paxos/config.js';
import { clusterCheck } from '../paxos/store.js';
import { historyProblem, isValidNodeId, type HistoryEntry } from '../paxos/view.js';
import { joinCandidates } from './membership.js';
import { RsmStatus, type JoinArgs, type JoinRes } from './protocol.js';
import type { ReplicaView } from './replica-view.js';

const log = logger('rsm');

/** An admitting side's joinreq, numbered by the host; answered by exactly one `reply`. */
export type JoinDelivery = number;

/** What the core reads of its replica: where it stands and config's queries (no clock, no I/O). */
export interface JoinPosition extends Pick<ReplicaView, 'me' | 'isStopped' | 'inViewChange' | 'primary' | 'vidCommit' | 'last'> {
  /** The MASTER argument: whom to ask when nothing better is known. */
  readonly master: string;
  readonly config: Pick<Config, 'cluster' | 'vid' | 'members' | 'isMember' | 'history'>;
  readonly timing: { readonly joinRetryMs: number; readonly joinTimeoutMs: number };
}

/** The outcome of a joinreq, as the host's RPC call gives it. */
export type JoinReply = { readonly ok: true; readonly status: number; readonly result: JoinRes } | { readonly ok: false; readonly error: { readonly code: string } };

export type JoinAction =
  /** Asking side: call joinreq on `target`; feed `answered`. */
  | { readonly kind: 'ask'; readonly target: string; readonly args: JoinArgs; readonly timeoutMs: number }
  | { readonly kind: 'reportClusterMismatch'; readonly peer: string }
  /** config.adoptHistory; feed `adopted` (or `failed`). */
  | { readonly kind: 'adoptHistory'; readonly history: readonly HistoryEntry[] }
  /** config.catchUp from `from`; feed `caughtUp` (or `failed`). */
  | { readonly kind: 'catchUp'; readonly from: string }
  /** Commit config's newest view to the replica if newer than its committed one; feed `committed`. */
  | { readonly kind: 'commitNewest' }
  /** The attempt is over: the host waits `pauseMs` (0: none), then starts no other by itself. */
  | { readonly kind: 'finish'; readonly pauseMs: number }
  /** Admitting side: config.add(src, vid); feed `added` (or `failed`). */
  | { readonly kind: 'add'; readonly delivery: JoinDelivery; readonly src: string; readonly vid: number }
  /** Wait until config's history is durable; feed `flushed` (or `failed`). */
  | { readonly kind: 'flush'; readonly delivery: JoinDelivery }
  | { readonly kind: 'reply'; readonly delivery: JoinDelivery; readonly status: number; readonly result: JoinRes };

/** Where the asking side's attempt stands: which outcome it waits for. */
type Attempt =
  | { readonly phase: 'idle' }
  | { readonly phase: 'asking'; readonly target: string }
  | { readonly phase: 'adopting'; readonly target: string }
  | { readonly phase: 'committingAdopted'; readonly target: string }
  | { readonly phase: 'catchingUp'; readonly target: string; readonly primaryBefore: string }
  | { readonly phase: 'committingCaughtUp'; readonly target: string; readonly primaryBefore: string };

/** An admitting side's delivery waiting for its `add` or its `flush`. */
interface Admission {
  readonly src: string;
  readonly phase: 'adding' | 'flushing';
}

export class Join {
  /** Attempts since the last success (or since the believed primary changed): picks the candidate. */
  private attempts = 0;
  private attempt: Attempt = { phase: 'idle' };
  private readonly admissions = new Map<JoinDelivery, Admission>();

  constructor(private readonly position: JoinPosition) {}

  /** Whether an attempt is under way (from `start` until its `finish`). */
  get attempting(): boolean {
    return this.attempt.phase !== 'idle';
  }

  /** Deliveries of the admitting side not answered yet. */
  get admitting(): number {
    return this.admissions.size;
  }

  // ---- the asking side (steps 1-6) --------------------------------------------------------------

  /** Starts one attempt to be admitted (step 1). */
  start(): JoinAction[] {
    assert(this.attempt.phase === 'idle', `a join attempt started while one is ${this.attempt.phase}`);
    const p = this.position;
    const candidates = joinCandidates(p.me, p.primary, p.master, knownViews(p.config));
    if (candidates.length === 0) {
      log('%s join: nobody to ask', p.me);
      return this.finish(p.timing.joinRetryMs);
    }
    // The believed primary first; rotate through the others while asking fails.
    const target = candidates[this.attempts % candidates.length]!;
    this.attempts++;
    log('%s join: asking %s (view %d)', p.me, target, p.vidCommit);
    this.attempt = { phase: 'asking', target };
    return [{ kind: 'ask', target, args: { src: p.me, last: p.last, cluster: p.config.cluster }, timeoutMs: p.timing.joinTimeoutMs }];
  }

  /** The reply to `ask` (steps 3-6). */
  answered(reply: JoinReply): JoinAction[] {
    const attempt = this.attempt;
    assert(attempt.phase === 'asking', `a joinreq answer while ${attempt.phase}`);
    const p = this.position;
    const target = attempt.target;
    if (p.isStopped) return this.finish(0);
    const theirs = reply.ok ? reply.result.cluster : '';
    if (reply.ok && (reply.status === RsmStatus.CLUSTER_MISMATCH || clusterCheck(p.config.cluster, theirs) === 'mismatch')) {
      // One of us is in the wrong cluster: adopt nothing; the host decides which.
      log('%s join: %s is in another cluster (%s); not joining through it', p.me, target, theirs || 'refused');
      return [{ kind: 'reportClusterMismatch', peer: target }, ...this.finish(p.timing.joinRetryMs)];
    }
    if (reply.ok && reply.status === RsmStatus.OK) return this.adopt(target, reply.result);
    if (reply.ok) {
      log('%s join: %s answered status %d', p.me, target, reply.status);
      this.attempt = { phase: 'catchingUp', target, primaryBefore: p.primary };
      return [{ kind: 'catchUp', from: target }];
    }
    log('%s join: %s failed: %s', p.me, target, reply.error.code);
    return this.finish(p.timing.joinRetryMs);
  }

  /** `adoptHistory` is done. */
  adopted(): JoinAction[] {
    const attempt = this.attempt;
    assert(attempt.phase === 'adopting', `history adopted while ${attempt.phase}`);
    if (this.position.isStopped) return this.finish(0);
    this.attempt = { phase: 'committingAdopted', target: attempt.target };
    return [{ kind: 'commitNewest' }];
  }

  /** `catchUp` is done. */
  caughtUp(): JoinAction[] {
    const attempt = this.attempt;
    assert(attempt.phase === 'catchingUp', `caught up while ${attempt.phase}`);
    if (this.position.isStopped) return this.finish(0);
    this.attempt = { ...attempt, phase: 'committingCaughtUp' };
    return [{ kind: 'commitNewest' }];
  }

  /** `commitNewest` is done: step 4's end, or step 5's. */
  committed(): JoinAction[] {
    const attempt = this.attempt;
    const p = this.position;
    if (attempt.phase === 'committingAdopted') {
      if (p.config.isMember(p.me, p.vidCommit)) {
        this.attempts = 0;
        return this.finish(0);
      }
      return this.finish(p.timing.joinRetryMs);
    }
    assert(attempt.phase === 'committingCaughtUp', `a view committed for a join while ${attempt.phase}`);
    // A busy primary (mid view change) is still the one to ask; after learning of another
    // primary, ask that one first.
    if (attempt.target === p.primary || p.primary !== attempt.primaryBefore) this.attempts = 0;
    return this.finish(p.timing.joinRetryMs);
  }

  // ---- the admitting side (steps 1-4) -----------------------------------------------------------

  /** joinreq(src, cluster), delivery `delivery`. */
  answer(delivery: JoinDelivery, src: string, cluster: string): JoinAction[] {
    assert(!this.admissions.has(delivery), `joinreq delivery ${delivery} received twice`);
    const p = this.position;
    const mine = p.config.cluster;
    if (!isValidNodeId(src) || src === p.me) {
      log('%s joinreq: ignoring (bad joiner id %j)', p.me, src);
      return [this.reply(delivery, RsmStatus.ERR)];
    }
    // The cluster gate, as in front of the Paxos messages: never admit another cluster's node.
    const verdict = clusterCheck(mine, cluster);
    if (verdict !== 'ok') {
      log('%s joinreq from %s: refusing (%s)', p.me, src, verdict === 'mismatch' ? `it is in cluster ${cluster}, this node is in cluster ${mine}` : 'malformed cluster id');
      return [this.reply(delivery, verdict === 'mismatch' ? RsmStatus.CLUSTER_MISMATCH : RsmStatus.ERR)];
    }
    const vid = p.vidCommit;
    if (p.config.isMember(src, vid)) return this.flush(delivery, src);
    if (p.primary !== p.me || !p.config.isMember(p.me, vid)) {
      log('%s joinreq from %s: ignoring (not primary; primary is %s)', p.me, src, p.primary);
      return [this.reply(delivery, RsmStatus.BUSY)];
    }
    if (p.inViewChange) {
      // Admit only from a synchronised view (step 3).
      log('%s joinreq from %s: ignoring (view %d is not synchronised yet)', p.me, src, vid);
      return [this.reply(delivery, RsmStatus.BUSY)];
    }
    this.admissions.set(delivery, { src, phase: 'adding' });
    return [{ kind: 'add', delivery, src, vid }];
  }

  /** `add` is done. */
  added(delivery: JoinDelivery): JoinAction[] {
    const admission = this.admissions.get(delivery);
    assert(admission?.phase === 'adding', `add done for delivery ${delivery}, which is ${admission?.phase ?? 'unknown'}`);
    this.admissions.delete(delivery);
    const p = this.position;
    if (p.isStopped || !p.config.isMember(admission.src, p.config.vid)) return [this.reply(delivery, RsmStatus.BUSY)];
    return this.flush(delivery, admission.src);
  }

  /** `flush` is done: the history this replica answers with is durable here. */
  flushed(delivery: JoinDelivery): JoinAction[] {
    const admission = this.admissions.get(delivery);
    assert(admission?.phase === 'flushing', `flush done for delivery ${delivery}, which is ${admission?.phase ?? 'unknown'}`);
    this.admissions.delete(delivery);
    return [{ kind: 'reply', delivery, status: RsmStatus.OK, result: { history: this.position.config.history(), cluster: this.position.config.cluster } }];
  }

  // ---- both sides ---------------------------------------------------------------------------------

  /**
   * An action failed (config's storage): forget the attempt (`delivery` undefined) or the
   * delivery; the host passes the error on instead of an answer.
   */
  failed(delivery?: JoinDelivery): JoinAction[] {
    if (delivery === undefined) {
      assert(this.attempt.phase !== 'idle', 'a join attempt failed while none is under way');
      this.attempt = { phase: 'idle' };
    } else {
      assert(this.admissions.delete(delivery), `joinreq delivery ${delivery} failed, but it waits for nothing`);
    }
    return [];
  }

  invariants(): void {
    const p = this.position;
    assert(Number.isSafeInteger(this.attempts) && this.attempts >= 0, `join attempts ${this.attempts}`);
    const attempt = this.attempt;
    if (attempt.phase !== 'idle') {
      assert(isValidNodeId(attempt.target) && attempt.target !== p.me, `${p.me}: join attempt ${attempt.phase} to ${JSON.stringify(attempt.target)}`);
    }
    for (const [delivery, admission] of this.admissions) {
      assert(isValidNodeId(admission.src) && admission.src !== p.me, `${p.me}: joinreq delivery ${delivery} from ${JSON.stringify(admission.src)}`);
    }
  }

  /** Step 4: a history from `from`, validated and adopted if newer than ours. */
  private adopt(from: string, result: JoinRes): JoinAction[] {
    const p = this.position;
    const problem = historyProblem(result.history);
    if (problem !== undefined) {
      log('%s join: ignoring (bad history from %s: %s)', p.me, from, problem);
      return this.finish(p.timing.joinRetryMs);
    }
    if (result.history.length > p.config.vid) {
      this.attempt = { phase: 'adopting', target: from };
      return [{ kind: 'adoptHistory', history: result.history }];
    }
    // Our own history is at least as new: nothing to adopt (the admitting node lags behind us).
    log('%s join: not adopting (history of %d views, ours %d)', p.me, result.history.length, p.config.vid);
    this.attempt = { phase: 'committingAdopted', target: from };
    return [{ kind: 'commitNewest' }];
  }

  private finish(pauseMs: number): JoinAction[] {
    this.attempt = { phase: 'idle' };
    return [{ kind: 'finish', pauseMs }];
  }

  private flush(delivery: JoinDelivery, src: string): JoinAction[] {
    this.admissions.set(delivery, { src, phase: 'flushing' });
    return [{ kind: 'flush', delivery }];
  }

  private reply(delivery: JoinDelivery, status: number): JoinAction {
    return { kind: 'reply', delivery, status, result: { history: [], cluster: this.position.config.cluster } };
  }
}

/** Every view config knows, oldest first (the candidates' source). */
function knownViews(config: Pick<Config, 'vid' | 'members'>): string[][] {
  const views: string[][] = [];
  for (let vid = 1; vid <= config.vid; vid++) views.push(config.members(vid));
  return views;
}
