/**
 * The kv workload's correctness check: every history of put/get/append operations observed by the
 * clients must agree with a sequential kv store in which each completed operation takes effect
 * exactly once, between its call and its reply (linearizability), and each operation whose outcome
 * the client does not know (it timed out) takes effect at most once, after its call.
 *
 * Values are sequences of unique tokens ("c2.17;": client 2, sequence number 17): an append adds its
 * token, a put replaces the value with its token. Because tokens are unique, every value names
 * exactly which writes it reflects, which keeps the search small.
 *
 * `checkKvHistory` first runs direct checks with precise messages (no token twice, no token nobody
 * wrote, and on keys without puts: every acknowledged append exactly once, in real-time order),
 * then a Wing & Gong style search for a linearization per key, with memoisation on (operations
 * linearized, value). The final value of each key enters as a read after every operation.
 */
import { KvStatus } from '../../rsm/kv/kv-service.js';

export type KvOpKind = 'put' | 'append' | 'get';

export interface KvOpRecord {
  readonly client: string;
  readonly seq: number;
  readonly kind: KvOpKind;
  readonly key: string;
  /** The token written (put, append); '' for get. */
  readonly token: string;
  /** Virtual time of the call. */
  readonly call: number;
  /** Virtual time of the reply; undefined when the outcome is unknown (the call failed). */
  ret: number | undefined;
  result: { readonly status: number; readonly value: string } | undefined;
}

export const TOKEN_END = ';';

export function tokensOf(value: string): string[] {
  if (value === '') return [];
  return value.split(TOKEN_END).slice(0, -1).map((t) => t + TOKEN_END);
}

export interface KvCheckResult {
  readonly violations: string[];
  /** Search steps used (for statistics). */
  readonly steps: number;
}

export const KV_CHECK_STEPS_MAX = 2_000_000;

/**
 * Checks the history against the final value of each key (undefined: the key does not exist).
 * `end` is a time after every call and reply.
 */
export function checkKvHistory(ops: readonly KvOpRecord[], finals: ReadonlyMap<string, string | undefined>, end: number): KvCheckResult {
  const violations: string[] = [];
  let steps = 0;
  const keys = [...new Set([...ops.map((op) => op.key), ...finals.keys()])].sort();
  for (const key of keys) {
    const keyOps = ops.filter((op) => op.key === key);
    const final = finals.get(key);
    violations.push(...directChecks(key, keyOps, final));
    const searched = linearize(key, keyOps, final, end);
    steps += searched.steps;
    if (searched.problem !== undefined) violations.push(searched.problem);
  }
  return { violations, steps };
}

function describeOp(op: KvOpRecord): string {
  const outcome = op.ret === undefined ? 'unknown' : `${op.result!.status}:${JSON.stringify(op.result!.value)} at ${op.ret}`;
  return `${op.client}#${op.seq} ${op.kind}(${op.key}${op.token === '' ? '' : `, ${op.token}`}) called ${op.call} → ${outcome}`;
}

function directChecks(key: string, ops: readonly KvOpRecord[], final: string | undefined): string[] {
  const problems: string[] = [];
  const writers = new Map<string, KvOpRecord>();
  for (const op of ops) if (op.kind !== 'get') writers.set(op.token, op);
  const finalTokens = tokensOf(final ?? '');
  const seen = new Set<string>();
  for (const token of finalTokens) {
    if (seen.has(token)) problems.push(`key ${key}: token ${token} appears twice in the final value`);
    seen.add(token);
    if (!writers.has(token)) problems.push(`key ${key}: token ${token} in the final value was never written`);
  }
  if (ops.some((op) => op.kind === 'put')) return problems;
  // Append-only key: every acknowledged append exactly once, in real-time order.
  const position = new Map(finalTokens.map((token, i) => [token, i]));
  const acked = ops.filter((op) => op.kind === 'append' && op.ret !== undefined && op.result?.status === KvStatus.OK);
  for (const op of acked) {
    if (!position.has(op.token)) problems.push(`key ${key}: acknowledged ${describeOp(op)} is missing from the final value`);
  }
  for (const a of acked) {
    for (const b of acked) {
      if (a.ret! < b.call && position.has(a.token) && position.has(b.token) && position.get(a.token)! > position.get(b.token)!) {
        problems.push(`key ${key}: ${a.token} completed before ${b.token} was called, but comes after it`);
      }
    }
  }
  return problems;
}

