/**
 * Shared helpers of the RSM simulator tests: a kv cluster in a SimWorld with the RsmChecker
 * attached to every replica, clients on the simulated network, and waiting for promises in
 * virtual time (through test/helpers/sim.ts).
 */
import { RpcEndpoint } from '../../lib/rpc.js';
import { RsmClient, type RsmClientOptions } from '../../rsm/client.js';
import type { RsmTiming } from '../../rsm/node.js';
import { KvClient } from '../../rsm/kv/kv-client.js';
import { KvService } from '../../rsm/kv/kv-service.js';
import { SimCluster, portIds } from '../../tester/sim/cluster.js';
import { RsmChecker, digest } from '../../tester/sim/rsm-checkers.js';
import { RSM_SIM_TIMING } from '../../tester/sim/rsm-sim.js';
import { resolved } from './sim.js';

export interface KvCluster {
  readonly cluster: SimCluster;
  readonly ids: string[];
  readonly checker: RsmChecker;
}

/** A cluster of `count` kv replicas, started one by one (view k = the first k nodes). */
export async function kvCluster(
  seed: string,
  count = 3,
  options: { readonly lossy?: boolean; readonly storageSyncMs?: number | ((id: string) => number); readonly timing?: Partial<RsmTiming> } = {},
): Promise<KvCluster> {
  const ids = portIds(count);
  let checker: RsmChecker | undefined;
  const cluster: SimCluster = new SimCluster({
    seed,
    ids,
    timing: { ...RSM_SIM_TIMING, ...options.timing },
    ...(options.storageSyncMs === undefined ? {} : { storageSyncMs: options.storageSyncMs }),
    stateMachine: () => new KvService(),
    onNodeStart: (id, node, incarnation) => checker!.attach(id, incarnation, node, cluster.slot(id).stateMachine!),
  });
  checker = new RsmChecker(() => cluster.world.now());
  for (let i = 0; i < count; i++) {
    await cluster.start(ids[i]!);
    if (!(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 30_000))) throw new Error(`bootstrap: ${cluster.describe()}`);
  }
  cluster.network.setLinkFaults(options.lossy ? { delayMinMs: 1, delayMaxMs: 20, loss: 0.05, duplicate: 0.05 } : { delayMinMs: 1, delayMaxMs: 5 });
  return { cluster, ids, checker };
}

/** An RsmClient of its own (owner `name` on the network). */
export function rsmClient(cluster: SimCluster, name: string, options: Partial<RsmClientOptions> = {}): RsmClient {
  const rpc = new RpcEndpoint(cluster.network.forOwner(name).connect(), cluster.world.clockFor(name), cluster.world.random.fork());
  return new RsmClient({ rpc, knownMembers: cluster.ids, callTimeoutMs: 2000, backoffMsMax: 1000, ...options });
}

export function kvClient(cluster: SimCluster, name: string, options: Partial<RsmClientOptions> = {}): KvClient {
  return new KvClient(rsmClient(cluster, name, options), name);
}

/** Runs virtual time until `promise` settles (at most `limitMs`); its value, or its rejection rethrown. */
export function settle<T>(cluster: SimCluster, promise: Promise<T>, limitMs = 60_000): Promise<T> {
  return resolved(cluster.world, promise, limitMs);
}

/** The digests of every up replica's marshalled state, by id. */
export function stateDigests(cluster: SimCluster): Map<string, string> {
  return new Map(cluster.upIds().map((id) => [id, digest(cluster.slot(id).stateMachine!.marshalState())]));
}

/** The kv value of `key` on replica `id`. */
export function valueAt(cluster: SimCluster, id: string, key: string): string | undefined {
  return (cluster.slot(id).stateMachine as KvService).valueOf(key);
}

/** Waits until every listed replica is up, synchronised in one view of exactly them, and at the same viewstamp. */
export function settledOn(cluster: SimCluster, ids: readonly string[], limitMs = 30_000): Promise<boolean> {
  return cluster.runUntil(() => {
    if (!cluster.converged(ids)) return false;
    const last = cluster.node(ids[0]!)!.lastExecuted;
    return ids.every((id) => {
      const other = cluster.node(id)!.lastExecuted;
      return other.vid === last.vid && other.seqno === last.seqno;
    });
  }, limitMs);
}
