/**
 * Paxos and heartbeat wire messages (the lab's paxos_protocol), all served on a node's main port.
 *
 * | message     | proc    | from → to             | args (wire order)                           | result                                          |
 * |-------------|---------|-----------------------|---------------------------------------------|-------------------------------------------------|
 * | preparereq  | 0x11001 | proposer → acceptors  | src, cluster, instance: u32, n: {n, m}      | {oldinstance: bool, accept: bool, n_a, v_a}     |
 * | acceptreq   | 0x11002 | proposer → promisers  | src, cluster, instance: u32, n: {n, m}, v   | bool: accepted                                  |
 * | decidereq   | 0x11003 | proposer → accepters  | src, cluster, instance: u32, v              | i32 (unused, 0)                                 |
 * | heartbeat   | 0x11004 | member → member       | me, cluster, vid: u32                       | u32: the receiver's vid                         |
 * | clusterid   | 0x11005 | node → node           | src, cluster: string ("" unknown)           | cluster: string (the receiver's, "" unknown)    |
 * | quorum      | 0x11006 | anyone → control port | dummy: i32                                  | {vid, members, reachable, unreachableSince, quorum} |
 *
 * `cluster` is the sender's cluster id, "" while it does not know one (a fresh joiner). A receiver
 * whose id is known and differs refuses the four Paxos/heartbeat messages with status
 * CLUSTER_MISMATCH (2) and a result that says nothing (a refusal, false, 0, 0); a cluster field that
 * is not a valid id (isValidClusterId) gets CLUSTER_INVALID (3). Neither changes anything.
 *
 * Every other reply carries status OK (0) or ERR (1) in the RPC header. Only the heartbeat uses
 * ERR ("our views differ and I am not mid-Paxos"); the acceptor answers OK and encodes its
 * decision in the result. `src` and `me` are node ids (informational for the acceptor).
 *
 * A refused prepare (accept = false, oldinstance = false) carries the acceptor's promise in n_a, a
 * field a refusal does not otherwise use (our extension; the proposer outbids it next round).
 *
 * clusterid answers OK when both ids are known and equal or either is unknown (""), ERR when they
 * differ: the two nodes belong to different clusters and must not talk Paxos (paxos/identity.ts).
 * quorum is served on the control port (ME+1) by the replica host: whether this node currently
 * reaches a majority of its view (paxos/identity.ts, `QuorumWatch`).
 *
 * A preparereq with n = (0, "") never changes an acceptor's state: it is how a lagging node asks
 * "what was decided in this instance?" (answered with oldinstance = true and the value).
 */
import { procedure, codecs, type Codec } from '../lib/rpc.js';

/**
 * Reply statuses of the paxos protocol. CLUSTER_MISMATCH: the sender's cluster id is known, the
 * receiver's too, and they differ (the message was refused, nothing changed). CLUSTER_INVALID: the
 * sender's cluster field is not a cluster id (refused, nothing changed).
 */
export const PaxosStatus = { OK: 0, ERR: 1, CLUSTER_MISMATCH: 2, CLUSTER_INVALID: 3 } as const;

/** A proposal number: a round `n` and the proposer's id `m` as tie-break. */
export interface ProposalNumber {
  readonly n: number;
  readonly m: string;
}

/** The smallest proposal number; no real proposal uses it. */
export const PROPOSAL_ZERO: ProposalNumber = Object.freeze({ n: 0, m: '' });

/** Total order on proposal numbers: by n, then by m as a string. */
export function compareProposal(a: ProposalNumber, b: ProposalNumber): number {
  if (a.n !== b.n) return a.n < b.n ? -1 : 1;
  if (a.m !== b.m) return a.m < b.m ? -1 : 1;
  return 0;
}

export function describeProposal(p: ProposalNumber): string {
  return `(${p.n},${p.m})`;
}

/** Upper bound on node ids and values read from the network (a view of many ids still fits). */
export const ID_BYTES_MAX = 256;
export const VALUE_BYTES_MAX = 64 * 1024;

const id: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(ID_BYTES_MAX) };
const value: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(VALUE_BYTES_MAX) };

export const proposalCodec: Codec<ProposalNumber> = codecs.struct<ProposalNumber>({ n: codecs.u32, m: id });

