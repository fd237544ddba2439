/**
 * rsm_sim --workload lock: determinism (same seed → same trace and output, library and program),
 * the checkers fail on a deliberately broken lock server and on a double hold, the program's exit
 * statuses and reproduction line, and the history file (LOCK_HISTORY_DIR) is valid JSON Lines in
 * the shared history format with no overlapping holds.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { CacheProc, encodeCacheLockRequest } from '../lockserver/cache-protocol.js';
import { CachingLockServer } from '../lockserver/cache-server.js';
import { LockStatus } from '../lockserver/protocol.js';
import type { ExecuteResult } from '../rsm/state-machine.js';
import { LockChecker, noticesOwed } from '../tester/sim/lock-checkers.js';
import { lockHistoryPath } from '../tester/sim/lock-sim.js';
import { runRsmSim } from '../tester/sim/rsm-sim.js';

const RSM_SIM = fileURLToPath(new URL('../tester/bin/rsm_sim.js', import.meta.url));

function rsmSim(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [RSM_SIM, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, LOCK_HISTORY_DIR: '', ...env } });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** Grants a lock someone else holds: answers OK where the real server answers RETRY. */
class GreedyLockServer extends CachingLockServer {
  override execute(proc: number, request: Uint8Array): ExecuteResult {
    const result = super.execute(proc, request);
    return proc === CacheProc.ACQUIRE && result.status === LockStatus.RETRY ? { ...result, status: LockStatus.OK } : result;
  }
}

t.test('the same seed gives the same run; different seeds differ', async (t) => {
  for (const seed of [3, 19, 250]) {
    const first = await runRsmSim(seed, { workload: 'lock', keepEvents: true, historyDir: '' });
    const second = await runRsmSim(seed, { workload: 'lock', keepEvents: true, historyDir: '' });
    t.equal(first.outcome, 'ok', `seed ${seed}: ${first.problems.join('; ')}`);
    t.equal(second.traceHash, first.traceHash, `seed ${seed}: same trace hash`);
    t.equal(second.summary, first.summary, `seed ${seed}: same summary`);
    t.same(second.events, first.events, `seed ${seed}: same fault schedule`);
    t.equal(second.options, first.options);
    t.match(first.options, /workload=lock/);
  }
  const hashes = new Set<string>();
  for (const seed of [1, 2, 3, 4]) hashes.add((await runRsmSim(seed, { workload: 'lock', historyDir: '' })).traceHash);
  t.equal(hashes.size, 4, 'four seeds, four traces');
  const kv = await runRsmSim(3);
  t.not(kv.traceHash, (await runRsmSim(3, { workload: 'lock', historyDir: '' })).traceHash, 'the workload is part of the run');
});

t.test('the checkers fail on a lock server that grants held locks', async (t) => {
  for (const seed of [0, 1, 2, 3, 4]) {
    const result = await runRsmSim(seed, { workload: 'lock', historyDir: '', lockServer: () => new GreedyLockServer() });
    t.equal(result.outcome, 'violation', `seed ${seed}: caught (${result.problems[0] ?? 'no problem reported'})`);
    t.ok(
      result.problems.some((p) => /mutual exclusion: |caches lock \d+ \((free|locked)\) but the primary/.test(p)),
      `seed ${seed}: a lock check reported it`,
    );
  }
  // Each check on its own: without the per-event cross-check of the caches, the callers'
  // mutual-exclusion check (what callers were actually given) catches the same server.
  for (const seed of [0, 1, 2]) {
    const result = await runRsmSim(seed, { workload: 'lock', historyDir: '', lockServer: () => new GreedyLockServer(), crossCheckCaches: false });
    t.equal(result.outcome, 'violation', `seed ${seed}, no cross-check: caught (${result.problems[0] ?? 'no problem reported'})`);
    t.ok(result.problems.some((p) => p.includes('mutual exclusion: ')), `seed ${seed}: the callers' mutual-exclusion check reported it`);
  }
});

