/**
 * Reading `paxos-<port>.log` from the outside, as the process-level scenario harness does, and
 * judging the view history it records against what a scenario expects. Pure functions: no I/O.
 *
 * The log format (lab reference §2.6): one line per event, fields separated by spaces, each line
 * ending in "\n".
 *
 *   done <instance> <value>        instance <instance> (= view <instance>) was decided
 *   propseen <n> <m>               the acceptor promised proposal (n, m)
 *   accepted <n> <m> <value>       the acceptor accepted value under proposal (n, m)
 *
 * A `done` value is the member list in join order: each id followed by one space
 * (`done 3 11487 38046 41230 `), except view 1 as written by the first node, which is the bare id
 * (`done 1 11487`). Ids are bare port numbers. `propseen` and `accepted` lines say nothing about
 * decided views and are skipped.
 *
 * Stricter than the lab's rsm_tester.pl, which only matched `^done (\d+) ([\d\s]+)$`, skipped any
 * other line and then compared view *sizes*:
 * - a line that starts with `done` but does not parse, or a line of an unknown type, is a problem
 *   (the lab's own logread treats an unknown line type as fatal, so such a log is corrupt);
 * - a log must hold views 1, 2, 3, … in order with no gaps and no repeats (a joiner replaces its
 *   log with the primary's, so even a restarted node's log holds the whole history);
 * - every view must be the previous one with one member appended (a join) or one member removed
 *   in place (a failure), with no duplicate members;
 * - views are compared as ordered member lists (join order is fixed by the protocol), not as
 *   counts.
 * A final line without its "\n" is ignored: it is still being written (or was cut off by a
 * crash), and was never a complete record.
 */

/** A view: its members' ids in join order. */
export type View = readonly string[];

export interface DoneLine {
  /** 1-based line number in the file. */
  readonly lineNumber: number;
  readonly instance: number;
  readonly members: View;
}

export interface BadLine {
  readonly lineNumber: number;
  readonly text: string;
  readonly reason: string;
}

export interface ParsedPaxosLog {
  /** The `done` lines, in file order. */
  readonly done: readonly DoneLine[];
  /** Lines that are neither a well-formed `done` line nor a `propseen`/`accepted` line. */
  readonly bad: readonly BadLine[];
  /** `propseen` and `accepted` lines (skipped; counted for diagnostics). */
  readonly skipped: number;
  /** The unterminated last line, if any (ignored). */
  readonly incompleteTail: string | undefined;
}

const DIGITS = /^\d+$/;

/** Parses a whole log file. Never throws: anything unparseable lands in `bad`. */
export function parsePaxosLog(text: string): ParsedPaxosLog {
  const done: DoneLine[] = [];
  const bad: BadLine[] = [];
  let skipped = 0;
  const lines = text.split('\n');
  // split leaves the text after the last "\n" as the final element: '' for a complete file.
  const tail = lines.pop()!;
  lines.forEach((raw, i) => {
    const lineNumber = i + 1;
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return; // the lab's stream parser skips blank lines too
    const type = line.split(' ', 1)[0];
    if (type === 'propseen' || type === 'accepted') {
      skipped++;
      return;
    }
    if (type !== 'done') {
      bad.push({ lineNumber, text: line, reason: `unknown line type ${JSON.stringify(type)}` });
      return;
    }
    const parsed = parseDone(line);
    if (typeof parsed === 'string') bad.push({ lineNumber, text: line, reason: parsed });
    else done.push({ lineNumber, ...parsed });
  });
  return { done, bad, skipped, incompleteTail: tail === '' ? undefined : tail };
}

function parseDone(line: string): { instance: number; members: View } | string {
  // "done <instance> <value>": the value is the rest of the line after one separating space.
  const match = /^done (\d+) (.*)$/.exec(line);
  if (match === null) return 'expected "done <instance> <members…>"';
  const instance = Number(match[1]);
  if (!Number.isSafeInteger(instance) || instance < 1) return `bad instance ${match[1]}`;
  const members = match[2]!.split(/\s+/).filter((token) => token !== '');
  if (members.length === 0) return 'view has no members';
  const notId = members.find((member) => !DIGITS.test(member));
  if (notId !== undefined) return `member ${JSON.stringify(notId)} is not a bare port number`;
  return { instance, members };
}

// -----------------------------------------------------------------------------------------------
// From a parsed log to a view history.

/** `views[k - 1]` is view k. */
export type ViewHistory = readonly View[];

export type HistoryResult = { readonly ok: true; readonly views: ViewHistory } | { readonly ok: false; readonly problem: string };

/**
 * The view history a log records, or the first reason it is not a valid one: a bad line, views
 * not numbered 1, 2, 3, … in file order, a duplicate member, or a view that is not its
 * predecessor plus one appended joiner or minus one member.
 */
