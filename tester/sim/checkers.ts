/**
 * Checkers that watch a simulated cluster from outside and record every violation they see.
 * They never throw into the code under test: a violation is recorded (with the virtual time) and
 * the test reports it with the seed.
 */
import { doneEntries, parseLogLine } from '../../paxos/log-sink.js';
import type { HistoryEntry } from '../../paxos/view.js';
import type { SimCluster } from './cluster.js';

/**
 * PaxosChecker: at most one value is ever decided per instance, and every node's decided
 * sequence is hole-free and a prefix of one common history. It observes each node's Paxos log
 * (every `done` line appended, every replacement: a restart restoring from storage or a join
 * adopting a history), so it checks what testers read, too. Durability: a node's history never
 * gets shorter, across restarts included (a commit is logged only once durable).
 */
export class PaxosChecker {
  /** The one value of each decided instance, as first seen. */
  readonly chosen = new Map<number, string>();
  readonly violations: string[] = [];
  /** Per node: the length of its decided sequence as last observed. */
  private readonly lengths = new Map<string, number>();
  commits = 0;
  replacements = 0;

  constructor(private readonly now: () => number = () => 0) {}

  /** A `done` line appended to `node`'s log (or any other line, ignored). */
  observeAppend(node: string, line: string): void {
    const parsed = parseLogLine(line);
    if (parsed === undefined) return this.violation(`${node}: unparsable log line ${JSON.stringify(line)}`);
    if (parsed.type !== 'done') return;
    this.commits++;
    const previous = this.lengths.get(node) ?? 0;
    if (parsed.instance !== previous + 1) {
      this.violation(`${node}: committed instance ${parsed.instance} after ${previous} (hole or repeat)`);
    }
    this.record(node, parsed.instance, parsed.value);
    this.lengths.set(node, Math.max(previous, parsed.instance));
  }

  /** `node`'s log was replaced (restore on restart, or adoption on join). */
  observeReplace(node: string, lines: readonly string[]): void {
    this.replacements++;
    for (const line of lines) {
      if (parseLogLine(line) === undefined) this.violation(`${node}: unparsable log line ${JSON.stringify(line)}`);
    }
    const entries = doneEntries(lines);
    entries.forEach((entry, i) => {
      if (entry.instance !== i + 1) this.violation(`${node}: replaced history has instance ${entry.instance} at ${i + 1}`);
      this.record(node, entry.instance, entry.value);
    });
    const previous = this.lengths.get(node) ?? 0;
    if (entries.length < previous) {
      this.violation(`${node}: history shrank from ${previous} to ${entries.length} views (lost a durable commit)`);
    }
    this.lengths.set(node, entries.length);
  }

  /** Checks a node's full decided history (e.g. read from its acceptor at the end of a run). */
  checkHistory(node: string, history: readonly HistoryEntry[]): void {
    history.forEach((entry, i) => {
      if (entry.instance !== i + 1) this.violation(`${node}: history has instance ${entry.instance} at ${i + 1}`);
      this.record(node, entry.instance, entry.value);
    });
  }

  lengthOf(node: string): number {
    return this.lengths.get(node) ?? 0;
  }

  get ok(): boolean {
    return this.violations.length === 0;
  }

  private record(node: string, instance: number, value: string): void {
    const existing = this.chosen.get(instance);
    if (existing === undefined) this.chosen.set(instance, value);
    else if (existing !== value) {
      this.violation(`instance ${instance}: ${node} has ${JSON.stringify(value)}, but ${JSON.stringify(existing)} was decided`);
    }
  }

  private violation(message: string): void {
    this.violations.push(`t=${this.now()}ms ${message}`);
  }
}

/**
 * Whether node `id`'s text log holds exactly its durable history as `done` lines (undefined when
 * the node is down). A commit takes the value into the history at once and writes its `done` line
 * when the commit is durable, so the two are compared only once every Paxos write made so far is
 * durable; should a new commit start before that (a view change still running), the comparison is
 * made again, a few times. A line missing or extra for good still differs after every flush.
 */
export async function logMatchesHistory(cluster: SimCluster, id: string): Promise<boolean | undefined> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const node = cluster.node(id);
    if (node === undefined) return undefined;
    let matches: boolean | undefined;
    void node.config.flushed().then(() => {
      matches = JSON.stringify(doneEntries(cluster.slot(id).log.lines)) === JSON.stringify(node.config.history());
    });
    await cluster.runUntil(() => matches !== undefined || cluster.node(id) !== node, 5_000);
    if (matches === true) return true;
  }
  return cluster.node(id) === undefined ? undefined : false;
}

/**
 * Settled again after the final log checks, which run the world (logMatchesHistory): a Paxos
 * round begun during the faults may still end meanwhile and move the cluster on (lock seed 16480:
 * a view that drops the primary, chosen before the heal, is adopted then), and the end checks
 * read a settled cluster. Runs until `settled` holds again, within `limitMs`, calling `check`
 * after every event (true: a checker failed, stop). Resolves false on the time limit; the caller
 * asks its checkers whether one failed.
 */
export async function settleAgain(cluster: SimCluster, settled: () => boolean, check: () => boolean, limitMs: number): Promise<boolean> {
  if (settled()) return true;
  return cluster.runUntil(() => check() || settled(), limitMs);
}
