/**
 * The durable Paxos state of one node in a `Storage`, and the one ordered path every change takes.
 *
 * Keys (values are big-endian codec records):
 *
 *   paxos/promised                 {instance: u32, n: u32, m: string}   promise for instanceH+1
 *   paxos/accepted                 {instance: u32, n: u32, m: string, v: string}
 *   paxos/decided/<instance, 10 digits>  {value: string, cluster: string}   (see below)
 *   paxos/proposer                 {n: u32}   the highest round this node ever proposed with
 *   paxos/cluster                  {id: string}   the cluster this node belongs to (see below)
 *
 * CLUSTER IDENTITY. The first node of a cluster draws a cluster id (`drawClusterId`, from the
 * injected Random) when it starts with empty storage; a joiner adopts the id of the cluster it
 * joins. The id never changes afterwards. Nodes with different ids refuse each other
 * (`clusterid`, paxos/messages.ts), so a node started on another cluster's data directory cannot
 * pour that cluster's views into this one. This key is the one place the id is kept; everything
 * else (the startup line, the identity check) reads it through `load` / `readNodeIdentity`.
 *
 * EVERY VIEW RECORDS ITS CLUSTER. A decided record holds the view value and the cluster id this
 * node had when it decided (committed or adopted) that view, "" while it knew none (a joiner that
 * has not adopted an id yet). The value itself, and so the text log's `done` lines, are unchanged.
 * Records written before ids were kept hold the value alone; they still read (cluster undefined:
 * "not recorded"). `load` refuses a storage whose views name a cluster other than `paxos/cluster`
 * (CLUSTER_MISMATCH), or name one while `paxos/cluster` is missing (STORAGE_CORRUPT): such a
 * storage was mixed from two clusters, or lost its identity, and is not silently read.
 *
 * A NODE'S DURABLE STATE is this storage TOGETHER with its text log paxos-<ME>.log: the host
 * treats storage that holds keys while the log is missing as left over from an earlier life of
 * the port, moves it aside (never deletes it) and starts fresh (rsm/replica-process.ts).
 *
 * DURABILITY RULE. Every change is written with `sync: true` before any reply that depends on it
 * leaves. Writes go through one serial chain, so they reach storage in the order the in-memory
 * state changed, whatever the storage does with concurrent batches; a reply waits for the chain
 * as it stood when the reply was computed (see `flushed`). A write failure is fatal for the node:
 * it can no longer promise durability, so every later write fails too.
 */
import { assert } from '../lib/assert.js';
import { Reader, Writer } from '../lib/codec.js';
import type { Storage, StorageOp } from '../lib/env.js';
import { ViewstampError } from '../lib/errors.js';
import { ID_BYTES_MAX, VALUE_BYTES_MAX, type ProposalNumber } from './messages.js';
import type { HistoryEntry } from './view.js';

export const KEY_PROMISED = 'paxos/promised';
export const KEY_ACCEPTED = 'paxos/accepted';
export const KEY_PROPOSER = 'paxos/proposer';
export const KEY_DECIDED_PREFIX = 'paxos/decided/';
export const KEY_CLUSTER = 'paxos/cluster';

/** Upper bound on a cluster id read from storage or the network. */
export const CLUSTER_ID_BYTES_MAX = 64;

/** A cluster id: 1..64 printable characters without whitespace. */
export function isValidClusterId(id: string): boolean {
  return id.length > 0 && id.length <= CLUSTER_ID_BYTES_MAX && /^[\x21-\x7e]+$/.test(id);
}

/**
 * Whether a message from a node of cluster `theirs` may be answered by a node of cluster `mine`
 * (either "" = unknown). 'invalid': `theirs` is neither "" nor a valid id.
 */
export function clusterCheck(mine: string, theirs: string): 'ok' | 'mismatch' | 'invalid' {
  if (theirs !== '' && !isValidClusterId(theirs)) return 'invalid';
  if (mine === '' || theirs === '' || mine === theirs) return 'ok';
  return 'mismatch';
}

/** A fresh cluster id: "c" and 12 hex digits from `random` (the injected PRNG). */
export function drawClusterId(random: { int(n: number): number }): string {
  let id = 'c';
  for (let i = 0; i < 12; i++) id += random.int(16).toString(16);
  return id;
}

export function decidedKey(instance: number): string {
  assert(Number.isSafeInteger(instance) && instance >= 1 && instance <= 0xffff_ffff, `bad instance ${instance}`);
  return `${KEY_DECIDED_PREFIX}${String(instance).padStart(10, '0')}`;
}

