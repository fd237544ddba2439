/**
 * start_cluster (tester/bin/start_cluster.ts, tester/cluster.ts): port choice, and the program as
 * a child process: it brings up three replicas of the replicated lock service in view 3,
 * lock_tester against its first port passes (and the status shows the replicas' last viewstamp
 * move), it shows a killed replica and the view change that follows, and on SIGINT stops every
 * replica, removes the durable state and exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { SeededRandom } from '../lib/random.js';
import { DEFAULT_BASE_PORT, LocalCluster, StatusKeys, boundPorts, chooseBasePort, clusterPorts, processState, wrapLine, type ReplicaStatus } from '../tester/cluster.js';
import { isPidAlive, isPortFree } from '../tester/processes.js';
import { waitUntil } from './helpers/ports.js';

const START_CLUSTER = fileURLToPath(new URL('../tester/bin/start_cluster.js', import.meta.url));
const LOCK_TESTER = fileURLToPath(new URL('../tester/bin/lock_tester.js', import.meta.url));

/** Runs lock_tester against `port`; resolves its exit code ('timeout' after `limitMs`, then SIGKILL) and output. */
function runLockTester(port: number, limitMs: number): Promise<{ code: number | string; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [LOCK_TESTER, String(port)], { env: { ...process.env, RPC_LOSSY: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? 'timeout' : (code ?? signal ?? -1), output });
    });
  });
}

t.test('ports: node i on base + 2i, its control port next to it', async (t) => {
  t.same(clusterPorts(5000, 3), [5000, 5002, 5004]);
  t.same(boundPorts(5000, 3), [5000, 5001, 5002, 5003, 5004, 5005]);
});

t.test('chooseBasePort: the requested block, else the default block, else a random free one', async (t) => {
  const busy = new Set<number>();
  const isFree = async (port: number): Promise<boolean> => !busy.has(port);
  const random = new SeededRandom(1);
  t.same(await chooseBasePort(3, undefined, isFree, random), { ok: true, base: DEFAULT_BASE_PORT });
  t.same(await chooseBasePort(3, 20_000, isFree, random), { ok: true, base: 20_000 });

  busy.add(20_005); // the last control port of a block at 20000
  t.match(await chooseBasePort(3, 20_000, isFree, random), { ok: false, message: /port 20005 is in use; pick another --base-port/ });
  t.match(await chooseBasePort(3, 65_533, isFree, random), { ok: false, message: /leaves no room for 3 replicas/ });

  busy.add(DEFAULT_BASE_PORT + 3);
  const fallback = await chooseBasePort(3, undefined, isFree, random);
  t.match(fallback, { ok: true, defaultBusy: DEFAULT_BASE_PORT + 3 });
  if (fallback.ok) t.ok(boundPorts(fallback.base, 3).every((port) => !busy.has(port)), 'the drawn block is free');

  const nothingFree = await chooseBasePort(3, undefined, async () => false, random);
  t.match(nothingFree, { ok: false, message: /found no 6 free consecutive ports in 200 tries/ });
});

