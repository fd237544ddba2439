/**
 * Joins, both sides (`Join`): a replica outside the committed view asks to be admitted
 * (`attempt`), and a member answers the request (`answer`).
 *
 * The asking side, one attempt at a time (the recovery loop of rsm/node.ts calls `attempt` while
 * the replica's status is `joining`):
 *
 * 1. Pick the next candidate (membership.ts: the believed primary, the MASTER argument, then the
 *    members of known views from the newest back); rotate through them while asking fails.
 * 2. joinreq(me, last, cluster) to it.
 * 3. CLUSTER_MISMATCH, or an answer from another cluster: adopt nothing and report the peer to
 *    config (the host stops this node if no peer of its own cluster ever confirmed it).
 * 4. OK: check the history it sent; adopt it if newer than ours (it replaces our views), commit
 *    its newest view. Done when that view has us; the recovery loop then synchronises it.
 * 5. BUSY (or another status): learn from the candidate the views we missed (config.catchUp) and
 *    commit the newest, so the next attempt goes to the right primary.
 * 6. Otherwise (no answer), or when not admitted: wait joinRetryMs.
 *
 * The admitting side, `answer` to joinreq(src, last, cluster):
 *
 * 1. A bad joiner id (or our own) gets ERR; another cluster CLUSTER_MISMATCH, a malformed cluster
 *    id ERR: another cluster's node is never admitted.
 * 2. A member of the committed view gets OK with the history (it asks again after a lost reply).
 * 3. Only the primary of a synchronised view admits (BUSY otherwise): then every member but the
 *    joiner holds the state, and a later view that drops members still contains one that does.
 * 4. config.add runs the Paxos round for the view with `src`; OK with the history once it is a
 *    member and the history is durable here, BUSY otherwise.
 */
import { logger } from '../lib/log.js';
import type { Config } from '../paxos/config.js';
import { clusterCheck } from '../paxos/store.js';
import { historyProblem, isValidNodeId } from '../paxos/view.js';
import { joinCandidates } from './membership.js';
import { RsmStatus, rsmProtocol, type JoinRes } from './protocol.js';
import type { ReplicaView } from './replica-view.js';

const log = logger('rsm');

/** What both sides of a join read and do on the replica. */
export interface JoinHost extends ReplicaView {
  /** The MASTER argument: whom to ask when nothing better is known. */
  readonly master: string;
  /** Commits config's newest view to the replica, if newer than its committed one. */
  commitNewest(): void;
  /** Sleeps on the replica's clock; false if it stopped meanwhile. */
  pause(ms: number): Promise<boolean>;
}

export class Join {
  /** Attempts since the last success (or since the believed primary changed): picks the candidate. */
  private attempts = 0;

  constructor(private readonly host: JoinHost) {}

  /** One attempt to be admitted (steps 1-6 above). */
  async attempt(): Promise<void> {
    const host = this.host;
    const candidates = joinCandidates(host.me, host.primary, host.master, knownViews(host.config));
    if (candidates.length === 0) {
      log('%s join: nobody to ask', host.me);
      await host.pause(host.timing.joinRetryMs);
      return;
    }
    // The believed primary first; rotate through the others while asking fails.
    const target = candidates[this.attempts % candidates.length]!;
    this.attempts++;
    log('%s join: asking %s (view %d)', host.me, target, host.vidCommit);
    const reply = await host.rpc.call(
      host.addressOf(target),
      rsmProtocol.joinreq,
      { src: host.me, last: host.last, cluster: host.config.cluster },
      { timeoutMs: host.timing.joinTimeoutMs },
    );
    if (host.isStopped) return;
    const theirs = reply.ok ? reply.result.cluster : '';
    if (reply.ok && (reply.status === RsmStatus.CLUSTER_MISMATCH || clusterCheck(host.config.cluster, theirs) === 'mismatch')) {
      // One of us is in the wrong cluster: adopt nothing; the host decides which (it stops this
      // node if no peer of its own cluster ever confirmed it).
      log('%s join: %s is in another cluster (%s); not joining through it', host.me, target, theirs || 'refused');
      host.config.reportClusterMismatch(target);
    } else if (reply.ok && reply.status === RsmStatus.OK) {
      if (await this.adopt(target, reply.result)) {
        this.attempts = 0;
        return;
      }
    } else if (reply.ok) {
      log('%s join: %s answered status %d', host.me, target, reply.status);
      const primaryBefore = host.primary;
      await host.config.catchUp(target);
      if (host.isStopped) return;
      host.commitNewest();
      // A busy primary (mid view change) is still the one to ask; after learning of another
      // primary, ask that one first.
      if (target === host.primary || host.primary !== primaryBefore) this.attempts = 0;
    } else {
      log('%s join: %s failed: %s', host.me, target, reply.error.code);
    }
    await host.pause(host.timing.joinRetryMs);
  }

