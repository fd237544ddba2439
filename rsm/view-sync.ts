/**
 * The synchronisation of a view, both sides of state transfer: what a replica does in the view
 * change between the commit of a view and serving it, and what it answers the others meanwhile.
 * RsmNode's recovery loop runs `syncWithBackups` on the view's primary and `syncWithPrimary` on
 * a backup (after syncView quiesced the pipeline), and routes transferreq and transferdonereq
 * here. The steps are numbered on each method; rsm/README.md ("View change and recovery",
 * "State transfer") tells the whole protocol. The phases it enters are the replica status's
 * (rsm/replica-status.ts).
 *
 * It holds what only the synchronisation needs: the backups that pulled our state in this
 * synchronisation and those that reported it done, and the wake-up of the primary's wait.
 */
import { assert } from '../lib/assert.js';
import { logger } from '../lib/log.js';
import type { HandlerReply } from '../lib/rpc.js';
import type { ReplicaView } from './replica-view.js';
import { compareViewstamp, describeViewstamp, RsmStatus, rsmProtocol, TransferKind, VIEWSTAMP_ZERO, type TransferRes, type Viewstamp } from './protocol.js';
import type { PrimarySyncPhase, BackupSyncPhase } from './replica-status.js';
import type { LogEntry } from './replica-store.js';
import { fetchTransfer, transferProblem, type Transfer } from './state-transfer.js';
import { Wakeup } from './wakeup.js';

const log = logger('rsm');
const EMPTY = new Uint8Array(0);

/** What the synchronisation reads and does on the replica. */
export interface SyncHost extends ReplicaView {
  /** The last view whose synchronisation this replica completed (durably). */
  readonly syncedVid: number;
  /** Pending batches of the primary's pipeline. */
  readonly pendingBatches: number;
  /** Resolves once every write begun so far is durable. */
  readonly durable: Promise<void>;
  /** Resolves once every write queued so far, and any merged into it, is durable. */
  drained(): Promise<void>;
  /** View `vid` is no longer the committed one, or the replica stopped. */
  viewGone(vid: number): boolean;
  /** Enters a phase of the synchronisation of `vid` (ignored if the status moved on). */
  enter(vid: number, phase: PrimarySyncPhase | BackupSyncPhase): void;
  /** The primary is synchronising `vid` and answering its backups (phase serving). */
  servingBackups(vid: number): boolean;
  /** A backup serving its view synchronises it again. */
  resync(): void;
  /** Runs `task` with the primary's pipeline quiesced, inside its invoke queue. */
  quiesced<T>(task: () => Promise<T>): Promise<T>;
  /** A backup will install our state: its acknowledgements of our pending batches no longer count. */
  forgetAcknowledgements(backup: string): void;
  stall(why: string): void;
  /** What to send a replica whose last is `theirs` (nothing, entries, or the state's first chunk). */
  transferFor(theirs: Viewstamp, onlyIfNewer: boolean): TransferRes;
  /** Executes and logs the entries that follow our last (a transfer of entries). */
  executeEntries(entries: readonly LogEntry[]): void;
  /** Replaces the state; false (unchanged) if the bytes do not decode. */
  installState(state: Uint8Array, last: Viewstamp, from: string, vid: number): boolean;
  /** The wait before transfer step `attempt` + 1; false if the replica stopped meanwhile. */
  transferPause(attempt: number): Promise<boolean>;
}

export class ViewSync {
  /** Backups of the view being synchronised that sent transferdonereq (status serving). */
  private syncedBackups = new Set<string>();
  /**
   * Backups that pulled from this incarnation during the current synchronisation (phase serving), with
   * our last when we answered them. A transferdonereq counts only from one of them at our last: a
   * backup may report a transfer it got from our previous incarnation in the same view (we
   * crashed and re-synchronise the view), whose state can be older than ours now.
   */
  private pulledBy = new Map<string, Viewstamp>();
  /** Wakes the primary's synchronisation when a backup reports transferdonereq, a view commits or the replica stops. */
  private readonly progress = new Wakeup();

  constructor(private readonly host: SyncHost) {}

