#!/usr/bin/env node
/**
 * start_cluster [--replicas N] [--base-port PORT] [--log-dir DIR] [--keep]
 *
 * Starts a local replica cluster (tester/cluster.ts) on 127.0.0.1 as child processes, prints the
 * ports and commands to try against it, then a status line per replica, refreshed every second
 * until SIGINT (Ctrl-C), SIGTERM, SIGHUP or the q key. Then it stops every replica (SIGTERM,
 * SIGKILL after 5 s), removes their durable state unless --keep, and exits 0. It never leaves
 * replicas behind: whatever is still alive at process exit (an uncaught error included) is
 * SIGKILLed; a second Ctrl-C during the shutdown SIGKILLs at once.
 *
 * Keys: on a terminal, single keystrokes in raw mode (an action key, then the replica number:
 * `k` `1` kills p1); raw mode swallows Ctrl-C, so \u0003 is handled here, and the terminal is
 * restored on every exit path. From a pipe, one command per line (`k 1`), for tests and scripts.
 */
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_BASE_PORT,
  DEFAULT_REPLICAS,
  KEY_ACTIONS,
  LocalCluster,
  MAX_REPLICAS,
  STOP_GRACE_MS,
  StartupError,
  StatusKeys,
  chooseBasePort,
  pause,
  statusKeysHelp,
  wrapLine,
  type KeyAction,
  type Replica,
  type ReplicaStatus,
} from '../cluster.js';
import { isPortFree, killAllChildren } from '../processes.js';
import { EXIT_FAILURE, UsageError, parseCommandLine, parseCount, programName, runMain, type CommandSpec } from '../../lib/cli.js';

/** How often the status is refreshed. */
const STATUS_INTERVAL_MS = 1_000;

const spec: CommandSpec = {
  usage: ['start_cluster [--replicas N] [--base-port PORT] [--log-dir DIR] [--keep]'],
  // (see KEYS_HELP for the status screen's keys)
  help: `Starts a local cluster of N lock_server replicas of the replicated caching lock service on
127.0.0.1 and shows their status until Ctrl-C (or q), which stops them all. This is what npm
start runs.

Replica i runs "lock_server P0 Pi" with Pi = PORT + 2i, so each replica's control port Pi + 1 is
free too. The replicas start one at a time, each joining the view of those before it. Then one
status line per replica is refreshed every second: whether it is up (running and answering the
members call), its latest view (from its paxos-<port>.log), the primary it knows and the
viewstamp of the last request it executed (the status call on its control port). On a
terminal the lines are redrawn in place, with the keys under them (lines too wide for the
terminal go on, indented, on the next row); otherwise a line is printed whenever it changes.

Options:
  --replicas N      number of replicas, 1..${MAX_REPLICAS} (default ${DEFAULT_REPLICAS})
  --base-port PORT  P0 (default ${DEFAULT_BASE_PORT} if ${DEFAULT_BASE_PORT}..${DEFAULT_BASE_PORT + 2 * DEFAULT_REPLICAS - 1} are free, else random free ports)
  --log-dir DIR     RSM_LOG_DIR of the replicas: their output (lock_server-P0-Pi.log) and paxos
                    logs (paxos-Pi.log) (default logs); a paxos log left there for the same port
                    by an earlier cluster is removed first. Durable state goes to a fresh
                    DIR/data-<time>-<pid>, removed at exit
  --keep            keep the durable state at exit

Keys on the status screen (a terminal): single keystrokes, no Enter. An action key, then the
replica number: k then 1 kills p1 (typing "k 1" and Enter does the same).
  k  kill with SIGKILL     t  SIGTERM     r  restart (only when nothing serves its port)
  p  pause (SIGSTOP)       c  resume (SIGCONT)
  Esc drops an action typed; q or Ctrl-C stops the cluster; ? lists the keys.
With more than 10 replicas, a number that could go on (1 of 12) waits for its next digit or
Enter. From a pipe (stdin not a terminal): one command per line, "k 1", "r 1", "q".
Replicas are tracked by port: one restarted by hand with the printed command shows as up, and is
stopped with the others. The status line says "paused" (the process is stopped, whoever stopped
it), "up, in view change", and "no quorum: …" when a replica cannot reach a majority of its view.

Environment: passed on to the replicas (e.g. RPC_LOSSY=N, DEBUG=viewstamp:*).`,
  minPositionals: 0,
  maxPositionals: 0,
  options: {
    replicas: { type: 'string' },
    'base-port': { type: 'string' },
    'log-dir': { type: 'string' },
    keep: { type: 'boolean' },
  },
};

