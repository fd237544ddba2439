/**
 * The synchronisation of a view, both sides of state transfer, as a synchronous core
 * (`ViewSync`): what a replica does in the view change between the commit of a view and serving
 * it, and what it answers the others meanwhile. Events in, actions out: it does no I/O, reads no
 * clock and never awaits. Its host (ViewSyncHost, rsm/view-sync-host.ts) carries out the actions
 * in order and feeds the outcome of each one that has an outcome back as exactly one event.
 * rsm/README.md ("View change and recovery", "State transfer") tells the whole protocol; the
 * phases it enters are the replica status's (rsm/replica-status.ts).
 *
 * One synchronisation (a `run`) at a time: RsmNode's recovery loop starts one for the committed
 * view once it quiesced the pipeline (phase quiescing), and the next once the last has finished.
 * Every action with an outcome carries its run's number; an outcome of a run that has finished
 * (its view is gone) is dropped.
 *
 * The primary's run (the lab's sync_with_backups, extended):
 *
 * 1. (collecting) `askBackup`: transferreq(me, our last, vid) to every backup of the view, each
 *    retried after a `pause` until it answers OK. An answer claiming a last in this view (or later)
 *    is broken or forged, since nobody executes in a view before its synchronisation ends (unless
 *    we synchronise again a view we served before a restart); one newer than ours without anything
 *    to take us there is ignored too.
 * 2. (adopting) If the newest answer is newer than our last, `fetch` the rest of it and adopt it
 *    (`installState`, or `executeEntries` for the requests we lack), then `awaitDurable`. A restarted
 *    primary has lost its state, and a backup may have executed a request the old primary never
 *    executed; every request a client saw acknowledged was executed by every member of its view, so
 *    the newest state among the members holds all of them.
 * 3. (serving) Answer the backups' transferreq, and wait until every backup of the view sent
 *    transferdonereq. If none came for syncRetryMs (`setTimer`), `nudge` those that have not
 *    reported: a backup that restarted with a durable record of having synchronised the view
 *    resumes it and never reports; a pull from its primary makes it synchronise again.
 * 4. (recording) `finish` with success; the recovery loop writes the record of the
 *    synchronisation and waits for it to be durable.
 *
 * A backup's run (the lab's sync_with_primary):
 *
 * 1. (pulling) `pull`: transferreq(me, our last, vid) to the primary until it answers OK and its
 *    state is ours: nothing to do when its last is ours, else `fetch` and adopt it as above;
 *    then `awaitDurable` (the primary learns we hold its state only once it is durable here).
 * 2. (reporting) `report`: transferdonereq(me, vid) until OK. A BUSY means the primary does not
 *    count our pull (it came from its previous incarnation, which crashed, or it is collecting
 *    again): pull again.
 *
 * Every failure waits a `pause` (the replica's transferPause: short at first, doubling) and
 * retries. A run finishes unsuccessfully once its view is no longer the committed one or the
 * replica stopped (`moved`, or noticed at any event).
 *
 * The answers, each delivery on its own:
 *
 * - transferreq(src, last, vid), fed once every write begun is durable (only durable state is
 *   shipped: a replica that installs it may be the one that keeps it):
 *   - on the primary of `vid`, from a backup of it: `quiesce` (no batch half-way, so the state
 *     shipped and the batches the backup executes afterwards line up), then, while synchronising
 *     `vid` (phase serving) or serving it (a backup that restarted inside the view synchronises
 *     again without a view change), OK with what takes `last` to our state. A backup that installs
 *     our state drops what it holds beyond it, our pending batches included
 *     (`forgetAcknowledgements`, and `stall` so they are resent);
 *   - on a backup of `vid`, from its primary collecting: OK with our state if newer than `last`;
 *     if we were serving the view, the primary is synchronising it again (it restarted before it
 *     learnt that we finished): `resync`, then answer;
 *   - BUSY otherwise (in particular for a view we have not committed, or no longer hold).
 * - transferdonereq(m, vid) on the primary: while synchronising `vid`, OK if m pulled our present
 *   state in this synchronisation (BUSY otherwise: it pulled from our previous incarnation, whose
 *   state may be older than ours, and must pull again); once every backup has, the run finishes.
 *   While serving `vid`, OK again (a retry whose first reply was lost). BUSY otherwise.
 *
 * An action that fails (a storage error) is fed back as `failed`: the core forgets the run or the
 * delivery and the host passes the error on. `invariants()` holds after every step.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { HandlerReply } from '../lib/rpc.js';
import type { Config } from '../paxos/config.js';
import type { RsmTiming } from './node.js';
import type { ReplicaView } from './replica-view.js';
import { compareViewstamp, describeViewstamp, RsmStatus, TransferKind, VIEWSTAMP_ZERO, type TransferArgs, type TransferDoneArgs, type TransferRes, type Viewstamp } from './protocol.js';
import type { PrimarySyncPhase, BackupSyncPhase } from './replica-status.js';
import type { LogEntry } from './replica-store.js';
import { transferProblem, type Transfer } from './state-transfer.js';

const log = logger('rsm');
const EMPTY = new Uint8Array(0);

/** An answering delivery (transferreq, transferdonereq), numbered by the host. */
export type SyncDelivery = number;