  /** Something the primary's wait depends on changed (a newer view, a stop). */
  wake(): void {
    this.progress.notify();
  }

  /**
   * While the primary serves its synchronisation of the committed view (its backups `backups`):
   * the backups counted as done ⊆ those that pulled ⊆ the view's backups, and every pull was of
   * our current state `last` (it does not move while serving).
   */
  invariants(backups: readonly string[], last: Viewstamp, me: string): void {
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const vid = this.host.vidCommit;
    for (const [backup, at] of this.pulledBy) {
      check(backups.includes(backup), () => `${me}: ${backup} pulled in view ${vid} but is not one of its backups [${backups.join(' ')}]`);
      check(compareViewstamp(at, last) === 0, () => `${me}: ${backup} pulled at ${describeViewstamp(at)} but our state is at ${describeViewstamp(last)} (it moved while serving the synchronisation)`);
    }
    for (const backup of this.syncedBackups) check(this.pulledBy.has(backup), () => `${me}: ${backup} counted as synchronised in view ${vid} without a pull`);
  }

  /**
   * The primary's synchronisation of view `vid` (the lab's sync_with_backups, extended):
   * 1. (syncView) The pipeline is quiesced and the pending batches of the old view executed here
   *    (phase quiescing).
   * 2. (collecting, adopting) Ask every backup for its last viewstamp (transferreq to the backup), and adopt the state of
   *    the newest one if it is newer than ours. A restarted primary has lost its state, and a
   *    backup may have executed a request the old primary never executed; every request a client
   *    saw acknowledged was executed by every member of its view, so the newest state of the view's
   *    members holds all of them.
   * 3. (serving) Answer the backups' transferreq, and wait until every backup of the view sent
   *    transferdonereq, or a newer view is committed. Now and then nudge the backups that have
   *    not reported (nudgeBackups).
   * 4. (recording) The recovery loop waits for the durable record of the synchronisation.
   */
  async syncWithBackups(vid: number): Promise<boolean> {
    const host = this.host;
    const backups = host.config.members(vid).filter((member) => member !== host.me);

    const mine = host.last;
    host.enter(vid, 'collecting');
    const newest = await this.collectFromBackups(vid, backups);
    if (newest === undefined) return false;
    if (compareViewstamp(newest.answer.last, mine) > 0) {
      host.enter(vid, 'adopting');
      log('%s sync: adopting the state of %s (last %s, mine %s)', host.me, newest.from, describeViewstamp(newest.answer.last), describeViewstamp(mine));
      const transfer = await this.receiveTransfer(newest.from, vid, mine, newest.answer);
      if (transfer === undefined || host.viewGone(vid) || compareViewstamp(host.last, mine) !== 0) return false;
      if (!this.adoptTransfer(transfer, newest.answer.last, newest.from, vid)) return false;
      await host.durable;
      if (host.viewGone(vid)) return false;
    }

    this.syncedBackups = new Set();
    this.pulledBy = new Map();
    host.enter(vid, 'serving');
    while (!backups.every((backup) => this.syncedBackups.has(backup))) {
      if (host.viewGone(vid)) return false; // the status is another view's, or stopped: no longer serving
      const timer = host.clock.setTimer(host.timing.syncRetryMs, () => this.progress.notify());
      const started = host.clock.now();
      await this.progress.wait();
      timer.cancel();
      if (host.clock.now() - started >= host.timing.syncRetryMs) this.nudgeBackups(vid, backups);
    }
    log('%s sync: view %d, every backup has my state (last %s)', host.me, vid, describeViewstamp(host.last));
    if (host.viewGone(vid)) return false;
    // Recording: the backups stop counting here; the recovery loop waits for the durable record.
    host.enter(vid, 'recording');
    return true;
  }

  /**
   * A backup that restarted with a durable record of having synchronised this view resumes it
   * and will not send transferdonereq. A pull from its primary makes it synchronise again (see
   * onTransferReq); send one to every backup that has not reported, now and then.
   */
  private nudgeBackups(vid: number, backups: readonly string[]): void {
    const host = this.host;
    for (const backup of backups) {
      if (this.syncedBackups.has(backup)) continue;
      log('%s sync: nudging %s (no transferdonereq yet for view %d)', host.me, backup, vid);
      void host.rpc.call(
        host.addressOf(backup),
        rsmProtocol.transferreq,
        { src: host.me, last: host.last, vid },
        { timeoutMs: host.timing.transferTimeoutMs },
      );
    }
  }