const name = programName();

/**
 * The terminal's status block: the status lines and a help line, redrawn in place. A message
 * (a key's outcome) is printed above the block, which is then drawn again below it, so messages
 * stay on the screen and the block stays whole. Lines wider than the terminal are wrapped, so
 * the cursor moves count real rows. Inactive (no terminal, or before the status loop): messages
 * are plain lines.
 */
class Screen {
  private active = false;
  /** Rows of the block now on the screen, above the cursor. */
  private drawn = 0;
  private header = '';
  private status: string[] = [];
  private help = '';

  constructor(private readonly out: NodeJS.WriteStream) {}

  start(): void {
    this.active = this.out.isTTY === true;
    if (!this.active) return;
    // After a resize the old rows may have re-flowed: draw below them rather than guess.
    this.out.on('resize', () => {
      this.drawn = 0;
      this.render();
    });
  }

  /** Leaves the last block on the screen; later output goes below it. */
  finish(): void {
    this.active = false;
    this.drawn = 0;
  }

  get isActive(): boolean {
    return this.active;
  }

  update(header: string, status: string[]): void {
    this.header = header;
    this.status = status;
    this.render();
  }

  setHelp(help: string): void {
    this.help = help;
    this.render();
  }

  message(line: string): void {
    if (!this.active) {
      this.out.write(`${line}\n`);
      return;
    }
    this.out.write(`${this.erase()}${line}\n`);
    this.drawn = 0;
    this.render();
  }

  private render(): void {
    if (!this.active || this.header === '') return;
    const width = Math.max(20, (this.out.columns || 120) - 1);
    const rows = [this.header, ...this.status, this.help].filter((line) => line !== '').flatMap((line) => wrapLine(line, width));
    this.out.write(`${this.erase()}${rows.map((row) => `${row}\n`).join('')}`);
    this.drawn = rows.length;
  }

  /** Cursor up to the block's first row, and clear from there down. */
  private erase(): string {
    return this.drawn > 0 ? `\x1b[${this.drawn}A\r\x1b[J` : '';
  }
}

const screen = new Screen(process.stdout);
const say = (line: string): void => screen.message(`${name}: ${line}`);

// Restores the terminal from raw mode (set while the keys are read from a terminal).
let restoreTerminal = (): void => {};

// Stop requests: the first signal (or q, or Ctrl-C in raw mode) stops the cluster politely, a
// second SIGINT (or Ctrl-C) kills at once.
const stop = new AbortController();
process.on('exit', () => {
  restoreTerminal();
  killAllChildren();
});
function requestStop(why: string, killOnRepeat: boolean): void {
  if (!stop.signal.aborted) {
    stop.abort(why);
    return;
  }
  if (killOnRepeat) {
    const killed = killAllChildren();
    process.stdout.write(`\n${name}: second ${why}: killed ${killed} replicas with SIGKILL\n`);
  }
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => requestStop(signal, signal === 'SIGINT'));