/** What the core reads of its replica: where it stands (no clock, no I/O). */
export interface ViewSyncPosition extends Pick<ReplicaView, 'me' | 'isStopped' | 'inViewChange' | 'primary' | 'vidCommit' | 'last'> {
  readonly config: Pick<Config, 'members' | 'isMember'>;
  readonly timing: Pick<RsmTiming, 'syncRetryMs' | 'transferTimeoutMs'>;
  /** The last view whose synchronisation this replica completed (durably). */
  readonly syncedVid: number;
  /** Pending batches of the primary's pipeline. */
  readonly pendingBatches: number;
  /** The primary is synchronising `vid` and answering its backups (phase serving). */
  servingBackups(vid: number): boolean;
  /** What to send a replica whose last is `theirs` (nothing, entries, or the state's first chunk); reads only. */
  transferFor(theirs: Viewstamp, onlyIfNewer: boolean): TransferRes;
}

/** The outcome of a transferreq or transferdonereq, as the host's RPC call gives it. */
export type SyncReply<T> = { readonly ok: true; readonly status: number; readonly result: T } | { readonly ok: false; readonly error: { readonly code: string } };

/** The outcome of a `fetch`, as fetchTransfer (rsm/state-transfer.ts) gives it. */
export type Fetched = { readonly ok: true; readonly transfer: Transfer } | { readonly ok: false; readonly reason: string };

export type ViewSyncAction =
  /** Enter a phase of the synchronisation of `vid` (the host ignores it if the status moved on). */
  | { readonly kind: 'enter'; readonly vid: number; readonly phase: PrimarySyncPhase | BackupSyncPhase }
  /** Primary: transferreq to `backup` (resending at once to a restarted instance); feed `collected`. */
  | { readonly kind: 'askBackup'; readonly run: number; readonly backup: string; readonly args: TransferArgs }
  /** Backup: transferreq to `primary`; feed `pulled`. */
  | { readonly kind: 'pull'; readonly run: number; readonly primary: string; readonly args: TransferArgs }
  /** Backup: transferdonereq to `primary`; feed `reported`. */
  | { readonly kind: 'report'; readonly run: number; readonly primary: string; readonly args: TransferDoneArgs }
  /** Wait the transfer pause before retry `attempt` + 1 (of `backup`'s collection, if given); feed `paused`. */
  | { readonly kind: 'pause'; readonly run: number; readonly attempt: number; readonly backup?: string }
  /** Complete the checked answer of `from` (the rest of a large state, chunk by chunk); feed `fetched`. */
  | { readonly kind: 'fetch'; readonly run: number; readonly from: string; readonly vid: number; readonly answer: TransferRes }
  /** Replace the state by `state` at `last`; feed `installed` with whether it decoded. */
  | { readonly kind: 'installState'; readonly run: number; readonly state: Uint8Array; readonly last: Viewstamp; readonly from: string; readonly vid: number }
  /** Execute and log the entries that follow our last. */
  | { readonly kind: 'executeEntries'; readonly entries: readonly LogEntry[] }
  /** Wait until every write begun so far is durable; feed `durable`. */
  | { readonly kind: 'awaitDurable'; readonly run: number }
  /** Primary serving: fire `timerFired` after `ms` (replacing the run's timer, if any). */
  | { readonly kind: 'setTimer'; readonly run: number; readonly ms: number }
  /** Primary serving: transferreq to `backup`, its outcome ignored. */
  | { readonly kind: 'nudge'; readonly backup: string; readonly args: TransferArgs }
  /** The run is over (`synced`: the view is synchronised); the host cancels its timer. */
  | { readonly kind: 'finish'; readonly run: number; readonly synced: boolean }
  /** Answering a transferreq on the primary: run `quiesced` inside its quiesce queue, every write durable. */
  | { readonly kind: 'quiesce'; readonly delivery: SyncDelivery }
  | { readonly kind: 'forgetAcknowledgements'; readonly backup: string }
  | { readonly kind: 'stall'; readonly why: string }
  /** A backup serving its view synchronises it again; feed `resynced`. */
  | { readonly kind: 'resync'; readonly delivery: SyncDelivery }
  | { readonly kind: 'reply'; readonly delivery: SyncDelivery; readonly reply: HandlerReply<TransferRes> | HandlerReply<number> };

