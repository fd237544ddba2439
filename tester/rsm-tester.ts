/**
 * The process-level scenario harness behind `rsm_tester` (the lab's rsm_tester.pl, made
 * stricter), and the test-control client behind `rsm_ctl`. See tester/README.md for the
 * command lines, the output and the checks.
 *
 * A run picks five ports p0 < p1 < … < p4 from the seed, then runs each selected scenario
 * (tester/scenarios.ts) on a fresh cluster: real `lock_server MASTER ME` processes on loopback,
 * each in its own log/data directory tree, killed with signals and steered through the control
 * RPCs on ME+1. Views are judged only from the `paxos-<port>.log` files (tester/paxos-log.ts),
 * like the lab, but by their actual members and join order, against one common history.
 *
 * Process hygiene: every child's PID is tracked from spawn to exit (processes.ts);
 * `killAllChildren` SIGKILLs whatever is still alive. Each scenario kills its own children when it
 * ends (pass or fail), and the rsm_tester program calls `killAllChildren` on interrupts and at
 * process exit.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assert } from '../lib/assert.js';
import { realClock, sleep } from '../lib/clock.js';
import type { Random } from '../lib/env.js';
import { SeededRandom, osRandom } from '../lib/random.js';
import { RpcEndpoint, type RpcClient } from '../lib/rpc.js';
import { describeNoQuorum } from '../paxos/identity.js';
import { quorum } from '../paxos/messages.js';
import { normalizeAddress, tcpNetwork } from '../lib/tcp.js';
import { RsmTestStatus, describeViewstamp, rsmTestProtocol } from '../rsm/protocol.js';
import { ChildHandle, describeExit, isPortFree, lockServerScript, startCpuBurners, tail, type ExitInfo } from './processes.js';
import {
  commonHistoryProblem,
  judgeHistory,
  parsePaxosLog,
  sameView,
  viewHistory,
  type View,
  type ViewHistory,
} from './paxos-log.js';

// -----------------------------------------------------------------------------------------------
// Limits and timings.

/** Cluster size of every run (the lab's 5 ports). */
export const NODE_COUNT = 5;
/** Node ports are drawn from [PORT_MIN, PORT_MAX); each node also uses port + 1 for control. */
export const PORT_MIN = 10_000;
// Below Linux's ephemeral range (32768 and up by default): a port drawn there can be taken at any
// moment by an outgoing connection of any process, which made scenarios fail with "in use".
export const PORT_MAX = 32_000;
/** Draws before giving up on finding free ports. */
export const PORT_DRAWS_MAX = 1_000;
/** How often view waits re-read the logs. */
export const VIEW_POLL_MS = 200;
/** The lab's wait_for_view_change timeout, and the longer one some scenarios use. */
export const VIEW_WAIT_MS = 20_000;
export const VIEW_WAIT_LONG_MS = 30_000;
/** A control RPC (rsm_ctl) that gets no answer within this fails. */
export const CONTROL_TIMEOUT_MS = 5_000;
/** A node must be gone this soon after SIGTERM (DESIGN: SIGTERM means "stop now"). */
export const EXIT_AFTER_SIGTERM_MS = 10_000;
/** A node armed with a breakpoint that should fire must die within this. */
export const BREAKPOINT_DEATH_MS = 20_000;
/** Between scenarios, the ports must be bindable again within this. */
export const PORTS_FREE_WAIT_MS = 5_000;
/** Lines of a dead node's output quoted in a failure. */
const LOG_TAIL_LINES = 8;

// -----------------------------------------------------------------------------------------------
// Test-control RPCs (lab reference §4.1: rsm_test_protocol, served on ME+1).

export type ControlCommand =
  | { readonly kind: 'breakpoint'; readonly breakpoint: number }
  | { readonly kind: 'partition'; readonly heal: 0 | 1 }
  | { readonly kind: 'status' };

export type ControlResult =
  /** The node answered; `line` is what the lab's client prints (`breakpoint 3 returned 0`). */
  | { readonly answered: true; readonly status: number; readonly line: string }
  | { readonly answered: false; readonly message: string };