runMain(spec, async () => {
  const { values } = parseCommandLine(spec);
  const replicas = typeof values['replicas'] === 'string' ? parseCount(values['replicas'], '--replicas', MAX_REPLICAS, 1) : DEFAULT_REPLICAS;
  const requestedBase = typeof values['base-port'] === 'string' ? parseCount(values['base-port'], '--base-port', 65_535, 1) : undefined;
  const logDir = typeof values['log-dir'] === 'string' ? values['log-dir'] : 'logs';
  if (logDir === '') throw new UsageError('--log-dir must not be empty');
  const keep = values['keep'] === true;

  const choice = await chooseBasePort(replicas, requestedBase, isPortFree);
  if (!choice.ok) {
    say(choice.message);
    return EXIT_FAILURE;
  }
  if (choice.defaultBusy !== undefined) say(`port ${choice.defaultBusy} is in use; using ports from ${choice.base} instead`);
  const dataDir = path.join(logDir, `data-${timestamp()}-${process.pid}`);
  const cluster = new LocalCluster({
    replicas,
    basePort: choice.base,
    logDir,
    dataDir,
    binDir: path.dirname(fileURLToPath(import.meta.url)),
  });
  const ports = cluster.replicas.map((r) => r.port);
  say(`${replicas} replica${replicas === 1 ? '' : 's'} on 127.0.0.1, ports ${ports.join(' ')} (control ports ${ports.map((p) => p + 1).join(' ')})`);
  say(`logs in ${logDir}/ (lock_server-${choice.base}-<port>.log, paxos-<port>.log); durable state in ${dataDir} (${keep ? 'kept' : 'removed'} at exit)`);

  let status = 0;
  try {
    await cluster.start(say, stop.signal);
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    say(`startup failed: ${error.message}`);
    status = EXIT_FAILURE;
  }

  if (status === 0 && !stop.signal.aborted) {
    const raw = process.stdin.isTTY === true;
    printTryThis(cluster, raw);
    const keys = raw ? readSingleKeys(cluster) : readLineKeys(cluster);
    await showStatus(cluster, stop.signal, keys.help);
    keys.close();
  }

  const why = stop.signal.aborted ? `${String(stop.signal.reason)}: ` : '';
  const running = cluster.replicas.filter((r) => r.process?.running === true).length;
  say(`${why}stopping ${running} running replica${running === 1 ? '' : 's'} (SIGTERM, then SIGKILL after ${STOP_GRACE_MS / 1000} s)`);
  const result = await cluster.stop();
  for (const replica of cluster.replicas) {
    const child = replica.process;
    if (child === undefined) continue;
    const exit = child.exitInfo;
    say(`${replica.name} (pid ${child.pid}) ${exit === undefined ? 'is STILL RUNNING' : exit.signal !== null ? `ended by ${exit.signal}` : `exited with code ${exit.code}`}`);
  }
  if (result.killed > 0) say(`${result.killed} replica(s) did not stop within ${STOP_GRACE_MS / 1000} s of SIGTERM and were SIGKILLed`);
  if (result.stuck.length > 0) {
    say(`could not stop pid ${result.stuck.map((c) => c.pid).join(', ')}`);
    status = EXIT_FAILURE;
  }
  if (keep) {
    say(`durable state kept in ${dataDir}`);
  } else {
    const { rm } = await import('node:fs/promises');
    await rm(dataDir, { recursive: true, force: true });
    say(`durable state removed; logs are in ${logDir}/`);
  }
  return status;
});

/**
 * The keys from a pipe (stdin not a terminal), one command per line, so tests and scripts can
 * drive it: `k N` SIGKILL, `t N` SIGTERM, `r N` restart, `p N` pause (SIGSTOP), `c N` resume
 * (SIGCONT), `q` stop the cluster, `?` the keys; N is the replica number (1 for p1).
 */
export const KEYS_HELP = 'keys (then Enter): k N kill (SIGKILL), t N SIGTERM, r N restart, p N pause (SIGSTOP), c N resume (SIGCONT), q stop all; N = replica number';

interface Keys {
  /** The help line under the status lines. */
  readonly help: () => string;
  close(): void;
}