/** Where a run stands: which outcome it waits for. */
type Run =
  | { readonly phase: 'idle' }
  | {
      readonly phase: 'collecting';
      readonly run: number;
      readonly vid: number;
      readonly backups: readonly string[];
      readonly mine: Viewstamp;
      /** The OK answers so far (an ignored one as a last of zero with nothing to send). */
      readonly answers: Map<string, TransferRes>;
      /** Failed asks so far, per backup (the transfer pause grows with them). */
      readonly attempts: Map<string, number>;
    }
  | { readonly phase: 'adopting'; readonly run: number; readonly vid: number; readonly backups: readonly string[]; readonly from: string; readonly mine: Viewstamp; readonly last: Viewstamp; readonly waits: 'fetched' | 'installed' | 'durable' }
  | { readonly phase: 'serving'; readonly run: number; readonly vid: number; readonly backups: readonly string[] }
  | { readonly phase: 'pulling'; readonly run: number; readonly vid: number; readonly primary: string; readonly asked: Viewstamp; readonly attempt: number; readonly last: Viewstamp; readonly waits: 'pulled' | 'fetched' | 'installed' | 'durable' | 'paused' }
  | { readonly phase: 'reporting'; readonly run: number; readonly vid: number; readonly primary: string; readonly attempt: number; readonly waits: 'reported' | 'paused'; readonly busy: boolean };

type Active = Exclude<Run, { phase: 'idle' }>;

const none = (last: Viewstamp): TransferRes => ({ kind: TransferKind.NONE, last, stateBytes: 0, state: EMPTY, entries: [] });
const isOk = <T>(reply: SyncReply<T>): reply is { readonly ok: true; readonly status: number; readonly result: T } => reply.ok && reply.status === RsmStatus.OK;
const describeReply = <T>(reply: SyncReply<T>): string => (reply.ok ? `status ${reply.status}` : reply.error.code);

export class ViewSync {
  private current: Run = { phase: 'idle' };
  private runs = 0;
  /** Backups of the view being synchronised that sent transferdonereq (phase serving). */
  private syncedBackups = new Set<string>();
  /**
   * Backups that pulled from this incarnation during the current synchronisation (phase serving),
   * with our last when we answered them: a transferdonereq counts only from one of them at our
   * last (see answerTransferDone).
   */
  private pulledBy = new Map<string, Viewstamp>();
  /** transferreq deliveries on the primary waiting to be answered inside its quiesce queue. */
  private readonly quiescing = new Map<SyncDelivery, TransferArgs>();
  /** transferreq deliveries on a backup waiting for their `resync`. */
  private readonly resyncing = new Map<SyncDelivery, TransferArgs>();

  constructor(private readonly position: ViewSyncPosition) {}

  /** Whether a run is under way (from `start` until its `finish`). */
  get running(): boolean {
    return this.current.phase !== 'idle';
  }

  /** Answering deliveries not answered yet. */
  get answering(): number {
    return this.quiescing.size + this.resyncing.size;
  }

  // ---- a run --------------------------------------------------------------------------------------

  /** Starts the synchronisation of view `vid`, the committed one, as its primary or a backup. */
  start(vid: number): ViewSyncAction[] {
    assert(this.current.phase === 'idle', `a synchronisation of view ${vid} started while one is ${this.current.phase}`);
    const p = this.position;
    const run = ++this.runs;
    if (this.gone(vid)) return [{ kind: 'finish', run, synced: false }];
    if (p.primary === p.me) {
      const backups = p.config.members(vid).filter((member) => member !== p.me);
      const collecting: Run = { phase: 'collecting', run, vid, backups, mine: p.last, answers: new Map(), attempts: new Map() };
      this.current = collecting;
      const actions: ViewSyncAction[] = [{ kind: 'enter', vid, phase: 'collecting' }];
      for (const backup of backups) actions.push(this.askBackup(collecting, backup));
      if (backups.length === 0) actions.push(...this.collected(collecting));
      return actions;
    }
    return this.pull({ phase: 'pulling', run, vid, primary: p.primary, asked: p.last, attempt: 0, last: p.last, waits: 'pulled' });
  }

  /** The replica moved outside a step (a view committed, it stopped): a run whose view is gone ends. */
  moved(): ViewSyncAction[] {
    const run = this.current;
    if (run.phase === 'idle' || !this.gone(run.vid)) return [];
    return this.finish(run, false);
  }