/** Sends one control RPC to `address` (host:port of the control server, i.e. ME+1). */
export async function sendControl(
  rpc: RpcEndpoint,
  address: string,
  command: ControlCommand,
  timeoutMs = CONTROL_TIMEOUT_MS,
): Promise<ControlResult> {
  // A fresh client per call: a restarted node is a new server instance, and a cached client
  // bound to the old one would get OLDSRV.
  const client = rpc.newClient(address);
  try {
    if (command.kind === 'status') return await statusOf(client, address, timeoutMs);
    const reply =
      command.kind === 'breakpoint'
        ? await client.call(rsmTestProtocol.breakpoint, { b: command.breakpoint }, { timeoutMs })
        : await client.call(rsmTestProtocol.net_repair, { heal: command.heal }, { timeoutMs });
    if (!reply.ok) return { answered: false, message: controlFailure(address, reply.error.code, timeoutMs) };
    const line =
      command.kind === 'breakpoint' ? `breakpoint ${command.breakpoint} returned ${reply.status}` : `net_repair returned ${reply.status}`;
    return { answered: true, status: reply.status, line };
  } finally {
    client.close();
  }
}

/** The one-line reason a control call failed, with the hint a wrong port needs. */
function controlFailure(address: string, code: string, timeoutMs: number): string {
  if (code === 'RPC_NO_SUCH_PROC') {
    const colon = address.lastIndexOf(':');
    const port = Number(address.slice(colon + 1));
    return `${code}: ${address} serves no control procedures; it looks like a replica's main port: use its control port, port + 1 (${port + 1})`;
  }
  const hint = code === 'RPC_TIMEOUT' ? ` within ${timeoutMs / 1000} s (the control port is the node's port + 1)` : '';
  return `${code}: ${address} did not answer${hint}`;
}

/**
 * The status call, and the replica host's quorum verdict: one line
 * `view 4 {3772,3776} primary 3772 last 4.3; in view change; no quorum: …`.
 */
async function statusOf(client: RpcClient, address: string, timeoutMs: number): Promise<ControlResult> {
  const reply = await client.call(rsmTestProtocol.status, { dummy: 0 }, { timeoutMs });
  if (!reply.ok) return { answered: false, message: controlFailure(address, reply.error.code, timeoutMs) };
  const s = reply.result;
  const quorumReply = await client.call(quorum, { dummy: 0 }, { timeoutMs });
  const parts = [`view ${s.vid} {${s.members.join(',')}} primary ${s.primary || '-'} last ${describeViewstamp(s.last)}`];
  // Which step of the view change, when the replica says (older replicas send no phase).
  if (s.inViewChange) parts.push(s.phase ? `in view change (${s.phase})` : 'in view change');
  if (quorumReply.ok) parts.push(quorumReply.result.quorum ? 'quorum' : describeNoQuorum(quorumReply.result));
  return { answered: true, status: reply.status, line: parts.join('; ') };
}

/** An endpoint for control calls: client-only TCP, real clock. Close it when done. */
export function controlEndpoint(): RpcEndpoint {
  return new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom(), { callTimeoutMs: CONTROL_TIMEOUT_MS });
}

export type ParsedArgs<T> = ({ readonly ok: true } & T) | { readonly ok: false; readonly message: string };

/** Validates `rsm_ctl`'s three positional arguments: `[host:]CONTROL_PORT breakpoint N | partition 0|1`. */
export function parseRsmCtlArgs(positionals: readonly string[]): ParsedArgs<{ address: string; command: ControlCommand }> {
  if (positionals.length === 2 && positionals[1] !== 'status') {
    return { ok: false, message: `${JSON.stringify(positionals[1])} needs a value; only status takes none` };
  }
  if (positionals.length !== 3 && positionals.length !== 2) return { ok: false, message: `expected 2 or 3 arguments, got ${positionals.length}` };
  if (positionals.length === 3 && positionals[1] === 'status') return { ok: false, message: 'status takes no value' };
  const [target, verb, value] = positionals as [string, string, string];
  let address: string;
  try {
    address = normalizeAddress(target);
  } catch {
    return { ok: false, message: `CONTROL_PORT must be PORT or host:PORT, got ${JSON.stringify(target)}` };
  }
  if (address.endsWith(':0')) return { ok: false, message: 'CONTROL_PORT cannot be 0' };
  if (verb === 'status') return { ok: true, address, command: { kind: 'status' } };
  if (verb === 'breakpoint') {
    if (!/^-?\d{1,10}$/.test(value) || Number(value) < -(2 ** 31) || Number(value) >= 2 ** 31) {
      return { ok: false, message: `breakpoint takes an integer, got ${JSON.stringify(value)}` };
    }
    return { ok: true, address, command: { kind: 'breakpoint', breakpoint: Number(value) } };
  }
  if (verb === 'partition') {
    if (value !== '0' && value !== '1') return { ok: false, message: `partition takes 0 (arm) or 1 (heal), got ${JSON.stringify(value)}` };
    return { ok: true, address, command: { kind: 'partition', heal: value === '1' ? 1 : 0 } };
  }
  return { ok: false, message: `unknown command ${JSON.stringify(verb)}: expected status, breakpoint or partition` };
}