interface SearchOp {
  readonly op: KvOpRecord;
  readonly call: number;
  /** Infinity when unknown. */
  readonly ret: number;
  /** The reply is known (it constrains the state it saw). */
  readonly known: boolean;
  /** It must be linearized: known, or a write whose token some observed value contains. */
  readonly required: boolean;
}

/** Wing & Gong search for one key. */
function linearize(key: string, ops: readonly KvOpRecord[], final: string | undefined, end: number): { problem?: string; steps: number } {
  const finalRead: KvOpRecord = {
    client: 'final',
    seq: 0,
    kind: 'get',
    key,
    token: '',
    call: end,
    ret: end + 1,
    result: final === undefined ? { status: KvStatus.NO_KEY, value: '' } : { status: KvStatus.OK, value: final },
  };
  // Operations with unknown outcome: a get has no effect and constrains nothing; a write whose
  // token no observed value (a reply, the final value) contains can be left out (if it took
  // effect, a put erased it before anyone looked), and one whose token is observed did take
  // effect. This keeps the search linear in practice however many outcomes are unknown.
  const observed = new Set<string>();
  for (const op of [...ops, finalRead]) if (op.ret !== undefined && op.result !== undefined) for (const t of tokensOf(op.result.value)) observed.add(t);
  const all: SearchOp[] = [...ops, finalRead]
    .filter((op) => op.ret !== undefined || (op.kind !== 'get' && observed.has(op.token)))
    .map((op) => ({ op, call: op.call, ret: op.ret ?? Infinity, known: op.ret !== undefined, required: true }))
    .sort((a, b) => a.call - b.call);
  const n = all.length;
  const done = new Uint8Array(n);
  const memo = new Set<string>();
  let knownLeft = all.filter((s) => s.required).length;
  let steps = 0;
  let deepest = 0;
  let stuckAt: SearchOp | undefined;
  let gaveUp = false;

  const apply = (s: SearchOp, state: string | undefined): { ok: boolean; next: string | undefined } => {
    const { op } = s;
    if (op.kind === 'get') {
      if (!s.known) return { ok: true, next: state };
      const expected = state === undefined ? { status: KvStatus.NO_KEY, value: '' } : { status: KvStatus.OK, value: state };
      return { ok: op.result!.status === expected.status && op.result!.value === expected.value, next: state };
    }
    const next = op.kind === 'put' ? op.token : (state ?? '') + op.token;
    if (!s.known) return { ok: true, next };
    return { ok: op.result!.status === KvStatus.OK && op.result!.value === next, next };
  };

  const search = (state: string | undefined, depth: number): boolean => {
    if (knownLeft === 0) return true;
    if (++steps > KV_CHECK_STEPS_MAX) {
      gaveUp = true;
      return false;
    }
    const memoKey = `${Array.from(done).join('')}|${state === undefined ? '\u0000' : state}`;
    if (memo.has(memoKey)) return false;
    let minRet = Infinity;
    for (let i = 0; i < n; i++) if (!done[i] && all[i]!.known && all[i]!.ret < minRet) minRet = all[i]!.ret;
    for (let i = 0; i < n; i++) {
      const s = all[i]!;
      if (done[i]) continue;
      if (s.call >= minRet) break; // sorted by call: no later op may go before the earliest reply
      const { ok, next } = apply(s, state);
      if (!ok) {
        if (depth >= deepest) {
          deepest = depth;
          stuckAt = s;
        }
        continue;
      }
      done[i] = 1;
      if (s.required) knownLeft--;
      const found = search(next, depth + 1);
      done[i] = 0;
      if (s.required) knownLeft++;
      if (found) return true;
      if (gaveUp) return false;
    }
    memo.add(memoKey);
    return false;
  };

  if (search(undefined, 0)) return { steps };
  if (gaveUp) return { problem: `key ${key}: the linearizability search gave up after ${KV_CHECK_STEPS_MAX} steps (${n} operations)`, steps };
  const at = stuckAt === undefined ? '' : `; the search got ${deepest} operations deep and could not place ${describeOp(stuckAt.op)}`;
  return { problem: `key ${key}: the ${n - 1} operations (unknown outcomes never observed left out) have no linearization consistent with their replies${at}`, steps };
}