  /** A transferreq to a backup answered (collecting). */
  answeredByBackup(run: number, backup: string, reply: SyncReply<TransferRes>): ViewSyncAction[] {
    const collecting = this.live(run, 'collecting');
    if (collecting === undefined) return this.dropped(run);
    assert(collecting.backups.includes(backup) && !collecting.answers.has(backup), `${this.position.me}: a transferreq answer from ${backup}, which is not asked`);
    if (!isOk(reply)) {
      log('%s sync: collecting from %s: %s', this.position.me, backup, describeReply(reply));
      const attempt = collecting.attempts.get(backup) ?? 0;
      collecting.attempts.set(backup, attempt + 1);
      return [{ kind: 'pause', run, attempt, backup }];
    }
    collecting.answers.set(backup, this.checkCollected(collecting, backup, reply.result));
    return collecting.answers.size === collecting.backups.length ? this.collected(collecting) : [];
  }

  /** A backup's transferreq answered (pulling). */
  pulled(run: number, reply: SyncReply<TransferRes>): ViewSyncAction[] {
    const pulling = this.live(run, 'pulling');
    if (pulling === undefined) return this.dropped(run);
    assert(pulling.waits === 'pulled', `${this.position.me}: a transferreq answer while ${pulling.waits}`);
    if (!isOk(reply)) {
      log('%s sync: transferreq to %s: %s', this.position.me, pulling.primary, describeReply(reply));
      return this.retryPull(pulling);
    }
    return this.accept(pulling, reply.result);
  }

  /** A transferdonereq answered (reporting). */
  reported(run: number, reply: SyncReply<number>): ViewSyncAction[] {
    const reporting = this.live(run, 'reporting');
    if (reporting === undefined) return this.dropped(run);
    assert(reporting.waits === 'reported', `${this.position.me}: a transferdonereq answer while ${reporting.waits}`);
    const me = this.position.me;
    if (isOk(reply)) {
      log('%s sync: view %d, %s has our transfer done', me, reporting.vid, reporting.primary);
      return this.finish(reporting, true);
    }
    log('%s sync: transferdonereq to %s: %s', me, reporting.primary, describeReply(reply));
    this.current = { ...reporting, waits: 'paused', busy: reply.ok };
    return [{ kind: 'pause', run, attempt: reporting.attempt }];
  }

  /** A `pause` is over (`ok` false: the replica stopped meanwhile). */
  paused(run: number, ok: boolean, backup?: string): ViewSyncAction[] {
    const current = this.live(run);
    if (current === undefined) return this.dropped(run);
    if (!ok) return this.finish(current, false);
    switch (current.phase) {
      case 'collecting':
        assert(backup !== undefined && current.backups.includes(backup) && !current.answers.has(backup), `${this.position.me}: a collection pause for ${String(backup)}, which is not asked`);
        return [this.askBackup(current, backup)];
      case 'pulling':
        assert(current.waits === 'paused', `${this.position.me}: a pull pause while ${current.waits}`);
        return this.pull({ ...current, attempt: current.attempt + 1, asked: this.position.last });
      case 'reporting':
        assert(current.waits === 'paused', `${this.position.me}: a report pause while ${current.waits}`);
        // BUSY: the primary does not count our pull; pull again.
        if (current.busy) return this.pull({ phase: 'pulling', run, vid: current.vid, primary: current.primary, asked: this.position.last, attempt: 0, last: this.position.last, waits: 'pulled' });
        return this.report({ ...current, attempt: current.attempt + 1 });
      default:
        assert(false, `${this.position.me}: a pause while ${current.phase}`);
    }
  }

  /** A `fetch` completed or failed. */
  fetched(run: number, result: Fetched): ViewSyncAction[] {
    const current = this.live(run);
    if (current === undefined) return this.dropped(run);
    assert((current.phase === 'adopting' || current.phase === 'pulling') && current.waits === 'fetched', `${this.position.me}: a fetched transfer while ${current.phase}`);
    const p = this.position;
    const from = current.phase === 'adopting' ? current.from : current.primary;
    if (!result.ok) {
      log('%s sync: the transfer from %s failed (%s)', p.me, from, result.reason);
      return current.phase === 'adopting' ? this.finish(current, false) : this.retryPull(current);
    }
    const asked = current.phase === 'adopting' ? current.mine : current.asked;
    if (compareViewstamp(p.last, asked) !== 0) return current.phase === 'adopting' ? this.finish(current, false) : this.retryPull(current);
    const transfer = result.transfer;
    switch (transfer.kind) {
      case 'none':
        return compareViewstamp(current.last, p.last) === 0 ? this.adopted(current) : current.phase === 'adopting' ? this.finish(current, false) : this.retryPull(current);
      case 'state':
        this.current = { ...current, waits: 'installed' };
        return [{ kind: 'installState', run, state: transfer.state, last: current.last, from, vid: current.vid }];
      case 'entries':
        // Checked to follow our last (transferProblem): executing them is exactly what a backup
        // does with the batches it missed, and they are logged like batches.
        log('%s sync: executing the %d requests %s..%s from %s', p.me, transfer.entries.length, describeViewstamp(transfer.entries[0]!.vs), describeViewstamp(current.last), from);
        return [{ kind: 'executeEntries', entries: transfer.entries }, ...this.adopted(current)];
    }
  }

