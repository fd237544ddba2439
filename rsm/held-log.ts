/**
 * The log entries a replica holds in storage, in viewstamp order, as a synchronous core: the ones
 * written since its last checkpoint, and the ones a checkpoint retains before itself so that a
 * replica a little behind gets those entries instead of the whole state (state transfer). It
 * decides what a checkpoint keeps; the replica writes the checkpoint and the deletions in one
 * storage write.
 *
 * 1. `add` each entry as it is logged (a batch stamped or accepted, a restore's replay).
 * 2. Once the entries since the checkpoint pass a bound (`sinceRequests`, `sinceBytes`), the
 *    replica takes a checkpoint at its last executed viewstamp: `checkpoint(last, …)` keeps every
 *    entry after `last` (logged, not executed yet), the entry at `last` (the request executed last,
 *    so that its duplicate is recognised) and the newest entries right before it, up to
 *    `retainRequests` of them and `retainBytes` of their requests, without a gap (it stops at the
 *    first that does not fit), and returns the viewstamps of the entries to delete.
 * 3. An installed state replaces the replica's whole history: `checkpoint(last, …, installed)`
 *    drops every entry, those after `last` included (requests the group's newest state does not
 *    hold).
 */
import { assert } from '../lib/assert.js';
import { compareViewstamp, describeViewstamp, type Viewstamp } from './protocol.js';
import type { LogEntry } from './replica-store.js';

/** One entry the replica holds durably (or is writing). */
export interface HeldEntry {
  readonly vs: Viewstamp;
  /** Bytes of its request. */
  readonly bytes: number;
  readonly entry: LogEntry;
}

export interface CheckpointRule {
  /** An installed state: keep nothing. */
  readonly installed: boolean;
  /** Entries before the checkpoint to keep, at most, and bytes of their requests, at most. */
  readonly retainRequests: number;
  readonly retainBytes: number;
}

export class HeldLog {
  private held: HeldEntry[] = [];
  private heldBytes = 0;
  private since = 0;
  private sinceBytesTotal = 0;

  /** The held entries, oldest first. */
  get entries(): readonly HeldEntry[] {
    return this.held;
  }

  /** Bytes of the held entries' requests. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Entries logged since the last checkpoint, and bytes of their requests. */
  get sinceRequests(): number {
    return this.since;
  }

  get sinceBytes(): number {
    return this.sinceBytesTotal;
  }

  /** Holds `entry`, logged after every held one; `sinceCheckpoint` false for one a checkpoint already covers (restore). */
  add(entry: LogEntry, sinceCheckpoint = true): void {
    this.held.push({ vs: entry.vs, bytes: entry.request.length, entry });
    this.heldBytes += entry.request.length;
    if (!sinceCheckpoint) return;
    this.since++;
    this.sinceBytesTotal += entry.request.length;
  }

  /**
   * A checkpoint at `last`: keeps what `rule` keeps (see the header, steps 2 and 3) and returns the
   * viewstamps of the entries it no longer holds, newest first. Afterwards the entries since the
   * checkpoint are the kept ones after `last`.
   */
  checkpoint(last: Viewstamp, rule: CheckpointRule): Viewstamp[] {
    const dropped: Viewstamp[] = [];
    const kept: HeldEntry[] = [];
    let keptBytes = 0;
    let retained = 0;
    let retainedBytes = 0;
    // Retaining stops at the first entry that does not fit: an older, smaller one kept after it
    // would leave a gap, and a suffix with a gap is of no use to anybody.
    let retaining = !rule.installed;
    let since = 0;
    let sinceBytes = 0;
    // Newest first, so the retained entries are the ones just before the checkpoint.
    for (let i = this.held.length - 1; i >= 0; i--) {
      const held = this.held[i]!;
      const order = compareViewstamp(held.vs, last);
      let keep = !rule.installed && order >= 0;
      if (retaining && order < 0) {
        retaining = retained < rule.retainRequests && retainedBytes + held.bytes <= rule.retainBytes;
        if (retaining) {
          keep = true;
          retained++;
          retainedBytes += held.bytes;
        }
      }
      if (!keep) {
        dropped.push(held.vs);
        continue;
      }
      kept.push(held);
      keptBytes += held.bytes;
      if (order > 0) {
        since++;
        sinceBytes += held.bytes;
      }
    }
    kept.reverse();
    this.held = kept;
    this.heldBytes = keptBytes;
    this.since = since;
    this.sinceBytesTotal = sinceBytes;
    return dropped;
  }

  /**
   * Its own rules, given the replica's last executed viewstamp: strictly ascending without a gap
   * (each entry the next seqno of its view or seqno 1 of a later view: restore checks it, a batch
   * is appended right after the one before it, a checkpoint drops a prefix and an installed state
   * all); `bytes` is the sum of their sizes; the entries since the checkpoint are at most the held
   * ones (a checkpoint also retains entries before itself); entries up to `last` end at `last` (an
   * execution logs its entry in the same step, the periodic checkpoint keeps the entry at last).
   * Returns the viewstamps held after `last` (the replica's logged, not executed entries), and
   * whether the entry at `last` is held. `who` starts each message.
   */
  invariants(last: Viewstamp, who = 'held log invariants'): { after: Viewstamp[]; heldAtLast: boolean } {
    // The messages are built only when a check fails: this runs after every simulated event.
    const check = (ok: boolean, message: () => string): void => assert(ok, ok ? '' : message());
    const vs = describeViewstamp;
    const follows = (next: Viewstamp, prev: Viewstamp): boolean =>
      next.vid === prev.vid ? next.seqno === prev.seqno + 1 : next.vid > prev.vid && next.seqno === 1;
    let bytes = 0;
    let heldAtLast = false;
    const after: Viewstamp[] = [];
    this.held.forEach((held, i) => {
      bytes += held.bytes;
      if (i > 0) {
        const previous = this.held[i - 1]!.vs;
        check(follows(held.vs, previous), () => `${who}: log held ${vs(held.vs)} right after ${vs(previous)} (out of order or a gap)`);
      }
      const order = compareViewstamp(held.vs, last);
      if (order === 0) heldAtLast = true;
      if (order > 0) after.push(held.vs);
    });
    check(bytes === this.heldBytes, () => `${who}: logHeldBytes ${this.heldBytes}, but the ${this.held.length} held entries hold ${bytes}`);
    check(this.since <= this.held.length && this.sinceBytesTotal <= this.heldBytes, () => `${who}: ${this.since} requests (${this.sinceBytesTotal} bytes) since the checkpoint, but ${this.held.length} (${this.heldBytes} bytes) held`);
    if (this.held.length > after.length) check(heldAtLast, () => `${who}: log entries held up to lastMyvs ${vs(last)} end before it (first held ${vs(this.held[0]!.vs)})`);
    return { after, heldAtLast };
  }
}