// -----------------------------------------------------------------------------------------------
// rsm_tester command line.

/**
 * Validates rsm_tester's seed (`-s`) and test numbers. No tests means all `available` ones; tests
 * run in ascending order, each once.
 */
export function parseRsmTesterArgs(
  seedText: string | undefined,
  positionals: readonly string[],
  available: readonly number[],
): ParsedArgs<{ seed: string | undefined; tests: readonly number[] }> {
  if (seedText !== undefined && !/^\d{1,15}$/.test(seedText)) return { ok: false, message: `the seed must be a decimal integer, got ${JSON.stringify(seedText)}` };
  const tests = new Set<number>();
  for (const arg of positionals) {
    if (!/^\d{1,6}$/.test(arg)) return { ok: false, message: `a test is a number, got ${JSON.stringify(arg)}` };
    const test = Number(arg);
    if (!available.includes(test)) return { ok: false, message: `there is no test ${test}; the tests are ${describeNumbers(available)}` };
    tests.add(test);
  }
  const selected = tests.size === 0 ? [...available] : [...tests];
  return { ok: true, seed: seedText === undefined ? undefined : String(Number(seedText)), tests: selected.sort((a, b) => a - b) };
}

function describeNumbers(numbers: readonly number[]): string {
  const sorted = [...numbers].sort((a, b) => a - b);
  const contiguous = sorted.every((n, i) => i === 0 || n === sorted[i - 1]! + 1);
  return contiguous && sorted.length > 2 ? `${sorted[0]}-${sorted.at(-1)}` : sorted.join(', ');
}

// -----------------------------------------------------------------------------------------------
// Ports.

/**
 * Draws `count` node ports from `random`, sorted ascending. A port p is taken only if p and p + 1
 * are both free and neither is p' or p' + 1 of another node. Deterministic for a seed as long as
 * the drawn ports are free (a busy one is redrawn, which shifts the rest).
 */
export async function choosePorts(random: Random, isFree: (port: number) => Promise<boolean>, count = NODE_COUNT): Promise<number[]> {
  const chosen: number[] = [];
  for (let draw = 0; chosen.length < count; draw++) {
    if (draw >= PORT_DRAWS_MAX) throw new Error(`could not find ${count} free port pairs in ${PORT_DRAWS_MAX} draws`);
    const port = PORT_MIN + random.int(PORT_MAX - 1 - PORT_MIN); // port + 1 < PORT_MAX too
    if (chosen.some((other) => Math.abs(other - port) < 2)) continue;
    if (!(await isFree(port)) || !(await isFree(port + 1))) continue;
    chosen.push(port);
  }
  return chosen.sort((a, b) => a - b);
}

// -----------------------------------------------------------------------------------------------
// Child processes and port checks live in processes.ts (shared with start_cluster); re-exported
// here for the harness's users.

export { ChildHandle, isPortFree, killAllChildren, liveChildCount, type ExitInfo } from './processes.js';

// -----------------------------------------------------------------------------------------------
// Scenarios.

/** A scenario failed a check. Its message says which check, and expected versus actual. */
export class TestFailure extends Error {
  override name = 'TestFailure';
}

export interface ScenarioDefinition {
  /** The lab's test number. */
  readonly id: number;
  readonly title: string;
  run(ctx: ScenarioContext): Promise<void>;
}

/** Node indices, p0 < p1 < …: scenarios name views by index, the harness maps them to ports. */
export type Members = readonly number[];

export interface ViewWait {
  /** Whose logs must show it. */
  readonly nodes: readonly number[];
  readonly timeoutMs?: number;
  /** Each node's log must hold a legal history longer than this many views ("gained a view"). */
  readonly longerThan?: number;
  /** Each node's latest view must also be one of these. */
  readonly last?: readonly Members[];
  /** What is being waited for, for progress and failure lines. */
  readonly label: string;
}

interface NodeSlot {
  readonly index: number;
  readonly port: number;
  readonly name: string;
  process: ChildHandle | undefined;
  /** Why this node may exit on its own (an armed breakpoint); an exit without a reason fails. */
  mayExitBecause: string | undefined;
}

