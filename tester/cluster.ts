/**
 * A local replica cluster for people to play with: the machinery behind `start_cluster` (and,
 * later, `npm start`). It starts `lock_server P0 Pi` for i = 0..N-1 as child processes on
 * 127.0.0.1, one at a time, each joining the view of the ones before it; then reports each
 * replica's status on demand: whether it runs and answers, its latest view, and the primary.
 *
 * Sources of the status, all read from outside the replicas:
 * - process: the child's PID, tracked from spawn to exit (processes.ts);
 * - view id and members: the last `done` line of the replica's `paxos-<port>.log`
 *   (tester/paxos-log.ts), the same file rsm_tester judges views by;
 * - primary and "answering": the RSM client `members` RPC (0x9002) on the replica's port, which
 *   returns the members of its committed view with the primary appended last.
 * - the last executed viewstamp: the test-control `status` RPC (0x12003) on the replica's control
 *   port (ME+1), which answers even while the replica is partitioned.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { realClock } from '../lib/clock.js';
import type { Random } from '../lib/env.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { RsmClientStatus, RsmTestStatus, describeViewstamp, rsmClientProtocol, rsmTestProtocol, type StatusRes } from '../rsm/protocol.js';
import { describeNoQuorum } from '../paxos/identity.js';
import { quorum, type QuorumRes } from '../paxos/messages.js';
import { processinfo, type ProcessInfo } from '../rsm/replica-process.js';
import { parsePaxosLog, type View } from './paxos-log.js';
import { ChildHandle, describeExit, isPidAlive, lockServerScript, stopChildren, tail, type ExitInfo, type StopResult } from './processes.js';

// -----------------------------------------------------------------------------------------------
// Limits and timings.

/** The first port when none is given and it is free (the port `npm start` always used). */
export const DEFAULT_BASE_PORT = 3772;
export const DEFAULT_REPLICAS = 3;
export const MAX_REPLICAS = 15;
/** Random base ports are drawn from [RANDOM_PORT_MIN, RANDOM_PORT_MAX). */
export const RANDOM_PORT_MIN = 10_000;
// Below Linux's ephemeral range (32768 and up by default), which outgoing connections take from.
export const RANDOM_PORT_MAX = 32_000;
/** Draws of a random base port before giving up. */
export const PORT_DRAWS_MAX = 200;
/** How long a starting replica may take to appear in a view (its log shows a view with it). */
export const JOIN_WAIT_MS = 30_000;
/** How often the startup wait re-reads the logs. */
export const JOIN_POLL_MS = 200;
/** Deadline of one `members` status call. */
export const MEMBERS_TIMEOUT_MS = 800;
/** After SIGTERM, how long a replica may take before it gets SIGKILL (and again after that). */
export const STOP_GRACE_MS = 5_000;
/** Lines of a replica's output quoted when it fails to start. */
const LOG_TAIL_LINES = 8;

// -----------------------------------------------------------------------------------------------
// Ports.

/** Node i listens on base + 2i and serves test control on base + 2i + 1. */
export function clusterPorts(base: number, replicas: number): number[] {
  return Array.from({ length: replicas }, (_, i) => base + 2 * i);
}

/** Every port the cluster binds: each node's port and its control port. */
export function boundPorts(base: number, replicas: number): number[] {
  return Array.from({ length: 2 * replicas }, (_, i) => base + i);
}

export type PortChoice =
  | { readonly ok: true; readonly base: number; /** Set when the default base was busy. */ readonly defaultBusy?: number }
  | { readonly ok: false; readonly message: string };

/**
 * The base port: `requested` if given (all its ports must be free), else DEFAULT_BASE_PORT if
 * free, else a random free block. At most PORT_DRAWS_MAX draws.
 */