  /**
   * Asks every backup for its last viewstamp and, when newer than ours, what takes us there (the
   * entries after our last, or the first chunk of its state). Retries each until it answers or the
   * view is gone (then resolves undefined). Resolves the newest answer.
   */
  private async collectFromBackups(vid: number, backups: readonly string[]): Promise<{ from: string; answer: TransferRes } | undefined> {
    const host = this.host;
    const none = (last: Viewstamp): TransferRes => ({ kind: TransferKind.NONE, last, stateBytes: 0, state: EMPTY, entries: [] });
    const mine = host.last;
    const answers = await Promise.all(
      backups.map(async (backup) => {
        for (let attempt = 0; ; attempt++) {
          if (host.viewGone(vid)) return undefined;
          // resendOnOldServer: a backup that restarted since we last called it answers its first
          // call RPC_OLDSRV; asking its new instance at once saves a transferRetryMs pause on
          // every rejoin (a transferreq may run on both instances: it only reads, or restarts
          // the backup's own synchronisation, which the dead instance no longer has).
          const reply = await host.rpc.call(
            host.addressOf(backup),
            rsmProtocol.transferreq,
            { src: host.me, last: mine, vid },
            { timeoutMs: host.timing.transferTimeoutMs, resendOnOldServer: true },
          );
          if (host.viewGone(vid)) return undefined;
          if (reply.ok && reply.status === RsmStatus.OK) {
            const answer = reply.result;
            const { last } = answer;
            // Nobody executes in a view before its synchronisation ends, so a last in this view
            // (or later) is a broken or forged reply; unless this primary synchronises again a
            // view it had served before a restart (syncView).
            if (last.vid > vid || (last.vid === vid && host.syncedVid !== vid)) {
              log('%s sync: ignoring (%s claims last %s in view %d)', host.me, backup, describeViewstamp(last), vid);
              return { from: backup, answer: none(VIEWSTAMP_ZERO) };
            }
            // Newer than ours only with something to take us there.
            if (answer.kind === TransferKind.NONE && compareViewstamp(last, mine) > 0) {
              log('%s sync: ignoring (%s claims last %s and sends nothing)', host.me, backup, describeViewstamp(last));
              return { from: backup, answer: none(VIEWSTAMP_ZERO) };
            }
            return { from: backup, answer };
          }
          log('%s sync: collecting from %s: %s', host.me, backup, reply.ok ? `status ${reply.status}` : reply.error.code);
          if (!(await host.transferPause(attempt))) return undefined;
        }
      }),
    );
    if (answers.some((answer) => answer === undefined)) return undefined;
    let newest: { from: string; answer: TransferRes } = { from: host.me, answer: none(mine) };
    for (const answer of answers) if (compareViewstamp(answer!.answer.last, newest.answer.last) > 0) newest = answer!;
    return newest;
  }

  /**
   * A backup's synchronisation of view `vid` (the lab's sync_with_primary): transferreq to the
   * primary until it answers OK, installing its state when its last viewstamp differs from ours;
   * then transferdonereq until OK. A BUSY to transferdonereq means the primary does not count our
   * pull (it came from its previous incarnation, which crashed, or it is collecting again): pull
   * again. Gives up when a newer view is committed.
   */
  async syncWithPrimary(vid: number): Promise<boolean> {
    const host = this.host;
    const primary = host.primary;
    for (;;) {
      host.enter(vid, 'pulling');
      if (!(await this.pullFromPrimary(primary, vid))) return false;
      host.enter(vid, 'reporting');
      for (let attempt = 0; ; attempt++) {
        if (host.viewGone(vid)) return false;
        const reply = await host.rpc.call(
          host.addressOf(primary),
          rsmProtocol.transferdonereq,
          { m: host.me, vid },
          { timeoutMs: host.timing.transferTimeoutMs },
        );
        if (host.viewGone(vid)) return false;
        if (reply.ok && reply.status === RsmStatus.OK) {
          log('%s sync: view %d, %s has our transfer done', host.me, vid, primary);
          return true;
        }
        log('%s sync: transferdonereq to %s: %s', host.me, primary, reply.ok ? `status ${reply.status}` : reply.error.code);
        if (!(await host.transferPause(attempt))) return false;
        if (reply.ok) break; // BUSY: pull again
      }
    }
  }