  /** An `installState` is done: `ok` false if the state did not decode (it is unchanged then). */
  installed(run: number, ok: boolean): ViewSyncAction[] {
    const current = this.live(run);
    if (current === undefined) return this.dropped(run);
    assert((current.phase === 'adopting' || current.phase === 'pulling') && current.waits === 'installed', `${this.position.me}: a state installed while ${current.phase}`);
    if (ok) return this.adopted(current);
    return current.phase === 'adopting' ? this.finish(current, false) : this.retryPull(current);
  }

  /** Every write begun before the `awaitDurable` is durable. */
  durable(run: number): ViewSyncAction[] {
    const current = this.live(run);
    if (current === undefined) return this.dropped(run);
    assert((current.phase === 'adopting' || current.phase === 'pulling') && current.waits === 'durable', `${this.position.me}: durable while ${current.phase}`);
    if (current.phase === 'adopting') return this.serve(current.run, current.vid, current.backups);
    return this.report({ phase: 'reporting', run, vid: current.vid, primary: current.primary, attempt: 0, waits: 'reported', busy: false });
  }

  /** The serving primary's timer: nobody reported for syncRetryMs. */
  timerFired(run: number): ViewSyncAction[] {
    const serving = this.live(run, 'serving');
    if (serving === undefined) return this.dropped(run);
    const p = this.position;
    const actions: ViewSyncAction[] = [];
    for (const backup of serving.backups) {
      if (this.syncedBackups.has(backup)) continue;
      log('%s sync: nudging %s (no transferdonereq yet for view %d)', p.me, backup, serving.vid);
      actions.push({ kind: 'nudge', backup, args: { src: p.me, last: p.last, vid: serving.vid } });
    }
    actions.push({ kind: 'setTimer', run, ms: p.timing.syncRetryMs });
    return actions;
  }

  /** An action of run `run` (undefined: whichever runs) failed, a storage error: forget the run. */
  failed(run?: number): ViewSyncAction[] {
    if (this.current.phase !== 'idle' && (run === undefined || this.current.run === run)) this.current = { phase: 'idle' };
    return [];
  }

  // ---- the answers --------------------------------------------------------------------------------

  /** transferreq(src, last, vid), once every write begun before it is durable. */
  answerTransfer(delivery: SyncDelivery, args: TransferArgs): ViewSyncAction[] {
    const p = this.position;
    const { src, vid } = args;
    if (p.isStopped || vid !== p.vidCommit) return [this.busyTransfer(delivery)];
    const members = p.config.members(vid);
    if (!members.includes(src) || !members.includes(p.me) || src === p.me) {
      log('%s transferreq from %s: ignoring (not both members of view %d)', p.me, src, vid);
      return [this.busyTransfer(delivery)];
    }
    if (p.primary === p.me) {
      this.quiescing.set(delivery, args);
      return [{ kind: 'quiesce', delivery }];
    }
    if (src !== p.primary) return [this.busyTransfer(delivery)];
    if (!p.inViewChange) {
      // The primary synchronises this view again (it restarted before finishing, so it does not
      // know we finished): take part once more.
      log('%s transferreq from primary %s: synchronising view %d again', p.me, src, vid);
      this.resyncing.set(delivery, args);
      return [{ kind: 'resync', delivery }];
    }
    return [{ kind: 'reply', delivery, reply: { status: RsmStatus.OK, result: p.transferFor(args.last, true) } }];
  }

