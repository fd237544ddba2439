/**
 * One run of the RSM simulator (`rsm_sim`): a replicated kv service under faults, from one seed.
 *
 * From the seed it draws (on a stream of its own, so the drawn options never shift with the run):
 * the cluster size (3–5 unless given) and ids, the network's link faults (delay, hence reordering;
 * loss; duplication), and a client workload (2–4 clients, each issuing 8–24 operations one at a
 * time: appends of unique tokens, some puts and gets; some clients give up on operations after a
 * deadline, so their outcome is unknown). The run then has two phases:
 *
 * - safety: the clients run while the fault schedule crashes and restarts nodes (losing unsynced
 *   writes and all RSM state), restarts them at once, partitions the network (clients included),
 *   isolates nodes, changes link faults, arms RSM breakpoints 1 and 2, Paxos breakpoints 3 and 4,
 *   and partitions at the primary's next request (net_repair 0);
 * - liveness: the network is healed, breakpoints disarmed, dead nodes restarted; every client must
 *   finish every operation, and the whole cluster must converge on one synchronised view, within a
 *   bound of virtual time.
 *
 * Checkers watch from outside: PaxosChecker (one value per instance, histories), RsmChecker (order,
 * request and state agreement per viewstamp), and at the end the kv history against a sequential
 * model (tester/sim/kv-model.ts) and the replicas' final states against each other. From inside,
 * every live replica's invariants() after every simulated event (SimCluster, 'record'): the first
 * failure stops the run and is a violation.
 *
 * Crashes are unrestricted: every replica keeps its state durably (rsm/README.md, "Durability"),
 * so even all nodes crashing at once loses nothing acknowledged.
 *
 * `workload: 'lock'` runs the replicated caching lock service instead (tester/sim/lock-sim.ts),
 * with the same fault schedule (tester/sim/sim-common.ts). The workload is chosen explicitly, never
 * drawn from the seed, so a kv seed keeps its run when the lock workload changes and vice versa.
 */
import { RpcEndpoint } from '../../lib/rpc.js';
import { SeededRandom } from '../../lib/random.js';
import type { LinkFaults } from '../../lib/sim/network.js';
import { RsmError } from '../../rsm/errors.js';
import { RsmClient } from '../../rsm/client.js';
import { KvClient, type KvResult } from '../../rsm/kv/kv-client.js';
import { KvService } from '../../rsm/kv/kv-service.js';
import type { RsmNode } from '../../rsm/node.js';
import { compareViewstamp, describeViewstamp } from '../../rsm/protocol.js';
import { SimCluster, portIds } from './cluster.js';
import { checkKvHistory, type KvOpKind, type KvOpRecord } from './kv-model.js';
import { logMatchesHistory, settleAgain } from './checkers.js';
import { RsmChecker, digest } from './rsm-checkers.js';
import { runLockSim } from './lock-sim.js';
import type { CachingLockServer } from '../../lockserver/cache-server.js';
import {
  RSM_SIM_TIMING,
  bootstrap,
  crashAllMoment,
  drawLinkFaults,
  drawStorageSyncMs,
  faultStep,
  healForLiveness,
  pick,
  type FaultDriver,
} from './sim-common.js';

export type RsmSimWorkload = 'kv' | 'lock' | 'file';