export interface ContextOptions {
  readonly test: number;
  readonly ports: readonly number[];
  /** This scenario's directory: node output and paxos logs; durable state under `data/`. */
  readonly dir: string;
  readonly binDir: string;
  readonly random: Random;
  readonly out: (line: string) => void;
  /** RSM_DATA_DIR of the nodes (default: `<dir>/data`); shared by all scenarios with --keep-data-dir. */
  readonly dataDir?: string;
}

/**
 * What a scenario drives: the cluster's processes, control RPCs, and the view expectations. Every
 * method prints a progress line and throws TestFailure when a check fails.
 *
 * Expected views are kept as *chains*: the legal view histories so far, usually one. `expectView`
 * appends a view to every chain; `expectOneOf` forks them where the protocol allows alternatives.
 * A node's log is judged against all chains (paxos-log.ts `judgeHistory`): it must agree with one
 * of them on every view both hold.
 */
export class ScenarioContext {
  readonly test: number;
  readonly ports: readonly number[];
  readonly random: Random;
  readonly dir: string;
  readonly dataDir: string;
  private readonly binDir: string;
  private readonly out: (line: string) => void;
  private readonly nodes: NodeSlot[];
  private readonly others = new Set<ChildHandle>();
  private readonly failures: string[] = [];
  private chains: View[][] = [[]];
  private rpc: RpcEndpoint | undefined;

  constructor(options: ContextOptions) {
    this.test = options.test;
    this.ports = options.ports;
    this.random = options.random;
    this.dir = options.dir;
    this.dataDir = options.dataDir ?? path.join(options.dir, 'data');
    this.binDir = options.binDir;
    this.out = options.out;
    this.nodes = options.ports.map((port, index) => ({ index, port, name: `p${index}`, process: undefined, mayExitBecause: undefined }));
  }

  // --- output ---------------------------------------------------------------------------------

  say(message: string): void {
    this.out(`test ${this.test}: ${message}`);
  }

  private fail(message: string): never {
    throw new TestFailure(message);
  }

  private node(index: number): NodeSlot {
    const node = this.nodes[index];
    assert(node !== undefined, `no node ${index}`);
    return node;
  }

  private who(index: number): string {
    const node = this.node(index);
    return `${node.name} (port ${node.port})`;
  }

  /** `{p0,p1}` for a member list of ports; ids that are not ours are shown as they are. */
  describe = (view: View): string => {
    const names = view.map((id) => this.nodes.find((node) => String(node.port) === id)?.name ?? id);
    return `{${names.join(',')}}`;
  };

  private viewOf(members: Members): View {
    return members.map((index) => String(this.node(index).port));
  }

  private names(indices: readonly number[]): string {
    return indices.map((index) => this.node(index).name).join(',');
  }

  // --- processes --------------------------------------------------------------------------------

  /** Starts `lock_server P<master> P<index>`. */
  async start(index: number, { master = 0 }: { master?: number } = {}): Promise<void> {
    await this.launch(index, master, 'starting', '');
  }

  /** Starts a node that ran before; its log and durable state are still there. */
  async restart(index: number, { master = 0 }: { master?: number } = {}): Promise<void> {
    assert(this.node(index).process !== undefined, `${this.node(index).name} never ran`);
    await this.launch(index, master, 'restarting', ` with master ${this.node(master).name}`);
  }

  private async launch(index: number, master: number, verb: string, detail: string): Promise<void> {
    this.checkHealth();
    const node = this.node(index);
    assert(node.process === undefined || !node.process.running, `${node.name} is already running`);
    const args = [String(this.node(master).port), String(node.port)];
    this.say(`${verb} ${this.who(index)}${detail}: lock_server ${args.join(' ')}`);
    await fsp.mkdir(this.dataDir, { recursive: true });
    const child = ChildHandle.spawn(lockServerScript(), args, path.join(this.dir, `lock_server-${args.join('-')}.log`), {
      ...process.env,
      RSM_LOG_DIR: this.dir,
      RSM_DATA_DIR: this.dataDir,
    });
    node.process = child;
    node.mayExitBecause = undefined;
    void child.exited.then((info) => this.onNodeExit(node, child, info));
  }

  /** Sends SIGTERM and waits until the process is gone. */
  async kill(index: number): Promise<void> {
    this.checkHealth();
    const node = this.node(index);
    const child = node.process;
    assert(child !== undefined && child.running, `${node.name} is not running`);
    this.say(`killing ${this.who(index)} with SIGTERM`);
    child.signal('SIGTERM');
    if ((await child.waitForExit(EXIT_AFTER_SIGTERM_MS)) === undefined) {
      child.signal('SIGKILL');
      this.fail(`${this.who(index)} was still running ${EXIT_AFTER_SIGTERM_MS / 1000} s after SIGTERM (SIGTERM must stop a node at once)`);
    }
  }