  /** transferreq to the primary until it answers OK and its state is ours (durably); false if the view is gone. */
  private async pullFromPrimary(primary: string, vid: number): Promise<boolean> {
    const host = this.host;
    for (let attempt = 0; ; attempt++) {
      if (host.viewGone(vid)) return false;
      const last = host.last;
      const reply = await host.rpc.call(
        host.addressOf(primary),
        rsmProtocol.transferreq,
        { src: host.me, last, vid },
        { timeoutMs: host.timing.transferTimeoutMs },
      );
      if (host.viewGone(vid)) return false;
      if (reply.ok && reply.status === RsmStatus.OK && (await this.acceptTransfer(primary, vid, last, reply.result))) {
        await host.durable; // the primary learns we have its state only once it is durable here
        return !host.viewGone(vid);
      }
      if (!reply.ok || reply.status !== RsmStatus.OK) {
        log('%s sync: transferreq to %s: %s', host.me, primary, reply.ok ? `status ${reply.status}` : reply.error.code);
      }
      if (!(await host.transferPause(attempt))) return false;
    }
  }

  /** Takes the primary's state (or the entries we lack) when its last differs from ours; resolves success. */
  private async acceptTransfer(primary: string, vid: number, asked: Viewstamp, result: TransferRes): Promise<boolean> {
    const host = this.host;
    if (compareViewstamp(host.last, asked) !== 0) return false; // changed meanwhile: ask again
    if (compareViewstamp(result.last, asked) === 0) return result.kind === TransferKind.NONE; // we have its state already
    if (result.last.vid > vid || result.kind === TransferKind.NONE) {
      log('%s sync: ignoring (%s sent last %s for view %d, kind %d)', host.me, primary, describeViewstamp(result.last), vid, result.kind);
      return false;
    }
    const transfer = await this.receiveTransfer(primary, vid, asked, result);
    if (transfer === undefined || host.viewGone(vid) || compareViewstamp(host.last, asked) !== 0) return false;
    return this.adoptTransfer(transfer, result.last, primary, vid);
  }

  /**
   * Checks a transferreq answer (transferProblem) and completes it (fetchTransfer: the rest of a
   * large state, chunk by chunk). Undefined, logged, when it is malformed or cannot be completed.
   */
  private async receiveTransfer(from: string, vid: number, asked: Viewstamp, answer: TransferRes): Promise<Transfer | undefined> {
    const host = this.host;
    const problem = transferProblem(asked, answer);
    if (problem !== undefined) {
      log('%s sync: ignoring the transfer of %s (%s)', host.me, from, problem);
      return undefined;
    }
    if (answer.kind === TransferKind.STATE && answer.stateBytes > answer.state.length) {
      log('%s sync: fetching a %d-byte state from %s in chunks', host.me, answer.stateBytes, from);
    }
    const fetched = await fetchTransfer(
      { rpc: host.rpc, address: host.addressOf(from), src: host.me, vid, timeoutMs: host.timing.transferTimeoutMs, abandoned: () => host.viewGone(vid) },
      answer,
    );
    if (!fetched.ok) {
      if (!host.viewGone(vid)) log('%s sync: the transfer from %s failed (%s)', host.me, from, fetched.reason);
      return undefined;
    }
    return fetched.transfer;
  }

  /** Adopts a completed transfer that takes us to `last`: installs a state, or executes the entries we lacked. */
  private adoptTransfer(transfer: Transfer, last: Viewstamp, from: string, vid: number): boolean {
    const host = this.host;
    switch (transfer.kind) {
      case 'none':
        return compareViewstamp(last, host.last) === 0;
      case 'state':
        return host.installState(transfer.state, last, from, vid);
      case 'entries': {
        // Checked to follow our last (transferProblem): executing them is exactly what a backup
        // does with the batches it missed, and they are logged like batches.
        host.executeEntries(transfer.entries);
        log('%s sync: executed the %d requests %s..%s from %s', host.me, transfer.entries.length, describeViewstamp(transfer.entries[0]!.vs), describeViewstamp(last), from);
        return true;
      }
    }
  }