function readLineKeys(cluster: LocalCluster): Keys {
  const lines = createInterface({ input: process.stdin, terminal: false });
  const help = `${KEYS_HELP} (0..${cluster.replicas.length - 1})`;
  lines.on('line', (text) => {
    const command = text.trim();
    if (command === '') return;
    if (command === 'q') {
      requestStop('q', false);
      return;
    }
    if (command === '?' || command === 'h' || command === 'help') {
      say(help);
      return;
    }
    const match = /^([ktrpc])\s*(\d+)$/.exec(command);
    const replica = match === null ? undefined : cluster.replicas[Number(match[2])];
    if (match === null || replica === undefined) {
      say(`unknown key ${JSON.stringify(command)}; ${help}`);
      return;
    }
    act(cluster, match[1] as KeyAction, replica);
  });
  return { help: () => help, close: () => lines.close() };
}

/**
 * The keys from a terminal: raw mode, single keystrokes (StatusKeys decodes them). Raw mode turns
 * off the terminal's own Ctrl-C (and Ctrl-Z, Ctrl-\), so Ctrl-C arrives here as \u0003 and
 * stops the cluster as SIGINT would. The terminal is restored when the status loop ends, and at
 * process exit whatever the reason; only a SIGKILL of start_cluster leaves it raw (`stty sane`).
 */
function readSingleKeys(cluster: LocalCluster): Keys {
  const stdin = process.stdin;
  const decoder = new StatusKeys(cluster.replicas.length);
  const help = (): string => {
    const action = decoder.pending;
    if (action === undefined) return statusKeysHelp(cluster.replicas.length);
    return `${KEY_ACTIONS[action]}: which replica? ${cluster.replicas.map((r) => r.index).join(' ')} (Esc cancels)`;
  };
  let raw = false;
  try {
    stdin.setRawMode(true);
    raw = true;
  } catch (error) {
    say(`cannot read single keys from this terminal (${(error as Error).message}); type them as lines: ${KEYS_HELP}`);
    return readLineKeys(cluster);
  }
  restoreTerminal = () => {
    if (!raw) return;
    raw = false;
    try {
      stdin.setRawMode(false);
    } catch {
      // The terminal is gone (SIGHUP): nothing to restore.
    }
  };
  stdin.setEncoding('utf8');
  const onData = (text: string): void => {
    for (const event of decoder.feed(text)) {
      switch (event.type) {
        case 'action':
          act(cluster, event.action, cluster.replicas[event.replica]!);
          break;
        case 'stop':
          requestStop(event.why, event.why === 'Ctrl-C');
          break;
        case 'help':
          say(`${statusKeysHelp(cluster.replicas.length)}; Esc drops an action typed`);
          break;
        case 'invalid':
          say(event.problem);
          break;
        case 'pending':
        case 'cancel':
          break;
      }
    }
    screen.setHelp(help());
  };
  stdin.on('data', onData);
  stdin.resume();
  return {
    help,
    close: () => {
      stdin.off('data', onData);
      stdin.pause();
      restoreTerminal();
    },
  };
}

/** Carries out one key on `replica`, saying what was done. */
function act(cluster: LocalCluster, key: KeyAction, replica: Replica): void {
  if (key === 'r') {
    const pid = cluster.pidOf(replica);
    if (pid !== undefined) {
      say(`${replica.name} is running (pid ${pid}); kill it first`);
      return;
    }
    const child = cluster.spawn(replica);
    say(`restarting ${replica.name}: ${cluster.restartCommand(replica)} (pid ${child.pid})`);
    return;
  }
  const signal = ({ k: 'SIGKILL', t: 'SIGTERM', p: 'SIGSTOP', c: 'SIGCONT' } as const)[key];
  const pid = cluster.pidOf(replica);
  if (!cluster.signal(replica, signal)) {
    say(`${replica.name} has no running process`);
    return;
  }
  say(`${signal} to ${replica.name} (pid ${pid})`);
}

/**
 * How to run our program `name` from the current directory: `node` and the path of its script
 * from here (dist/tester/bin/… in the repository, node_modules/viewstamp/dist/… where the package
 * is installed), so the printed line works as it is, as the restart command does.
 */
function programCommand(name: string): string {
  return `node ${path.relative(process.cwd(), fileURLToPath(new URL(`./${name}.js`, import.meta.url)))}`;
}

