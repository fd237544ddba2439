/**
 * What every role of a replica (primary.ts, backup.ts, view-sync.ts, join.ts) sees of it: who it
 * is, its endpoint, clock and timing, and where it stands. RsmNode builds one view and each
 * role's host on top of it (`withView`), so the getters are written once and always read the
 * node's current values.
 */
import type { Clock } from '../lib/env.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import type { Config } from '../paxos/config.js';
import type { RsmTiming } from './node.js';
import type { Viewstamp } from './protocol.js';

export interface ReplicaView {
  readonly me: string;
  readonly config: Config;
  readonly rpc: RpcEndpoint;
  readonly clock: Clock;
  readonly timing: RsmTiming;
  /** The network address of replica `id`. */
  addressOf(id: string): string;
  readonly isStopped: boolean;
  /** Not serving: from a view commit until the view is synchronised, before start and after stop. */
  readonly inViewChange: boolean;
  /** Who this replica believes is primary. */
  readonly primary: string;
  /** The newest view committed to the replica. */
  readonly vidCommit: number;
  /** The last executed viewstamp. */
  readonly last: Viewstamp;
}

/**
 * A role's host: `view` with the role's own members on top. The members are copied as property
 * descriptors, so a getter stays a getter (read at each use, never once at construction).
 */
export function withView<T extends object>(view: ReplicaView, own: T): ReplicaView & T {
  return Object.defineProperties(Object.create(view) as ReplicaView & T, Object.getOwnPropertyDescriptors(own));
}
