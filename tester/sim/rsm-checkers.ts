/**
 * RsmChecker watches every replica of a simulated RSM group from outside (through the node's
 * onExecuted / onStateInstalled listeners) and records violations of:
 *
 * 1. Order: each replica incarnation executes viewstamps in strictly increasing order with no gap
 *    and no duplicate: the next one in the same view, or seqno 1 of a later view. A state transfer
 *    legitimately moves a replica (it is recorded as such; see 4).
 * 2. Agreement on requests: every replica that executes viewstamp vs executes the same request,
 *    and gets the same result.
 * 3. Agreement on state: two replicas whose last executed viewstamp is the same have the same
 *    marshalled state, whether they got there by executing, by state transfer or by restoring
 *    their durable record after a restart. (The state is a
 *    function of the last viewstamp; replicas that completed a view agree in particular.)
 * 4. Transfers never lose a committed request: a transfer may move a replica back over requests
 *    no primary executed (uncommitted), never over one a primary executed.
 *
 * It also tracks the newest viewstamp a primary executed: a primary executes only after every
 * backup of its view did, so everything up to it is held by every member of that view.
 *
 * Reassigned viewstamps. A backup executes a batch as it logs it, so a crash may take an executed
 * but not yet durable batch with it. If that happens to every replica that executed it (kill -9
 * of all), no replica holds it any more, no client saw it acknowledged (the primary answers only
 * once every member holds it durably), and the primary may stamp the same viewstamp again, for a
 * client's retry with a new time or for another request. So 2 and 3 hold among the versions of a
 * viewstamp that some replica still holds: a different request or state at vs is a violation if
 * a primary executed vs, or any replica other than the executor still holds vs (it executed it,
 * or installed a state at it, and has not since installed an older state, from storage after a
 * restart or by transfer); otherwise the old version is forgotten and counted in `reassigned`.
 */
import { createHash } from 'node:crypto';
import { VIEWSTAMP_ZERO, compareViewstamp, describeViewstamp, type Viewstamp } from '../../rsm/protocol.js';
import type { RsmNode } from '../../rsm/node.js';
import type { StateMachine } from '../../rsm/state-machine.js';

export function digest(...parts: ReadonlyArray<Uint8Array | string | number>): string {
  const hash = createHash('sha1');
  for (const part of parts) {
    if (typeof part === 'number') hash.update(`#${part}|`);
    else if (typeof part === 'string') hash.update(`s${part.length}:${part}|`);
    else hash.update(`b${part.length}:`).update(part).update('|');
  }
  return hash.digest('hex').slice(0, 16);
}

function key(vs: Viewstamp): string {
  return describeViewstamp(vs);
}

export class RsmChecker {
  readonly violations: string[] = [];
  /** Requests executed (by any replica), transfers installed. */
  executions = 0;
  transfers = 0;
  /** Batches primaries stamped, the requests in them, those with more than one, the largest. */
  batches = 0;
  batchedRequests = 0;
  multiRequestBatches = 0;
  largestBatch = 0;
  /** Batches stamped while others were in flight (pipelined), and the most in flight at once. */
  pipelinedBatches = 0;
  deepestPipeline = 0;
  /** The newest viewstamp executed by a primary. */
  committed: Viewstamp = VIEWSTAMP_ZERO;
  private readonly requests = new Map<string, string>();
  private readonly results = new Map<string, string>();
  private readonly states = new Map<string, string>();
  /** Per view: the highest seqno a primary executed (a primary executes 1, 2, … in its view). */
  private readonly primaryMax = new Map<number, number>();
  /** Per running incarnation ("id#n"): its last viewstamp as seen from outside. */
  private readonly lasts = new Map<string, Viewstamp>();
  /** Per viewstamp (key): the replica ids whose state holds it; per replica id: those viewstamps. */
  private readonly holders = new Map<string, Set<string>>();
  private readonly held = new Map<string, Map<string, Viewstamp>>();
  /** Viewstamps that no replica held any more and were stamped again (see the header). */
  reassigned = 0;

  constructor(private readonly now: () => number) {}