export interface PromisedRecord {
  readonly instance: number;
  readonly n: ProposalNumber;
}

export interface AcceptedRecord {
  readonly instance: number;
  readonly n: ProposalNumber;
  readonly v: string;
}

/** A decided view as stored: the value and the cluster it was decided in. */
export interface DecidedRecord extends HistoryEntry {
  /** The node's cluster id when it decided the view; "" = not known then; undefined = an old record. */
  readonly cluster: string | undefined;
}

/** Everything `load` finds. */
export interface PaxosDurableState {
  readonly decided: DecidedRecord[];
  readonly promised: PromisedRecord | undefined;
  readonly accepted: AcceptedRecord | undefined;
  readonly proposerN: number;
  /** The cluster this node belongs to; undefined on a node that never learned it. */
  readonly clusterId: string | undefined;
}

export function putPromised(record: PromisedRecord): StorageOp {
  const value = new Writer().u32(record.instance).u32(record.n.n).string(record.n.m).finish();
  return { type: 'put', key: KEY_PROMISED, value };
}

export function putAccepted(record: AcceptedRecord): StorageOp {
  const value = new Writer().u32(record.instance).u32(record.n.n).string(record.n.m).string(record.v).finish();
  return { type: 'put', key: KEY_ACCEPTED, value };
}

/** The decided record of `instance`: the view value, then the cluster id ("" while unknown). */
export function putDecided(instance: number, value: string, cluster: string): StorageOp {
  assert(cluster === '' || isValidClusterId(cluster), `bad cluster id ${JSON.stringify(cluster)}`);
  return { type: 'put', key: decidedKey(instance), value: new Writer().string(value).string(cluster).finish() };
}

/**
 * Decodes a decided record: {value, cluster}, or the value alone (written before cluster ids were
 * kept; no other record ends right after the value, so the two cannot be confused).
 */
export function decodeDecided(key: string, bytes: Uint8Array): { value: string; cluster: string | undefined } {
  return readRecord(key, bytes, (r) => {
    const value = r.string(VALUE_BYTES_MAX);
    if (r.remaining === 0) return { value, cluster: undefined };
    const cluster = r.string(CLUSTER_ID_BYTES_MAX);
    if (cluster !== '' && !isValidClusterId(cluster)) r.fail(`bad cluster id ${JSON.stringify(cluster)}`);
    return { value, cluster };
  });
}

export function putProposerN(n: number): StorageOp {
  return { type: 'put', key: KEY_PROPOSER, value: new Writer().u32(n).finish() };
}

export function putClusterId(id: string): StorageOp {
  assert(isValidClusterId(id), `bad cluster id ${JSON.stringify(id)}`);
  return { type: 'put', key: KEY_CLUSTER, value: new Writer().string(id).finish() };
}

export const delPromised: StorageOp = { type: 'del', key: KEY_PROMISED };
export const delAccepted: StorageOp = { type: 'del', key: KEY_ACCEPTED };

/** Decodes one stored record; storage holds only what we wrote, so a failure is corruption. */
function readRecord<T>(key: string, bytes: Uint8Array, read: (reader: Reader) => T): T {
  const reader = new Reader(bytes);
  const decoded = reader.finish(read(reader));
  if (!decoded.ok) throw new ViewstampError('STORAGE_CORRUPT', `paxos record ${key}: ${decoded.reason}`);
  return decoded.value;
}

async function readClusterId(storage: Storage): Promise<string | undefined> {
  const bytes = await storage.get(KEY_CLUSTER);
  if (bytes === undefined) return undefined;
  const id = readRecord(KEY_CLUSTER, bytes, (r) => r.string(CLUSTER_ID_BYTES_MAX));
  if (!isValidClusterId(id)) throw new ViewstampError('STORAGE_CORRUPT', `paxos record ${KEY_CLUSTER}: bad id ${JSON.stringify(id)}`);
  return id;
}

/** What a node's storage says about who it is, for the host's startup checks and its first line. */
export interface NodeIdentity {
  /** Whether the storage holds any key at all (paxos or anything stored beside it). */
  readonly holdsState: boolean;
  readonly clusterId: string | undefined;
  /** The highest decided instance (0: none) and its value. */
  readonly vid: number;
  readonly view: string | undefined;
}

/** Reads the identity summary without building an acceptor (the decided history is scanned). */
export async function readNodeIdentity(storage: Storage): Promise<NodeIdentity> {
  const all = await storage.list('');
  const decided = all.filter(([key]) => key.startsWith(KEY_DECIDED_PREFIX));
  const last = decided[decided.length - 1];
  return {
    holdsState: all.length > 0,
    clusterId: await readClusterId(storage),
    vid: decided.length,
    view: last === undefined ? undefined : decodeDecided(last[0], last[1]).value,
  };
}

