/**
 * The text log `paxos-<ME>.log`: a mirror of the durable Paxos state that testers read, in the
 * lab's line formats (LAB.md §2.6). Storage, not this log, is the durable state; the log is
 * written after the durable write completes, so it never shows more than storage holds, and it is
 * rewritten from storage when a node starts, so it never shows less for long.
 *
 *   done <instance> <value>        every commit (and every entry of an adopted or restored history)
 *   propseen <n> <m>               the acceptor promised proposal (n, m)
 *   accepted <n> <m> <value>       the acceptor accepted proposal (n, m) with this value
 */
import type { HistoryEntry } from './view.js';
import type { ProposalNumber } from './messages.js';

/** Where the log lines go. Lines have no trailing newline; the sink adds them. */
export interface PaxosLogSink {
  append(line: string): void;
  /** Replaces the whole log (restart, or a joiner adopting the primary's history). */
  replace(lines: readonly string[]): void;
}

export function doneLine(instance: number, value: string): string {
  return `done ${instance} ${value}`;
}

export function propseenLine(n: ProposalNumber): string {
  return `propseen ${n.n} ${n.m}`;
}

export function acceptedLine(n: ProposalNumber, value: string): string {
  return `accepted ${n.n} ${n.m} ${value}`;
}

export type ParsedLogLine =
  | { readonly type: 'done'; readonly instance: number; readonly value: string }
  | { readonly type: 'propseen'; readonly n: ProposalNumber }
  | { readonly type: 'accepted'; readonly n: ProposalNumber; readonly value: string };

/** Parses one line as the lab's logread does (the value is the rest of the line, verbatim). */
export function parseLogLine(line: string): ParsedLogLine | undefined {
  let match = /^done (\d+) (.*)$/s.exec(line);
  if (match) return { type: 'done', instance: Number(match[1]), value: match[2]! };
  match = /^propseen (\d+) (\S*)$/.exec(line);
  if (match) return { type: 'propseen', n: { n: Number(match[1]), m: match[2]! } };
  match = /^accepted (\d+) (\S*) (.*)$/s.exec(line);
  if (match) return { type: 'accepted', n: { n: Number(match[1]), m: match[2]! }, value: match[3]! };
  return undefined;
}

/** The `done` entries of a log, in order. */
export function doneEntries(lines: readonly string[]): HistoryEntry[] {
  const entries: HistoryEntry[] = [];
  for (const line of lines) {
    const parsed = parseLogLine(line);
    if (parsed?.type === 'done') entries.push({ instance: parsed.instance, value: parsed.value });
  }
  return entries;
}

/** An in-memory sink, for the simulator and tests. It outlives node incarnations, as a file does. */
export class MemoryLogSink implements PaxosLogSink {
  lines: string[] = [];

  append(line: string): void {
    this.lines.push(line);
  }

  replace(lines: readonly string[]): void {
    this.lines = [...lines];
  }

  /** The log as the file would hold it. */
  text(): string {
    return this.lines.map((line) => `${line}\n`).join('');
  }
}
