/**
 * Child processes and loopback ports for the process-level tools (`rsm_tester`, `start_cluster`).
 *
 * Process hygiene: every child spawned through `ChildHandle.spawn` is tracked by PID from spawn to
 * exit. `killAllChildren` SIGKILLs whatever is still alive and is synchronous, so a program can
 * call it from `process.on('exit')` and from signal handlers; `stopChildren` is the polite
 * version (SIGTERM, then SIGKILL after a bound).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** PIDs of every child spawned by this process that has not exited yet. */
const livePids = new Set<number>();

/**
 * Starts `count` processes that spin on one core each (node busy loops), tracked like every other
 * child, to check the protocols on a loaded machine. Returns their PIDs and a stop function.
 */
export function startCpuBurners(count: number): { readonly pids: readonly number[]; stop(): Promise<void> } {
  const pids: number[] = [];
  const exits: Array<Promise<void>> = [];
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
    const pid = child.pid;
    if (pid === undefined) continue;
    livePids.add(pid);
    exits.push(
      new Promise<void>((resolve) =>
        child.once('exit', () => {
          livePids.delete(pid);
          resolve();
        }),
      ),
    );
    child.on('error', () => {});
    pids.push(pid);
  }
  return {
    pids,
    // Resolves once every burner has exited and been reaped (no zombie left behind).
    stop: async () => {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await Promise.all(exits);
    },
  };
}

/** SIGKILLs every child still alive. Synchronous, so it is safe in exit and signal handlers. */
export function killAllChildren(): number {
  let killed = 0;
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // Already gone; its exit event has not been processed yet.
    }
  }
  return killed;
}

export function liveChildCount(): number {
  return livePids.size;
}

/** A spawned program whose stdout and stderr are appended to `logFile`. */
export class ChildHandle {
  /** Set once it exited. */
  exitInfo: ExitInfo | undefined;
  /** The signal the harness sent it, if any (an exit without one happened on its own). */
  signalSent: NodeJS.Signals | undefined;
  readonly exited: Promise<ExitInfo>;

  private constructor(
    readonly pid: number,
    readonly command: string,
    readonly logFile: string,
    exited: Promise<ExitInfo>,
  ) {
    this.exited = exited.then((info) => (this.exitInfo = info));
  }

  /**
   * Runs `node <script> <args…>`. The log file gets the command as its first line (appended, so
   * a restarted node's log holds every incarnation).
   */
  static spawn(script: string, args: readonly string[], logFile: string, env: NodeJS.ProcessEnv): ChildHandle {
    const command = `node ${script} ${args.join(' ')}`;
    const fd = fs.openSync(logFile, 'a');
    try {
      fs.writeSync(fd, `${command}\n`);
      const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', fd, fd], env });
      const pid = child.pid;
      if (pid === undefined) throw new Error(`could not start ${command}`);
      livePids.add(pid);
      const exited = new Promise<ExitInfo>((resolve) => {
        child.once('exit', (code, signal) => {
          livePids.delete(pid);
          resolve({ code, signal });
        });
      });
      child.on('error', () => {}); // a failed kill of an exited child; the exit event tells us
      return new ChildHandle(pid, command, logFile, exited);
    } finally {
      fs.closeSync(fd); // the child has its own copy
    }
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  signal(signal: NodeJS.Signals): void {
    if (!this.running) return;
    this.signalSent ??= signal;
    try {
      process.kill(this.pid, signal);
    } catch {
      // It exited between the check and the kill.
    }
  }

  /** Resolves with the exit, or undefined if it is still running after `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<ExitInfo | undefined> {
    if (this.exitInfo !== undefined) return this.exitInfo;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

export interface StopResult {
  /** Children that exited after SIGTERM. */
  readonly terminated: number;
  /** Children that were still running `graceMs` after SIGTERM and got SIGKILL. */
  readonly killed: number;
  /** Children still not gone `graceMs` after SIGKILL (should not happen; reported, not hidden). */
  readonly stuck: readonly ChildHandle[];
}

/**
 * Stops `children`: SIGTERM to every running one, SIGKILL to those still running `graceMs`
 * later, then waits up to `graceMs` more for those. Bounded by 2 × `graceMs`.
 */
export async function stopChildren(children: readonly ChildHandle[], graceMs: number): Promise<StopResult> {
  const running = children.filter((child) => child.running);
  for (const child of running) child.signal('SIGTERM');
  const afterTerm = await Promise.all(running.map((child) => child.waitForExit(graceMs)));
  const stubborn = running.filter((_, i) => afterTerm[i] === undefined);
  for (const child of stubborn) {
    // signal() records only the first signal sent; this one must go out regardless.
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // It exited just now.
    }
  }
  const afterKill = await Promise.all(stubborn.map((child) => child.waitForExit(graceMs)));
  return {
    terminated: running.length - stubborn.length,
    killed: stubborn.length,
    stuck: stubborn.filter((_, i) => afterKill[i] === undefined),
  };
}

/** True if a process with this PID exists (signal 0 probes without sending anything). */
export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function describeExit(info: ExitInfo): string {
  return info.signal !== null ? `signal ${info.signal}` : `code ${info.code}`;
}

/** The last `lines` non-empty lines of `file` ([] if it cannot be read). */
export async function tail(file: string, lines: number): Promise<string[]> {
  try {
    const text = await fsp.readFile(file, 'utf8');
    return text.split('\n').filter((line) => line !== '').slice(-lines);
  } catch {
    return [];
  }
}

/** True if a TCP server can bind 127.0.0.1:port right now (it is closed again at once). */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The built `lock_server` program (it lives with the lock service, not with the testers). */
export function lockServerScript(): string {
  return fileURLToPath(new URL('../lockserver/bin/lock_server.js', import.meta.url));
}