export async function chooseBasePort(
  replicas: number,
  requested: number | undefined,
  isFree: (port: number) => Promise<boolean>,
  random: Random = osRandom(),
): Promise<PortChoice> {
  const allFree = async (base: number): Promise<number | undefined> => {
    for (const port of boundPorts(base, replicas)) if (!(await isFree(port))) return port;
    return undefined;
  };
  if (requested !== undefined) {
    if (requested < 1 || requested + 2 * replicas - 1 > 65_535) {
      return { ok: false, message: `--base-port ${requested} leaves no room for ${replicas} replicas (ports ${requested}..${requested + 2 * replicas - 1})` };
    }
    const busy = await allFree(requested);
    if (busy !== undefined) return { ok: false, message: `port ${busy} is in use; pick another --base-port (the cluster needs ${requested}..${requested + 2 * replicas - 1})` };
    return { ok: true, base: requested };
  }
  const busyDefault = await allFree(DEFAULT_BASE_PORT);
  if (busyDefault === undefined) return { ok: true, base: DEFAULT_BASE_PORT };
  for (let draw = 0; draw < PORT_DRAWS_MAX; draw++) {
    const base = RANDOM_PORT_MIN + random.int(RANDOM_PORT_MAX - RANDOM_PORT_MIN - 2 * replicas);
    if ((await allFree(base)) === undefined) return { ok: true, base, defaultBusy: busyDefault };
  }
  return { ok: false, message: `found no ${2 * replicas} free consecutive ports in ${PORT_DRAWS_MAX} tries; give one with --base-port` };
}

// -----------------------------------------------------------------------------------------------
// Status sources.

export interface LoggedView {
  readonly vid: number;
  readonly members: View;
}

/** The latest view in a paxos log file, or undefined if the file is missing or has no view yet. */
export async function latestLoggedView(file: string): Promise<LoggedView | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const last = parsePaxosLog(text).done.at(-1);
  return last === undefined ? undefined : { vid: last.instance, members: last.members };
}

export type MembersAnswer =
  | { readonly answered: true; /** Members of its committed view, in join order. */ readonly members: View; /** '' before any view. */ readonly primary: string }
  | { readonly answered: false; readonly reason: string };

/** Asks a replica's main port for `members` (primary last). */
export async function queryMembers(rpc: RpcEndpoint, address: string, timeoutMs = MEMBERS_TIMEOUT_MS): Promise<MembersAnswer> {
  // A fresh client per call, as rsm-tester's control calls do: no state to go stale.
  const client = rpc.newClient(address);
  try {
    const reply = await client.call(rsmClientProtocol.members, { dummy: 0 }, { timeoutMs });
    if (!reply.ok) return { answered: false, reason: reply.error.code };
    if (reply.status !== RsmClientStatus.OK) return { answered: false, reason: `status ${reply.status}` };
    const list = reply.result;
    return { answered: true, members: list.slice(0, -1), primary: list.at(-1) ?? '' };
  } finally {
    client.close();
  }
}

/** Asks a replica's control port for its `status` (view, primary, last viewstamp); undefined if no answer. */
export async function queryStatus(rpc: RpcEndpoint, controlAddress: string, timeoutMs = MEMBERS_TIMEOUT_MS): Promise<StatusRes | undefined> {
  const client = rpc.newClient(controlAddress);
  try {
    const reply = await client.call(rsmTestProtocol.status, { dummy: 0 }, { timeoutMs });
    return reply.ok && reply.status === RsmTestStatus.OK ? reply.result : undefined;
  } finally {
    client.close();
  }
}

// -----------------------------------------------------------------------------------------------
// The cluster.

export interface Replica {
  readonly index: number;
  /** "p0", "p1", … */
  readonly name: string;
  readonly port: number;
  readonly controlPort: number;
  /** The node's id in views and logs: the bare port. */
  readonly id: string;
  readonly logFile: string;
  readonly paxosLog: string;
  process: ChildHandle | undefined;
  /** A process serving this port that we did not start (restarted by hand), found by its control port. */
  adoptedPid: number | undefined;
  /**
   * Whether we sent it SIGSTOP (the `p` key) and not yet SIGCONT. Only where there is no /proc:
   * there, the process state tells (a pause by anyone else shows too).
   */
  paused: boolean;
}