export interface RsmSimOptions {
  /** The replicated service and its clients (default kv); 'lock' is tester/sim/lock-sim.ts. */
  readonly workload?: RsmSimWorkload;
  /** Cluster size (3–5); default: drawn. */
  readonly nodes?: number;
  /** Virtual length of the safety phase (default 30 s). */
  readonly faultPhaseMs?: number;
  /** Virtual time the healed cluster gets to finish (default 120 s). */
  readonly livenessLimitMs?: number;
  /** Keep the world's trace lines (debugging). */
  readonly keepTrace?: boolean;
  /** Record the fault schedule as lines (printed by --verbose). */
  readonly keepEvents?: boolean;
  /** Lock workload: write the history to `<dir>/rsm_sim-lock-<seed>.jsonl` (default: $LOCK_HISTORY_DIR). */
  readonly historyDir?: string;
  /** Lock workload: each replica's state machine (default a new CachingLockServer; tests break it). */
  readonly lockServer?: () => CachingLockServer;
  /**
   * Lock workload: after every event, check every client's cache against its callers' holds and
   * against the serving primary's table (default true). A test turns it off to see the callers'
   * mutual-exclusion check catch a broken server on its own: with it on, the cache check sees a
   * double grant first (in the client's cache, a turn before the caller gets it) and the run ends
   * there.
   */
  readonly crossCheckCaches?: boolean;
  /**
   * Kill every replica at once at a moment of the safety phase drawn from the seed (on a stream of
   * its own), then restart them all; the schedule's own draws may do it too.
   */
  readonly crashAll?: boolean;
  /**
   * Test hook: called with each replica incarnation before it starts, after the checkers are
   * attached (a test corrupts a node through it to see the run fail). Not drawn from the seed.
   */
  readonly observeNode?: (id: string, node: RsmNode, incarnation: number) => void;
}

export type RsmSimOutcome = 'ok' | 'violation' | 'liveness';

export interface RsmSimResult {
  readonly seed: number;
  readonly outcome: RsmSimOutcome;
  readonly problems: readonly string[];
  /** The drawn options, one line. */
  readonly options: string;
  /** One line of statistics (deterministic). */
  readonly summary: string;
  readonly traceHash: string;
  readonly events: readonly string[];
  readonly traceLines?: readonly string[];
  readonly stats: RsmSimStats;
}

export interface RsmSimStats {
  readonly nodes: number;
  readonly views: number;
  readonly crashes: number;
  readonly deaths: number;
  readonly ops: number;
  readonly acked: number;
  readonly unknown: number;
  readonly executions: number;
  readonly transfers: number;
  /** Batches the primaries stamped, with more than one request, and the largest (requests). */
  readonly batches: number;
  readonly multiRequestBatches: number;
  readonly largestBatch: number;
  /** Batches stamped while others were in flight, and the most in flight at once (pipelining). */
  readonly pipelinedBatches: number;
  readonly deepestPipeline: number;
  readonly virtualMs: number;
  readonly worldEvents: number;
}

export { RSM_SIM_TIMING };

const KEYS = ['a', 'b', 'm'] as const;

interface ClientPlan {
  readonly name: string;
  readonly ops: ReadonlyArray<{ readonly kind: KvOpKind; readonly key: string }>;
  /** Deadline per operation during the safety phase (undefined: none). */
  readonly opTimeoutMs: number | undefined;
  readonly thinkMsMax: number;
  /** Whom the client knows at first: the MASTER only, or every node. */
  readonly knowsAll: boolean;
}

interface Parameters {
  readonly ids: string[];
  readonly faults: LinkFaults;
  readonly clients: ClientPlan[];
  readonly faultPhaseMs: number;
  readonly livenessLimitMs: number;
  /** Virtual ms of one synced storage write (drawStorageSyncMs). */
  readonly storageSyncMs: number;
}