  /** Adopts the history of a joinreq OK; resolves whether we are now a member. */
  private async adopt(from: string, result: JoinRes): Promise<boolean> {
    const host = this.host;
    const problem = historyProblem(result.history);
    if (problem !== undefined) {
      log('%s join: ignoring (bad history from %s: %s)', host.me, from, problem);
      return false;
    }
    if (result.history.length > host.config.vid) {
      await host.config.adoptHistory(result.history);
      if (host.isStopped) return false;
    } else {
      // Our own history is at least as new: nothing to adopt (the admitting node lags behind us).
      log('%s join: not adopting (history of %d views, ours %d)', host.me, result.history.length, host.config.vid);
    }
    host.commitNewest();
    return host.config.isMember(host.me, host.vidCommit);
  }

  /** The admitting side: the answer to joinreq(src, cluster) (steps 1-4 above). */
  async answer(src: string, cluster: string): Promise<{ status: number; result: JoinRes }> {
    const host = this.host;
    const mine = host.config.cluster;
    const busy = { status: RsmStatus.BUSY, result: { history: [], cluster: mine } };
    if (!isValidNodeId(src) || src === host.me) {
      log('%s joinreq: ignoring (bad joiner id %j)', host.me, src);
      return { status: RsmStatus.ERR, result: { history: [], cluster: mine } };
    }
    // The cluster gate, as in front of the Paxos messages: never admit another cluster's node.
    const verdict = clusterCheck(mine, cluster);
    if (verdict !== 'ok') {
      log('%s joinreq from %s: refusing (%s)', host.me, src, verdict === 'mismatch' ? `it is in cluster ${cluster}, this node is in cluster ${mine}` : 'malformed cluster id');
      return { status: verdict === 'mismatch' ? RsmStatus.CLUSTER_MISMATCH : RsmStatus.ERR, result: { history: [], cluster: mine } };
    }
    const vid = host.vidCommit;
    if (!host.config.isMember(src, vid)) {
      if (host.primary !== host.me || !host.config.isMember(host.me, vid)) {
        log('%s joinreq from %s: ignoring (not primary; primary is %s)', host.me, src, host.primary);
        return busy;
      }
      if (host.inViewChange) {
        // Admit only from a synchronised view: then every member but the joiner holds the state,
        // and a later view that drops members still contains one that does.
        log('%s joinreq from %s: ignoring (view %d is not synchronised yet)', host.me, src, vid);
        return busy;
      }
      await host.config.add(src, vid);
      if (host.isStopped || !host.config.isMember(src, host.config.vid)) return busy;
    }
    await host.config.flushed();
    return { status: RsmStatus.OK, result: { history: host.config.history(), cluster: mine } };
  }
}

/** Every view config knows, oldest first (the candidates' source). */
function knownViews(config: Config): string[][] {
  const views: string[][] = [];
  for (let vid = 1; vid <= config.vid; vid++) views.push(config.members(vid));
  return views;
}
