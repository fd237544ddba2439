/**
 * The lock workload of the RSM simulator (`rsm_sim --workload lock`): the caching lock service
 * replicated on the RSM under faults, from one seed.
 *
 * Every replica's StateMachine is a CachingLockServer. Each replica incarnation runs the
 * production wiring, a ReplicatedLockHost (lockserver/replicated-host.ts) on its main endpoint: a
 * Notifier that sends revoke/retry only while the node `isPrimary`, poked on every execution and
 * state installation, and resending everything owed on every view and primary change. Lock clients are CachingLockClients over
 * rsmConnection(RsmClient), each with its own callback endpoint (`lcN:cb`) and network owner
 * (`lcN`, put on one side of every partition); each client has several callers (async workers)
 * that acquire one of a few locks, hold it for a drawn virtual time, and release it, a bounded
 * number of times. Clients never crash (their pending operations would have to be recorded as
 * unknown; the replicas do all the crashing).
 *
 * Drawn from the seed (on a stream of its own): cluster size and ids, link faults, 2–3 locks,
 * 2–4 clients with 2–4 callers of 3–8 acquire/release pairs each, hold and think times, whether a
 * client knows every replica or only the MASTER, an RSM invoke deadline (so acquire/release RPCs
 * fail and are resent with the same xid), and impatient callers whose acquires time out during the
 * safety phase. The fault schedule is the kv workload's (sim-common.ts).
 *
 * Checks: PaxosChecker, RsmChecker and the replicas' invariants() after every event as for kv; LockChecker (lock-checkers.ts) — mutual exclusion
 * at the API at every acquire return, replicas agreeing on holders at each viewstamp, the clients'
 * caches against the newest serving primary's table after every simulated event; client core
 * invariants after every client event; at the end, converged replica states and the caches against
 * the table. Liveness: after healing, every caller finishes, the cluster converges on one view and
 * viewstamp, no notice is owed and every client cache is quiet.
 *
 * Sessions (lock-sim-sessions.ts): 0–2 further clients with a short-TTL session, partitioned like
 * the others and some crashing once, so that sessions expire under faults; their holds end at a
 * local session loss or a crash, and the checks above ("no two unexpired holders", tokens) cover them.
 *
 * Histories: with `historyDir` (default: $LOCK_HISTORY_DIR) the run writes
 * `<dir>/rsm_sim-lock-<seed>.jsonl` (shared/reference/history-format.md), virtual time as the clock
 * (ns = virtual ms × 1e6). An acquire that timed out is recorded as unknown and its caller retired
 * (new client number and owner), though the caching client guarantees a caller that gave up never
 * got the lock (history-format.md rule 3 reads every timeout as unknown); an impatient caller gives
 * up at most twice, so unknowns stay few per lock. Operations still pending when the run ends are
 * unknown.
 */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { RpcEndpoint } from '../../lib/rpc.js';
import { SeededRandom } from '../../lib/random.js';
import type { LinkFaults } from '../../lib/sim/network.js';
import { CachingLockClient } from '../../lockserver/cache-client.js';
import { CachingLockServer } from '../../lockserver/cache-server.js';
import { FileProc, FileStatus, FILE_STATUS_CODES, encodeAppendRequest } from '../../lockserver/file/file-protocol.js';
import { FileService } from '../../lockserver/file/file-service.js';
import { LockedFileService } from '../../lockserver/file/locked-files.js';
import type { StateMachine } from '../../rsm/state-machine.js';
import { checkFiles, formatRecord, type FileRecord } from '../file-check.js';
import { LockError } from '../../lockserver/protocol.js';
import { ReplicatedLockHost } from '../../lockserver/replicated-host.js';
import { rsmConnection } from '../../lockserver/rsm-connection.js';
import { RsmClient } from '../../rsm/client.js';
import { compareViewstamp, describeViewstamp } from '../../rsm/protocol.js';
import { HISTORY_DIR_ENV, HistoryRecorder, fileHistorySink, type HistoryActor, type HistorySink } from '../history.js';
import { SimCluster, portIds } from './cluster.js';
import { LockChecker, noticesOwed, type CheckedLockClient, type PrimaryView } from './lock-checkers.js';
import { SessionClients, describeSessionClients, drawSessionClients } from './lock-sim-sessions.js';
import { logMatchesHistory, settleAgain } from './checkers.js';
import { RsmChecker, digest } from './rsm-checkers.js';
import type { RsmSimOptions, RsmSimOutcome, RsmSimResult, RsmSimStats } from './rsm-sim.js';
import { RSM_SIM_TIMING, bootstrap, crashAllMoment, drawLinkFaults, drawStorageSyncMs, faultStep, healForLiveness, pick, type FaultDriver } from './sim-common.js';

