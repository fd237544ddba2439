/**
 * The composition root of one RSM replica process in the real environment (what `lock_server
 * MASTER ME` runs, and what a process serving its own StateMachine calls):
 * TCP transport (RPC_LOSSY honoured), classic-level storage in `<dataDir>/<ME>`, the Paxos text
 * log `<logDir>/paxos-<ME>.log`, the main RPC endpoint on ME and the test-control endpoint on
 * ME+1. Breakpoints print their message to stdout and exit(1).
 */
import { join } from 'node:path';
import { realClock } from '../lib/clock.js';
import type { Env, Storage } from '../lib/env.js';
import { ViewstampError } from '../lib/errors.js';
import { openFileLineLog, paxosLogPath } from '../lib/file-log.js';
import { openLevelStorage } from '../lib/level-storage.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint, type RpcOptions } from '../lib/rpc.js';
import { lossyPercentFromEnv, normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { RsmNode, type RsmTiming } from './node.js';
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
  /** Stops the node and releases ports and storage. */
  close(): Promise<void>;
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

export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  const me = nodeIdFromArgument(options.me);
  const master = nodeIdFromArgument(options.master);
  const logDir = options.logDir ?? replicaDirsFromEnv().logDir;
  const dataDir = options.dataDir ?? (process.env['RSM_DATA_DIR'] || join(logDir, 'data'));
  const random = osRandom();
  const network = tcpNetwork({ lossyPercent: options.lossyPercent ?? lossyPercentFromEnv(), random: random.fork() });
  const env: Env = { clock: realClock, random, network };
  const address = normalizeAddress(me);
  const controlAddress = controlAddressOf(me);
  const logPath = paxosLogPath(logDir, me);

  const storage: Storage = await openLevelStorage(join(dataDir, me));
  let rpc: RpcEndpoint | undefined;
  let control: RpcEndpoint | undefined;
  try {
    rpc = new RpcEndpoint(await network.listen(address), realClock, random.fork(), options.rpcOptions);
    control = new RpcEndpoint(await network.listen(controlAddress), realClock, random.fork(), options.rpcOptions);
    const timing: Partial<RsmTiming> = {
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
    node.start();
    const mainRpc = rpc;
    const controlRpc = control;
    return {
      me,
      address,
      controlAddress,
      node,
      rpc: mainRpc,
      control: controlRpc,
      logPath,
      async close() {
        node.stop();
        await controlRpc.close();
        await mainRpc.close();
        await storage.close();
      },
    };
  } catch (error) {
    await control?.close();
    await rpc?.close();
    await storage.close();
    throw error;
  }
}

