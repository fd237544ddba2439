/**
 * What the rsm_sim workloads (kv: rsm-sim.ts, lock: lock-sim.ts) share: the protocol timers, the
 * bootstrap, one step of the fault schedule and the healing that starts the liveness phase. Both
 * workloads draw faults from the world's PRNG in exactly this order, so a change here changes every
 * seed's run (still deterministic).
 */
import { SeededRandom } from '../../lib/random.js';
import type { LinkFaults } from '../../lib/sim/network.js';
import type { RsmTiming } from '../../rsm/node.js';
import type { SimCluster } from './cluster.js';
import { SWARM_TIMING } from './paxos-swarm.js';

/** Protocol timers for the simulator (virtual time is free; events are not). */
export const RSM_SIM_TIMING: Partial<RsmTiming> = {
  ...SWARM_TIMING,
  invokeTimeoutMs: 500,
  transferTimeoutMs: 500,
  transferRetryMs: 100,
  // Small, so that runs write checkpoints, drop log prefixes and restore from both.
  checkpointEveryRequests: 8,
  checkpointEveryBytes: 4096,
  // Small too, so that state transfer sends log entries to replicas a little behind, the whole
  // state to the others, and a state of more than a few hundred bytes in chunks.
  logRetainRequests: 8,
  logRetainBytes: 4096,
  transferChunkBytes: 256,
};

export function pick<T>(random: SeededRandom, items: readonly T[]): T {
  return items[random.int(items.length)]!;
}

export function shuffle<T>(random: SeededRandom, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * How long a synced storage write takes in a seed's run (virtual ms; on a stream of its own, so
 * the other draws keep their values). With a delay, a replica can crash while its fsync runs; the
 * primary's log write then overlaps the backups' (group commit) and a backup may hold a batch the
 * primary's log loses.
 */
export function drawStorageSyncMs(seed: number): number {
  return pick(new SeededRandom(`rsm-sim-storage:${seed}`), [0, 0, 1, 2, 5]);
}

/** The link faults a seed starts with (drawn on the parameter stream). */
export function drawLinkFaults(draw: SeededRandom): LinkFaults {
  return {
    delayMinMs: 1,
    delayMaxMs: pick(draw, [1, 5, 20, 100, 300]),
    loss: pick(draw, [0, 0, 0.01, 0.05, 0.15]),
    duplicate: pick(draw, [0, 0.02, 0.1]),
  };
}

/** The fault schedule's handle on one run. */
export interface FaultDriver {
  readonly cluster: SimCluster;
  readonly random: SeededRandom;
  readonly ids: readonly string[];
  /** Network owners of the clients (put on one side or the other of each partition). */
  readonly clientOwners: readonly string[];
  /** The link faults drawn for the seed. */
  readonly drawnFaults: LinkFaults;
  /** Records one line of the fault schedule. */
  event(line: string): void;
  /** Counts crashes. */
  crashes: number;
  /**
   * Virtual time at which the schedule kills every replica at once and restarts them all (the
   * `crashAll` option); undefined: only the schedule's own draws do that. Cleared once done.
   */
  crashAllAt?: number | undefined;
}

/** With the crashAll option: the virtual time of the crash-all, drawn from the seed. */
export function crashAllMoment(seed: number, options: { readonly crashAll?: boolean }, faultPhaseMs: number, now: number): number | undefined {
  if (options.crashAll !== true) return undefined;
  return now + new SeededRandom(`rsm-sim-crash-all:${seed}`).int(Math.max(1, faultPhaseMs - 2000));
}

/**
 * kill -9 of every replica at once, then every replica restarts (MASTER: the first id). Nothing
 * a client saw acknowledged may be lost: the run's final checks find every acknowledged request
 * in the converged state.
 */
export async function crashAllAndRestart(d: FaultDriver): Promise<void> {
  const up = d.cluster.upIds();
  d.event(`crash all (kill -9 of ${up.join(' ') || 'nobody up'}), then restart every replica`);
  for (const id of up) {
    d.cluster.crash(id);
    d.crashes++;
  }
  for (const id of d.ids) await d.cluster.start(id, d.ids[0]!);
}