function printTryThis(cluster: LocalCluster, singleKeys: boolean): void {
  const [p0, p1] = cluster.replicas;
  const lines: Array<[string, string]> = [];
  lines.push([
    `${programCommand('lock_tester')} ${p0!.port}`,
    `the classic lock tests through ${p0!.name} (any replica's port works; the last vs column moves)`,
  ]);
  lines.push([`${programCommand('rsm_ctl')} ${p0!.controlPort} status`, `${p0!.name}'s view, primary, last viewstamp, and whether it has a quorum`]);
  lines.push([`${programCommand('rsm_ctl')} ${p0!.controlPort} partition 0`, `arm a partition of ${p0!.name}: it cuts itself off at its next client request as primary ("partition 1" heals it)`]);
  if (p1 !== undefined) lines.push([`kill ${p1.process!.pid}`, `stop backup ${p1.name} (SIGTERM) and watch the view change below`]);
  lines.push([`kill ${p0!.process!.pid}`, `stop the first primary ${p0!.name}; the survivors form a view without it`]);
  lines.push([`tail -f ${p0!.paxosLog}`, `the views ${p0!.name} has seen decided`]);
  if (p1 !== undefined) lines.push([cluster.restartCommand(p1), `restart ${p1.name} by hand once it is dead: it shows as up here, and Ctrl-C stops it too`]);
  const width = Math.max(...lines.map(([command]) => command.length));
  // On a terminal too narrow for command and comment side by side, the comment goes under it.
  const columns = process.stdout.isTTY === true ? process.stdout.columns || 120 : Infinity;
  const sideBySide = lines.every(([, what]) => 2 + width + 3 + what.length < columns);
  process.stdout.write('\nTry, in another terminal (from this directory):\n');
  for (const [command, what] of lines) {
    if (sideBySide) process.stdout.write(`  ${command.padEnd(width)}   ${what}\n`);
    else process.stdout.write(`  ${command}\n${wrapLine(`      ${what}`, columns - 1, 6).join('\n')}\n`);
  }
  if (singleKeys) {
    const example = (p1 ?? p0!).index;
    process.stdout.write(`Or here, single keys (no Enter): k then ${example} kills p${example}; t SIGTERM, r restart, p pause, c resume; q or Ctrl-C stops all.\n`);
  } else {
    process.stdout.write(`Or here: ${KEYS_HELP}.\n`);
  }
  process.stdout.write(`Replicas that die are not restarted unless you say so. Ctrl-C stops them all.\n\n`);
}

/**
 * Refreshes the status every STATUS_INTERVAL_MS until `signal` aborts. On a terminal the block
 * (with `help` under it) is redrawn in place; otherwise each replica's line is printed
 * (time-stamped) when it changes.
 */
async function showStatus(cluster: LocalCluster, signal: AbortSignal, help: () => string): Promise<void> {
  screen.start();
  const tty = screen.isActive;
  const previous = new Map<string, string>();
  screen.setHelp(help());
  while (!signal.aborted) {
    const statuses: ReplicaStatus[] = await cluster.status();
    if (signal.aborted) break;
    const lines = statuses.map((s) => cluster.formatStatus(s));
    if (tty) {
      screen.update(`status at ${clock()} (every ${STATUS_INTERVAL_MS / 1000} s)`, lines);
    } else {
      statuses.forEach((s, i) => {
        const line = lines[i]!;
        if (previous.get(s.replica.name) === line) return;
        previous.set(s.replica.name, line);
        process.stdout.write(`${clock()} ${line}\n`);
      });
    }
    await pause(STATUS_INTERVAL_MS, signal);
  }
  screen.finish();
  // Past the "^C" a terminal in its usual mode echoed (raw mode echoes nothing).
  if (tty && process.stdin.isTTY !== true) process.stdout.write('\n');
}

/** "20260102-150405" (local time). */
function timestamp(): string {
  const d = new Date();
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}${two(d.getMonth() + 1)}${two(d.getDate())}-${two(d.getHours())}${two(d.getMinutes())}${two(d.getSeconds())}`;
}

/** "15:04:05" (local time). */
function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}