export interface ReplicaStatus {
  readonly replica: Replica;
  /** 'up': runs and answers; 'no answer': runs but the status call failed; 'exited'. */
  readonly state: 'up' | 'no answer' | 'paused' | 'exited' | 'not started';
  readonly exit: ExitInfo | undefined;
  readonly view: LoggedView | undefined;
  /** The primary as this replica sees it ('' if it has no view yet), undefined if unknown. */
  readonly primary: string | undefined;
  /** The last executed viewstamp ("4.12"; "0.0" before any request), undefined if unknown. */
  readonly lastViewstamp: string | undefined;
  /** Batches the replica process executed since it started, undefined if unknown. */
  readonly batches?: number | undefined;
  /** The pid serving the port (ours or adopted), undefined if none answers. */
  readonly pid?: number | undefined;
  readonly inViewChange?: boolean;
  /** The replica's status in words while in a view change (its status RPC's phase), undefined if unknown. */
  readonly phase?: string | undefined;
  /** The host's "no quorum: …" line, undefined with quorum or unknown. */
  readonly noQuorum?: string | undefined;
}

export interface ClusterOptions {
  readonly replicas: number;
  readonly basePort: number;
  /** RSM_LOG_DIR of the replicas: their output and paxos logs. */
  readonly logDir: string;
  /** RSM_DATA_DIR of the replicas: their durable state, one subdirectory per node. */
  readonly dataDir: string;
  /** Where lock_server.js is. */
  readonly binDir: string;
  /** Environment of the replicas (RSM_LOG_DIR and RSM_DATA_DIR are set on top). */
  readonly env?: NodeJS.ProcessEnv;
  /** Options every replica's lock_server gets before MASTER ME (e.g. the lock table's limits, which must agree). */
  readonly serverArguments?: readonly string[];
}

export class StartupError extends Error {
  override name = 'StartupError';
}

export class LocalCluster {
  readonly replicas: readonly Replica[];
  private readonly rpc: RpcEndpoint;