t.test('status keys: an action key, then the replica number', async (t) => {
  const keys = new StatusKeys(3);
  t.same(keys.feed('k'), [{ type: 'pending', action: 'k' }], 'k waits for a replica number');
  t.equal(keys.pending, 'k');
  t.same(keys.feed('1'), [{ type: 'action', action: 'k', replica: 1 }], 'then 1 kills p1');
  t.equal(keys.pending, undefined);
  t.same(keys.feed('p2c2r0t1'), [
    { type: 'pending', action: 'p' },
    { type: 'action', action: 'p', replica: 2 },
    { type: 'pending', action: 'c' },
    { type: 'action', action: 'c', replica: 2 },
    { type: 'pending', action: 'r' },
    { type: 'action', action: 'r', replica: 0 },
    { type: 'pending', action: 't' },
    { type: 'action', action: 't', replica: 1 },
  ], 'keys typed fast arrive in one chunk');
  t.same(keys.feed('k 2\r'), [{ type: 'pending', action: 'k' }, { type: 'action', action: 'k', replica: 2 }], 'the line form typed on a terminal does the same');
  t.same(keys.feed('K1'), [{ type: 'pending', action: 'k' }, { type: 'action', action: 'k', replica: 1 }], 'capitals too');
  t.same(keys.feed('k\u001b1'), [{ type: 'pending', action: 'k' }, { type: 'cancel' }, { type: 'invalid', problem: '1: press an action key first (k kill, t SIGTERM, r restart, p pause, c resume), then the replica number' }], 'Esc drops the action');
  t.same(keys.feed('k\u001b[A\u001bOB1'), [{ type: 'pending', action: 'k' }, { type: 'cancel' }, { type: 'invalid', problem: '1: press an action key first (k kill, t SIGTERM, r restart, p pause, c resume), then the replica number' }], 'arrow keys are swallowed whole');
  t.same(keys.feed('k5'), [{ type: 'pending', action: 'k' }, { type: 'invalid', problem: 'there is no replica 5 (0..2)' }]);
  t.same(keys.feed('kq'), [{ type: 'pending', action: 'k' }, { type: 'stop', why: 'q' }], 'q stops, pending or not');
  t.same(keys.feed('\u0003'), [{ type: 'stop', why: 'Ctrl-C' }], 'Ctrl-C is a byte in raw mode');
  t.same(keys.feed('?'), [{ type: 'help' }]);
  t.match(keys.feed('x'), [{ type: 'invalid', problem: /^"x" is not a key here; keys: k kill, t SIGTERM, r restart, p pause, c resume, then the replica number 0\.\.2; q or Ctrl-C stops all$/ }]);
  t.match(keys.feed('\u001a'), [{ type: 'invalid', problem: /^Ctrl-Z is not a key here/ }], 'Ctrl-Z does not suspend');

  const many = new StatusKeys(12);
  t.same(many.feed('k1'), [{ type: 'pending', action: 'k' }], 'of 12, 1 may begin 10 or 11: it waits');
  t.same(many.feed('1'), [{ type: 'action', action: 'k', replica: 11 }]);
  t.same(many.feed('k1\r'), [{ type: 'pending', action: 'k' }, { type: 'action', action: 'k', replica: 1 }], 'Enter ends the number');
  t.same(many.feed('k2'), [{ type: 'pending', action: 'k' }, { type: 'action', action: 'k', replica: 2 }], '2 cannot go on');
  t.same(many.feed('k0'), [{ type: 'pending', action: 'k' }, { type: 'action', action: 'k', replica: 0 }], '0 cannot go on');
  t.same(many.feed('k13'), [{ type: 'pending', action: 'k' }, { type: 'invalid', problem: 'there is no replica 13 (0..11)' }]);
  t.same(new StatusKeys(1).feed('k1'), [{ type: 'pending', action: 'k' }, { type: 'invalid', problem: 'there is no replica 1 (only 0)' }]);
});

t.test('wrapLine: a long status line goes on in indented pieces, cut between columns', async (t) => {
  t.same(wrapLine('short', 20), ['short']);
  const line = 'p0  port 24100 pid 32271   up                     view 6 {p0,p1}        primary p0  last vs 0.0 no quorum: view 6 {p0,p1}; p1 unreachable since 14:49:50';
  const pieces = wrapLine(line, 79);
  t.ok(pieces.every((piece) => piece.length <= 79), 'every piece fits');
  t.equal(pieces[0], 'p0  port 24100 pid 32271   up                     view 6 {p0,p1}');
  t.ok(pieces.slice(1).every((piece) => piece.startsWith('    ')), 'the rest is indented');
  t.equal(pieces.join(' ').replace(/\s+/g, ' '), line.replace(/\s+/g, ' '), 'nothing is lost');
  t.ok(wrapLine('x'.repeat(50), 20).every((piece) => piece.length <= 20), 'a word longer than the width is cut anyway');
  t.same(wrapLine('      arm a partition of p0', 20, 6), ['      arm a', '      partition of', '      p0'], 'leading spaces stay, and are no place to cut');
});

