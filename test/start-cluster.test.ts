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
import { DEFAULT_BASE_PORT, boundPorts, chooseBasePort, clusterPorts } from '../tester/cluster.js';
import { isPidAlive, isPortFree } from '../tester/processes.js';

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

t.test('start_cluster keys: kill, restart, pause, resume; a replica restarted by hand is tracked by port and stopped', async (t) => {
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

  key('p 2');
  await waitFor(run, [/^start_cluster: SIGSTOP to p2 \(pid \d+\)$/m, statusLine('p2', 'paused ')], 20_000);
  key('c 2');
  await waitFor(run, [/^start_cluster: SIGCONT to p2/m], 20_000);
  const resumedFrom = run.output().length;
  await waitFor(run, [{ test: (text: string) => statusLine('p2', 'up ').test(text.slice(resumedFrom)) } as unknown as RegExp], 30_000);

  key('k 1');
  await waitFor(run, [/^start_cluster: SIGKILL to p1/m, statusLine('p1', 'exited \\(signal SIGKILL\\)')], 20_000);
  key('r 1');
  await waitFor(run, [/^start_cluster: restarting p1: RSM_LOG_DIR=/m], 20_000);
  for (const match of run.output().matchAll(/restarting p1: .* \(pid (\d+)\)$/gm)) pids.add(Number(match[1]));
  const restartedFrom = run.output().length;
  await waitFor(run, [{ test: (text: string) => statusLine('p1', 'up ').test(text.slice(restartedFrom)) } as unknown as RegExp], 60_000);

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

  run.child.kill('SIGINT');
  t.equal(await run.exited(30_000), 0, 'start_cluster exits 0');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(byHand.exitCode !== null || byHand.signalCode !== null, true, 'the replica restarted by hand was stopped too');
  t.same([...pids].filter(isPidAlive), [], 'no replica is left running');
});