  private onNodeExit(node: NodeSlot, child: ChildHandle, info: ExitInfo): void {
    if (child.signalSent !== undefined) return; // we killed it
    if (node.mayExitBecause !== undefined) {
      this.say(`${this.who(node.index)} exited (${describeExit(info)}), as expected after ${node.mayExitBecause}`);
      return;
    }
    this.failures.push(`${this.who(node.index)} exited unexpectedly (${describeExit(info)}); see ${child.logFile}`);
  }

  /** Throws if a node died that nobody killed and that had no armed breakpoint. */
  private checkHealth(): void {
    const failure = this.failures[0];
    if (failure !== undefined) this.fail(failure);
  }

  /** Waits for a node armed with a breakpoint to die of it. */
  async waitForExit(index: number, why: string, timeoutMs = BREAKPOINT_DEATH_MS): Promise<void> {
    const child = this.node(index).process;
    assert(child !== undefined, `${this.node(index).name} never ran`);
    if (child.running) this.say(`waiting for ${this.node(index).name} to die (${why})`);
    if ((await child.waitForExit(timeoutMs)) === undefined) {
      this.fail(`${this.who(index)} should have died (${why}) but was still running after ${timeoutMs / 1000} s`);
    }
    this.checkHealth();
  }

  isRunning(index: number): boolean {
    return this.node(index).process?.running ?? false;
  }

  async sleep(seconds: number, why?: string): Promise<void> {
    this.say(`sleeping ${seconds} s${why === undefined ? '' : ` (${why})`}`);
    await sleep(realClock, seconds * 1000);
    this.checkHealth();
  }

  /**
   * Runs another program from the bin directory (`lock_tester`, for scenarios 8–16), output in
   * `<name>-<args joined by ->.log`. It is killed when the scenario ends.
   */
  startProgram(name: string, args: readonly string[]): ChildHandle {
    this.say(`starting ${name} ${args.join(' ')}`);
    const child = ChildHandle.spawn(path.join(this.binDir, `${name}.js`), args, path.join(this.dir, `${[name, ...args].join('-')}.log`), process.env);
    this.others.add(child);
    return child;
  }

  /**
   * Starts `lock_tester P<index>` (scenarios 8–16). Await the result's `passed()` for the lab's
   * check: it must exit 0 having printed its success line, within `timeoutMs` (lab: 600 s).
   */
  startLockTester(index: number): { child: ChildHandle; passed(timeoutMs?: number): Promise<void> } {
    const child = this.startProgram('lock_tester', [String(this.node(index).port)]);
    return {
      child,
      passed: async (timeoutMs = 600_000): Promise<void> => {
        this.say(`waiting for lock_tester to pass (up to ${timeoutMs / 1000} s)`);
        const info = await child.waitForExit(timeoutMs);
        if (info === undefined) this.fail(`lock_tester did not finish within ${timeoutMs / 1000} s; see ${child.logFile}`);
        const output = await fsp.readFile(child.logFile, 'utf8');
        if (info.code !== 0 || !/passed all tests successfully/.test(output)) {
          const lines = (await tail(child.logFile, LOG_TAIL_LINES)).map((line) => `\n    ${line}`).join('');
          this.fail(`lock_tester failed (${describeExit(info)}), expected exit 0 and "passed all tests successfully"; last lines of ${child.logFile}:${lines}`);
        }
        this.say('lock_tester passed');
        this.checkHealth();
      },
    };
  }

  // --- control RPCs (rsm_ctl, in process) --------------------------------------------------------

  /**
   * Arms breakpoint `b` on a node (1/2 RSM, 3/4 Paxos). From then on the node may die of it;
   * `waitForExit` checks that it does.
   */
  async breakpoint(index: number, b: number): Promise<void> {
    const what = b <= 2 ? `rsm breakpoint ${b}` : `paxos breakpoint ${b} (proposer breakpoint ${b - 2})`;
    this.node(index).mayExitBecause = what;
    await this.control(index, { kind: 'breakpoint', breakpoint: b }, `arming ${what} on ${this.node(index).name}`);
  }

  /** `partition 0` (arm; takes effect at the node's next request) or `partition 1` (heal). */
  async partition(index: number, heal: 0 | 1): Promise<void> {
    const what = heal === 0 ? `arming a partition of ${this.node(index).name}` : `healing ${this.node(index).name}'s partition`;
    await this.control(index, { kind: 'partition', heal }, what);
  }