interface CallerPlan {
  /** The lock of each acquire/release pair. */
  readonly locks: readonly number[];
  readonly holdMsMax: number;
  readonly thinkMsMax: number;
}

interface LockClientPlan {
  /** Network owner; the callback address is `<name>:cb`, the client id. */
  readonly name: string;
  readonly callers: readonly CallerPlan[];
  readonly knowsAll: boolean;
  /** Deadline of one RSM invoke (undefined: retry until answered). */
  readonly invokeTimeoutMs: number | undefined;
  /** Acquire deadline during the safety phase (undefined: the client's default, 10 min). */
  readonly acquireTimeoutMs: number | undefined;
}

interface LockParameters {
  readonly ids: string[];
  readonly faults: LinkFaults;
  readonly locks: number[];
  readonly clients: LockClientPlan[];
  readonly faultPhaseMs: number;
  readonly livenessLimitMs: number;
  /** Virtual ms of one synced storage write (drawStorageSyncMs). */
  readonly storageSyncMs: number;
}

/** The drawn options of a lock-workload seed: a pure function of the seed (and the overrides). */
export function drawLockParameters(seed: number, options: RsmSimOptions = {}): LockParameters {
  const draw = new SeededRandom(`rsm-sim-lock-parameters:${seed}`);
  const drawnSize = 3 + draw.int(3);
  const size = options.nodes ?? drawnSize;
  const ids = portIds(size, pick(draw, [3772, 10000, 40000]));
  const faults = drawLinkFaults(draw);
  const locks = pick(draw, [[1, 2], [1, 2, 3], [7, 42, 1000]]);
  const holdMsMax = pick(draw, [0, 20, 300, 1500]);
  const thinkMsMax = pick(draw, [0, 50, 500, 2000]);
  const clients: LockClientPlan[] = [];
  const clientCount = 2 + draw.int(3);
  for (let i = 1; i <= clientCount; i++) {
    const callers: CallerPlan[] = [];
    const callerCount = 2 + draw.int(3);
    for (let w = 0; w < callerCount; w++) {
      const count = 3 + draw.int(6);
      callers.push({ locks: Array.from({ length: count }, () => pick(draw, locks)), holdMsMax, thinkMsMax });
    }
    clients.push({
      name: `lc${i}`,
      callers,
      knowsAll: draw.int(2) === 0,
      invokeTimeoutMs: pick(draw, [undefined, undefined, 3000]),
      acquireTimeoutMs: draw.int(4) === 0 ? pick(draw, [5000, 15000]) : undefined,
    });
  }
  return {
    ids,
    faults,
    locks,
    clients,
    faultPhaseMs: options.faultPhaseMs ?? 30_000,
    livenessLimitMs: options.livenessLimitMs ?? 120_000,
    storageSyncMs: drawStorageSyncMs(seed),
  };
}

