/**
 * A program started as a child of a test, its output collected: spawn it, wait (bounded) for a
 * line in its output, wait (bounded) for its exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface Child {
  readonly process: ChildProcess;
  output(): string;
  /** Resolves the exit code (or signal name); SIGKILLs the child after `limitMs`. */
  exited(limitMs: number): Promise<number | string>;
}

/** Runs `script` with `args` under this Node, RPC_LOSSY and RPC_COUNT cleared, `env` on top. */
export function startChild(script: string, args: readonly string[], env: Record<string, string> = {}): Child {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const exit = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    process: child,
    output: () => text,
    exited: async (limitMs) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
      try {
        return await exit;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Waits (bounded, and not past the child's exit) until its output matches `pattern`. */
export async function waitForOutput(child: Child, pattern: RegExp, limitMs: number): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!pattern.test(child.output())) {
    if (Date.now() > deadline || child.process.exitCode !== null) throw new Error(`no ${pattern} in the output within ${limitMs} ms:\n${child.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