  private async control(index: number, command: ControlCommand, what: string): Promise<void> {
    this.checkHealth();
    const address = `127.0.0.1:${this.node(index).port + 1}`;
    this.say(`${what} (control port ${this.node(index).port + 1})`);
    this.rpc ??= controlEndpoint();
    const result = await sendControl(this.rpc, address, command);
    if (!result.answered) this.fail(`${what}: ${result.message}`);
    this.say(result.line);
    if (result.status !== RsmTestStatus.OK) this.fail(`${what}: ${result.line}, expected status ${RsmTestStatus.OK} (OK)`);
  }

  // --- views ------------------------------------------------------------------------------------

  /** Starts nodes 0..n-1 one at a time (master p0); after each, view i+1 = {p0..pi} (lab start_nodes). */
  async startNodes(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      await this.start(i);
      // The lab sleeps 1 s here before waiting; the wait below has its own timeout.
      await this.expectView(range(i + 1));
    }
  }

  /**
   * The next view is `members` (in join order). Waits until the logs of `waitOn` (default: the
   * members) hold it, with every earlier expected view.
   */
  async expectView(members: Members, options: { waitOn?: readonly number[]; timeoutMs?: number; last?: boolean } = {}): Promise<void> {
    const view = this.viewOf(members);
    this.chains = this.chains.map((chain) => [...chain, view]);
    const numbers = [...new Set(this.chains.map((chain) => chain.length))].join('/');
    await this.waitForViews({
      nodes: options.waitOn ?? members,
      timeoutMs: options.timeoutMs,
      last: options.last === true ? [members] : undefined,
      label: `view ${numbers} ${this.describe(view)}`,
    });
  }

  /**
   * The next views follow one of `alternatives` (each a sequence of views), where the protocol
   * allows more than one outcome. Does not wait; a later expectView or waitForViews does.
   */
  expectOneOf(alternatives: readonly (readonly Members[])[], why: string): void {
    assert(alternatives.length > 0, 'expectOneOf needs alternatives');
    const suffixes = alternatives.map((alternative) => alternative.map((members) => this.viewOf(members)));
    this.chains = this.chains.flatMap((chain) => suffixes.map((suffix) => [...chain, ...suffix]));
    const text = suffixes.map((suffix) => suffix.map(this.describe).join(' then ')).join(', or ');
    this.say(`the next views may be ${text} (${why})`);
  }

  /** Polls the logs until every node in `wait.nodes` satisfies the expected views. */
  async waitForViews(wait: ViewWait): Promise<void> {
    const timeoutMs = wait.timeoutMs ?? VIEW_WAIT_MS;
    const lastViews = wait.last?.map((members) => this.viewOf(members));
    this.say(`waiting for ${wait.label} on ${this.names(wait.nodes)}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const histories = await this.readHistories();
      const waiting: string[] = [];
      for (const index of wait.nodes) {
        const history = histories.get(index) ?? [];
        const verdict = judgeHistory(
          history,
          { chains: this.chains, longerThan: wait.longerThan, last: lastViews },
          this.describe,
        );
        if (verdict.state === 'violated') this.fail(`${this.who(index)}: ${verdict.reason} (paxos-${this.node(index).port}.log)`);
        if (verdict.state === 'pending') waiting.push(`${this.node(index).name} ${verdict.reason}`);
      }
      if (waiting.length === 0) {
        this.say(`${wait.label}: in the logs of ${this.names(wait.nodes)}${this.whichAlternative(histories.get(wait.nodes[0]!) ?? [])}`);
        return;
      }
      if (Date.now() >= deadline) this.fail(`waited ${timeoutMs / 1000} s for ${wait.label} on ${this.names(wait.nodes)}: ${waiting.join('; ')}`);
      await sleep(realClock, VIEW_POLL_MS);
    }
  }

  /** Where the expected views fork, what this history did: " (views 5-7: {p0}, {p0,p1}, {p0,p1,p2})". */
  private whichAlternative(history: ViewHistory): string {
    if (this.chains.length < 2) return '';
    const first = this.chains[0]!;
    let shared = 0;
    while (shared < first.length && this.chains.every((chain) => chain[shared] !== undefined && sameView(chain[shared]!, first[shared]!))) shared++;
    const taken = history.slice(shared);
    if (taken.length === 0) return '';
    const numbers = taken.length === 1 ? `view ${shared + 1}` : `views ${shared + 1}-${history.length}`;
    return ` (${numbers}: ${taken.map(this.describe).join(', ')})`;
  }

  /**
   * Asserts that no log holds a view after view `count`: no new view could form (`why`). Stricter
   * than the lab, which only counted views containing one port: a view beyond `count` anywhere
   * means a minority formed one. Learning older views (a restarted node catching up) is fine.
   */
  async expectNoViewsBeyond(count: number, why: string): Promise<void> {
    const histories = await this.readHistories();
    for (const [index, history] of histories) {
      if (history.length > count) {
        this.fail(`expected no view after view ${count} (${why}), but ${this.who(index)}'s log has view ${count + 1} ${this.describe(history[count]!)}`);
      }
    }
    this.say(`no log has a view after view ${count}, as expected (${why})`);
  }

  /** The number of views in the longest of the given nodes' logs (default: all). */
  async viewCount(indices: readonly number[] = range(this.nodes.length)): Promise<number> {
    const histories = await this.readHistories();
    return Math.max(0, ...indices.map((index) => histories.get(index)?.length ?? 0));
  }

  /** Re-reads the logs once more: each valid, all agreeing, all consistent with the expected views. */
  async finalCheck(): Promise<void> {
    this.checkHealth();
    const histories = await this.readHistories();
    for (const [index, history] of histories) {
      const verdict = judgeHistory(history, { chains: this.chains }, this.describe);
      if (verdict.state === 'violated') this.fail(`final check: ${this.who(index)}: ${verdict.reason}`);
    }
    this.say(`final check: ${histories.size} logs valid and agreeing`);
  }

  /**
   * Reads every node's paxos log. Fails at once if a log is not a valid history (bad lines, gaps,
   * illegal transitions) or if two logs disagree on a view, or if a node died unexpectedly.
   */
  private async readHistories(): Promise<Map<number, ViewHistory>> {
    this.checkHealth();
    const histories = new Map<number, ViewHistory>();
    for (const node of this.nodes) {
      const file = path.join(this.dir, `paxos-${node.port}.log`);
      let text: string;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      const result = viewHistory(parsePaxosLog(text), this.describe);
      if (!result.ok) this.fail(`${this.who(node.index)}'s log ${file} is not a valid view history: ${result.problem}`);
      histories.set(node.index, result.views);
    }
    const named = new Map([...histories].map(([index, history]) => [this.node(index).name, history]));
    const problem = commonHistoryProblem(named, this.describe);
    if (problem !== undefined) this.fail(`the logs do not record one common history: ${problem}`);
    return histories;
  }

  // --- teardown -----------------------------------------------------------------------------------

  /** SIGKILLs this scenario's processes, waits until they are gone, closes the RPC endpoint. */
  async shutdown(): Promise<void> {
    const children = [...this.nodes.map((node) => node.process), ...this.others].filter((child): child is ChildHandle => child?.running === true);
    for (const child of children) child.signal('SIGKILL');
    await Promise.all(children.map((child) => child.waitForExit(EXIT_AFTER_SIGTERM_MS)));
    await this.rpc?.close();
    this.rpc = undefined;
  }

  /** Failure context: the last lines of each node's output. */
  async describeNodes(): Promise<string[]> {
    const lines: string[] = [];
    for (const node of this.nodes) {
      const child = node.process;
      if (child === undefined) continue;
      const state = child.running ? 'running' : `exited (${describeExit(child.exitInfo!)})`;
      lines.push(`${node.name} (port ${node.port}) ${state}; last lines of ${child.logFile}:`);
      for (const line of await tail(child.logFile, LOG_TAIL_LINES)) lines.push(`    ${line}`);
    }
    return lines;
  }
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