/** The drawn options: a pure function of the seed (and the overrides). */
export function drawParameters(seed: number, options: RsmSimOptions = {}): Parameters {
  const draw = new SeededRandom(`rsm-sim-parameters:${seed}`);
  const drawnSize = 3 + draw.int(3);
  const size = options.nodes ?? drawnSize;
  const ids = portIds(size, pick(draw, [3772, 10000, 40000]));
  const faults = drawLinkFaults(draw);
  const clientCount = 2 + draw.int(3);
  const thinkMsMax = pick(draw, [50, 500, 2000]);
  const clients: ClientPlan[] = [];
  for (let i = 1; i <= clientCount; i++) {
    const count = 8 + draw.int(17);
    const ops: Array<{ kind: KvOpKind; key: string }> = [];
    for (let j = 0; j < count; j++) {
      const key = pick(draw, KEYS);
      const roll = draw.int(100);
      const kind: KvOpKind = key === 'm' ? (roll < 30 ? 'put' : roll < 70 ? 'append' : 'get') : roll < 80 ? 'append' : 'get';
      ops.push({ kind, key });
    }
    const impatient = draw.int(3) === 0;
    clients.push({ name: `c${i}`, ops, opTimeoutMs: impatient ? pick(draw, [2000, 6000]) : undefined, thinkMsMax, knowsAll: draw.int(2) === 0 });
  }
  clients.push(...drawBurstClients(seed));
  return {
    ids,
    faults,
    clients,
    faultPhaseMs: options.faultPhaseMs ?? 30_000,
    livenessLimitMs: options.livenessLimitMs ?? 120_000,
    storageSyncMs: drawStorageSyncMs(seed),
  };
}

/**
 * In one seed of three, 4–12 more clients that append without pausing, so that many requests
 * reach the primary while a round is in flight and batches of many requests form (the other
 * clients pause between operations and rarely overlap). On a stream of its own, so the other
 * draws keep their values. Appends only, to the keys without puts: the history check stays cheap.
 */
function drawBurstClients(seed: number): ClientPlan[] {
  const draw = new SeededRandom(`rsm-sim-burst:${seed}`);
  if (draw.int(3) !== 0) return [];
  const count = 4 + draw.int(9);
  return Array.from({ length: count }, (_, i) => ({
    name: `b${i + 1}`,
    ops: Array.from({ length: 3 + draw.int(6) }, () => ({ kind: 'append' as const, key: pick(draw, ['a', 'b']) })),
    opTimeoutMs: undefined,
    thinkMsMax: 0,
    knowsAll: true,
  }));
}

export function describeParameters(seed: number, p: Parameters): string {
  const f = p.faults;
  const clients = p.clients
    .map((c) => `${c.name}:${c.ops.length}${c.opTimeoutMs === undefined ? '' : `/timeout=${c.opTimeoutMs}ms`}${c.knowsAll ? '' : '/master-only'}`)
    .join(' ');
  return (
    `seed=${seed} nodes=${p.ids.length} ids=[${p.ids.join(' ')}] delay=${f.delayMinMs}..${f.delayMaxMs}ms loss=${f.loss} dup=${f.duplicate}` +
    ` clients=[${clients}] think<=${p.clients[0]?.thinkMsMax ?? 0}ms sync=${p.storageSyncMs}ms faultPhase=${p.faultPhaseMs}ms liveness<=${p.livenessLimitMs}ms`
  );
}