  constructor(readonly options: ClusterOptions) {
    this.replicas = clusterPorts(options.basePort, options.replicas).map((port, index) => ({
      index,
      name: `p${index}`,
      port,
      controlPort: port + 1,
      id: String(port),
      logFile: path.join(options.logDir, `lock_server-${options.basePort}-${port}.log`),
      paxosLog: path.join(options.logDir, `paxos-${port}.log`),
      process: undefined,
      adoptedPid: undefined,
      paused: false,
    }));
    this.rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom(), { callTimeoutMs: MEMBERS_TIMEOUT_MS });
  }

  get master(): Replica {
    return this.replicas[0]!;
  }

  /** `{p0,p1}` for a member list; ids that are not ours are shown as they are. */
  describe(view: View): string {
    return `{${view.map((id) => this.nameOf(id)).join(',')}}`;
  }

  nameOf(id: string): string {
    return this.replicas.find((replica) => replica.id === id)?.name ?? id;
  }

  /**
   * Starts the replicas one at a time; each must show up in a view of its own log (the lab's
   * start_nodes) within JOIN_WAIT_MS. `progress` gets a line per step. Throws StartupError if a
   * replica exits or does not join; the caller stops the cluster. `signal` aborts the wait.
   */
  async start(progress: (line: string) => void, signal?: AbortSignal): Promise<void> {
    await fsp.mkdir(this.options.logDir, { recursive: true });
    await fsp.mkdir(this.options.dataDir, { recursive: true });
    for (const replica of this.replicas) {
      // A log left by an earlier cluster on these ports would show its views until the new node
      // rewrites the file from its (fresh) state; remove it so the status never shows stale views.
      await fsp.rm(replica.paxosLog, { force: true });
    }
    const script = lockServerScript();
    if (!fs.existsSync(script)) throw new StartupError(`cannot find the lock_server program at ${script} (build it with npm run build)`);
    for (const replica of this.replicas) {
      if (signal?.aborted) return;
      this.spawn(replica);
      progress(`starting ${replica.name}: lock_server ${this.master.id} ${replica.id} (pid ${replica.process!.pid})`);
      const view = await this.waitUntilInView(replica, signal);
      if (view === undefined) return; // aborted
      progress(`${replica.name} is in view ${view.vid} ${this.describe(view.members)}`);
    }
  }

  /** Starts (or restarts) `replica` as our child, with the cluster's own log and data directories. */
  spawn(replica: Replica): ChildHandle {
    replica.process = ChildHandle.spawn(lockServerScript(), [...this.serverArguments(), this.master.id, replica.id], replica.logFile, {
      ...(this.options.env ?? process.env),
      RSM_LOG_DIR: this.options.logDir,
      RSM_DATA_DIR: this.options.dataDir,
    });
    replica.adoptedPid = undefined;
    replica.paused = false;
    return replica.process;
  }

  /** The shell command that restarts `replica` by hand, with this cluster's directories. */
  restartCommand(replica: Replica): string {
    const command = [`node ${path.relative(process.cwd(), lockServerScript())}`, ...this.serverArguments(), this.master.id, replica.id].join(' ');
    return `RSM_LOG_DIR=${this.options.logDir} RSM_DATA_DIR=${this.options.dataDir} ${command}`;
  }

  private serverArguments(): readonly string[] {
    return this.options.serverArguments ?? [];
  }

  /** The pid serving `replica`'s port now: our child's if it runs, else an adopted one. */
  pidOf(replica: Replica): number | undefined {
    if (replica.process?.running === true) return replica.process.pid;
    return replica.adoptedPid;
  }

  /** Sends `signal` to the process serving `replica`; false if none is known. */
  signal(replica: Replica, signal: NodeJS.Signals): boolean {
    const pid = this.pidOf(replica);
    if (pid === undefined) return false;
    try {
      process.kill(pid, signal);
    } catch {
      return false;
    }
    if (signal === 'SIGSTOP') replica.paused = true;
    if (signal === 'SIGCONT' || signal === 'SIGKILL' || signal === 'SIGTERM') replica.paused = false;
    return true;
  }

  /**
   * Whether the process `pid` serving `replica` is stopped (SIGSTOP, from us or anyone): its state
   * in /proc/PID/stat is T. Without /proc, whether we paused it (the `p` key) and not resumed it.
   */
  isPaused(replica: Replica, pid: number): boolean {
    if (!HAVE_PROC) return replica.paused;
    const state = processState(pid);
    return state === 'T' || state === 't';
  }

  private async waitUntilInView(replica: Replica, signal: AbortSignal | undefined): Promise<LoggedView | undefined> {
    const deadline = Date.now() + JOIN_WAIT_MS;
    for (;;) {
      if (signal?.aborted) return undefined;
      const child = replica.process!;
      if (!child.running) {
        const lines = (await tail(replica.logFile, LOG_TAIL_LINES)).map((line) => `\n    ${line}`).join('');
        throw new StartupError(`${replica.name} (port ${replica.port}) exited during startup (${describeExit(child.exitInfo!)}); last lines of ${replica.logFile}:${lines}`);
      }
      const view = await latestLoggedView(replica.paxosLog);
      if (view !== undefined && view.members.includes(replica.id)) return view;
      if (Date.now() >= deadline) {
        throw new StartupError(`${replica.name} (port ${replica.port}) did not join a view within ${JOIN_WAIT_MS / 1000} s; see ${replica.logFile} and ${replica.paxosLog}`);
      }
      await pause(JOIN_POLL_MS, signal);
    }
  }

  /** Every replica's status now. Bounded by MEMBERS_TIMEOUT_MS (the calls run in parallel). */
  async status(): Promise<ReplicaStatus[]> {
    return Promise.all(
      this.replicas.map(async (replica): Promise<ReplicaStatus> => {
        const view = await latestLoggedView(replica.paxosLog);
        const child = replica.process;
        const base = { replica, view, lastViewstamp: undefined };
        const control = `127.0.0.1:${replica.controlPort}`;
        if (child === undefined || !child.running) {
          // Not our child (any more): whoever serves the port, e.g. a replica restarted by hand.
          // A stopped one cannot answer; it keeps its pid while it is stopped.
          const stopped = replica.adoptedPid !== undefined && this.isPaused(replica, replica.adoptedPid);
          const info = stopped ? undefined : await queryProcessInfo(this.rpc, control);
          if (info === undefined && !stopped) replica.adoptedPid = undefined;
          if (info !== undefined) replica.adoptedPid = info.pid;
          if (replica.adoptedPid === undefined) {
            if (child === undefined) return { ...base, state: 'not started', exit: undefined, primary: undefined };
            return { ...base, state: 'exited', exit: child.exitInfo, primary: undefined };
          }
        }
        const pid = this.pidOf(replica);
        if (pid !== undefined && this.isPaused(replica, pid)) return { ...base, state: 'paused', exit: undefined, primary: undefined, pid };
        const [answer, status, verdict] = await Promise.all([
          queryMembers(this.rpc, `127.0.0.1:${replica.port}`),
          queryStatus(this.rpc, control),
          queryQuorum(this.rpc, control),
        ]);
        const lastViewstamp = status === undefined ? undefined : describeViewstamp(status.last);
        const extra = {
          pid,
          batches: status?.batches,
          inViewChange: status?.inViewChange === true,
          phase: status?.inViewChange === true && status.phase !== '' ? status.phase : undefined,
          noQuorum: verdict === undefined || verdict.quorum ? undefined : describeNoQuorum(verdict, (id) => this.nameOf(id)),
        };
        if (!answer.answered) return { ...base, ...extra, lastViewstamp, state: 'no answer', exit: undefined, primary: undefined };
        return { ...base, ...extra, lastViewstamp, state: 'up', exit: undefined, primary: answer.primary };
      }),
    );
  }

  /** One status line per replica, fixed columns. */
  formatStatus(status: ReplicaStatus): string {
    const { replica } = status;
    const state =
      status.state === 'exited'
        ? `exited (${describeExit(status.exit!)})`
        : status.state === 'up' && status.inViewChange === true
          ? status.phase === undefined
            ? 'up, in view change'
            : `up, in view change (${status.phase})`
          : status.state;
    const view = status.view === undefined ? 'view -' : `view ${status.view.vid} ${this.describe(status.view.members)}`;
    // Unknown: '?' while it runs but does not answer, '-' once it exited or before any view.
    const primary = status.primary === undefined ? (status.state === 'no answer' ? '?' : '-') : status.primary === '' ? '-' : this.nameOf(status.primary);
    const pid = status.pid !== undefined ? String(status.pid) : replica.process === undefined ? '-' : String(replica.process.pid);
    return [
      replica.name.padEnd(3),
      `port ${replica.port}`.padEnd(10),
      `pid ${pid}`.padEnd(11),
      state.padEnd(22),
      view.padEnd(12 + 3 * this.replicas.length),
      `primary ${primary}`.padEnd(11),
      `last vs ${status.lastViewstamp ?? '-'}`,
      ...(status.noQuorum === undefined ? [] : [status.noQuorum]),
    ].join(' ');
  }

  /** SIGTERM to every replica, SIGKILL after STOP_GRACE_MS; closes the status endpoint. */
  async stop(graceMs = STOP_GRACE_MS): Promise<StopResult> {
    // A stopped replica would not act on SIGTERM: resume all of them first (whoever paused them).
    for (const replica of this.replicas) if (this.pidOf(replica) !== undefined) this.signal(replica, 'SIGCONT');
    const children = this.replicas.map((replica) => replica.process).filter((child): child is ChildHandle => child !== undefined);
    // Replicas restarted by hand are ours to stop too: SIGTERM, SIGKILL after the grace.
    const adopted = this.replicas.map((r) => r.adoptedPid).filter((pid): pid is number => pid !== undefined);
    for (const pid of adopted) trySignal(pid, 'SIGTERM');
    const result = await stopChildren(children, graceMs);
    const deadline = Date.now() + graceMs;
    while (adopted.some(isPidAlive) && Date.now() < deadline) await pause(100, undefined);
    for (const pid of adopted.filter(isPidAlive)) trySignal(pid, 'SIGKILL');
    await this.rpc.close();
    return result;
  }
}