export function viewHistory(log: ParsedPaxosLog, describe: (view: View) => string = formatView): HistoryResult {
  const first = log.bad[0];
  if (first !== undefined) return { ok: false, problem: `line ${first.lineNumber} ${JSON.stringify(first.text)}: ${first.reason}` };
  const views: View[] = [];
  for (const line of log.done) {
    const expected = views.length + 1;
    if (line.instance !== expected) {
      const what = line.instance <= views.length ? 'repeats' : 'skips to';
      return { ok: false, problem: `line ${line.lineNumber}: ${what} view ${line.instance} where view ${expected} was due (a log holds views 1, 2, 3, … in order)` };
    }
    if (new Set(line.members).size !== line.members.length) {
      return { ok: false, problem: `line ${line.lineNumber}: view ${line.instance} ${describe(line.members)} lists a member twice` };
    }
    const previous = views.at(-1);
    if (previous === undefined) {
      if (line.members.length !== 1) return { ok: false, problem: `line ${line.lineNumber}: view 1 ${describe(line.members)} must hold exactly the first node` };
    } else if (!isLegalTransition(previous, line.members)) {
      return {
        ok: false,
        problem: `line ${line.lineNumber}: view ${line.instance} ${describe(line.members)} is not view ${line.instance - 1} ${describe(previous)} with one joiner appended or one member removed`,
      };
    }
    views.push(line.members);
  }
  return { ok: true, views };
}

/** True if `next` is `previous` with one new member appended, or with one member deleted in place. */
export function isLegalTransition(previous: View, next: View): boolean {
  if (next.length === previous.length + 1) {
    return sameView(previous, next.slice(0, -1)) && !previous.includes(next.at(-1)!);
  }
  if (next.length === previous.length - 1) {
    return previous.some((_, removed) => sameView(next, [...previous.slice(0, removed), ...previous.slice(removed + 1)]));
  }
  return false;
}

export function sameView(a: View, b: View): boolean {
  return a.length === b.length && a.every((member, i) => member === b[i]);
}

export function formatView(view: View): string {
  return `[${view.join(' ')}]`;
}

// -----------------------------------------------------------------------------------------------
// Judging a history against expectations.

/**
 * What a scenario expects of one node's log. `chains` are the legal view histories so far (view 1
 * first); usually one, several where the protocol allows alternatives. The log must agree with at
 * least one chain on every view both have, and is satisfied once it holds one chain entirely
 * (views after it are allowed: the cluster may have moved on since).
 */
export interface Expectation {
  readonly chains: readonly ViewHistory[];
  /** The matched chain must be longer than this: the node must have "gained a view" since then. */
  readonly longerThan?: number;
  /** If given, the log's latest view must also be one of these. */
  readonly last?: readonly View[];
}

export type Verdict =
  | { readonly state: 'satisfied' }
  /** Not there yet, but it may still get there. */
  | { readonly state: 'pending'; readonly reason: string }
  /** It can never get there: a view differs from every legal history. */
  | { readonly state: 'violated'; readonly reason: string };

export function judgeHistory(history: ViewHistory, expectation: Expectation, describe: (view: View) => string = formatView): Verdict {
  const { chains, longerThan = 0, last } = expectation;
  if (chains.length === 0) throw new RangeError('judgeHistory: no legal history given');
  const agreeing = chains.filter((chain) => firstDifference(history, chain) === undefined);
  if (agreeing.length === 0) {
    // Report the difference at the view where the log agrees longest with a legal history.
    const index = Math.max(...chains.map((chain) => firstDifference(history, chain)!));
    const expected = new Set(chains.filter((chain) => firstDifference(history, chain) === index).map((chain) => describe(chain[index]!)));
    return { state: 'violated', reason: `view ${index + 1} is ${describe(history[index]!)}, expected ${[...expected].join(' or ')}` };
  }
  const held = agreeing.filter((chain) => chain.length <= history.length && chain.length > longerThan);
  if (held.length === 0) {
    const wanted = [...new Set(agreeing.filter((c) => c.length > history.length).map((c) => `view ${history.length + 1} ${describe(c[history.length]!)}`))];
    const latest = history.length === 0 ? 'no views yet' : `views up to ${history.length}, latest ${describe(history.at(-1)!)}`;
    return { state: 'pending', reason: `has ${latest}; waiting for ${wanted.join(' or ') || `a view after ${longerThan}`}` };
  }
  if (last !== undefined) {
    const latest = history.at(-1)!;
    if (!last.some((view) => sameView(view, latest))) {
      return {
        state: 'pending',
        reason: `latest view ${history.length} is ${describe(latest)}; waiting for the latest view to be ${last.map(describe).join(' or ')}`,
      };
    }
  }
  return { state: 'satisfied' };
}

/** The 0-based index of the first view where `a` and `b` differ, over their common length. */
export function firstDifference(a: ViewHistory, b: ViewHistory): number | undefined {
  const common = Math.min(a.length, b.length);
  for (let i = 0; i < common; i++) if (!sameView(a[i]!, b[i]!)) return i;
  return undefined;
}

/**
 * One common history: every two logs must agree on every view both hold. Two nodes that record
 * different members for the same view number saw two different decisions for one Paxos instance.
 * Returns the first disagreement found, or undefined.
 */
export function commonHistoryProblem(histories: ReadonlyMap<string, ViewHistory>, describe: (view: View) => string = formatView): string | undefined {
  const entries = [...histories];
  for (let i = 0; i < entries.length; i++) {
    for (let j = i + 1; j < entries.length; j++) {
      const [nameA, a] = entries[i]!;
      const [nameB, b] = entries[j]!;
      const index = firstDifference(a, b);
      if (index !== undefined) {
        return `${nameA} and ${nameB} disagree on view ${index + 1}: ${describe(a[index]!)} vs ${describe(b[index]!)}`;
      }
    }
  }
  return undefined;
}
