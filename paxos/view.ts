/**
 * Views and node ids. The value Paxos decides for instance i is view i: the member ids in join
 * order, each followed by one space ("3772 3774 "), except view 1 on the first node, which is the
 * bare id ("3772"), exactly as the lab writes them. Decoding splits on whitespace, so both forms
 * read back the same.
 */
import { ID_BYTES_MAX } from './messages.js';

/** One decided Paxos instance (a view) in a history. */
export interface HistoryEntry {
  readonly instance: number;
  readonly value: string;
}

/** Whether `id` can be a member id: non-empty, no whitespace (it would split a view), bounded. */
export function isValidNodeId(id: string): boolean {
  return id.length > 0 && id.length <= ID_BYTES_MAX && !/\s/.test(id);
}

/** The value of view 1 on the first node: its bare id. */
export function firstViewValue(first: string): string {
  return first;
}

/** The value of a view proposed by config: each member followed by one space. */
export function encodeView(members: readonly string[]): string {
  return members.map((member) => `${member} `).join('');
}

/**
 * The members of a view value, or undefined when the value is not a view: empty, a bad id, or a
 * duplicate member. Values come from the network, so this never throws.
 */
export function decodeView(value: string): string[] | undefined {
  const members = value.split(/\s+/).filter((part) => part.length > 0);
  if (members.length === 0) return undefined;
  if (new Set(members).size !== members.length) return undefined;
  if (!members.every(isValidNodeId)) return undefined;
  return members;
}

export function isValidViewValue(value: string): boolean {
  return decodeView(value) !== undefined;
}

/**
 * Node id order for "the smallest member": numeric when both ids are digit strings (bare ports),
 * else plain string order. Within one cluster ids have one form, so this is a total order there.
 */
export function compareNodeIds(a: string, b: string): number {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    if (x !== y) return x < y ? -1 : 1;
  }
  if (a === b) return 0;
  return a < b ? -1 : 1;
}

export function smallestNodeId(ids: readonly string[]): string {
  let smallest = ids[0];
  if (smallest === undefined) throw new RangeError('smallestNodeId: no ids');
  for (const id of ids) if (compareNodeIds(id, smallest) < 0) smallest = id;
  return smallest;
}

/**
 * Checks that `entries` is a history: instances 1..k in order with no hole, every value a view.
 * Returns the reason it is not, or undefined when it is.
 */
export function historyProblem(entries: readonly HistoryEntry[]): string | undefined {
  if (entries.length === 0) return 'empty history';
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (entry.instance !== i + 1) return `instance ${entry.instance} at position ${i + 1}`;
    if (!isValidViewValue(entry.value)) return `instance ${entry.instance}: not a view: ${JSON.stringify(entry.value)}`;
  }
  return undefined;
}
