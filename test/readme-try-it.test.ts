/**
 * README "Try it", word for word: every command of its command block runs against a started
 * cluster (start_cluster on free ports: the only change to a command is the port numbers,
 * 3772..3777 mapped onto the cluster's block), and every key of its key block is typed into
 * start_cluster's input, with the outcome the README describes checked on the status lines.
 * Also: no document cites a file outside the repository.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { SeededRandom } from '../lib/random.js';
import { chooseBasePort } from '../tester/cluster.js';
import { isPidAlive, isPortFree } from '../tester/processes.js';
import { readmeBlock } from './helpers/readme.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_CLUSTER = fileURLToPath(new URL('../tester/bin/start_cluster.js', import.meta.url));

/** The fenced block after `<!-- try-it:NAME -->`, as lines without their `#` comments. */
function block(name: string): string[] {
  return readmeBlock(name)
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter((line) => line !== '');
}

t.test('no document cites a file outside the repository', async (t) => {
  // Documents: every Markdown file, and the source comments that cite documents.
  const files = spawnSync('git', ['ls-files', '*.md', '*.ts'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  t.ok(files.length >= 8, 'the documents are listed');
  const offenders: string[] = [];
  for (const file of files) {
    if (file === 'test/readme-try-it.test.ts') continue;
    const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
    for (const pattern of [/lab-reference/, /CACHING\.md/, /\/work\//, /\/home\/\w+/]) {
      if (pattern.test(text)) offenders.push(`${file}: ${pattern}`);
    }
  }
  t.same(offenders, [], 'no citation of a file outside the repository');
});

t.test('README "Try it": every command and key, against a started cluster', async (t) => {
  const commands = block('commands');
  const keys = block('keys');
  t.equal(commands.length, 5, 'the command block');
  t.same(keys, ['k 2', 'r 2', 'p 0', 'c 0'], 'the key block');

  const random = new SeededRandom(`${process.pid}/readme`);
  let base: number | undefined;
  for (let draw = 0; draw < 100 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'readme-try-it-'));
  const cluster = spawn(process.execPath, [START_CLUSTER, '--base-port', String(base), '--log-dir', path.join(dir, 'logs')], {
    cwd: ROOT,
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  cluster.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  cluster.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const pids = new Set<number>();
  t.teardown(() => {
    for (const pid of [cluster.pid!, ...pids]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  /** Waits (bounded) until the output after `from` matches `pattern`. */
  const waitFor = async (pattern: RegExp, from: number, limitMs: number): Promise<void> => {
    const deadline = Date.now() + limitMs;
    while (!pattern.test(output.slice(from))) {
      if (Date.now() > deadline || cluster.exitCode !== null) throw new Error(`no ${pattern} within ${limitMs} ms:\n${output.slice(from)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const line = (name: string, rest: string): RegExp => new RegExp(`^\\d\\d:\\d\\d:\\d\\d ${name} +port \\d+ +pid \\d+ +${rest}`, 'm');
  await waitFor(/^Try, in another terminal/m, 0, 90_000);
  for (const match of output.matchAll(/\(pid (\d+)\)$/gm)) pids.add(Number(match[1]));

  // The commands, with only the ports moved onto our block.
  const expected: Array<[number, RegExp]> = [
    [0, /passed all tests successfully/],
    [0, /^view 3 \{\d+,\d+,\d+\} primary \d+ last \d+\.\d+; quorum$/m],
    [0, /RPC_LOSSY=5: 5% of the messages[\s\S]*passed all tests successfully/],
    [1, /^rsm_ctl: RPC_NO_SUCH_PROC: .* use its control port, port \+ 1 \(\d+\)$/m],
    [2, /^lock_tester: WRONG_PORT: .* is a replica's control port; its lock service is on port \d+/m],
  ];
  for (const [i, command] of commands.entries()) {
    const moved = command.replace(/\b377([2-7])\b/g, (_, digit: string) => String(base! + Number(digit) - 2));
    const run = spawnSync('sh', ['-c', moved], { cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: { ...process.env, RPC_LOSSY: '' } });
    const [status, pattern] = expected[i]!;
    t.equal(run.status, status, `${command}: exit ${status}`);
    t.match(`${run.stdout}${run.stderr}`, pattern, command);
  }

  // The keys, typed into start_cluster, with what the README says happens.
  const outcomes: RegExp[] = [
    line('p0', 'up +view 4 \\{p0,p1\\} +primary p0'),
    line('p2', 'up +view 5 \\{p0,p1,p2\\} +primary p0'),
    line('p1', 'up +view 6 \\{p1,p2\\} +primary p1'),
    line('p0', 'up +view 7 \\{p1,p2,p0\\} +primary p1'),
  ];
  for (const [i, key] of keys.entries()) {
    const from = output.length;
    cluster.stdin!.write(`${key}\n`);
    await waitFor(outcomes[i]!, from, 90_000);
    t.pass(`${key}: ${outcomes[i]}`);
    for (const match of output.matchAll(/\(pid (\d+)\)$/gm)) pids.add(Number(match[1]));
  }

  cluster.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => cluster.on('exit', (c) => resolve(c)));
  t.equal(code, 0, 'start_cluster stops');
  t.same([...pids].filter(isPidAlive), [], 'nothing left running');
});