export async function runRsmSim(seed: number, options: RsmSimOptions = {}): Promise<RsmSimResult> {
  if (options.workload === 'lock' || options.workload === 'file') return runLockSim(seed, options);
  const params = drawParameters(seed, options);
  const { ids } = params;
  const events: string[] = [];
  const keepEvents = options.keepEvents ?? false;
  let rsm: RsmChecker | undefined;
  const cluster = new SimCluster({
    seed: `rsm-sim:${seed}`,
    ids,
    timing: RSM_SIM_TIMING,
    world: { keepTrace: options.keepTrace ?? false },
    storageSyncMs: params.storageSyncMs,
    stateMachine: () => new KvService(),
    onNodeStart: (id, node, incarnation) => {
      rsm!.attach(id, incarnation, node, cluster.slot(id).stateMachine!);
      options.observeNode?.(id, node, incarnation);
    },
    replicaInvariants: 'record',
  });
  const { world, network } = cluster;
  rsm = new RsmChecker(() => world.now());
  const random = world.random;
  const event = (line: string): void => {
    world.trace(`sim ${line}`);
    if (keepEvents) events.push(`t=${world.now()} ${line}`);
  };
  const problems: string[] = [];
  let liveness = false;

  problems.push(...(await bootstrap(cluster, ids)));
  network.setLinkFaults(params.faults);

  // Clients.
  const history: KvOpRecord[] = [];
  let clientsDone = 0;
  const clientErrors: string[] = [];
  params.clients.forEach((plan, index) => {
    const owner = plan.name;
    const rpc = new RpcEndpoint(network.forOwner(owner).connect(), world.clockFor(owner), random.fork(), { callTimeoutMs: 3000 });
    const rsmClient = new RsmClient({ rpc, knownMembers: plan.knowsAll ? ids : [ids[0]!], callTimeoutMs: 2000, backoffMsMax: 1000 });
    const kv = new KvClient(rsmClient, plan.name);
    const think = new SeededRandom(`rsm-sim-think:${seed}:${index}`);
    const clock = world.clockFor(owner);
    const pause = (ms: number): Promise<void> => new Promise((resolve) => clock.setTimer(ms, resolve));
    void (async () => {
      for (const op of plan.ops) {
        if (plan.thinkMsMax > 0) await pause(think.int(plan.thinkMsMax + 1));
        const seq = kv.lastSeq + 1;
        const token = op.kind === 'get' ? '' : `${plan.name}.${seq};`;
        const record: KvOpRecord = { client: plan.name, seq, kind: op.kind, key: op.key, token, call: world.now(), ret: undefined, result: undefined };
        history.push(record);
        const timeout = liveness || plan.opTimeoutMs === undefined ? {} : { timeoutMs: plan.opTimeoutMs };
        try {
          let result: KvResult;
          if (op.kind === 'put') result = await kv.put(op.key, token, timeout);
          else if (op.kind === 'append') result = await kv.append(op.key, token, timeout);
          else result = await kv.get(op.key, timeout);
          if (result.seq !== seq) clientErrors.push(`${plan.name}: operation sent with seq ${result.seq}, expected ${seq}`);
          record.ret = world.now();
          record.result = { status: result.status, value: result.value };
        } catch (error) {
          if (!(error instanceof RsmError && error.code === 'RSM_NO_QUORUM')) {
            clientErrors.push(`${plan.name}#${seq}: ${(error as Error)?.stack ?? String(error)}`);
          }
        }
      }
      clientsDone++;
    })();
  });

  const driver: FaultDriver = {
    cluster,
    random,
    ids,
    clientOwners: params.clients.map((plan) => plan.name),
    drawnFaults: params.faults,
    event,
    crashes: 0,
    crashAllAt: crashAllMoment(seed, options, params.faultPhaseMs, world.now()),
  };

  // Safety phase.
  const faultEnd = world.now() + params.faultPhaseMs;
  while (world.now() < faultEnd && problems.length === 0 && cluster.checker.ok && rsm.ok && cluster.invariantsOk) {
    await cluster.runFor(100 + random.int(2000));
    if (!cluster.invariantsOk) break; // the run ends at the failed step
    await faultStep(driver);
  }

  // Liveness phase: heal everything; every client must finish and the cluster converge.
  liveness = true;
  await healForLiveness(driver);
  const crashes = driver.crashes;
  const healedAt = world.now();
  const totalOps = params.clients.reduce((sum, c) => sum + c.ops.length, 0);
  const settled = (): boolean => {
    if (clientsDone < params.clients.length || !cluster.converged()) return false;
    // Every replica has executed what the primary has (no request half-done).
    const primary = cluster.node(ids[0]!)!.primary;
    const last = cluster.node(primary)?.lastExecuted;
    return last !== undefined && ids.every((id) => compareViewstamp(cluster.node(id)!.lastExecuted, last) === 0);
  };
  const stop = (): boolean => !cluster.checker.ok || !rsm!.ok || !cluster.invariantsOk || cluster.fatalErrors.length > 0;
  const finished = problems.length === 0 && (await cluster.runUntil(() => settled() || stop(), params.livenessLimitMs));
  const livenessProblems: string[] = [];
  if (problems.length === 0 && !stop() && !finished) {
    const pending = history.filter((op) => op.ret === undefined).length;
    livenessProblems.push(
      `no progress within ${params.livenessLimitMs} ms of healing: ${clientsDone}/${params.clients.length} clients done, ` +
        `${history.length}/${totalOps} operations started, ${pending} without reply; ${cluster.describe()}`,
    );
  }

  // Final checks.
  cluster.checkHistories();
  for (const id of ids) {
    if ((await logMatchesHistory(cluster, id)) === false) problems.push(`${id}: log done lines differ from the durable history`);
  }
  // The end checks read the primary's state: settled again after the log checks (settleAgain).
  const settledAtEnd = finished && (await settleAgain(cluster, settled, stop, params.livenessLimitMs)) && !stop();
  if (finished && !settledAtEnd && !stop()) livenessProblems.push(`no settled end within ${params.livenessLimitMs} ms after the final log checks moved the cluster on: ${cluster.describe()}`);
  problems.unshift(...cluster.invariantViolations, ...cluster.checker.violations, ...rsm.violations);
  for (const { node, error } of cluster.fatalErrors) problems.push(`${node}: fatal ${String((error as Error)?.stack ?? error)}`);
  problems.push(...clientErrors);
  if (settledAtEnd && problems.length === 0) {
    const primary = cluster.node(ids[0]!)!.primary;
    const states = new Set(ids.map((id) => digest(cluster.slot(id).stateMachine!.marshalState())));
    if (states.size !== 1) problems.push(`the converged replicas disagree on their state (${states.size} different states)`);
    const service = cluster.slot(primary).stateMachine as KvService;
    const finals = new Map(KEYS.map((key) => [key, service.valueOf(key)] as const));
    const checked = checkKvHistory(history, finals, world.now() + 1);
    problems.push(...checked.violations);
  }
  const outcome: RsmSimOutcome = problems.length > 0 ? 'violation' : livenessProblems.length > 0 ? 'liveness' : 'ok';
  const acked = history.filter((op) => op.ret !== undefined).length;
  const deaths = ids.reduce((sum, id) => sum + cluster.slot(id).deaths.length, 0);
  const stats: RsmSimStats = {
    nodes: ids.length,
    views: cluster.checker.chosen.size,
    crashes,
    deaths,
    ops: history.length,
    acked,
    unknown: history.length - acked,
    executions: rsm.executions,
    transfers: rsm.transfers,
    batches: rsm.batches,
    multiRequestBatches: rsm.multiRequestBatches,
    largestBatch: rsm.largestBatch,
    pipelinedBatches: rsm.pipelinedBatches,
    deepestPipeline: rsm.deepestPipeline,
    virtualMs: world.now(),
    worldEvents: world.eventsRun,
  };
  const finalVs = cluster.node(ids[0]!)?.lastExecuted;
  const summary =
    `views=${stats.views} crashes=${crashes} deaths=${deaths} ops=${stats.ops}/${totalOps} acked=${acked} unknown=${stats.unknown}` +
    ` executions=${stats.executions} transfers=${stats.transfers} batches=${stats.batches}/${stats.multiRequestBatches}/${stats.largestBatch} last=${finalVs === undefined ? '-' : describeViewstamp(finalVs)}` +
    ` healed+${world.now() - healedAt}ms virtual=${stats.virtualMs}ms`;
  // Stop every node and client so nothing of this run lingers.
  for (const id of ids) if (cluster.isUp(id)) cluster.crash(id);
  for (const plan of params.clients) if (!world.isDown(plan.name)) world.crash(plan.name);
  return {
    seed,
    outcome,
    problems: [...problems, ...livenessProblems],
    options: describeParameters(seed, params),
    summary,
    traceHash: world.traceHash(),
    events,
    ...(world.traceLines === undefined ? {} : { traceLines: world.traceLines }),
    stats,
  };
}