t.test('LockChecker: a double hold, a release by a non-holder, replicas that disagree', async (t) => {
  const checker = new LockChecker(() => 5, [1, 2]);
  checker.acquired(1, 'lc1/w0', 'lc1:cb');
  checker.acquired(2, 'lc2/w0', 'lc2:cb');
  t.ok(checker.ok);
  checker.acquired(1, 'lc2/w1', 'lc2:cb');
  t.match(checker.violations[0], /^t=5ms mutual exclusion: lc2\/w1 acquired lock 1 while lc1\/w0 holds it$/);
  checker.releasing(2, 'lc1/w0');
  t.match(checker.violations[1], /lc1\/w0 releases lock 2, held by lc2\/w0/);
  const a = new CachingLockServer();
  const b = new CachingLockServer();
  const acquire = (server: CachingLockServer, id: string): void =>
    void server.execute(CacheProc.ACQUIRE, encodeCacheLockRequest({ lid: '1', id, xid: 1 }));
  acquire(a, 'lc1:cb');
  acquire(b, 'lc2:cb');
  const fresh = new LockChecker(() => 9, [1]);
  fresh.replicaAt('3772#1', { vid: 2, seqno: 1 }, a, 'executed');
  fresh.replicaAt('3774#1', { vid: 2, seqno: 1 }, b, 'executed');
  t.equal(fresh.violations.length, 1);
  t.match(fresh.violations[0], /3774#1 executed: at 2\.1 its holders are \[1:lc2:cb#1@1\], another replica's were \[1:lc1:cb#1@1\]/);
  // The cache check: a client caching a lock the serving primary gives to someone else.
  const cache = new LockChecker(() => 9, [1]);
  cache.step({ id: '3772', vid: 2, last: { vid: 2, seqno: 1 }, server: a }, [{ id: 'lc2:cb', cacheStateOf: () => 'free', xidOf: () => 1 }]);
  t.match(cache.violations[0], /client lc2:cb caches lock 1 \(free\) but the primary 3772 of view 2 at 2\.1 has holder lc1:cb#1/);
});

t.test('noticesOwed: a grant the client acted on is not owed; one it has not seen is', async (t) => {
  const server = new CachingLockServer();
  const ask = (proc: number, id: string, xid: number) => server.execute(proc, encodeCacheLockRequest({ lid: '1', id, xid }));
  t.equal(ask(CacheProc.ACQUIRE, 'a', 1).status, LockStatus.OK);
  t.equal(ask(CacheProc.ACQUIRE, 'b', 1).status, LockStatus.RETRY);
  t.equal(ask(CacheProc.RELEASE, 'a', 1).status, LockStatus.OK, 'the release hands the lock to b');
  t.same(
    server.pendingNotices().map((n) => n.kind),
    ['grant'],
    'the table owes b its grant',
  );
  const b = (state: 'acquiring' | 'free', xid: number) => ({ id: 'b', cacheStateOf: () => state, xidOf: () => xid });
  t.equal(noticesOwed(server, [b('acquiring', 1)]).length, 1, 'b still waits: owed');
  t.equal(noticesOwed(server, [b('free', 1)]).length, 0, 'b caches the lock under that xid: acted on');
  t.equal(noticesOwed(server, [b('free', 7)]).length, 1, 'b caches it under another xid: still owed');
  t.equal(noticesOwed(server, []).length, 1, 'an unknown client: owed');
});

t.test('rsm_sim --workload lock: byte-identical output, exit statuses, reproduction line', async (t) => {
  const first = rsmSim(['--workload', 'lock', '--seed', '7', '--verbose']);
  const second = rsmSim(['--workload', 'lock', '--seed', '7', '--verbose']);
  t.equal(first.status, 0, first.stderr);
  t.equal(first.stderr, '', 'nothing on stderr');
  t.equal(second.stdout, first.stdout, 'byte-identical output');
  t.match(first.stdout, /^rsm_sim: seed 7\noptions: seed=7 workload=lock nodes=\d /);
  t.match(first.stdout, /\nresult: OK views=\d+ .*grants=\d+ .* trace=[0-9a-f]{16}\n$/);
  const many = rsmSim(['--workload', 'lock', '--seeds', '3', '--first-seed', '10']);
  t.equal(many.status, 0, many.stderr);
  t.match(many.stdout, /\nrsm_sim: 3 seeds from 10: 3 ok, 0 violations, 0 liveness failures, 0 crashes\nrsm_sim: \d+ batches stamped, \d+ with more than one request, the largest \d+; \d+ stamped while others were in flight, at most \d+ in flight\n$/);
  const stuck = rsmSim(['--workload', 'lock', '--seed', '3', '--liveness-ms', '1']);
  t.equal(stuck.status, 2);
  t.match(stuck.stdout, /\nresult: LIVENESS FAILURE /);
  t.match(stuck.stdout, /\nSEED=3 to reproduce: rsm_sim --workload lock --seed 3 --liveness-ms 1\n$/);
  t.equal(rsmSim(['--workload', 'paxos']).status, 2, 'usage error');
});

interface Line {
  client: number;
  op: string;
  lock: string;
  owner: string;
  outcome: string;
  call: string;
  ret?: string;
}

t.test('LOCK_HISTORY_DIR: one valid JSONL history per seed, unknowns retired, no overlapping holds', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rsm-sim-lock-history-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Seeds with impatient callers (unknown outcomes) and without; the program writes too.
  let unknowns = 0;
  for (const seed of [1, 3, 4]) {
    const result = await runRsmSim(seed, { workload: 'lock', historyDir: dir });
    t.equal(result.outcome, 'ok', result.problems.join('; '));
    const lines = readFileSync(lockHistoryPath(dir, seed), 'utf8').split('\n').filter((l) => l !== '');
    t.match(lines[0], new RegExp(`^# rsm_sim --workload lock --seed ${seed}: seed=${seed} workload=lock `));
    const ops = lines.filter((l) => !l.startsWith('#')).map((l) => JSON.parse(l) as Line);
    t.equal(ops.length, result.stats.ops, `seed ${seed}: one line per operation`);
    const bad: string[] = [];
    const unknownOf = new Map<number, bigint>();
    for (const op of ops) {
      if (!Number.isSafeInteger(op.client) || op.client < 0) bad.push(`client ${op.client}`);
      if (op.op !== 'acquire' && op.op !== 'release') bad.push(`op ${op.op}`);
      if (!/^\d+$/.test(op.lock)) bad.push(`lock ${op.lock}`);
      if (!/^lc\d+\/w\d+(\/r\d+)?$/.test(op.owner)) bad.push(`owner ${op.owner}`);
      if (!/^\d+$/.test(op.call) || BigInt(op.call) % 1_000_000n !== 0n) bad.push(`call ${op.call}`);
      if (op.outcome === 'ok') {
        if (op.ret === undefined || BigInt(op.ret) < BigInt(op.call)) bad.push(`ret ${op.ret}`);
      } else if (op.outcome === 'unknown') {
        if (op.ret !== undefined) bad.push('unknown with ret');
        if (unknownOf.has(op.client)) bad.push(`client ${op.client} unknown twice`);
        unknownOf.set(op.client, BigInt(op.call));
        unknowns++;
      } else bad.push(`outcome ${op.outcome}`);
    }
    // Retirement: nothing of a client number after its unknown operation; owners change with it.
    for (const op of ops) {
      const retired = unknownOf.get(op.client);
      if (retired !== undefined && BigInt(op.call) > retired) bad.push(`client ${op.client} used after its unknown operation`);
    }
    const ownersOf = new Map<number, Set<string>>();
    for (const op of ops) ownersOf.set(op.client, (ownersOf.get(op.client) ?? new Set()).add(op.owner));
    for (const [client, owners] of ownersOf) if (owners.size !== 1) bad.push(`client ${client} has owners ${[...owners].join(',')}`);
    t.same(bad, [], `seed ${seed}: every line follows the format`);
    // Holds (ok acquire's ret .. its ok release's call) of one lock never overlap.
    const holds = new Map<string, Array<[bigint, bigint, string]>>();
    const open = new Map<number, Line>();
    for (const op of [...ops].sort((a, b) => (BigInt(a.call) < BigInt(b.call) ? -1 : BigInt(a.call) > BigInt(b.call) ? 1 : 0))) {
      if (op.op === 'acquire' && op.outcome === 'ok') open.set(op.client, op);
      if (op.op === 'release' && op.outcome === 'ok') {
        const acquire = open.get(op.client);
        if (acquire === undefined || acquire.lock !== op.lock) {
          bad.push(`release without acquire: ${JSON.stringify(op)}`);
          continue;
        }
        open.delete(op.client);
        const list = holds.get(op.lock) ?? [];
        list.push([BigInt(acquire.ret!), BigInt(op.call), op.owner]);
        holds.set(op.lock, list);
      }
    }
    t.equal(open.size, 0, `seed ${seed}: every ok acquire has its release`);
    for (const [lock, list] of holds) {
      list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      for (let i = 1; i < list.length; i++) {
        if (list[i]![0] < list[i - 1]![1]) bad.push(`lock ${lock}: ${list[i]![2]} overlaps ${list[i - 1]![2]}`);
      }
    }
    t.same(bad, [], `seed ${seed}: no two holds of one lock overlap`);
  }
  t.ok(unknowns > 0, `unknown outcomes were recorded (${unknowns})`);
  const program = rsmSim(['--workload', 'lock', '--seeds', '2', '--first-seed', '20'], { LOCK_HISTORY_DIR: dir });
  t.equal(program.status, 0, program.stderr);
  for (const seed of [20, 21]) t.match(readFileSync(lockHistoryPath(dir, seed), 'utf8'), /"op":"acquire"/, `rsm_sim wrote seed ${seed}'s history`);
});

t.test('LockChecker: fencing tokens must increase across clients; an equal token only on a cached re-grant', async (t) => {
  const checker = new LockChecker(() => 0, [1]);
  checker.acquired(1, 'lc1/w0', 'lc1:cb', 5);
  checker.releasing(1, 'lc1/w0');
  checker.acquired(1, 'lc1/w1', 'lc1:cb', 5); // a local re-grant from the cache
  checker.releasing(1, 'lc1/w1');
  t.same(checker.violations, []);
  checker.acquired(1, 'lc2/w0', 'lc2:cb', 5);
  t.match(checker.violations[0], /fencing: lc2\/w0 on lc2:cb got lock 1 with token 5 after token 5 on lc1:cb/);
  checker.releasing(1, 'lc2/w0');
  checker.acquired(1, 'lc3/w0', 'lc3:cb', 4);
  t.match(checker.violations[1], /token 4 after token 5/);
});

t.test('a view change that the final log checks let finish does not break the end checks (seed 16480)', async (t) => {
  // In this run a view that drops the primary, accepted before the heal, is adopted while the
  // final checks run the world; the end checks then wait for the cluster to settle again instead
  // of reading a serving primary that is gone (the simulator crashed on it before).
  const result = await runRsmSim(16480, { workload: 'lock', historyDir: '' });
  t.equal(result.outcome, 'ok', result.problems.join('; '));
});