  /** The primary's transferreq `delivery`, inside its quiesce queue with the pipeline quiesced and every write durable. */
  quiesced(delivery: SyncDelivery): ViewSyncAction[] {
    const args = this.quiescing.get(delivery);
    assert(args !== undefined, `transferreq delivery ${delivery} quiesced, but it waits for nothing`);
    this.quiescing.delete(delivery);
    const p = this.position;
    const { src, last, vid } = args;
    if (p.isStopped || vid !== p.vidCommit || p.primary !== p.me) return [this.busyTransfer(delivery)];
    const synchronising = p.servingBackups(vid);
    if (!synchronising && p.inViewChange) return [this.busyTransfer(delivery)];
    const differs = compareViewstamp(last, p.last) !== 0;
    if (synchronising) this.pulledBy.set(src, p.last);
    const actions: ViewSyncAction[] = [];
    // Installing our state drops whatever the backup holds beyond it, our pending batches
    // included: it must get them again before we may execute them.
    if (differs) actions.push({ kind: 'forgetAcknowledgements', backup: src });
    const result = p.transferFor(last, false);
    if (differs && p.pendingBatches > 0) actions.push({ kind: 'stall', why: `${src} installs our state` });
    actions.push({ kind: 'reply', delivery, reply: { status: RsmStatus.OK, result } });
    return actions;
  }

  /** A backup's transferreq `delivery` after its `resync`: answered with what the primary lacks. */
  resynced(delivery: SyncDelivery): ViewSyncAction[] {
    const args = this.resyncing.get(delivery);
    assert(args !== undefined, `transferreq delivery ${delivery} resynchronised, but it waits for nothing`);
    this.resyncing.delete(delivery);
    return [{ kind: 'reply', delivery, reply: { status: RsmStatus.OK, result: this.position.transferFor(args.last, true) } }];
  }

  /** An answering action of `delivery` failed: forget it; the host passes the error on. */
  answerFailed(delivery: SyncDelivery): ViewSyncAction[] {
    this.quiescing.delete(delivery);
    this.resyncing.delete(delivery);
    return [];
  }

  /** transferdonereq(m, vid) on the primary. */
  answerTransferDone(delivery: SyncDelivery, args: TransferDoneArgs): ViewSyncAction[] {
    const p = this.position;
    const { m, vid } = args;
    const busy: ViewSyncAction = { kind: 'reply', delivery, reply: { status: RsmStatus.BUSY, result: 0 } };
    const ok: ViewSyncAction = { kind: 'reply', delivery, reply: { status: RsmStatus.OK, result: 0 } };
    if (p.isStopped || p.primary !== p.me || vid !== p.vidCommit || m === p.me || !p.config.isMember(m, vid)) return [busy];
    if (!p.servingBackups(vid)) return [p.inViewChange ? busy : ok];
    const pulled = this.pulledBy.get(m);
    if (pulled === undefined || compareViewstamp(pulled, p.last) !== 0) {
      log('%s transferdonereq from %s: not from a pull of my state (last %s) in this synchronisation; it must pull again', p.me, m, describeViewstamp(p.last));
      return [busy];
    }
    this.syncedBackups.add(m);
    const serving = this.current;
    if (serving.phase !== 'serving' || serving.vid !== vid) return [ok];
    if (!serving.backups.every((backup) => this.syncedBackups.has(backup))) return [ok, { kind: 'setTimer', run: serving.run, ms: p.timing.syncRetryMs }];
    return [ok, ...this.recorded(serving)];
  }

  // ---- invariants ---------------------------------------------------------------------------------

  invariants(): void {
    const p = this.position;
    const run = this.current;
    if (run.phase !== 'idle') {
      assert(Number.isSafeInteger(run.run) && run.run > 0 && run.run <= this.runs, `${p.me}: synchronisation run ${run.run} of ${this.runs}`);
      assert(Number.isSafeInteger(run.vid) && run.vid > 0, `${p.me}: synchronising view ${run.vid}`);
    }
    if (run.phase === 'collecting') {
      for (const backup of run.answers.keys()) assert(run.backups.includes(backup), `${p.me}: an answer from ${backup}, not a backup of view ${run.vid}`);
    }
    for (const [delivery, args] of [...this.quiescing, ...this.resyncing]) {
      assert(Number.isSafeInteger(delivery) && delivery > 0 && typeof args.src === 'string', `${p.me}: transferreq delivery ${delivery}`);
    }
  }

  /**
   * While the primary serves its synchronisation of the committed view (its backups `backups`):
   * the backups counted as done ⊆ those that pulled ⊆ the view's backups, and every pull was of
   * our current state `last` (it does not move while serving).
   */
  servingInvariants(backups: readonly string[], last: Viewstamp, me: string): void {
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const vid = this.position.vidCommit;
    for (const [backup, at] of this.pulledBy) {
      check(backups.includes(backup), () => `${me}: ${backup} pulled in view ${vid} but is not one of its backups [${backups.join(' ')}]`);
      check(compareViewstamp(at, last) === 0, () => `${me}: ${backup} pulled at ${describeViewstamp(at)} but our state is at ${describeViewstamp(last)} (it moved while serving the synchronisation)`);
    }
    for (const backup of this.syncedBackups) check(this.pulledBy.has(backup), () => `${me}: ${backup} counted as synchronised in view ${vid} without a pull`);
    const run = this.current;
    check(run.phase === 'serving' && run.vid === vid, () => `${me}: serving the synchronisation of view ${vid} while the run is ${run.phase}`);
  }