  /** Watches a new incarnation of replica `id` (call before it starts). */
  attach(id: string, incarnation: number, node: RsmNode, stateMachine: StateMachine): void {
    const who = `${id}#${incarnation}`;
    this.lasts.set(who, VIEWSTAMP_ZERO);
    // A replica restored from storage reports its state as installed 'from storage' when it starts.
    if (compareViewstamp(node.lastExecuted, VIEWSTAMP_ZERO) === 0) this.checkState(who, VIEWSTAMP_ZERO, stateMachine, 'starts');
    node.onExecuted((event) => {
      this.executions++;
      const last = this.lasts.get(who)!;
      const { vs } = event;
      const next = vs.vid === last.vid ? vs.seqno === last.seqno + 1 : vs.vid > last.vid && vs.seqno === 1;
      if (!next) this.violation(`${who} executed ${key(vs)} right after ${key(last)} (a gap, a duplicate or out of order)`);
      this.lasts.set(who, vs);
      this.forgetIfReassigned(id, vs, digest(event.proc, event.request));
      this.hold(id, vs);
      this.agree(this.requests, vs, digest(event.proc, event.request), `${who} executed another request at ${key(vs)}`);
      this.agree(this.results, vs, digest(event.result.status, event.result.reply), `${who} got another result at ${key(vs)}`);
      this.checkState(who, vs, stateMachine, `executed ${key(vs)} as ${event.role}`);
      if (event.role === 'primary') {
        if (compareViewstamp(vs, this.committed) > 0) this.committed = vs;
        this.primaryMax.set(vs.vid, Math.max(this.primaryMax.get(vs.vid) ?? 0, vs.seqno));
      }
    });
    node.onBatchStamped((event) => {
      this.batches++;
      this.batchedRequests += event.size;
      if (event.size > 1) this.multiRequestBatches++;
      this.largestBatch = Math.max(this.largestBatch, event.size);
      if (event.behind > 0) this.pipelinedBatches++;
      this.deepestPipeline = Math.max(this.deepestPipeline, event.behind + 1);
    });
    node.onStateInstalled((event) => {
      this.transfers++;
      const last = this.lasts.get(who)!;
      const lost = this.committedBetween(event.last, last);
      if (lost !== undefined) {
        this.violation(`${who} state transfer from ${event.from} moved it back from ${key(last)} to ${key(event.last)}, losing ${key(lost)}, which a primary executed`);
      }
      this.lasts.set(who, event.last);
      // Its state is now exactly the installed one: it no longer holds anything after it.
      this.releaseAfter(id, event.last);
      this.hold(id, event.last);
      this.checkState(who, event.last, stateMachine, `installed ${key(event.last)} from ${event.from} in view ${event.vid}`);
    });
  }

  /** The last viewstamp of a running incarnation, as seen from outside. */
  lastOf(id: string, incarnation: number): Viewstamp {
    return this.lasts.get(`${id}#${incarnation}`) ?? VIEWSTAMP_ZERO;
  }

  /**
   * A viewstamp in (from, to] that a primary executed, if any. A transfer may move a replica back
   * over requests its primary never executed (a restarted backup that had executed the primary's
   * pending request gets the primary's state and then the request again), never over one it did.
   */
  private committedBetween(from: Viewstamp, to: Viewstamp): Viewstamp | undefined {
    if (compareViewstamp(from, to) >= 0) return undefined;
    for (let vid = from.vid; vid <= to.vid; vid++) {
      const low = vid === from.vid ? from.seqno + 1 : 1;
      const high = Math.min(this.primaryMax.get(vid) ?? 0, vid === to.vid ? to.seqno : Infinity);
      if (high >= low) return { vid, seqno: low };
    }
    return undefined;
  }

  get ok(): boolean {
    return this.violations.length === 0;
  }

  private hold(id: string, vs: Viewstamp): void {
    const k = key(vs);
    let ids = this.holders.get(k);
    if (ids === undefined) this.holders.set(k, (ids = new Set()));
    ids.add(id);
    let mine = this.held.get(id);
    if (mine === undefined) this.held.set(id, (mine = new Map()));
    mine.set(k, vs);
  }

  private releaseAfter(id: string, last: Viewstamp): void {
    const mine = this.held.get(id);
    if (mine === undefined) return;
    for (const [k, vs] of mine) {
      if (compareViewstamp(vs, last) <= 0) continue;
      mine.delete(k);
      this.holders.get(k)?.delete(id);
    }
  }

  /**
   * Before `id` executes `request` at vs: if another version of vs is recorded that no other
   * replica holds and no primary executed, forget it (and what was recorded after it).
   */
  private forgetIfReassigned(id: string, vs: Viewstamp, request: string): void {
    const k = key(vs);
    const recorded = this.requests.get(k);
    const state = this.states.get(k);
    if (recorded === undefined && state === undefined) return;
    if (vs.seqno <= (this.primaryMax.get(vs.vid) ?? 0)) return; // committed: never reassigned
    const others = [...(this.holders.get(k) ?? [])].filter((holder) => holder !== id);
    if (others.length > 0) return;
    // Nobody holds it: the recorded version is forgotten, as is every record after it in this view
    // that nobody holds either (they were built on it).
    this.reassigned++;
    for (const map of [this.requests, this.results, this.states]) {
      for (const recordedKey of [...map.keys()]) {
        const [vidText, seqText] = recordedKey.split('.');
        if (Number(vidText) === vs.vid && Number(seqText) >= vs.seqno && (this.holders.get(recordedKey)?.size ?? 0) === 0) map.delete(recordedKey);
      }
    }
  }

  private checkState(who: string, vs: Viewstamp, stateMachine: StateMachine, what: string): void {
    this.agree(this.states, vs, digest(stateMachine.marshalState()), `${who} ${what}: its state differs from another replica's at ${key(vs)}`);
  }

  private agree(map: Map<string, string>, vs: Viewstamp, value: string, message: string): void {
    const existing = map.get(key(vs));
    if (existing === undefined) map.set(key(vs), value);
    else if (existing !== value) this.violation(message);
  }

  private violation(message: string): void {
    if (this.violations.length < 100) this.violations.push(`t=${this.now()}ms ${message}`);
  }
}
