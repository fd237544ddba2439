/**
 * The composition root of one RSM replica process in the real environment (what `lock_server
 * MASTER ME` runs, and what a process serving its own StateMachine calls):
 * TCP transport (RPC_LOSSY honoured), classic-level storage in `<dataDir>/<ME>`, the Paxos text
 * log `<logDir>/paxos-<ME>.log`, the main RPC endpoint on ME and the test-control endpoint on
 * ME+1. Breakpoints print their message to stdout and exit(1).
 *
 * Host file: it may use node:fs and the wall clock (Date) directly, which protocol code never does.
 *
 * Startup, in order (each step prints one line through `say`):
 *
 * 1. The node's durable state is its storage directory `<dataDir>/<ME>` TOGETHER with its paxos
 *    log. If the log is missing while the directory holds any key, the directory is left over from
 *    an earlier life of this port: it is renamed to `<dataDir>/<ME>.stale-<time>` (nothing is
 *    deleted) and the node starts fresh.
 * 2. Cluster identity (paxos/identity.ts): the first node starting without an id draws one; the
 *    node asks the first node and the members of its last view for theirs. One in another
 *    cluster → CLUSTER_MISMATCH, naming the data directory, before anything was written.
 * 3. The replica is opened, and prints what it restored (cluster id, view, last viewstamp) or
 *    that it starts fresh.
 * 4. A quorum watch probes the view's members once per heartbeat interval, logs "no quorum: …"
 *    when fewer than a majority answer, and serves `quorum` on the control port.
 * 5. Config sends the cluster id in every Paxos message and heartbeat and refuses other clusters'
 *    (printed once per peer); a peer that refuses ours as another cluster's goes to the quorum
 *    watch's mismatch rule (`QuorumWatch.peerMismatch`), which stops an unconfirmed node.
 */
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { realClock, wallClockMs } from '../lib/clock.js';
import type { Env, Storage } from '../lib/env.js';
import { ViewstampError } from '../lib/errors.js';
import { openFileLineLog, paxosLogPath } from '../lib/file-log.js';
import { openLevelStorage } from '../lib/level-storage.js';
import { osRandom } from '../lib/random.js';
import { ClusterIdentity, QuorumWatch, describeNoQuorum } from '../paxos/identity.js';
import { quorum as quorumProcedure, type QuorumRes } from '../paxos/messages.js';
import { readNodeIdentity } from '../paxos/store.js';
import { decodeView } from '../paxos/view.js';
import { describeViewstamp } from './protocol.js';
import { RpcEndpoint, codecs, procedure, type RpcOptions } from '../lib/rpc.js';
import { lossyPercentFromEnv, normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { RsmNode, defaultRsmTiming, type RsmTiming } from './node.js';
import type { StateMachine } from './state-machine.js';

export interface ReplicaOptions {
  /** The MASTER argument: `[host:]port` of the first node. */
  readonly master: string;
  /** The ME argument: `[host:]port` of this node; also its id. */
  readonly me: string;
  /** Where `paxos-<ME>.log` goes (default: $RSM_LOG_DIR or `logs`). */
  readonly logDir?: string;
  /** Parent of the node's storage directory `<dataDir>/<ME>` (default: $RSM_DATA_DIR, else `<logDir>/data`). */
  readonly dataDir?: string;
  readonly heartbeatIntervalMs?: number;
  /** Any protocol timer (heartbeats, Paxos and join deadlines, retries). */
  readonly timing?: Partial<RsmTiming>;
  /** Percentage of faulty messages (default: RPC_LOSSY from the environment). */
  readonly lossyPercent?: number;
  readonly rpcOptions?: Partial<RpcOptions>;
  /** Breakpoint exit (default: print the message to stdout and exit(1)). */
  readonly die?: (message: string) => void;
  /**
   * The replicated service, fresh (its state comes from this node's durable record or by state
   * transfer). Default: none, i.e. an EmptyStateMachine: the replica runs views, joins and the
   * request path, and answers every request EMPTY_MACHINE_STATUS (membership-only scenarios).
   */
  readonly stateMachine?: StateMachine;
  /** Where the startup lines and quorum changes go (default: stdout, prefixed "replica ME: "). */
  readonly say?: (line: string) => void;
}

/** What the startup found: the lines printed, for callers and tests. */
export interface ReplicaStartup {
  /** Set when step 1 moved a stale storage directory aside: where it went. */
  readonly movedAside: string | undefined;
  readonly restored: boolean;
  readonly clusterId: string;
}

export interface Replica {
  /** This node's id (a bare port, or host:port). */
  readonly me: string;
  /** The address the main endpoint listens on ("127.0.0.1:3772"). */
  readonly address: string;
  readonly controlAddress: string;
  readonly node: RsmNode;
  /** The main endpoint: the lock service registers its procedures here too. */
  readonly rpc: RpcEndpoint;
  readonly control: RpcEndpoint;
  readonly logPath: string;
  /** `<dataDir>/<ME>`: the node's storage directory. */
  readonly dataPath: string;
  readonly startup: ReplicaStartup;
  /** The latest quorum verdict (also served as `quorum` on the control port). */
  quorum(): QuorumRes;
  /** Stops the node and releases ports and storage. */
  close(): Promise<void>;
}

/**
 * `processinfo` (0x12010, control port): the serving process's pid and data directory, so a tool
 * (start_cluster) can track a replica by its port, also one restarted by hand.
 */
export interface ProcessInfo {
  readonly pid: number;
  readonly dataPath: string;
  readonly cluster: string;
}
export const processinfo = procedure<{ readonly dummy: number }, ProcessInfo>(
  0x12010,
  'processinfo',
  codecs.struct<{ readonly dummy: number }>({ dummy: codecs.i32 }),
  codecs.struct<ProcessInfo>({
    pid: codecs.u32,
    dataPath: { write: (w, v) => w.string(v), read: (r) => r.string(4096) },
    cluster: { write: (w, v) => w.string(v), read: (r) => r.string(64) },
  }),
);

/**
 * The failure detector's timers from RSM_HEARTBEAT_MS (heartbeat interval, 10..10000, default
 * 100) and RSM_HEARTBEAT_TIMEOUT_MS (silence after which a member is taken for failed, at least
 * twice the interval, at most 60000, default 1000). Every replica of a cluster should use the same.
 * Throws CONFIG_INVALID for anything else.
 */
export function failureTimingFromEnv(env: NodeJS.ProcessEnv = process.env): Pick<RsmTiming, 'heartbeatIntervalMs' | 'heartbeatTimeoutMs'> {
  const read = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    if (!/^\d+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max) {
      throw new ViewstampError('CONFIG_INVALID', `${name} must be an integer ${min}..${max} (ms), got ${JSON.stringify(raw)}`);
    }
    return Number(raw.trim());
  };
  const heartbeatIntervalMs = read('RSM_HEARTBEAT_MS', defaultRsmTiming.heartbeatIntervalMs, 10, 10_000);
  const heartbeatTimeoutMs = read('RSM_HEARTBEAT_TIMEOUT_MS', Math.max(defaultRsmTiming.heartbeatTimeoutMs, 2 * heartbeatIntervalMs), 2 * heartbeatIntervalMs, 60_000);
  return { heartbeatIntervalMs, heartbeatTimeoutMs };
}