  // ---- the steps ----------------------------------------------------------------------------------

  /** The current run if it is `run` (and in `phase`, if given) and its view is still committed; else it ends. */
  private live<P extends Active['phase']>(run: number, phase?: P): Extract<Active, { phase: P }> | undefined {
    const current = this.current;
    if (current.phase === 'idle' || current.run !== run || this.gone(current.vid)) return undefined;
    if (phase !== undefined) assert(current.phase === phase, `${this.position.me}: an outcome for ${phase} while ${current.phase}`);
    return current as Extract<Active, { phase: P }>;
  }

  /** View `vid` is no longer the committed one, or the replica stopped. */
  private gone(vid: number): boolean {
    return this.position.isStopped || this.position.vidCommit !== vid;
  }

  /** The outcome of an action of run `run`, which is over or whose view is gone. */
  private dropped(run: number): ViewSyncAction[] {
    const current = this.current;
    if (current.phase !== 'idle' && current.run === run) return this.finish(current, false);
    assert(run <= this.runs, `${this.position.me}: an outcome of synchronisation run ${run}, which never started`);
    return [];
  }

  private finish(run: Active, synced: boolean): ViewSyncAction[] {
    this.current = { phase: 'idle' };
    return [{ kind: 'finish', run: run.run, synced }];
  }

  private askBackup(collecting: Extract<Run, { phase: 'collecting' }>, backup: string): ViewSyncAction {
    return { kind: 'askBackup', run: collecting.run, backup, args: { src: this.position.me, last: collecting.mine, vid: collecting.vid } };
  }

  /** Step 1's checks of an OK answer from `backup`. */
  private checkCollected(collecting: Extract<Run, { phase: 'collecting' }>, backup: string, answer: TransferRes): TransferRes {
    const me = this.position.me;
    const { last } = answer;
    const { vid } = collecting;
    // Nobody executes in a view before its synchronisation ends, so a last in this view (or
    // later) is a broken or forged reply; unless this primary synchronises again a view it had
    // served before a restart.
    if (last.vid > vid || (last.vid === vid && this.position.syncedVid !== vid)) {
      log('%s sync: ignoring (%s claims last %s in view %d)', me, backup, describeViewstamp(last), vid);
      return none(VIEWSTAMP_ZERO);
    }
    // Newer than ours only with something to take us there.
    if (answer.kind === TransferKind.NONE && compareViewstamp(last, collecting.mine) > 0) {
      log('%s sync: ignoring (%s claims last %s and sends nothing)', me, backup, describeViewstamp(last));
      return none(VIEWSTAMP_ZERO);
    }
    return answer;
  }

  /** Every backup answered: adopt the newest state if newer than ours (step 2), else serve (step 3). */
  private collected(collecting: Extract<Run, { phase: 'collecting' }>): ViewSyncAction[] {
    const p = this.position;
    let from = p.me;
    let newest = none(collecting.mine);
    for (const backup of collecting.backups) {
      const answer = collecting.answers.get(backup)!;
      if (compareViewstamp(answer.last, newest.last) > 0) {
        from = backup;
        newest = answer;
      }
    }
    if (from === p.me) return this.serve(collecting.run, collecting.vid, collecting.backups);
    const { run, vid, backups, mine } = collecting;
    log('%s sync: adopting the state of %s (last %s, mine %s)', p.me, from, describeViewstamp(newest.last), describeViewstamp(mine));
    const adopting: Active = { phase: 'adopting', run, vid, backups, from, mine, last: newest.last, waits: 'fetched' };
    const fetch = this.fetch(adopting, from, mine, newest);
    if (fetch === undefined) return [{ kind: 'enter', vid, phase: 'adopting' }, ...this.finish(adopting, false)];
    this.current = adopting;
    return [{ kind: 'enter', vid, phase: 'adopting' }, fetch];
  }

  /** A `fetch` of `from`'s answer to our `asked`, or undefined (logged) if the answer is malformed. */
  private fetch(current: Active, from: string, asked: Viewstamp, answer: TransferRes): ViewSyncAction | undefined {
    const me = this.position.me;
    const problem = transferProblem(asked, answer);
    if (problem !== undefined) {
      log('%s sync: ignoring the transfer of %s (%s)', me, from, problem);
      return undefined;
    }
    if (answer.kind === TransferKind.STATE && answer.stateBytes > answer.state.length) {
      log('%s sync: fetching a %d-byte state from %s in chunks', me, answer.stateBytes, from);
    }
    return { kind: 'fetch', run: current.run, from, vid: current.vid, answer };
  }