  /**
   * transferreq(src, last, vid). Read-only; the state is included only when it is of use:
   * - on the primary of `vid`, from a backup of it: while synchronising `vid` (phase serving), or while
   *   serving it (a backup that restarted inside the view re-synchronises without a view change),
   *   with the state when `last` differs from ours (the lab's rule);
   * - on a backup of `vid`, from its primary collecting (syncWithBackups step 2), with the state
   *   when ours is newer than `last`;
   * - BUSY otherwise (in particular for a view we have not committed, or no longer hold).
   */
  async answerTransfer(src: string, last: Viewstamp, vid: number): Promise<HandlerReply<TransferRes>> {
    const host = this.host;
    // Ship only durable state: a replica that installs it may be the one that keeps it.
    await host.drained();
    const busy = { status: RsmStatus.BUSY, result: { kind: TransferKind.NONE, last: host.last, stateBytes: 0, state: EMPTY, entries: [] } };
    if (host.isStopped || vid !== host.vidCommit) return busy;
    const members = host.config.members(vid);
    if (!members.includes(src) || !members.includes(host.me) || src === host.me) {
      log('%s transferreq from %s: ignoring (not both members of view %d)', host.me, src, vid);
      return busy;
    }
    if (host.primary === host.me) {
      // Inside the invoke queue, so no batch is half-way: the state shipped and the batches the
      // backup executes afterwards line up (a batch the backup executed but we have not is resent
      // to it as pending; one we executed is in the state).
      return host.quiesced(async () => {
        await host.drained();
        if (host.isStopped || vid !== host.vidCommit || host.primary !== host.me) return busy;
        const synchronising = host.servingBackups(vid);
        if (!synchronising && host.inViewChange) return busy;
        const differs = compareViewstamp(last, host.last) !== 0;
        if (synchronising) this.pulledBy.set(src, host.last);
        // Installing our state drops whatever the backup holds beyond it, our pending batches
        // included: it must get them again before we may execute them.
        if (differs) host.forgetAcknowledgements(src);
        const result = host.transferFor(last, false);
        if (differs && host.pendingBatches > 0) host.stall(`${src} installs our state`);
        return { status: RsmStatus.OK, result };
      });
    }
    if (src === host.primary) {
      if (!host.inViewChange) {
        // The primary is synchronising this view again (it restarted before finishing, so it does
        // not know we finished): take part once more.
        log('%s transferreq from primary %s: synchronising view %d again', host.me, src, vid);
        host.resync();
      }
      return { status: RsmStatus.OK, result: host.transferFor(last, true) };
    }
    return busy;
  }

  /**
   * transferdonereq(m, vid) on the primary: while synchronising `vid`, m has our state; once all
   * backups have, the view serves. While serving `vid`, OK again (a retry whose first reply was
   * lost, or a backup that re-synchronised inside the view). BUSY otherwise.
   */
  answerTransferDone(m: string, vid: number): HandlerReply<number> {
    const host = this.host;
    const busy = { status: RsmStatus.BUSY, result: 0 };
    if (host.isStopped || host.primary !== host.me || vid !== host.vidCommit || m === host.me) return busy;
    if (!host.config.isMember(m, vid)) return busy;
    if (host.servingBackups(vid)) {
      const pulled = this.pulledBy.get(m);
      if (pulled === undefined || compareViewstamp(pulled, host.last) !== 0) {
        log('%s transferdonereq from %s: not from a pull of my state (last %s) in this synchronisation; it must pull again', host.me, m, describeViewstamp(host.last));
        return busy;
      }
      this.syncedBackups.add(m);
      this.progress.notify();
      return { status: RsmStatus.OK, result: 0 };
    }
    return host.inViewChange ? busy : { status: RsmStatus.OK, result: 0 };
  }
}