/** The log and data directories from RSM_LOG_DIR / RSM_DATA_DIR. */
export function replicaDirsFromEnv(env: NodeJS.ProcessEnv = process.env): { logDir: string; dataDir: string } {
  const logDir = env['RSM_LOG_DIR'] || 'logs';
  const dataDir = env['RSM_DATA_DIR'] || join(logDir, 'data');
  return { logDir, dataDir };
}

/**
 * A node id from a command-line argument: a bare port stays the bare port string ("3772"), a
 * host:port stays as given. Throws ADDRESS_INVALID for anything else.
 */
export function nodeIdFromArgument(argument: string): string {
  normalizeAddress(argument); // validates
  return argument;
}

/** The test-control address of a node: the same host, port + 1. */
export function controlAddressOf(id: string): string {
  const address = normalizeAddress(id);
  const colon = address.lastIndexOf(':');
  const port = Number(address.slice(colon + 1)) + 1;
  if (port > 65535) throw new ViewstampError('ADDRESS_INVALID', `no control port above ${address}`);
  return `${address.slice(0, colon)}:${port}`;
}

/** Node id → address; an id that is no address (only a peer could send one) maps to itself and goes nowhere. */
function addressOfId(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}

function defaultDie(message: string): never {
  process.stdout.write(`${message}\n`);
  process.exit(1);
}

