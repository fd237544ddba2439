/**
 * A randomized simulator run of the view layer (Paxos, config, joins) from one seed: the seed
 * draws the cluster size, ids, network faults, and a schedule of crashes, restarts, partitions
 * and breakpoints (the safety phase); then everything is healed and restarted and the whole
 * cluster must converge on one view holding every node (the liveness phase). The PaxosChecker
 * watches throughout; at the end every node's history and log are checked too.
 */
import { SeededRandom } from '../../lib/random.js';
import type { LinkFaults } from '../../lib/sim/network.js';
import { drawClusterId } from '../../paxos/store.js';
import type { RsmTiming } from '../../rsm/node.js';
import { logMatchesHistory } from './checkers.js';
import { SimCluster, portIds } from './cluster.js';

export interface SwarmOptions {
  /** Virtual length of the fault phase (default 60 s). */
  readonly faultPhaseMs?: number;
  /** Virtual time the cluster gets to converge once healed (default 120 s). */
  readonly livenessLimitMs?: number;
  readonly timing?: Partial<RsmTiming>;
  /** Keep the trace lines in the result (for debugging a seed). */
  readonly keepTrace?: boolean;
}

export interface SwarmResult {
  readonly seed: number;
  readonly ok: boolean;
  /** Safety violations, fatal errors and a convergence failure, if any. */
  readonly problems: string[];
  /** The drawn parameters, for the failure message. */
  readonly parameters: string;
  readonly description: string;
  readonly traceHash: string;
  readonly traceLines?: readonly string[];
  readonly stats: {
    readonly nodes: number;
    readonly views: number;
    readonly crashes: number;
    readonly breakpointDeaths: number;
    readonly events: number;
    readonly virtualMs: number;
    /** Virtual time from healing to convergence. */
    readonly convergeMs: number;
  };
}

/** Timers shortened for the simulator (virtual time is free; events are not). */
export const SWARM_TIMING: Partial<RsmTiming> = {
  heartbeatIntervalMs: 500,
  heartbeatTimeoutMs: 500,
  paxosTimeoutMs: 500,
  removeJitterMsMax: 100,
  joinRetryMs: 500,
  joinTimeoutMs: 3000,
  syncRetryMs: 500,
};