/** Refuses a history whose views were decided in another cluster than the storage's (see the header). */
function checkViewClusters(decided: readonly DecidedRecord[], clusterId: string | undefined): void {
  for (const entry of decided) {
    if (entry.cluster === undefined || entry.cluster === '') continue;
    if (clusterId !== undefined && entry.cluster !== clusterId) {
      throw new ViewstampError(
        'CLUSTER_MISMATCH',
        `paxos view ${entry.instance} was decided in cluster ${entry.cluster}, but this storage belongs to cluster ${clusterId} (${KEY_CLUSTER}); refusing to read it`,
      );
    }
    if (clusterId === undefined) {
      throw new ViewstampError('STORAGE_CORRUPT', `paxos view ${entry.instance} was decided in cluster ${entry.cluster}, but ${KEY_CLUSTER} is missing`);
    }
  }
}

export class PaxosStore {
  /** The end of the write chain: resolves once every write issued so far is durable. */
  private tail: Promise<void> = Promise.resolve();
  private failure: unknown;
  private stopped = false;

  constructor(private readonly storage: Storage) {}

  /** Reads the whole durable state; the decided history must be 1..k with no hole. */
  async load(): Promise<PaxosDurableState> {
    const decided: DecidedRecord[] = [];
    for (const [key, bytes] of await this.storage.list(KEY_DECIDED_PREFIX)) {
      const instance = Number(key.slice(KEY_DECIDED_PREFIX.length));
      if (!/^\d{10}$/.test(key.slice(KEY_DECIDED_PREFIX.length))) {
        throw new ViewstampError('STORAGE_CORRUPT', `unexpected paxos key ${key}`);
      }
      decided.push({ instance, ...decodeDecided(key, bytes) });
    }
    for (let i = 0; i < decided.length; i++) {
      if (decided[i]!.instance !== i + 1) {
        throw new ViewstampError('STORAGE_CORRUPT', `paxos history has a hole: instance ${decided[i]!.instance} at ${i + 1}`);
      }
    }
    const promisedBytes = await this.storage.get(KEY_PROMISED);
    const promised =
      promisedBytes === undefined
        ? undefined
        : readRecord(KEY_PROMISED, promisedBytes, (r) => ({ instance: r.u32(), n: { n: r.u32(), m: r.string(ID_BYTES_MAX) } }));
    const acceptedBytes = await this.storage.get(KEY_ACCEPTED);
    const accepted =
      acceptedBytes === undefined
        ? undefined
        : readRecord(KEY_ACCEPTED, acceptedBytes, (r) => ({
            instance: r.u32(),
            n: { n: r.u32(), m: r.string(ID_BYTES_MAX) },
            v: r.string(VALUE_BYTES_MAX),
          }));
    const proposerBytes = await this.storage.get(KEY_PROPOSER);
    const proposerN = proposerBytes === undefined ? 0 : readRecord(KEY_PROPOSER, proposerBytes, (r) => r.u32());
    const clusterId = await readClusterId(this.storage);
    checkViewClusters(decided, clusterId);
    return { decided, promised, accepted, proposerN, clusterId };
  }

  /**
   * Appends a synced write to the chain and runs `afterDurable` once it (and every earlier write)
   * is durable, in chain order. The returned promise settles after `afterDurable` ran. Once the
   * store is stopped nothing more happens: the promise never settles, as for a dead process.
   */
  write(ops: readonly StorageOp[], afterDurable?: () => void): Promise<void> {
    assert(ops.length > 0, 'empty paxos write');
    const next = this.tail.then(async () => {
      if (this.failure !== undefined) throw this.failure;
      if (this.stopped) return never();
      try {
        await this.storage.write(ops, { sync: true });
      } catch (error) {
        this.failure = error;
        throw error;
      }
      if (this.stopped) return never();
      afterDurable?.();
    });
    this.tail = next.catch(() => {});
    return next;
  }

  /** Resolves once every write issued so far is durable (rejects if the store failed). */
  flushed(): Promise<void> {
    return this.tail.then(() => {
      if (this.failure !== undefined) throw this.failure;
      if (this.stopped) return never();
    });
  }

  /** The node stopped or crashed: pending and later writes never complete or call back. */
  stop(): void {
    this.stopped = true;
  }

  get isStopped(): boolean {
    return this.stopped;
  }
}

function never(): Promise<never> {
  return new Promise<never>(() => {});
}
