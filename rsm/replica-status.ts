/**
 * Where a replica is in its life: one value, replacing the flags that used to say it together
 * (in a view change, synchronising, resync requested, started, stopped). RsmNode holds exactly
 * one ReplicaStatus and changes it only through `advance`, which refuses a change the protocol
 * does not make (an AssertionError: a bug in the node, never bad input from the network).
 *
 * The life of a replica, as the recovery loop of rsm/node.ts drives it:
 *
 * 1. created: opened, not started. Nothing is served, no view is committed.
 * 2. start: `joining` in view 0 (or in config's newest view, through `commit`).
 * 3. commit(v): view v is committed (durably, by paxos). Members of v go `syncing` in v, phase
 *    `committed`, as its primary or a backup; anyone else goes `joining` v. A commit can come at
 *    any time and always wins: a synchronisation of an older view that is still running finds
 *    its view gone (the status names another view) and starts over.
 * 4. syncing: the recovery loop moves through the phases of its role (`enter`):
 *    - primary: resuming (back from a restart inside the view it served: asks whether the
 *      cluster moved on) → quiescing (no request mid-flight; the old view's batches executed) →
 *      collecting (every backup's last viewstamp) → adopting (the newest backup's state, when
 *      newer than ours) → serving (answering the backups' transferreq until every one reported
 *      transferdonereq) → recording (waiting for the durable record of having synchronised the
 *      view; a primary stamps in a view only after it);
 *    - backup: quiescing → pulling (transferreq to the primary, installing what it sends) →
 *      reporting (transferdonereq; a BUSY sends it back to pulling); or, back from a restart
 *      inside the view it had synchronised, resuming: its durable record is enough, it is ready.
 *    A failed attempt pauses and starts again at quiescing (or resuming).
 * 5. ready(v): `normal` in v. A primary stamps and answers client requests; a backup executes
 *    the batches it is sent.
 * 6. resync: `normal` goes back to `syncing` the same view, phase `committed`: a backup serving
 *    the view gets a transferreq from its primary, which restarted before it finished
 *    synchronising the view and does it again.
 * 7. stop: `stopped`, from anywhere, for good (a crash: the process may restart with a new node).
 */
import assert from 'node:assert/strict';

export type Role = 'primary' | 'backup';

export const PRIMARY_SYNC_PHASES = ['committed', 'resuming', 'quiescing', 'collecting', 'adopting', 'serving', 'recording'] as const;
export const BACKUP_SYNC_PHASES = ['committed', 'resuming', 'quiescing', 'pulling', 'reporting'] as const;
export type PrimarySyncPhase = (typeof PRIMARY_SYNC_PHASES)[number];
export type BackupSyncPhase = (typeof BACKUP_SYNC_PHASES)[number];

export type ReplicaStatus =
  | { readonly kind: 'created' }
  /** Not a member of the committed view `vid` (0: none committed yet): asking to be admitted. */
  | { readonly kind: 'joining'; readonly vid: number }
  | { readonly kind: 'syncing'; readonly vid: number; readonly role: 'primary'; readonly phase: PrimarySyncPhase }
  | { readonly kind: 'syncing'; readonly vid: number; readonly role: 'backup'; readonly phase: BackupSyncPhase }
  | { readonly kind: 'normal'; readonly vid: number; readonly role: Role }
  | { readonly kind: 'stopped' };

export type StatusEvent =
  | { readonly kind: 'start' }
  /** View `vid` committed; `role` undefined when we are not one of its members. */
  | { readonly kind: 'commit'; readonly vid: number; readonly role: Role | undefined }
  | { readonly kind: 'enter'; readonly vid: number; readonly phase: PrimarySyncPhase | BackupSyncPhase }
  | { readonly kind: 'ready'; readonly vid: number }
  | { readonly kind: 'resync' }
  | { readonly kind: 'stop' };

export const CREATED: ReplicaStatus = { kind: 'created' };

/** The committed view the status is in; undefined before start and after stop. */
export function statusVid(status: ReplicaStatus): number | undefined {
  return status.kind === 'created' || status.kind === 'stopped' ? undefined : status.vid;
}

/** Still synchronising view `vid`: a step of that synchronisation may go on. */
export function isSyncing(status: ReplicaStatus, vid: number): boolean {
  return status.kind === 'syncing' && status.vid === vid;
}

/** Serving: not in a view change (the client protocol's inViewChange is its negation). */
export function isNormal(status: ReplicaStatus): status is Extract<ReplicaStatus, { kind: 'normal' }> {
  return status.kind === 'normal';
}

export function describeStatus(status: ReplicaStatus): string {
  switch (status.kind) {
    case 'created':
    case 'stopped':
      return status.kind;
    case 'joining':
      return `joining (view ${status.vid})`;
    case 'syncing':
      return `syncing view ${status.vid} as ${status.role}, ${status.phase}`;
    case 'normal':
      return `normal in view ${status.vid} as ${status.role}`;
  }
}

/**
 * The status after `event`. A commit or an enter for a view the status is no longer in is
 * stale (an older synchronisation that has not noticed yet) and changes nothing; every other
 * change the life above does not allow is a bug and throws.
 */
export function advance(status: ReplicaStatus, event: StatusEvent): ReplicaStatus {
  const refuse = (): never => assert.fail(`replica status: ${event.kind} refused while ${describeStatus(status)}`);
  if (status.kind === 'stopped') return event.kind === 'stop' ? status : refuse();
  switch (event.kind) {
    case 'stop':
      return { kind: 'stopped' };
    case 'start':
      return status.kind === 'created' ? { kind: 'joining', vid: 0 } : refuse();
    case 'commit': {
      if (status.kind === 'created') return refuse();
      assert(Number.isSafeInteger(event.vid) && event.vid > status.vid, `replica status: commit of view ${event.vid} while ${describeStatus(status)}`);
      if (event.role === undefined) return { kind: 'joining', vid: event.vid };
      return event.role === 'primary'
        ? { kind: 'syncing', vid: event.vid, role: 'primary', phase: 'committed' }
        : { kind: 'syncing', vid: event.vid, role: 'backup', phase: 'committed' };
    }
    case 'enter': {
      if (!isSyncing(status, event.vid) || status.kind !== 'syncing') return status; // stale
      if (status.role === 'primary') {
        assert((PRIMARY_SYNC_PHASES as readonly string[]).includes(event.phase) && event.phase !== 'committed', `replica status: a primary cannot enter ${event.phase}`);
        return { ...status, phase: event.phase as PrimarySyncPhase };
      }
      assert((BACKUP_SYNC_PHASES as readonly string[]).includes(event.phase) && event.phase !== 'committed', `replica status: a backup cannot enter ${event.phase}`);
      return { ...status, phase: event.phase as BackupSyncPhase };
    }
    case 'ready':
      if (!isSyncing(status, event.vid) || status.kind !== 'syncing') return refuse();
      // A primary is ready only after its record of having synchronised the view is durable.
      if (status.role === 'primary' && status.phase !== 'recording') return refuse();
      if (status.role === 'backup' && status.phase !== 'reporting' && status.phase !== 'resuming') return refuse();
      return { kind: 'normal', vid: status.vid, role: status.role };
    case 'resync':
      return status.kind === 'normal'
        ? status.role === 'primary'
          ? { kind: 'syncing', vid: status.vid, role: 'primary', phase: 'committed' }
          : { kind: 'syncing', vid: status.vid, role: 'backup', phase: 'committed' }
        : refuse();
  }
}