function shuffle<T>(random: SeededRandom, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function pick<T>(random: SeededRandom, items: readonly T[]): T {
  return items[random.int(items.length)]!;
}

export async function runPaxosSwarm(seed: number, options: SwarmOptions = {}): Promise<SwarmResult> {
  // The parameters come from their own stream so that they do not shift with the run's draws.
  const draw = new SeededRandom(`swarm-parameters:${seed}`);
  const size = 3 + draw.int(3);
  const ids = portIds(size, pick(draw, [996, 998, 3772, 40000]));
  const faults: LinkFaults = {
    delayMinMs: 1,
    delayMaxMs: pick(draw, [1, 5, 20, 100, 300]),
    loss: pick(draw, [0, 0, 0.01, 0.05, 0.15]),
    duplicate: pick(draw, [0, 0.02, 0.1]),
  };
  const faultPhaseMs = options.faultPhaseMs ?? 60_000;
  const livenessLimitMs = options.livenessLimitMs ?? 120_000;
  const faultyBootstrap = draw.int(2) === 0;
  // Every node is in one cluster: each message carries its id, and every view records it.
  const clusterId = drawClusterId(draw);
  const parameters =
    `seed=${seed} nodes=[${ids.join(' ')}] delay=1..${faults.delayMaxMs}ms loss=${faults.loss} dup=${faults.duplicate}` +
    ` faultyBootstrap=${faultyBootstrap} faultPhase=${faultPhaseMs}ms cluster=${clusterId}`;

  const cluster = new SimCluster({ seed, ids, clusterId, timing: { ...SWARM_TIMING, ...options.timing },
    world: { keepTrace: options.keepTrace ?? false },
  });
  const { world, network } = cluster;
  const random = world.random;
  const problems: string[] = [];
  let crashes = 0;
  const armed = new Set<string>();

  const crash = (id: string): void => {
    cluster.crash(id);
    armed.delete(id);
    crashKind.delete(id);
    crashes++;
  };

  // Targeted crashes: a node armed with a line kind crashes 0-2 ms after it logs such a line
  // (right after a promise, an accept or a commit became durable) and restarts 1-100 ms later.
  const crashKind = new Map<string, 'propseen' | 'accepted' | 'done'>();
  let liveness = false;
  cluster.lineListener = (id, line) => {
    const kind = crashKind.get(id);
    if (kind === undefined || !line.startsWith(`${kind} `)) return;
    crashKind.delete(id);
    world.schedule(random.int(3), () => {
      if (liveness || !cluster.isUp(id)) return;
      crash(id);
      world.schedule(1 + random.int(100), () => {
        if (liveness || cluster.isUp(id)) return;
        cluster.start(id).catch((error: unknown) => problems.push(`${id}: restart failed: ${String(error)}`));
      });
    });
  };

  // Bootstrap: nodes start one after the other, each with the first node as MASTER.
  if (faultyBootstrap) network.setLinkFaults(faults);
  for (let i = 0; i < ids.length; i++) {
    await cluster.start(ids[i]!);
    await cluster.runUntil(() => cluster.converged(ids.slice(0, i + 1)), 20_000);
  }
  network.setLinkFaults(faults);

  // Safety phase: random faults.
  const faultEnd = world.now() + faultPhaseMs;
  while (world.now() < faultEnd && cluster.checker.ok) {
    await cluster.runFor(100 + random.int(2500));
    const up = cluster.upIds();
    const down = ids.filter((id) => !cluster.isUp(id));
    const roll = random.int(100);
    if (roll < 18 && up.length > 0) {
      crash(pick(random, up));
    } else if (roll < 38 && down.length > 0) {
      const id = pick(random, down);
      // Usually the first node is MASTER; sometimes another (as rsm_tester restarts with p1).
      await cluster.start(id, random.int(4) === 0 ? pick(random, ids) : ids[0]!);
    } else if (roll < 48 && up.length > 0) {
      // A quick restart: a member that comes back at once must not cause a view change.
      const id = pick(random, up);
      crash(id);
      await cluster.start(id);
    } else if (roll < 62) {
      const shuffled = shuffle(random, ids);
      const cut = 1 + random.int(ids.length - 1);
      network.partition([shuffled.slice(0, cut), shuffled.slice(cut)]);
    } else if (roll < 75) {
      network.heal();
    } else if (roll < 82) {
      network.setLinkFaults({
        delayMaxMs: pick(random, [1, 10, 50, 300, 1000]),
        loss: pick(random, [0, 0.05, 0.3, 0.6]),
        duplicate: pick(random, [0, 0.1, 0.3]),
      });
    } else if (roll < 85) {
      network.setLinkFaults(faults);
    } else if (roll < 90 && up.length > 0) {
      const id = pick(random, up);
      cluster.node(id)!.breakpoint(pick(random, [3, 4]));
      armed.add(id);
    } else if (roll < 95 && up.length > 0) {
      crashKind.set(pick(random, up), pick(random, ['propseen', 'accepted', 'done'] as const));
    } else if (roll < 98 && up.length > 0) {
      const id = pick(random, up);
      cluster.node(id)!.breakpoint(2);
      armed.add(id);
    } else if (up.length > 0) {
      network.isolate(pick(random, up));
    }
  }

  // Liveness phase: heal, disarm (by restarting armed nodes), restart the dead; all must converge.
  liveness = true;
  crashKind.clear();
  network.heal();
  network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 5, loss: 0, duplicate: 0 });
  for (const id of ids) {
    if (armed.has(id) && cluster.isUp(id)) crash(id);
    if (!cluster.isUp(id)) await cluster.start(id);
  }
  const healedAt = world.now();
  const converged = await cluster.runUntil(() => cluster.converged() || !cluster.checker.ok, livenessLimitMs);
  const convergeMs = world.now() - healedAt;
  if (cluster.checker.ok && !converged) problems.push(`no convergence within ${livenessLimitMs} ms of healing`);

  cluster.checkHistories();
  for (const id of ids) {
    if ((await logMatchesHistory(cluster, id)) === false) problems.push(`${id}: log done lines differ from the durable history`);
    const node = cluster.node(id);
    if (node === undefined) continue;
    const history = node.config.history();
    const foreign = history.find((entry) => node.config.viewCluster(entry.instance) !== clusterId);
    if (foreign !== undefined) {
      problems.push(`${id}: view ${foreign.instance} records cluster ${JSON.stringify(node.config.viewCluster(foreign.instance))}, not ${clusterId}`);
    }
  }
  problems.unshift(...cluster.checker.violations);
  for (const { node, error } of cluster.fatalErrors) problems.push(`${node}: fatal ${String((error as Error)?.stack ?? error)}`);
  const deaths = ids.reduce((sum, id) => sum + cluster.slot(id).deaths.length, 0);

  const description = cluster.describe();
  // Stop every node so nothing of this run lingers.
  for (const id of ids) if (cluster.isUp(id)) cluster.crash(id);
  return {
    seed,
    ok: problems.length === 0,
    problems,
    parameters,
    description,
    traceHash: world.traceHash(),
    ...(world.traceLines === undefined ? {} : { traceLines: world.traceLines }),
    stats: {
      nodes: size,
      views: cluster.checker.chosen.size,
      crashes,
      breakpointDeaths: deaths,
      events: world.eventsRun,
      virtualMs: world.now(),
      convergeMs,
    },
  };
}