// -----------------------------------------------------------------------------------------------
// The runner.

export interface RunOptions {
  readonly scenarios: readonly ScenarioDefinition[];
  readonly tests: readonly number[];
  /** Decimal seed; undefined draws one. */
  readonly seed?: string;
  /** Where lock_server.js (and lock_tester.js) live; default: next to this module, in bin/. */
  readonly binDir?: string;
  readonly out?: (line: string) => void;
  /**
   * One RSM_DATA_DIR for the whole run (`<run dir>/data`), kept between scenarios, while each
   * scenario's log directory, and so every paxos log, is new: each node must notice that its
   * storage belongs to an earlier life and start fresh (cluster identity, rsm/replica-process.ts).
   */
  readonly keepDataDir?: boolean;
  /** Called once the run directory exists (so an interrupt handler can print it). */
  readonly onRunDir?: (dir: string) => void;
  /** CPU-burning processes to run beside the scenarios (a loaded machine); default 0. */
  readonly cpuBurners?: number;
}

export function defaultBinDir(): string {
  return fileURLToPath(new URL('./bin/', import.meta.url));
}

/**
 * Runs the selected scenarios in order and stops at the first failure (like the lab). Returns
 * true if all passed. The run directory is removed on success and kept (and printed) otherwise.
 */
export async function runScenarios(options: RunOptions): Promise<boolean> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const binDir = options.binDir ?? defaultBinDir();
  const server = lockServerScript();
  if (!fs.existsSync(server)) {
    out(`Failed: cannot find the lock_server program at ${server} (build it with npx tsc -p .)`);
    return false;
  }
  const seed = options.seed ?? String(osRandom().int(1_000_000_000));
  out(`rsm_tester: seed ${seed} (repeat this run with -s ${seed})`);
  const ports = await choosePorts(new SeededRandom(seed), isPortFree);
  out(`rsm_tester: ports ${ports.map((port, i) => `p${i}=${port}`).join(' ')} (each node's control port is its port + 1)`);
  const runDir = await fsp.mkdtemp(path.join(os.tmpdir(), `rsm_tester-${seed}-`));
  options.onRunDir?.(runDir);
  out(`rsm_tester: logs in ${runDir}`);
  const sharedDataDir = options.keepDataDir === true ? path.join(runDir, 'data') : undefined;
  if (sharedDataDir !== undefined) out(`rsm_tester: --keep-data-dir: every scenario's nodes use RSM_DATA_DIR=${sharedDataDir}; paxos logs are new per scenario`);

  const burners = startCpuBurners(options.cpuBurners ?? 0);
  if (burners.pids.length > 0) out(`rsm_tester: ${burners.pids.length} CPU-burning processes run beside the scenarios (pids ${burners.pids.join(' ')})`);
  try {
    return await runEach(options, { out, binDir, seed, ports, runDir, sharedDataDir });
  } finally {
    await burners.stop();
  }
}