export interface PrepareArgs {
  readonly src: string;
  /** The sender's cluster id, "" while it knows none. */
  readonly cluster: string;
  readonly instance: number;
  readonly n: ProposalNumber;
}

export interface PrepareRes {
  /** The instance is already decided here; `v_a` holds the decided value. */
  readonly oldinstance: boolean;
  /** A promise: the acceptor will not accept proposals below `n` in this instance. */
  readonly accept: boolean;
  /**
   * With accept: the highest proposal accepted in this instance (PROPOSAL_ZERO if none) and its
   * value. With a refusal: the promise that caused it (v_a empty).
   */
  readonly n_a: ProposalNumber;
  readonly v_a: string;
}

export interface AcceptArgs {
  readonly src: string;
  /** The sender's cluster id, "" while it knows none. */
  readonly cluster: string;
  readonly instance: number;
  readonly n: ProposalNumber;
  readonly v: string;
}

export interface DecideArgs {
  readonly src: string;
  /** The sender's cluster id, "" while it knows none. */
  readonly cluster: string;
  readonly instance: number;
  readonly v: string;
}

export interface HeartbeatArgs {
  readonly me: string;
  /** The sender's cluster id, "" while it knows none. */
  readonly cluster: string;
  readonly vid: number;
}

export interface ClusterIdArgs {
  readonly src: string;
  /** The caller's cluster id, "" while it does not know one (a fresh joiner). */
  readonly cluster: string;
}

/** The receiver's view of its own reachability of a majority (quorum, on the control port). */
export interface QuorumRes {
  readonly vid: number;
  readonly members: string[];
  /** Members (self included) that answered the last probe. */
  readonly reachable: string[];
  /** For each unreachable member, "<id>@<ms since the Unix epoch of its first failed probe>". */
  readonly unreachableSince: string[];
  readonly quorum: boolean;
}

/**
 * The cluster field of the Paxos and heartbeat messages: read up to ID_BYTES_MAX bytes, so an
 * over-long or malformed id reaches the handler and is refused with CLUSTER_INVALID (anything
 * longer than that fails to decode: RPC_BAD_ARGS). Valid ids are at most 64 bytes.
 */
export const clusterField: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(ID_BYTES_MAX) };
const clusterIdText: Codec<string> = { write: (w, v) => w.string(v), read: (r) => r.string(64) };
const idList: Codec<string[]> = codecs.list(id, 1024);

export const clusterid = procedure<ClusterIdArgs, string>(
  0x11005,
  'clusterid',
  codecs.struct<ClusterIdArgs>({ src: id, cluster: clusterIdText }),
  clusterIdText,
);

export const quorum = procedure<{ readonly dummy: number }, QuorumRes>(
  0x11006,
  'quorum',
  codecs.struct<{ readonly dummy: number }>({ dummy: codecs.i32 }),
  codecs.struct<QuorumRes>({
    vid: codecs.u32,
    members: idList,
    reachable: idList,
    unreachableSince: codecs.list({ write: (w, v) => w.string(v), read: (r) => r.string(ID_BYTES_MAX + 32) }, 1024),
    quorum: codecs.bool,
  }),
);

export const preparereq = procedure<PrepareArgs, PrepareRes>(
  0x11001,
  'preparereq',
  codecs.struct<PrepareArgs>({ src: id, cluster: clusterField, instance: codecs.u32, n: proposalCodec }),
  codecs.struct<PrepareRes>({ oldinstance: codecs.bool, accept: codecs.bool, n_a: proposalCodec, v_a: value }),
);

export const acceptreq = procedure<AcceptArgs, boolean>(
  0x11002,
  'acceptreq',
  codecs.struct<AcceptArgs>({ src: id, cluster: clusterField, instance: codecs.u32, n: proposalCodec, v: value }),
  codecs.bool,
);

export const decidereq = procedure<DecideArgs, number>(
  0x11003,
  'decidereq',
  codecs.struct<DecideArgs>({ src: id, cluster: clusterField, instance: codecs.u32, v: value }),
  codecs.i32,
);

export const heartbeat = procedure<HeartbeatArgs, number>(
  0x11004,
  'heartbeat',
  codecs.struct<HeartbeatArgs>({ me: id, cluster: clusterField, vid: codecs.u32 }),
  codecs.u32,
);