  /** The transfer is adopted (adopting or pulling): wait until it is durable. */
  private adopted(current: Extract<Active, { phase: 'adopting' | 'pulling' }>): ViewSyncAction[] {
    this.current = { ...current, waits: 'durable' };
    return [{ kind: 'awaitDurable', run: current.run }];
  }

  /** Step 3: serve the backups' pulls until every one reported. */
  private serve(run: number, vid: number, backups: readonly string[]): ViewSyncAction[] {
    this.syncedBackups = new Set();
    this.pulledBy = new Map();
    const serving: Extract<Active, { phase: 'serving' }> = { phase: 'serving', run, vid, backups };
    this.current = serving;
    const actions: ViewSyncAction[] = [{ kind: 'enter', vid, phase: 'serving' }];
    if (backups.length === 0) return [...actions, ...this.recorded(serving)];
    return [...actions, { kind: 'setTimer', run, ms: this.position.timing.syncRetryMs }];
  }

  /** Step 4: every backup has our state. */
  private recorded(serving: Extract<Active, { phase: 'serving' }>): ViewSyncAction[] {
    log('%s sync: view %d, every backup has my state (last %s)', this.position.me, serving.vid, describeViewstamp(this.position.last));
    // The backups stop counting here; the recovery loop writes the record and waits for it.
    return [{ kind: 'enter', vid: serving.vid, phase: 'recording' }, ...this.finish(serving, true)];
  }

  /** A backup's step 1: transferreq to the primary. */
  private pull(pulling: Extract<Active, { phase: 'pulling' }>): ViewSyncAction[] {
    const p = this.position;
    const next: Extract<Active, { phase: 'pulling' }> = { ...pulling, asked: p.last, last: p.last, waits: 'pulled' };
    this.current = next;
    const actions: ViewSyncAction[] = [];
    if (next.attempt === 0) actions.push({ kind: 'enter', vid: next.vid, phase: 'pulling' });
    actions.push({ kind: 'pull', run: next.run, primary: next.primary, args: { src: p.me, last: next.asked, vid: next.vid } });
    return actions;
  }

  private retryPull(pulling: Extract<Active, { phase: 'pulling' }>): ViewSyncAction[] {
    this.current = { ...pulling, waits: 'paused' };
    return [{ kind: 'pause', run: pulling.run, attempt: pulling.attempt }];
  }

  /** The primary's OK to our pull: its state is ours already, or fetch and adopt it. */
  private accept(pulling: Extract<Active, { phase: 'pulling' }>, result: TransferRes): ViewSyncAction[] {
    const p = this.position;
    const { asked, vid, primary } = pulling;
    if (compareViewstamp(p.last, asked) !== 0) return this.retryPull(pulling); // changed meanwhile: ask again
    if (compareViewstamp(result.last, asked) === 0) {
      // We have its state already.
      return result.kind === TransferKind.NONE ? this.adopted(pulling) : this.retryPull(pulling);
    }
    if (result.last.vid > vid || result.kind === TransferKind.NONE) {
      log('%s sync: ignoring (%s sent last %s for view %d, kind %d)', p.me, primary, describeViewstamp(result.last), vid, result.kind);
      return this.retryPull(pulling);
    }
    const fetching: Extract<Active, { phase: 'pulling' }> = { ...pulling, last: result.last, waits: 'fetched' };
    const fetch = this.fetch(fetching, primary, asked, result);
    if (fetch === undefined) return this.retryPull(pulling);
    this.current = fetching;
    return [fetch];
  }

  /** A backup's step 2: transferdonereq to the primary. */
  private report(reporting: Extract<Active, { phase: 'reporting' }>): ViewSyncAction[] {
    const next: Extract<Active, { phase: 'reporting' }> = { ...reporting, waits: 'reported', busy: false };
    this.current = next;
    const actions: ViewSyncAction[] = [];
    if (reporting.attempt === 0) actions.push({ kind: 'enter', vid: next.vid, phase: 'reporting' });
    actions.push({ kind: 'report', run: next.run, primary: next.primary, args: { m: this.position.me, vid: next.vid } });
    return actions;
  }

  private busyTransfer(delivery: SyncDelivery): ViewSyncAction {
    return { kind: 'reply', delivery, reply: { status: RsmStatus.BUSY, result: none(this.position.last) } };
  }
}