async function runEach(
  options: RunOptions,
  run: { out: (line: string) => void; binDir: string; seed: string; ports: readonly number[]; runDir: string; sharedDataDir: string | undefined },
): Promise<boolean> {
  const { out, binDir, seed, ports, runDir, sharedDataDir } = run;
  for (const id of options.tests) {
    const scenario = options.scenarios.find((s) => s.id === id);
    assert(scenario !== undefined, `no scenario ${id}`);
    const dir = path.join(runDir, `test${id}`);
    await fsp.mkdir(dir, { recursive: true });
    const ctx = new ScenarioContext({
      test: id,
      ports,
      dir,
      binDir,
      // Each test draws from its own stream, so `-s SEED 9` repeats test 9 of a full run.
      random: new SeededRandom(`${seed}/test${id}`),
      out,
      ...(sharedDataDir === undefined ? {} : { dataDir: sharedDataDir }),
    });
    const started = Date.now();
    out(`test ${id}: ${scenario.title}`);
    let failure: string | undefined;
    try {
      await waitForFreePorts(ports);
      await scenario.run(ctx);
      await ctx.finalCheck();
    } catch (error) {
      failure = error instanceof TestFailure ? error.message : `internal error: ${(error as Error).stack ?? String(error)}`;
    }
    const context = failure === undefined ? [] : await ctx.describeNodes();
    await ctx.shutdown();
    if (failure !== undefined) {
      out(`Failed: test ${id}: ${failure}`);
      for (const line of context) out(line);
      out(`rsm_tester: ports ${ports.map((port, i) => `p${i}=${port}`).join(' ')}; repeat with: rsm_tester -s ${seed} ${id}`);
      out(`rsm_tester: logs kept in ${dir}`);
      return false;
    }
    out(`test ${id}: OK (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
  await fsp.rm(runDir, { recursive: true, force: true });
  out('tests done OK');
  return true;
}

/** A scenario starts only once the previous one's processes released every port. */
async function waitForFreePorts(ports: readonly number[]): Promise<void> {
  const deadline = Date.now() + PORTS_FREE_WAIT_MS;
  for (;;) {
    const busy: number[] = [];
    for (const port of ports) for (const p of [port, port + 1]) if (!(await isPortFree(p))) busy.push(p);
    if (busy.length === 0) return;
    if (Date.now() >= deadline) throw new TestFailure(`ports ${busy.join(', ')} are in use by another process`);
    await sleep(realClock, VIEW_POLL_MS);
  }
}