export function describeLockParameters(seed: number, p: LockParameters): string {
  const f = p.faults;
  const clients = p.clients
    .map(
      (c) =>
        `${c.name}:${c.callers.map((w) => w.locks.length).join('+')}` +
        `${c.invokeTimeoutMs === undefined ? '' : `/invoke=${c.invokeTimeoutMs}ms`}` +
        `${c.acquireTimeoutMs === undefined ? '' : `/timeout=${c.acquireTimeoutMs}ms`}${c.knowsAll ? '' : '/master-only'}`,
    )
    .join(' ');
  const first = p.clients[0]?.callers[0];
  const sessions = drawSessionClients(seed, p.locks, p.clients.length + 1, p.faultPhaseMs);
  return (
    `seed=${seed} workload=lock nodes=${p.ids.length} ids=[${p.ids.join(' ')}] delay=${f.delayMinMs}..${f.delayMaxMs}ms loss=${f.loss} dup=${f.duplicate}` +
    ` locks=[${p.locks.join(' ')}] clients=[${clients}] hold<=${first?.holdMsMax ?? 0}ms think<=${first?.thinkMsMax ?? 0}ms` +
    ` sync=${p.storageSyncMs}ms faultPhase=${p.faultPhaseMs}ms liveness<=${p.livenessLimitMs}ms` +
    (sessions.length === 0 ? '' : ` sessions=[${describeSessionClients(sessions)}]`)
  );
}

/** The history file of a lock-workload seed in `dir`. */
export function lockHistoryPath(dir: string, seed: number): string {
  return join(dir, `rsm_sim-lock-${seed}.jsonl`);
}

/** Acquire deadlines an impatient caller may miss; then it waits as long as it takes. */
const MAX_TIMEOUTS_PER_CALLER = 2;

const discardSink: HistorySink = { write: () => {}, close: () => {} };

interface RunningClient {
  readonly plan: LockClientPlan;
  readonly client: CachingLockClient;
  readonly id: string;
}

