/**
 * start_cluster on a real terminal: `node dist/tester/bin/start_cluster.js` runs in tmux, driven
 * with `tmux send-keys`, one keystroke at a time (no Enter): k 1 kills p1, r 1 restarts it, p 2
 * pauses p2 (its /proc state is T), c 2 resumes it; Ctrl-C stops the cluster, and no replica is
 * left alive. A second, one-replica run stops with q. After each run, `stty -a` in the same
 * terminal shows the terminal back in its usual mode (icanon, echo, isig), and the program
 * exited 0.
 *
 * Without tmux, the same test runs on a pseudo-terminal made by `script -qfec` (util-linux) or,
 * failing that, by python3's pty module; it is skipped (saying why) only when none of the three
 * exists. VIEWSTAMP_TEST_TERMINAL=tmux|script|python3 picks one (to check each of them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { processState } from '../tester/cluster.js';
import { isPidAlive } from '../tester/processes.js';
import { freeBasePort, waitUntil } from './helpers/ports.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_CLUSTER = path.relative(ROOT, fileURLToPath(new URL('../tester/bin/start_cluster.js', import.meta.url)));
/** Terminal size: wide enough for a status line, narrow enough that the help line wraps. */
const COLUMNS = 100;
const ROWS = 50;

type Kind = 'tmux' | 'script' | 'python3';

/** A terminal running one shell command. */
interface Terminal {
  readonly kind: Kind;
  /** Types `keys` (each character one keystroke; \u0003 is Ctrl-C). */
  type(keys: string): void;
  /** Everything the terminal has shown (tmux: its history and screen; else the output stream without escape sequences). */
  text(): string;
  /** Whether the command has ended. */
  ended(): boolean;
  /** Ends the terminal (tmux: its own server; else the pty process), whatever state it is in. */
  close(): void;
}

function works(command: string, args: string[]): boolean {
  const run = spawnSync(command, args, { stdio: 'ignore', timeout: 10_000 });
  return run.status === 0;
}

function availableKinds(): Kind[] {
  const kinds: Kind[] = [];
  if (works('tmux', ['-V'])) kinds.push('tmux');
  if (works('script', ['--version'])) kinds.push('script');
  if (works('python3', ['-c', 'import pty, select'])) kinds.push('python3');
  return kinds;
}