/** Whether this system has a /proc with process states (Linux). */
const HAVE_PROC = fs.existsSync('/proc/self/stat');

/**
 * The state letter of process `pid` in /proc/PID/stat: R running, S sleeping, T stopped, Z zombie, …;
 * undefined where there is no /proc (not Linux) or no such process.
 */
export function processState(pid: number): string | undefined {
  if (!HAVE_PROC) return undefined;
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "PID (COMM) S …": COMM may hold spaces and parentheses, the state follows the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2).charAt(0);
  return state === '' ? undefined : state;
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Asks a control port which process serves it; undefined if nobody answers. */
export async function queryProcessInfo(rpc: RpcEndpoint, controlAddress: string, timeoutMs = MEMBERS_TIMEOUT_MS): Promise<ProcessInfo | undefined> {
  const client = rpc.newClient(controlAddress);
  try {
    const reply = await client.call(processinfo, { dummy: 0 }, { timeoutMs });
    return reply.ok ? reply.result : undefined;
  } finally {
    client.close();
  }
}

/** The host's quorum verdict on a control port; undefined if no answer. */
export async function queryQuorum(rpc: RpcEndpoint, controlAddress: string, timeoutMs = MEMBERS_TIMEOUT_MS): Promise<QuorumRes | undefined> {
  const client = rpc.newClient(controlAddress);
  try {
    const reply = await client.call(quorum, { dummy: 0 }, { timeoutMs });
    return reply.ok ? reply.result : undefined;
  } finally {
    client.close();
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

// -----------------------------------------------------------------------------------------------
// The status screen's single keys (start_cluster on a terminal): an action key, then the replica
// number. Pure, so the decoding is tested without a terminal.

/** k SIGKILL, t SIGTERM, r restart, p pause (SIGSTOP), c resume (SIGCONT). */
export type KeyAction = 'k' | 't' | 'r' | 'p' | 'c';

export const KEY_ACTIONS: Readonly<Record<KeyAction, string>> = {
  k: 'kill (SIGKILL)',
  t: 'SIGTERM',
  r: 'restart',
  p: 'pause (SIGSTOP)',
  c: 'resume (SIGCONT)',
};

export type KeyEvent =
  /** An action on replica `replica` (its index). */
  | { readonly type: 'action'; readonly action: KeyAction; readonly replica: number }
  /** An action key was pressed: the next digits choose the replica. */
  | { readonly type: 'pending'; readonly action: KeyAction }
  /** Esc dropped a pending action. */
  | { readonly type: 'cancel' }
  /** q or Ctrl-C. */
  | { readonly type: 'stop'; readonly why: 'q' | 'Ctrl-C' }
  | { readonly type: 'help' }
  /** A key that means nothing here; `problem` says why. */
  | { readonly type: 'invalid'; readonly problem: string };

/**
 * Decodes the bytes typed on the status screen in raw mode: an action key (k t r p c) then the
 * replica number, e.g. `k` `1` kills p1. With up to 10 replicas one digit completes the number;
 * with more, a digit that could begin a longer number (1 of 12) waits for the next digit, Enter
 * or space. Space and Enter are ignored otherwise, so the line form `k 1⏎` typed on a terminal
 * does the same. Esc drops a pending action (and the escape sequences of arrow and function
 * keys are swallowed), q and Ctrl-C stop the cluster, ? or h asks for the keys.
 */
export class StatusKeys {
  private action: KeyAction | undefined;
  private digits = '';
  /** Inside an escape sequence: after ESC, in a CSI (ESC [ … final byte), or after ESC O. */
  private escape: 'none' | 'esc' | 'csi' | 'ss3' = 'none';

  constructor(readonly replicaCount: number) {}

  /** The action waiting for its replica number, if any. */
  get pending(): KeyAction | undefined {
    return this.action;
  }

  feed(text: string): KeyEvent[] {
    const events: KeyEvent[] = [];
    for (const char of text) this.key(char, events);
    return events;
  }

  private key(char: string, events: KeyEvent[]): void {
    if (this.escape === 'esc') {
      this.escape = char === '[' ? 'csi' : char === 'O' ? 'ss3' : 'none';
      if (this.escape !== 'none') return;
      // Alt+key arrives as ESC key: the key counts.
    } else if (this.escape === 'csi') {
      if (char >= '@' && char <= '~') this.escape = 'none';
      return;
    } else if (this.escape === 'ss3') {
      this.escape = 'none';
      return;
    }
    if (char === '\u0003') return this.finish(events, { type: 'stop', why: 'Ctrl-C' });
    if (char === '\u001b') {
      this.escape = 'esc';
      if (this.action !== undefined) this.finish(events, { type: 'cancel' });
      return;
    }
    const lower = char.toLowerCase();
    if (lower === 'q') return this.finish(events, { type: 'stop', why: 'q' });
    if (lower === '?' || lower === 'h') return this.finish(events, { type: 'help' });
    if (lower in KEY_ACTIONS) {
      this.action = lower as KeyAction;
      this.digits = '';
      events.push({ type: 'pending', action: this.action });
      return;
    }
    if (char >= '0' && char <= '9') {
      if (this.action === undefined) {
        return this.finish(events, { type: 'invalid', problem: `${char}: press an action key first (k kill, t SIGTERM, r restart, p pause, c resume), then the replica number` });
      }
      this.digits += char;
      const n = Number(this.digits);
      if (n >= this.replicaCount) return this.finish(events, { type: 'invalid', problem: `there is no replica ${n} (${replicaNumbers(this.replicaCount)})` });
      // Complete unless a longer number could follow (no leading zeros).
      if (this.digits === '0' || n * 10 >= this.replicaCount) return this.finish(events, { type: 'action', action: this.action, replica: n });
      return;
    }
    if (char === ' ' || char === '\r' || char === '\n' || char === '\t') {
      if (this.action !== undefined && this.digits !== '') this.finish(events, { type: 'action', action: this.action, replica: Number(this.digits) });
      return;
    }
    const shown = char < ' ' ? `Ctrl-${String.fromCharCode(char.charCodeAt(0) + 64)}` : JSON.stringify(char);
    this.finish(events, { type: 'invalid', problem: `${shown} is not a key here; ${statusKeysHelp(this.replicaCount)}` });
  }

  private finish(events: KeyEvent[], event: KeyEvent): void {
    this.action = undefined;
    this.digits = '';
    events.push(event);
  }
}

/** The single-key scheme in one line: the status screen's help line. */
export function statusKeysHelp(replicaCount: number): string {
  return `keys: k kill, t SIGTERM, r restart, p pause, c resume, then the replica number ${replicaNumbers(replicaCount)}; q or Ctrl-C stops all`;
}

/** "0..2", or "only 0" for one replica. */
function replicaNumbers(replicaCount: number): string {
  return replicaCount === 1 ? 'only 0' : `0..${replicaCount - 1}`;
}

/**
 * `line` cut into pieces of at most `width` characters, between columns where it can be, every piece
 * after the first indented by `indent` spaces: a status line on a narrow terminal keeps its last
 * columns (last vs, no quorum) instead of losing them at the edge.
 */
export function wrapLine(line: string, width: number, indent = 4): string[] {
  const pieces: string[] = [];
  let rest = line;
  let room = width;
  while (rest.length > room) {
    // Between columns (two spaces or more) if it can, else between words, else anywhere; never
    // in the leading spaces.
    const lead = rest.length - rest.trimStart().length;
    const gap = rest.lastIndexOf('  ', room - 1);
    const space = rest.lastIndexOf(' ', room);
    const at = gap > lead ? gap : space > lead ? space : room;
    pieces.push(rest.slice(0, at).trimEnd());
    rest = rest.slice(at).trimStart();
    room = Math.max(1, width - indent);
  }
  if (rest !== '' || pieces.length === 0) pieces.push(rest);
  return pieces.map((piece, i) => (i === 0 ? piece : `${' '.repeat(Math.min(indent, width - 1))}${piece}`));
}