export async function runLockSim(seed: number, options: RsmSimOptions = {}): Promise<RsmSimResult> {
  const params = drawLockParameters(seed, options);
  const { ids, locks } = params;
  const events: string[] = [];
  const keepEvents = options.keepEvents ?? false;
  const makeServer = options.lockServer ?? (() => new CachingLockServer());
  // The file workload: every replica runs the lock service and beside it the file service it
  // fences (as lock_server does); callers append records while they hold a lock.
  const withFiles = options.workload === 'file';
  const makeMachine = (): StateMachine => {
    const server = makeServer();
    return withFiles ? new LockedFileService(server, new FileService({ holdToken: (lock) => server.holderOf(lock)?.token })) : server;
  };
  const lockServerOf = (machine: StateMachine | undefined): CachingLockServer =>
    (machine instanceof LockedFileService ? machine.locks : machine) as CachingLockServer;
  const fileAcks: FileRecord[] = [];
  const fileRefused: FileRecord[] = [];
  const hosts = new Map<string, ReplicatedLockHost>();
  let rsm: RsmChecker | undefined;
  let checker: LockChecker | undefined;
  let noticesSent = 0;
  const cluster: SimCluster = new SimCluster({
    seed: `rsm-sim-lock:${seed}`,
    ids,
    timing: RSM_SIM_TIMING,
    storageSyncMs: params.storageSyncMs,
    world: { keepTrace: options.keepTrace ?? false },
    stateMachine: () => makeMachine(),
    onNodeStart: (id, node, incarnation) => {
      const slot = cluster.slot(id);
      const server = lockServerOf(slot.stateMachine);
      rsm!.attach(id, incarnation, node, slot.stateMachine!);
      const who = `${id}#${incarnation}`;
      // The previous incarnation's host is dead (its clock and endpoint went with the crash).
      const previous = hosts.get(id);
      if (previous !== undefined) {
        noticesSent += previous.notifier.sent;
        previous.close();
      }
      const rpc = slot.rpc!;
      // The lease ticker goes through the RSM from this replica, like a client's request.
      const ticker = new RsmClient({ rpc, knownMembers: [id], callTimeoutMs: 2000, backoffMsMax: 1000 });
      const invoke = (proc: number, request: Uint8Array): ReturnType<RsmClient['invoke']> => ticker.invoke(proc, request, { timeoutMs: 5_000 });
      hosts.set(id, new ReplicatedLockHost({ node, rpc, clock: rpc.clock, stateMachine: server, invoke, sessionCount: () => server.sessionCount }));
      node.onExecuted((event) => checker!.replicaAt(who, event.vs, server, `executed ${describeViewstamp(event.vs)} as ${event.role}`));
      node.onStateInstalled((event) => checker!.replicaAt(who, event.last, server, `installed ${describeViewstamp(event.last)} from ${event.from}`));
      options.observeNode?.(id, node, incarnation);
    },
    replicaInvariants: 'record',
  });
  const { world, network } = cluster;
  rsm = new RsmChecker(() => world.now());
  checker = new LockChecker(() => world.now(), locks);
  const lockChecker = checker;
  const random = world.random;
  const event = (line: string): void => {
    world.trace(`sim ${line}`);
    if (keepEvents) events.push(`t=${world.now()} ${line}`);
  };
  const problems: string[] = [];
  let liveness = false;

  const historyDir = options.historyDir ?? process.env[HISTORY_DIR_ENV];
  let sink = discardSink;
  if (historyDir !== undefined && historyDir !== '') {
    mkdirSync(historyDir, { recursive: true });
    sink = fileHistorySink(lockHistoryPath(historyDir, seed));
  }
  // Virtual time is in (possibly fractional) milliseconds; the history records nanoseconds.
  const recorder = new HistoryRecorder(sink, () => BigInt(Math.round(world.now() * 1_000_000)));
  recorder.comment(`rsm_sim --workload lock --seed ${seed}: ${describeLockParameters(seed, params)}`);

  problems.push(...(await bootstrap(cluster, ids)));
  network.setLinkFaults(params.faults);

  // Lock clients and their callers.
  const clients: RunningClient[] = [];
  const clientErrors: string[] = [];
  let callersDone = 0;
  let callersTotal = 0;
  let opsStarted = 0;
  let opsAcked = 0;
  let opsUnknown = 0;
  let acquireTimeouts = 0;
  for (const [index, plan] of params.clients.entries()) {
    const owner = plan.name;
    const net = network.forOwner(owner);
    const clock = world.clockFor(owner);
    const callbacks = new RpcEndpoint(await net.listen(`${owner}:cb`), clock, random.fork());
    const rpc = new RpcEndpoint(net.connect(), clock, random.fork(), { callTimeoutMs: 3000 });
    const rsmClient = new RsmClient({ rpc, knownMembers: plan.knowsAll ? ids : [ids[0]!], callTimeoutMs: 2000, backoffMsMax: 1000 });
    const server = rsmConnection(rsmClient, plan.invokeTimeoutMs === undefined ? {} : { invokeTimeoutMs: plan.invokeTimeoutMs });
    const client = new CachingLockClient({ rpc: callbacks, server, clock, checkInvariants: true, ownedEndpoints: [callbacks, rpc] });
    const running: RunningClient = { plan, client, id: client.id };
    clients.push(running);
    plan.callers.forEach((caller, w) => {
      callersTotal++;
      const actor: HistoryActor = recorder.actor(`${owner}/w${w}`);
      const times = new SeededRandom(`rsm-sim-lock-times:${seed}:${index}:${w}`);
      const pause = (ms: number): Promise<void> => new Promise((resolve) => clock.setTimer(ms, resolve));
      let timedOut = 0;
      let holdsSoFar = 0;
      let fileSeq = 0;
      const fileClientId = `${owner}/w${w}`;
      const callerNumber = index * 100 + w;
      void (async () => {
        for (const lid of caller.locks) {
          if (caller.thinkMsMax > 0) await pause(times.int(caller.thinkMsMax + 1));
          // Impatient callers give up at most MAX_TIMEOUTS_PER_CALLER times (few unknowns per lock).
          const impatient = !liveness && plan.acquireTimeoutMs !== undefined && timedOut < MAX_TIMEOUTS_PER_CALLER;
          const timeout = impatient ? { timeoutMs: plan.acquireTimeoutMs } : {};
          opsStarted++;
          const acquire = actor.begin('acquire', lid);
          let token: number;
          try {
            token = await client.acquire(String(lid), timeout);
          } catch (error) {
            const code = error instanceof LockError ? error.code : undefined;
            acquire.unknown(code ?? String(error));
            opsUnknown++;
            if (code === 'LOCK_TIMEOUT' || code === 'LOCK_RPC_FAILED') {
              acquireTimeouts++;
              timedOut++;
            }
            else clientErrors.push(`${actor.owner} acquire ${lid}: ${(error as Error)?.stack ?? String(error)}`);
            continue;
          }
          acquire.ok();
          opsAcked++;
          const holder = actor.owner;
          lockChecker.acquired(lid, holder, running.id, token);
          if (withFiles) {
            // One or two records into the file this lock protects, each resent until answered.
            holdsSoFar++;
            for (let k = 0; k < 1 + (holdsSoFar % 2); k++) {
              const record: FileRecord = { client: callerNumber, hold: holdsSoFar, seq: ++fileSeq, file: `file_${lid % 100}` };
              const data = new TextEncoder().encode(formatRecord(record));
              const request = encodeAppendRequest({ client: fileClientId, seq: record.seq, file: record.file, lock: String(lid), token, data });
              let status: number | undefined;
              while (status === undefined) {
                try {
                  status = (await rsmClient.invoke(FileProc.APPEND, request)).status;
                } catch {
                  await pause(100);
                }
              }
              if (status === FileStatus.OK) fileAcks.push(record);
              else if (status === FileStatus.STALE_TOKEN || status === FileStatus.NOT_LOCKED) {
                // Only a hold the service no longer counts may be refused; the record must then be absent.
                fileRefused.push(record);
                break;
              } else clientErrors.push(`${holder} append ${record.seq} to ${record.file}: ${FILE_STATUS_CODES[status] ?? status}`);
            }
          }
          const hold = times.int(caller.holdMsMax + 1);
          if (hold > 0) await pause(hold);
          lockChecker.releasing(lid, holder);
          opsStarted++;
          const release = actor.begin('release', lid);
          try {
            await client.release(String(lid));
          } catch (error) {
            release.unknown(error instanceof LockError ? error.code : String(error));
            opsUnknown++;
            clientErrors.push(`${holder} release ${lid}: ${(error as Error)?.stack ?? String(error)}`);
            continue;
          }
          release.ok();
          opsAcked++;
        }
        callersDone++;
      })();
    });
  }
  const sessionClients = new SessionClients(world, lockChecker, drawSessionClients(seed, locks, params.clients.length + 1, params.faultPhaseMs));
  await sessionClients.start(network, ids, random);
  const sessionlessChecked: CheckedLockClient[] = clients.map((c) => ({
    id: c.id,
    cacheStateOf: (lid: string) => c.client.cacheStateOf(String(lid)),
    xidOf: (lid: string) => c.client.xidOf(String(lid)),
  }));
  const owed = (primary: PrimaryView): number => noticesOwed(primary.server, [...sessionlessChecked, ...sessionClients.checked()]).length;

  /** The serving primary of the newest decided view, if there is one now. */
  const servingPrimary = (): PrimaryView | undefined => {
    let newest = 0;
    for (const vid of cluster.checker.chosen.keys()) newest = Math.max(newest, vid);
    for (const id of ids) {
      const node = cluster.node(id);
      if (node !== undefined && node.isPrimary && node.vidCommit === newest) {
        return { id, vid: newest, last: node.lastExecuted, server: lockServerOf(cluster.slot(id).stateMachine) };
      }
    }
    return undefined;
  };
  const stop = (): boolean => !cluster.checker.ok || !rsm!.ok || !lockChecker.ok || !cluster.invariantsOk || cluster.fatalErrors.length > 0;
  /** Runs after every simulated event. */
  const step = (): boolean => {
    if (options.crossCheckCaches !== false) lockChecker.step(servingPrimary(), [...sessionlessChecked, ...sessionClients.checked()]);
    return stop();
  };

  const clientOwners = [...params.clients.map((c) => c.name), ...sessionClients.plans.map((c) => c.name)];
  const driver: FaultDriver = {
    cluster,
    random,
    ids,
    clientOwners,
    drawnFaults: params.faults,
    event,
    crashes: 0,
    crashAllAt: crashAllMoment(seed, options, params.faultPhaseMs, world.now()),
  };

  // Safety phase.
  const faultEnd = world.now() + params.faultPhaseMs;
  sessionClients.faultPhaseStarted();
  while (world.now() < faultEnd && problems.length === 0 && !stop()) {
    await cluster.runUntil(step, 100 + random.int(2000));
    if (stop()) break;
    sessionClients.crashDue();
    await faultStep(driver);
  }

  // Liveness phase.
  liveness = true;
  await healForLiveness(driver);
  const healedAt = world.now();
  /** What still keeps the run from its quiet end (undefined: quiet). */
  const notQuiet = (): string | undefined => {
    if (callersDone < callersTotal) return 'callers still running';
    if (!sessionClients.allDone) return 'session callers still running';
    if (!cluster.converged()) return 'the replicas have not converged on one view';
    const primary = servingPrimary();
    if (primary === undefined) return 'no serving primary';
    if (owed(primary) > 0) return 'notices owed';
    const behind = ids.filter((id) => compareViewstamp(cluster.node(id)!.lastExecuted, primary.last) !== 0);
    if (behind.length > 0) return `${behind.map((id) => `${id} at ${describeViewstamp(cluster.node(id)!.lastExecuted)}`).join(', ')}, the primary at ${describeViewstamp(primary.last)}`;
    if (!sessionClients.quiet(locks)) return 'a session client still holds or asks';
    if (!clients.every((c) => locks.every((lid) => ['none', 'free'].includes(c.client.cacheStateOf(String(lid)))))) return 'a client still holds or asks';
    return undefined;
  };
  const quiet = (): boolean => notQuiet() === undefined;
  const finished = problems.length === 0 && !stop() && (await cluster.runUntil(() => step() || quiet(), params.livenessLimitMs)) && !stop();
  const livenessProblems: string[] = [];
  if (problems.length === 0 && !stop() && !finished) {
    const caches = clients.map((c) => `${c.id}{${locks.map((lid) => `${lid}:${c.client.cacheStateOf(String(lid))}`).join(' ')}}`).join(' ');
    const primary = servingPrimary();
    livenessProblems.push(
      `no quiet end within ${params.livenessLimitMs} ms of healing (${notQuiet() ?? 'quiet only now'}): ${callersDone}/${callersTotal} callers done, ` +
        `notices owed ${primary === undefined ? '?' : owed(primary)}; caches ${caches}; ${cluster.describe()}`,
    );
  }

  // Final checks.
  cluster.checkHistories();
  for (const id of ids) {
    if ((await logMatchesHistory(cluster, id)) === false) problems.push(`${id}: log done lines differ from the durable history`);
  }
  // The end checks read the serving primary: quiet again after the log checks (settleAgain).
  const settled = finished && (await settleAgain(cluster, quiet, step, params.livenessLimitMs)) && !stop();
  if (finished && !settled && !stop()) livenessProblems.push(`no quiet end within ${params.livenessLimitMs} ms after the final log checks moved the cluster on: ${cluster.describe()}`);
  problems.unshift(...cluster.invariantViolations, ...cluster.checker.violations, ...rsm.violations, ...lockChecker.violations);
  for (const { node, error } of cluster.fatalErrors) problems.push(`${node}: fatal ${String((error as Error)?.stack ?? error)}`);
  problems.push(...clientErrors);
  if (settled && problems.length === 0) {
    const states = new Set(ids.map((id) => digest(cluster.slot(id).stateMachine!.marshalState())));
    if (states.size !== 1) problems.push(`the converged replicas disagree on their state (${states.size} different states)`);
    if (withFiles) {
      const copies = new Map(
        ids.map((id) => {
          const machine = cluster.slot(id).stateMachine as LockedFileService;
          const files = new Map<string, string>();
          for (let index = 0; index < 100; index++) files.set(`file_${index}`, new TextDecoder().decode(machine.files.contents(index)));
          return [id, files] as const;
        }),
      );
      const check = checkFiles({ replicas: copies, acknowledged: fileAcks });
      problems.push(...check.problems.map((problem) => `files: ${problem}`));
      const first = copies.get(ids[0]!)!;
      for (const record of fileRefused) {
        if ((first.get(record.file) ?? '').includes(formatRecord(record))) problems.push(`files: the refused append ${record.client}/${record.seq} is in ${record.file}`);
      }
    }
    const primary = servingPrimary()!;
    for (const lid of locks) {
      const holder = primary.server.holderOf(String(lid));
      const live = [...sessionlessChecked, ...sessionClients.checked()];
      const caching = live.filter((c) => c.cacheStateOf(String(lid)) === 'free').map((c) => c.id);
      // A session client that is out (lost or crashed) may stay the holder until the service's
      // clock passes its deadline, which needs a request to flow; it caches nothing any more.
      const expected = holder === undefined || sessionClients.isOut(holder.id) ? [] : [holder.id];
      if (JSON.stringify(caching) !== JSON.stringify(expected)) {
        problems.push(`at the end lock ${lid} is cached by [${caching.join(' ')}] but the table's holder is ${holder === undefined ? 'none' : holder.id}`);
      }
    }
  }
  const outcome: RsmSimOutcome = problems.length > 0 ? 'violation' : livenessProblems.length > 0 ? 'liveness' : 'ok';
  const deaths = ids.reduce((sum, id) => sum + cluster.slot(id).deaths.length, 0);
  for (const host of hosts.values()) noticesSent += host.notifier.sent;
  const clientStats = clients.map((c) => c.client.stats());
  const acquireRpcs = clientStats.reduce((sum, s) => sum + s.acquireRpcs, 0);
  const revokes = clientStats.reduce((sum, s) => sum + s.revokesReceived, 0);
  const stats: RsmSimStats = {
    nodes: ids.length,
    views: cluster.checker.chosen.size,
    crashes: driver.crashes,
    deaths,
    ops: opsStarted,
    acked: opsAcked,
    unknown: opsUnknown,
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
    `views=${stats.views} crashes=${stats.crashes} deaths=${deaths} grants=${lockChecker.grants} releases=${lockChecker.releases}` +
    ` unknown=${opsUnknown} timeouts=${acquireTimeouts} acquireRpcs=${acquireRpcs} notices=${noticesSent} revokes=${revokes}` +
    ` checkedSteps=${lockChecker.decidedSteps} executions=${stats.executions} transfers=${stats.transfers} batches=${stats.batches}/${stats.multiRequestBatches}/${stats.largestBatch} last=${finalVs === undefined ? '-' : describeViewstamp(finalVs)}` +
    ` healed+${world.now() - healedAt}ms virtual=${stats.virtualMs}ms` +
    (withFiles ? ` appends=${fileAcks.length} refusedAppends=${fileRefused.length}` : '') +
    (sessionClients.plans.length === 0
      ? ''
      : ` sessionGrants=${sessionClients.grants} sessionsLost=${sessionClients.lost} sessionCrashes=${sessionClients.crashed} holdsEnded=${lockChecker.expiredHolds} keepalives=${sessionClients.keepalives()}`);
  // Pending operations become unknown; then stop every node and client so nothing lingers.
  recorder.close();
  for (const host of hosts.values()) host.close();
  for (const id of ids) if (cluster.isUp(id)) cluster.crash(id);
  for (const plan of params.clients) if (!world.isDown(plan.name)) world.crash(plan.name);
  sessionClients.stopAll();
  return {
    seed,
    outcome,
    problems: [...problems, ...livenessProblems],
    options: describeLockParameters(seed, params),
    summary,
    traceHash: world.traceHash(),
    events,
    ...(world.traceLines === undefined ? {} : { traceLines: world.traceLines }),
    stats,
  };
}