function tmuxTerminal(dir: string, command: string): Terminal {
  // A server of our own (its own socket, no config file), so no one else's tmux is touched.
  const socket = path.join(dir, 'tmux.sock');
  const tmux = (...args: string[]): string => {
    const run = spawnSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { encoding: 'utf8', timeout: 10_000 });
    if (run.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${run.stderr || run.error?.message || `status ${run.status}`}`);
    return run.stdout;
  };
  // remain-on-exit: the pane (and what it shows) stays after the command ends.
  tmux('new-session', '-d', '-s', 'keys', '-x', String(COLUMNS), '-y', String(ROWS), command, ';', 'set-option', '-t', 'keys', 'remain-on-exit', 'on');
  let closed = false;
  return {
    kind: 'tmux',
    type: (keys) => {
      for (const key of keys) {
        if (key === '\u0003') tmux('send-keys', '-t', 'keys', 'C-c');
        else tmux('send-keys', '-t', 'keys', '-l', key);
      }
    },
    text: () => (closed ? '' : tmux('capture-pane', '-p', '-J', '-S', '-', '-t', 'keys')),
    ended: () => tmux('display-message', '-p', '-t', 'keys', '#{pane_dead}').trim() === '1',
    close: () => {
      if (closed) return;
      closed = true;
      spawnSync('tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore', timeout: 10_000 });
    },
  };
}

/** A pty relay in python3: runs `sh -c COMMAND` on a new pty, copies stdin to it and it to stdout. */
const PYTHON_PTY = `
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp('sh', ['sh', '-c', sys.argv[1]])
inputs = [fd, 0]
while True:
    ready, _, _ = select.select(inputs, [], [])
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        os.write(1, data)
    if 0 in ready:
        data = os.read(0, 4096)
        if data:
            os.write(fd, data)
        else:
            inputs.remove(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
`;

function streamTerminal(kind: 'script' | 'python3', command: string): Terminal {
  // The pty's size is unknown to these relays (their stdin is a pipe): set it in the terminal.
  const sized = `stty cols ${COLUMNS} rows ${ROWS}; ${command}`;
  const child: ChildProcess =
    kind === 'script'
      ? spawn('script', ['-qfec', sized, '/dev/null'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn('python3', ['-c', PYTHON_PTY, sized], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let raw = '';
  child.stdout!.on('data', (chunk: Buffer) => (raw += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (raw += chunk.toString()));
  return {
    kind,
    type: (keys) => void child.stdin!.write(keys),
    text: () => raw.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\r/g, ''),
    ended: () => child.exitCode !== null || child.signalCode !== null,
    close: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

const kinds = availableKinds();
const forced = process.env['VIEWSTAMP_TEST_TERMINAL'];
const kind: Kind | undefined = forced !== undefined && forced !== '' ? (forced as Kind) : kinds[0];
const skip = kind === undefined ? 'no terminal to drive start_cluster in: none of tmux, script (util-linux) or python3 with its pty module is installed' : false;

interface Session {
  readonly term: Terminal;
  readonly base: number;
  /** Waits (bounded) until the terminal shows every pattern. */
  waitFor(patterns: readonly RegExp[], limitMs: number, what: string): Promise<string>;
  /** start_cluster's pid (from its data directory's name, data-<time>-<pid>). */
  readonly pid: number;
  /** The replicas' pids, from "starting pN: … (pid N)". */
  readonly replicaPids: number[];
  /** The terminal's device (printed by `tty` before start_cluster starts). */
  readonly tty: string | undefined;
}

/** `stty -a` of the terminal device `tty`, read from outside. */
function sttyOf(tty: string): string {
  const run = spawnSync('stty', ['-a', '-F', tty], { encoding: 'utf8', timeout: 10_000 });
  if (run.status !== 0) throw new Error(`stty -a -F ${tty}: ${run.stderr}`);
  return run.stdout;
}

/** Runs start_cluster in a terminal of `kind`, then `stty -a` in the same terminal. */
async function startInTerminal(t: Test, replicas: number, dir: string): Promise<Session> {
  if (!kinds.includes(kind!)) throw new Error(`VIEWSTAMP_TEST_TERMINAL=${kind}, which is not installed here (found: ${kinds.join(', ') || 'none'})`);
  const base = await freeBasePort(replicas);
  const logDir = path.join(dir, 'logs');
  const command = `tty; cd ${ROOT} && RPC_LOSSY= RPC_COUNT= node ${START_CLUSTER} --replicas ${replicas} --base-port ${base} --log-dir ${logDir}; echo "start_cluster exit status $?"; stty -a`;
  const term = kind === 'tmux' ? tmuxTerminal(dir, command) : streamTerminal(kind as 'script' | 'python3', command);
  const known = new Set<number>();
  t.teardown(() => {
    term.close();
    for (const pid of known) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
  });
  const waitFor = async (patterns: readonly RegExp[], limitMs: number, what: string): Promise<string> => {
    // Polled every 200 ms: each look at a tmux pane is a tmux command.
    const deadline = Date.now() + limitMs;
    let text = '';
    for (;;) {
      text = term.text();
      for (const match of text.matchAll(/\(pid (\d+)\)/g)) known.add(Number(match[1]));
      if (patterns.every((pattern) => pattern.test(text))) return text;
      if (term.ended()) break;
      if (Date.now() > deadline) throw new Error(`not within ${limitMs} ms: ${what}; the ${term.kind} terminal shows:\n${text}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    text = term.text();
    const missing = patterns.filter((pattern) => !pattern.test(text));
    if (missing.length > 0) throw new Error(`${what}: the command ended without ${missing.join(', ')}; the ${term.kind} terminal shows:\n${text}`);
    return text;
  };
  const names = Array.from({ length: replicas }, (_, i) => `p${i}`);
  const text = await waitFor(
    names.map((name) => new RegExp(`^${name} +port \\d+ +pid \\d+ +up +view ${replicas} `, 'm')),
    120_000,
    `all ${replicas} replicas up in view ${replicas}`,
  );
  const pid = Number(/data-\d{8}-\d{6}-(\d+)/.exec(text)![1]);
  known.add(pid);
  const replicaPids = names.map((name) => Number(new RegExp(`starting ${name}: lock_server \\d+ \\d+ \\(pid (\\d+)\\)`).exec(text)![1]));
  const tty = /^(\/dev\/\S+)$/m.exec(text)?.[1];
  return { term, base, waitFor, pid, replicaPids, tty };
}

/** `stty -a`, printed after start_cluster exited, shows the terminal in its usual (cooked) mode. */
async function checkTerminalRestored(t: Test, session: Session): Promise<void> {
  await waitUntil(() => session.term.ended(), 20_000, 'the shell in the terminal ends after stty -a');
  const text = session.term.text();
  const stty = text.slice(text.lastIndexOf('start_cluster exit status'));
  t.match(stty, /speed \d+ baud/, 'stty -a ran after start_cluster');
  for (const flag of ['icanon', 'echo', 'isig']) t.match(stty, new RegExp(`(^|\\s)${flag}(\\s|$)`, 'm'), `the terminal has ${flag} again`);
}

t.test(`start_cluster in a terminal (${kind ?? 'none'}): single keys kill, restart, pause and resume; Ctrl-C stops all`, { skip }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'start-cluster-tty-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const session = await startInTerminal(t, 3, dir);
  const { term, waitFor } = session;
  const [p0, p1, p2] = session.replicaPids as [number, number, number];
  t.match(term.text(), /^keys: k kill, t SIGTERM, r restart, p pause, c resume, then the replica number 0\.\.2; q or Ctrl-C/m, 'the help line');
  t.match(term.text(), /^Or here, single keys \(no Enter\): k then 1 kills p1/m);
  t.ok(session.tty, 'the terminal device is known');
  const raw = sttyOf(session.tty!);
  for (const flag of ['-icanon', '-echo', '-isig']) t.match(raw, new RegExp(`(^|\\s)${flag}(\\s|$)`, 'm'), `the status screen has the terminal in raw mode (${flag})`);

  term.type('k');
  await waitFor([/^kill \(SIGKILL\): which replica\? 0 1 2 \(Esc cancels\)$/m], 20_000, 'k asks which replica');
  term.type('1');
  await waitFor([new RegExp(`^start_cluster: SIGKILL to p1 \\(pid ${p1}\\)$`, 'm'), new RegExp(`^p1 +port \\d+ +pid ${p1} +exited \\(signal SIGKILL\\)`, 'm')], 30_000, 'k 1 kills p1');
  await waitUntil(() => !isPidAlive(p1), 10_000, 'p1 is gone');

  term.type('r1');
  const restart = await waitFor([/^start_cluster: restarting p1: RSM_LOG_DIR=.* \(pid \d+\)$/m], 30_000, 'r 1 restarts p1');
  const p1again = Number(/^start_cluster: restarting p1: .* \(pid (\d+)\)$/m.exec(restart)![1]);
  await waitFor([new RegExp(`^p1 +port \\d+ +pid ${p1again} +up `, 'm')], 60_000, 'the restarted p1 is up');
  t.ok(isPidAlive(p1again), 'the restarted p1 runs');

  term.type('p2');
  await waitFor([new RegExp(`^start_cluster: SIGSTOP to p2 \\(pid ${p2}\\)$`, 'm'), new RegExp(`^p2 +port \\d+ +pid ${p2} +paused `, 'm')], 30_000, 'p 2 pauses p2');
  if (fs.existsSync('/proc/self/stat')) t.equal(processState(p2), 'T', 'p2 is stopped (state T in /proc/PID/stat)');
  term.type('c2');
  await waitFor([new RegExp(`^start_cluster: SIGCONT to p2 \\(pid ${p2}\\)$`, 'm')], 30_000, 'c 2 resumes p2');
  if (fs.existsSync('/proc/self/stat')) await waitUntil(() => processState(p2) !== 'T', 10_000, 'p2 runs again');

  term.type('\u0003');
  const final = await waitFor([/^start_cluster exit status \d+$/m], 60_000, 'Ctrl-C stops start_cluster');
  t.match(final, /^start_cluster: Ctrl-C: stopping 3 running replicas /m, 'Ctrl-C stops the 3 running replicas');
  t.match(final, /^start_cluster exit status 0$/m, 'start_cluster exits 0');
  t.match(final, /^start_cluster: durable state removed; logs are in /m);
  await checkTerminalRestored(t, session);
  t.same([session.pid, p0, p1, p1again, p2].filter(isPidAlive), [], 'no replica (and no start_cluster) is left alive');
});

t.test(`start_cluster in a terminal (${kind ?? 'none'}): q stops it`, { skip }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'start-cluster-tty-q-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const session = await startInTerminal(t, 1, dir);
  const { term, waitFor } = session;
  t.match(term.text(), /^Or here, single keys \(no Enter\): k then 0 kills p0;/m, 'the example names the one replica');
  term.type('k9');
  await waitFor([/^start_cluster: there is no replica 9 \(only 0\)$/m], 20_000, 'a replica number out of range is refused');
  t.ok(isPidAlive(session.replicaPids[0]!), 'and nothing was killed');
  term.type('q');
  const final = await waitFor([/^start_cluster exit status \d+$/m], 60_000, 'q stops start_cluster');
  t.match(final, /^start_cluster: q: stopping 1 running replica /m);
  t.match(final, /^start_cluster exit status 0$/m, 'start_cluster exits 0');
  await checkTerminalRestored(t, session);
  t.same([session.pid, ...session.replicaPids].filter(isPidAlive), [], 'nothing is left alive');
});