t.test('the status line says paused, in view change and no quorum', async (t) => {
  const cluster = new LocalCluster({ replicas: 3, basePort: 5000, logDir: 'unused-logs', dataDir: 'unused-data', binDir: '.' });
  t.teardown(() => cluster.stop(0));
  const [p0, p1, p2] = cluster.replicas;
  const view = { vid: 4, members: ['5000', '5002'] };
  const up: ReplicaStatus = { replica: p0!, state: 'up', exit: undefined, view, primary: '5000', lastViewstamp: '4.2', pid: 11 };
  t.match(cluster.formatStatus(up), /^p0 +port 5000 +pid 11 +up +view 4 \{p0,p1\} +primary p0 +last vs 4\.2$/);
  t.match(cluster.formatStatus({ ...up, inViewChange: true }), /^p0 +port 5000 +pid 11 +up, in view change +view 4 /);
  t.match(cluster.formatStatus({ ...up, inViewChange: true, phase: 'syncing view 4 as primary, serving' }), /^p0 +port 5000 +pid 11 +up, in view change \(syncing view 4 as primary, serving\) +view 4 /);
  t.match(
    cluster.formatStatus({ ...up, replica: p1!, noQuorum: 'no quorum: view 4 {p0,p1}; p0 unreachable since 12:01:07' }),
    /^p1 .* last vs 4\.2 no quorum: view 4 \{p0,p1\}; p0 unreachable since 12:01:07$/,
  );
  t.match(cluster.formatStatus({ replica: p2!, state: 'paused', exit: undefined, view, primary: undefined, lastViewstamp: undefined, pid: 12 }), /^p2 +port 5004 +pid 12 +paused +view 4 \{p0,p1\} +primary - +last vs -$/);
});

t.test('processState: T for a stopped process', async (t) => {
  if (!fs.existsSync('/proc/self/stat')) {
    t.equal(processState(process.pid), undefined, 'no /proc: unknown');
    return;
  }
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise((resolve) => child.once('spawn', resolve));
  t.not(processState(child.pid!), 'T', 'running');
  child.kill('SIGSTOP');
  await waitUntil(() => processState(child.pid!) === 'T', 10_000, 'the child is stopped');
  child.kill('SIGCONT');
  await waitUntil(() => processState(child.pid!) !== 'T', 10_000, 'the child runs again');
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.equal(processState(child.pid!), undefined, 'gone');
});

interface Run {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name), or 'timeout' after `limitMs` (then SIGKILLs). */
  exited(limitMs: number): Promise<number | string>;
}

function startCluster(args: string[], stdin: 'ignore' | 'pipe' = 'ignore'): Run {
  const child = spawn(process.execPath, [START_CLUSTER, ...args], {
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
    stdio: [stdin, 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const exit = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    output: () => text,
    exited: async (limitMs) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), limitMs)));
      const result = await Promise.race([exit, timeout]);
      clearTimeout(timer);
      if (result === 'timeout') child.kill('SIGKILL');
      return result;
    },
  };
}

