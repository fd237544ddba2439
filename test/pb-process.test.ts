/**
 * The README's manual experiment with the real programs: start a primary and a backup with lockd,
 * lock a few names with lockc, SIGKILL the primary, and see with lockc that the backup still holds
 * them. Also: lockd on a port in use exits 1 with a clear message; bad arguments exit 2.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { freePort } from './helpers/pb.js';

const LOCKD = fileURLToPath(new URL('../lockserver/bin/lockd.js', import.meta.url));
const LOCKC = fileURLToPath(new URL('../lockserver/bin/lockc.js', import.meta.url));

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runProgram(script: string, args: readonly string[], timeoutMs = 20_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts lockd and resolves once it printed its serving line (bounded in time). */
function startLockd(t: Test, args: readonly string[]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LOCKD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`lockd ${args.join(' ')} did not start: ${out}`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes(' on ')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`lockd ${args.join(' ')} exited ${code}: ${out}`)));
  });
}


// The README's commands, word for word; Ctrl-C there is SIGINT; SIGKILL is the harsher stop.
for (const signal of ['SIGKILL', 'SIGINT'] as const) {
  t.test(`manual experiment: the backup still holds the locks after the primary gets ${signal}`, async (t) => {
    const primary = String(await freePort());
    const backup = String(await freePort());
    const p = await startLockd(t, ['-p', primary, backup]);
    await startLockd(t, ['-b', primary, backup]);
    const lockc = async (flag: string, name: string): Promise<string> => {
      const result = await runProgram(LOCKC, [flag, primary, backup, name]);
      t.equal(result.code, 0, `lockc ${flag} ${name} exits 0 (${result.stderr.trim()})`);
      return result.stdout.trim();
    };
    t.equal(await lockc('-l', 'a'), 'reply: true');
    t.equal(await lockc('-l', 'b'), 'reply: true');
    t.equal(await lockc('-l', 'a'), 'reply: false', 'a is held');
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill(signal);
    await exited;
    t.equal(await lockc('-l', 'a'), 'reply: false', 'the backup still holds a');
    t.equal(await lockc('-l', 'b'), 'reply: false', 'and b');
    t.equal(await lockc('-u', 'a'), 'reply: true');
  });
}

t.test('lockd on a port in use exits 1 with a clear message', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = String((blocker.address() as net.AddressInfo).port);
  const result = await runProgram(LOCKD, ['-p', port, String(await freePort())]);
  t.equal(result.code, 1);
  t.match(result.stderr, /lockd: LISTEN_FAILED: cannot serve as primary on 127\.0\.0\.1:\d+: address in use/);
});

t.test('bad arguments: usage line and exit 2', async (t) => {
  for (const [script, args] of [
    [LOCKD, []],
    [LOCKD, ['-p', '-b', '4000', '4001']],
    [LOCKD, ['4000', '4001']],
    [LOCKD, ['-p', '4000', '4000']],
    [LOCKD, ['-p', 'x', '4001']],
    [LOCKC, ['-l', '4000', '4001']],
    [LOCKC, ['-l', '-u', '4000', '4001', 'a']],
    [LOCKC, ['-l', '4000', '4000', 'a']],
    [LOCKC, ['-l', '4000', '4001', 'x'.repeat(257)]],
  ] as const) {
    const result = await runProgram(script, args);
    t.equal(result.code, 2, `${script.split('/').pop()} ${args.join(' ').slice(0, 40)} exits 2`);
    t.match(result.stderr, /usage: lock[cd] /);
  }
  const help = await runProgram(LOCKC, ['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /usage: lockc -l\|-u/);
});