/** "20260102T150405Z" (UTC), for stale directory names. */
function stamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  const me = nodeIdFromArgument(options.me);
  const master = nodeIdFromArgument(options.master);
  const logDir = options.logDir ?? replicaDirsFromEnv().logDir;
  const dataDir = options.dataDir ?? (process.env['RSM_DATA_DIR'] || join(logDir, 'data'));
  const say = options.say ?? ((line: string) => void process.stdout.write(`replica ${me}: ${line}\n`));
  const random = osRandom();
  const lossyPercent = options.lossyPercent ?? lossyPercentFromEnv();
  const network = tcpNetwork({ lossyPercent, random: random.fork() });
  const env: Env = { clock: realClock, random, network };
  const address = normalizeAddress(me);
  const controlAddress = controlAddressOf(me);
  const logPath = paxosLogPath(logDir, me);
  const dataPath = join(dataDir, me);

  // Step 1: storage without its paxos log is an earlier life of this port.
  let storage: Storage = await openLevelStorage(dataPath);
  let movedAside: string | undefined;
  if (!existsSync(logPath) && (await readNodeIdentity(storage)).holdsState) {
    await storage.close();
    movedAside = `${dataPath}.stale-${stamp(new Date())}`;
    renameSync(dataPath, movedAside);
    say(`${logPath} is missing but ${dataPath} holds state: moved it aside to ${movedAside} (nothing deleted); starting fresh`);
    storage = await openLevelStorage(dataPath);
  }
  let rpc: RpcEndpoint | undefined;
  let control: RpcEndpoint | undefined;
  let watch: QuorumWatch | undefined;
  try {
    const before = await readNodeIdentity(storage);
    rpc = new RpcEndpoint(await network.listen(address), realClock, random.fork(), options.rpcOptions);
    control = new RpcEndpoint(await network.listen(controlAddress), realClock, random.fork(), options.rpcOptions);
    if (lossyPercent > 0) say(`RPC_LOSSY=${lossyPercent}: ${lossyPercent}% of messages are lost, duplicated or delayed`);

    // Step 2: cluster identity, before the replica writes anything.
    const identity = await ClusterIdentity.open({ me, first: master, storage, random: random.fork(), rpc, dataPath, addressOf: addressOfId, say });
    identity.register(rpc);
    const lastView = before.view === undefined ? [] : (decodeView(before.view) ?? []);
    const confirmed = await identity.checkPeers([master, ...lastView]);

    const timing: Partial<RsmTiming> = {
      ...failureTimingFromEnv(),
      ...options.timing,
      ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
    };
    const node = await RsmNode.open({
      me,
      master,
      env,
      rpc,
      storage,
      logSink: openFileLineLog(logPath),
      ...(options.stateMachine === undefined ? {} : { stateMachine: options.stateMachine }),
      die: options.die ?? defaultDie,
      addressOf: addressOfId,
      timing,
    });
    node.registerControl(control);
    // Every Paxos message and heartbeat carries this node's cluster id; config reads it from the
    // identity (so an id adopted later is sent at once), and refuses other clusters' messages.
    node.config.useClusterIdentity(identity);
    node.config.clusterRefusalListener = (line) => say(`${line} (data directory ${dataPath})`);

    // Step 3: say what this node is.
    const cluster = identity.cluster === '' ? 'cluster id not known yet (adopted from the first peer that answers)' : `cluster ${identity.cluster}`;
    if (before.holdsState) {
      const members = before.view === undefined ? '' : ` {${(decodeView(before.view) ?? []).join(',')}}`;
      say(`restored ${cluster} from ${dataPath}: view ${before.vid}${members}, last viewstamp ${describeViewstamp(node.lastExecuted)}`);
    } else {
      say(`starts fresh in ${dataPath} (${identity.drewId ? `new ${cluster}` : cluster})`);
    }

    // Step 4: quorum visibility.
    const intervalMs = timing.heartbeatIntervalMs ?? 1000;
    const quorumWatch = new QuorumWatch(
      {
        me,
        identity,
        clock: realClock,
        // The wall clock only labels "unreachable since 12:01:07" for people; decisions use the
        // injected monotonic clock.
        wallNow: wallClockMs,
        view: () => {
          const status = node.status();
          return { vid: status.vid, members: status.members };
        },
        intervalMs,
        // Unreachable only after two silent rounds: one round's probe can fail on a lossy network.
        missesToDown: 2,
        say,
        onMismatch: (error) => {
          say(`${error.code}: ${error.message}`);
          (options.die ?? defaultDie)(`${error.code}: stopping`);
        },
      },
      confirmed,
    );
    watch = quorumWatch;
    // A peer that refused our Paxos messages or heartbeats as another cluster's: the same rule as a
    // mismatch found by the watch's probes (stop with CLUSTER_MISMATCH unless confirmed).
    node.config.clusterMismatchListener = (peer) => void quorumWatch.peerMismatch(peer);
    control.handle(quorumProcedure, () => ({ status: 0, result: quorumWatch.tracker.status }));
    control.handle(processinfo, () => ({ status: 0, result: { pid: process.pid, dataPath, cluster: identity.cluster } }));
    node.start();
    quorumWatch.start();
    const mainRpc = rpc;
    const controlRpc = control;
    const openStorage = storage;
    return {
      me,
      address,
      controlAddress,
      node,
      rpc: mainRpc,
      control: controlRpc,
      logPath,
      dataPath,
      startup: { movedAside, restored: before.holdsState, clusterId: identity.cluster },
      quorum: () => quorumWatch.tracker.status,
      async close() {
        quorumWatch.stop();
        node.stop();
        await controlRpc.close();
        await mainRpc.close();
        await openStorage.close();
      },
    };
  } catch (error) {
    watch?.stop();
    await control?.close();
    await rpc?.close();
    await storage.close();
    throw error;
  }
}

export { describeNoQuorum };