/** Bootstrap: nodes join one by one with the first as MASTER, on a reliable network. Problems, if any. */
export async function bootstrap(cluster: SimCluster, ids: readonly string[]): Promise<string[]> {
  for (let i = 0; i < ids.length; i++) {
    await cluster.start(ids[i]!);
    if (!(await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 30_000))) {
      // A failed replica invariant stopped the world: that is the problem (the caller reports it).
      if (!cluster.invariantsOk) return [];
      return [`bootstrap: ${ids.slice(0, i + 1).join(',')} did not converge: ${cluster.describe()}`];
    }
  }
  return [];
}

export function crashNode(d: FaultDriver, id: string, why: string): void {
  d.event(`crash ${id} (${why})`);
  d.cluster.crash(id);
  d.crashes++;
}

export async function startNode(d: FaultDriver, id: string, master: string = d.ids[0]!): Promise<void> {
  d.event(`start ${id} master=${master}`);
  await d.cluster.start(id, master);
}

/**
 * One step of the safety phase's fault schedule (after the caller ran the world for a while):
 * crash, restart, quick restart, partition (clients included), heal, link faults, breakpoints,
 * armed partitions (net_repair 0), isolation, or a crash of every replica at once then restart.
 */
export async function faultStep(d: FaultDriver): Promise<void> {
  const { cluster, random, ids } = d;
  const network = cluster.network;
  if (d.crashAllAt !== undefined && cluster.world.now() >= d.crashAllAt) {
    d.crashAllAt = undefined;
    await crashAllAndRestart(d);
    return;
  }
  const up = cluster.upIds();
  const down = ids.filter((id) => !cluster.isUp(id));
  const roll = random.int(100);
  if (roll < 14 && up.length > 0) {
    crashNode(d, pick(random, up), 'fault');
  } else if (roll < 32 && down.length > 0) {
    const id = pick(random, down);
    await startNode(d, id, random.int(4) === 0 ? pick(random, ids) : ids[0]!);
  } else if (roll < 40 && up.length > 0) {
    const id = pick(random, up);
    crashNode(d, id, 'quick restart');
    await startNode(d, id);
  } else if (roll < 54) {
    const shuffled = shuffle(random, ids);
    const cut = 1 + random.int(ids.length - 1);
    const groups = [shuffled.slice(0, cut), shuffled.slice(cut)];
    for (const owner of d.clientOwners) groups[random.int(2)]!.push(owner);
    d.event(`partition ${groups.map((g) => `[${g.join(' ')}]`).join(' ')}`);
    network.partition(groups);
  } else if (roll < 66) {
    d.event('heal');
    network.heal();
  } else if (roll < 73) {
    const faults = { delayMaxMs: pick(random, [1, 10, 50, 300, 1000]), loss: pick(random, [0, 0.05, 0.3, 0.6]), duplicate: pick(random, [0, 0.1, 0.3]) };
    d.event(`link faults delay<=${faults.delayMaxMs} loss=${faults.loss} dup=${faults.duplicate}`);
    network.setLinkFaults(faults);
  } else if (roll < 76) {
    d.event('link faults as drawn');
    network.setLinkFaults(d.drawnFaults);
  } else if (roll < 88 && up.length > 0) {
    const id = pick(random, up);
    const b = pick(random, [1, 1, 2, 3, 4]);
    d.event(`breakpoint ${b} on ${id}`);
    cluster.node(id)!.breakpoint(b);
  } else if (roll < 94 && up.length > 0) {
    const id = pick(random, up);
    d.event(`partition armed on ${id} (net_repair 0)`);
    cluster.node(id)!.netRepair(0);
  } else if (roll < 97 && up.length > 0) {
    const id = pick(random, up);
    d.event(`net_repair 1 on ${id}`);
    cluster.node(id)!.netRepair(1);
  } else if (roll === 99) {
    await crashAllAndRestart(d);
  } else if (up.length > 0) {
    const id = pick(random, up);
    d.event(`isolate ${id}`);
    network.isolate(id);
  }
}

/** The start of the liveness phase: heal the network, disarm breakpoints, restart the dead. */
export async function healForLiveness(d: FaultDriver): Promise<void> {
  const { cluster, ids } = d;
  d.event('liveness phase: heal, disarm, restart the dead');
  cluster.network.heal();
  cluster.network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 5, loss: 0, duplicate: 0 });
  for (const id of ids) {
    const node = cluster.node(id);
    if (node !== undefined) {
      node.disarmBreakpoints();
      node.netRepair(1);
    }
  }
  for (const id of ids) if (!cluster.isUp(id)) await startNode(d, id);
}