/** Waits (bounded) until `run`'s output matches every pattern. */
async function waitFor(run: Run, patterns: readonly RegExp[], limitMs: number): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!patterns.every((pattern) => pattern.test(run.output()))) {
    if (Date.now() > deadline || run.child.exitCode !== null || run.child.signalCode !== null) {
      const missing = patterns.filter((pattern) => !pattern.test(run.output()));
      throw new Error(`no ${missing.join(', ')} in the output within ${limitMs} ms:\n${run.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A status line (non-TTY format: time, then the replica's columns). */
function statusLine(name: string, rest: string): RegExp {
  return new RegExp(`^\\d\\d:\\d\\d:\\d\\d ${name} +port \\d+ +pid \\d+ +${rest}`, 'm');
}

t.test('start_cluster brings up 3 replicas, shows a view change, and stops everything on SIGINT', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'start-cluster-'));
  const logDir = path.join(dir, 'logs');
  // Random free ports, so that a run on the default ports elsewhere does not collide with ours.
  const random = new SeededRandom(String(process.pid));
  let base: number | undefined;
  for (let draw = 0; draw < 100 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports');

  const run = startCluster(['--base-port', String(base), '--log-dir', logDir]);
  const pids: number[] = [];
  t.teardown(() => {
    for (const pid of [run.child.pid!, ...pids]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // Startup: each replica joins in turn, then the status shows view 3 everywhere, primary p0.
  await waitFor(
    run,
    [0, 1, 2].map((i) => statusLine(`p${i}`, 'up +view 3 \\{p0,p1,p2\\} +primary p0 +last vs 0\\.0$')),
    90_000,
  );
  const out = run.output();
  for (const i of [0, 1, 2]) {
    const match = new RegExp(`^start_cluster: starting p${i}: lock_server ${base} ${base + 2 * i} \\(pid (\\d+)\\)$`, 'm').exec(out);
    t.ok(match, `p${i}'s command line and pid are printed`);
    pids.push(Number(match![1]));
  }
  t.match(out, /^start_cluster: p0 is in view 1 \{p0\}$/m);
  t.match(out, /^start_cluster: p1 is in view 2 \{p0,p1\}$/m);
  t.match(out, /^start_cluster: p2 is in view 3 \{p0,p1,p2\}$/m);
  t.match(out, new RegExp(`^  node dist/tester/bin/lock_tester.js ${base} `, 'm'), 'how to run lock_tester');
  t.match(out, new RegExp(`^  node dist/tester/bin/rsm_ctl.js ${base + 1} partition 0 `, 'm'), 'how to partition p0');
  t.match(out, new RegExp(`^  RSM_LOG_DIR=${logDir.replace(/[.]/g, '\\.')} RSM_DATA_DIR=${logDir.replace(/[.]/g, '\\.')}/data-[^ ]+ node [^ ]*lock_server\\.js ${base} ${base + 2} `, 'm'), 'the restart command uses the cluster\'s data directory');
  t.match(out, new RegExp(`^  kill ${pids[1]} `, 'm'), 'how to kill a replica');
  t.ok(pids.every(isPidAlive), 'the replicas run');
  const dataDirs = fs.readdirSync(logDir).filter((name) => name.startsWith('data-'));
  t.equal(dataDirs.length, 1, 'one fresh durable-state directory');
  for (const i of [0, 1, 2]) t.ok(fs.existsSync(path.join(logDir, `paxos-${base + 2 * i}.log`)), `paxos log of p${i} in the log directory`);

  // The lock service: lock_tester through p0's port detects a replica and passes; every replica
  // then shows a last viewstamp in view 3.
  const tester = await runLockTester(base, 180_000);
  t.equal(tester.code, 0, 'lock_tester against the cluster exits 0');
  t.match(tester.output, /^lock_tester: 6 caching lock clients against [^\n]*: a replica \(replicated lock service/m);
  t.match(tester.output, /^lock_tester: passed all tests successfully$/m);
  await waitFor(
    run,
    [0, 1, 2].map((i) => statusLine(`p${i}`, 'up +view 3 \\{p0,p1,p2\\} +primary p0 +last vs 3\\.[1-9]\\d*$')),
    30_000,
  );

  // Kill p2: its line shows the exit, the survivors' lines the next view.
  process.kill(pids[2]!, 'SIGTERM');
  await waitFor(
    run,
    [
      statusLine('p2', 'exited \\(code 0\\) +view 3 \\{p0,p1,p2\\} +primary -'),
      statusLine('p0', 'up +view 4 \\{p0,p1\\} +primary p0'),
      statusLine('p1', 'up +view 4 \\{p0,p1\\} +primary p0'),
    ],
    60_000,
  );

  // SIGINT: the two running replicas are stopped, the state is removed, the exit status is 0.
  run.child.kill('SIGINT');
  t.equal(await run.exited(30_000), 0, 'start_cluster exits 0 after SIGINT');
  const final = run.output();
  t.match(final, /^start_cluster: SIGINT: stopping 2 running replicas \(SIGTERM, then SIGKILL after 5 s\)$/m);
  for (const i of [0, 1, 2]) t.match(final, new RegExp(`^start_cluster: p${i} \\(pid ${pids[i]}\\) exited with code 0$`, 'm'));
  t.match(final, /^start_cluster: durable state removed; logs are in /m);
  t.same(pids.filter(isPidAlive), [], 'no replica is left running');
  t.same(fs.readdirSync(logDir).filter((name) => name.startsWith('data-')), [], 'the durable state is gone');
  t.ok(fs.existsSync(path.join(logDir, `lock_server-${base}-${base}.log`)), 'the logs stay');
});

t.test('start_cluster command-line errors exit 2, --help exits 0', async (t) => {
  const cases: Array<[string[], number | string, RegExp]> = [
    [['--replicas', '0'], 2, /^start_cluster: USAGE: --replicas must be an integer 1\.\.15, got "0"/],
    [['--replicas', '16'], 2, /--replicas must be an integer 1\.\.15/],
    [['--base-port', 'x'], 2, /--base-port must be an integer/],
    [['extra'], 2, /usage: start_cluster/],
    [['--help'], 0, /--base-port PORT[\s\S]*--keep/],
  ];
  for (const [args, expected, pattern] of cases) {
    const run = startCluster(args);
    t.equal(await run.exited(20_000), expected, `start_cluster ${args.join(' ')}: exit ${expected}`);
    t.match(run.output(), pattern);
  }
});

t.test('start_cluster keys from a pipe: kill, restart, pause, resume; a replica restarted by hand is tracked by port and stopped; no quorum', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'start-cluster-keys-'));
  const logDir = path.join(dir, 'logs');
  const random = new SeededRandom(`${process.pid}/keys`);
  let base: number | undefined;
  for (let draw = 0; draw < 100 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports');
  const run = startCluster(['--base-port', String(base), '--log-dir', logDir], 'pipe');
  const pids = new Set<number>();
  t.teardown(() => {
    for (const pid of [run.child.pid!, ...pids]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const key = (line: string): void => void run.child.stdin!.write(`${line}\n`);
  await waitFor(run, [0, 1, 2].map((i) => statusLine(`p${i}`, 'up +view 3 ')), 90_000);
  for (const match of run.output().matchAll(/\(pid (\d+)\)$/gm)) pids.add(Number(match[1]));

  /** Matches `pattern` in the output after the first `from` characters. */
  const after = (from: number, pattern: RegExp): RegExp => ({ test: (text: string) => pattern.test(text.slice(from)) }) as unknown as RegExp;
  const pidOf = (name: string): number => Number(new RegExp(`^start_cluster: starting ${name}: .* \\(pid (\\d+)\\)$`, 'm').exec(run.output())![1]);
  const [p1, p2] = [pidOf('p1'), pidOf('p2')];
  const linux = fs.existsSync('/proc/self/stat');

  key('p 2');
  await waitFor(run, [new RegExp(`^start_cluster: SIGSTOP to p2 \\(pid ${p2}\\)$`, 'm'), statusLine('p2', 'paused ')], 20_000);
  if (linux) t.equal(processState(p2), 'T', 'p2 is stopped (state T in /proc/PID/stat)');
  key('c 2');
  await waitFor(run, [/^start_cluster: SIGCONT to p2/m], 20_000);
  if (linux) await waitUntil(() => processState(p2) !== 'T', 10_000, 'p2 runs again');
  const resumedFrom = run.output().length;
  await waitFor(run, [after(resumedFrom, statusLine('p2', 'up '))], 30_000);
  t.pass('p2 is paused, then up again');

  if (linux) {
    // Stopped by someone else (kill -STOP in another terminal): the status line says so too.
    process.kill(p2, 'SIGSTOP');
    const stoppedFrom = run.output().length;
    await waitFor(run, [after(stoppedFrom, statusLine('p2', 'paused '))], 20_000);
    process.kill(p2, 'SIGCONT');
    const contFrom = run.output().length;
    await waitFor(run, [after(contFrom, statusLine('p2', 'up '))], 30_000);
    t.pass('a pause from outside shows as paused, and the resume as up');
  }

  key('k 1');
  await waitFor(run, [new RegExp(`^start_cluster: SIGKILL to p1 \\(pid ${p1}\\)$`, 'm'), statusLine('p1', 'exited \\(signal SIGKILL\\)')], 20_000);
  await waitUntil(() => !isPidAlive(p1), 10_000, 'the killed p1 is gone');
  key('r 1');
  await waitFor(run, [/^start_cluster: restarting p1: RSM_LOG_DIR=/m], 20_000);
  for (const match of run.output().matchAll(/restarting p1: .* \(pid (\d+)\)$/gm)) pids.add(Number(match[1]));
  const restarted = Number(/restarting p1: .* \(pid (\d+)\)$/m.exec(run.output())![1]);
  t.ok(isPidAlive(restarted), 'the restarted p1 runs');
  const restartedFrom = run.output().length;
  await waitFor(run, [after(restartedFrom, statusLine('p1', 'up '))], 60_000);

  // Kill p1 again and restart it by hand, with the printed command: it shows as up, with its pid.
  key('k 1');
  const killedFrom = run.output().length;
  await waitFor(run, [{ test: (text: string) => statusLine('p1', 'exited').test(text.slice(killedFrom)) } as unknown as RegExp], 20_000);
  const command = new RegExp(`^  (RSM_LOG_DIR=(\\S+) RSM_DATA_DIR=(\\S+) node (\\S+) (\\d+) (\\d+)) `, 'm').exec(run.output());
  t.ok(command, 'the restart command is printed');
  const byHand = spawn(process.execPath, [command![4]!, command![5]!, command![6]!], {
    env: { ...process.env, RPC_LOSSY: '', RSM_LOG_DIR: command![2]!, RSM_DATA_DIR: command![3]! },
    stdio: 'ignore',
  });
  pids.add(byHand.pid!);
  const handFrom = run.output().length;
  await waitFor(run, [{ test: (text: string) => new RegExp(`p1 +port \\d+ +pid ${byHand.pid} +up `).test(text.slice(handFrom)) } as unknown as RegExp], 60_000);

  // p1 must be back in the view first: "up" comes as soon as it answers, with the view it
  // restored from disk, and a replica outside the current view has no majority to lose.
  await waitFor(run, [after(handFrom, statusLine('p0', 'up +view \\d+ \\{[^}]*p1[^}]*\\}'))], 60_000);
  // Kill the two others: p1 is left without a majority of its view, and its line says so.
  const aloneFrom = run.output().length;
  key('k 2');
  key('k 0');
  await waitFor(run, [after(aloneFrom, statusLine('p1', 'up.* no quorum: view \\d+ \\{[p0-9,]+\\}; p\\d unreachable since \\d\\d:\\d\\d:\\d\\d'))], 60_000);
  t.pass('the survivor of two kills reports no quorum');

  run.child.kill('SIGINT');
  t.equal(await run.exited(30_000), 0, 'start_cluster exits 0');
  await waitUntil(() => byHand.exitCode !== null || byHand.signalCode !== null, 10_000, 'the replica restarted by hand exits');
  t.equal(byHand.exitCode !== null || byHand.signalCode !== null, true, 'the replica restarted by hand was stopped too');
  t.same([...pids].filter(isPidAlive), [], 'no replica is left running');
});
