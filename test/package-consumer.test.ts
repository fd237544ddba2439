/**
 * A new user's check, without the registry: the project is packed (`npm pack`), the tarball is
 * unpacked into a fresh folder's node_modules/viewstamp as `npm install` would put it, with the
 * package's declared dependencies linked from this checkout (tests send nothing off loopback).
 * - What npm would need: every bare import of the shipped code is a Node built-in or a declared
 *   dependency, every program named in `bin` is shipped with a node shebang, every source map
 *   names only shipped files, and the folder READMEs are in.
 * - The README's "Use it from your code" example, as it is (only the three ports moved onto a free
 *   block), runs as example.mjs against the installed package's own start_cluster (what
 *   `npm start` runs), and prints a fencing token for each of its two holds, the second not
 *   lower; and the lock_tester command start_cluster prints runs from the consumer's folder.
 * - A TypeScript consumer that uses every entry point and `await using` type-checks against the
 *   shipped declarations.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { freeBasePort } from './helpers/ports.js';
import { readmeBlock } from './helpers/readme.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface PackedManifest {
  readonly dependencies?: Record<string, string>;
  readonly bin?: Record<string, string>;
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile()).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));
}

/** The package a bare specifier names ('debug', '@scope/name/sub' → '@scope/name'). */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

t.test('the packed project, installed in a new folder', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'viewstamp-consumer-'));
  const pids = new Set<number>();
  t.teardown(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // `npm test` has just built dist/; packing must not build again.
  const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  t.equal(pack.status, 0, `npm pack: ${pack.stderr}`);
  const tarball = path.join(dir, (JSON.parse(pack.stdout) as Array<{ filename: string }>)[0]!.filename);
  const app = path.join(dir, 'app');
  const installed = path.join(app, 'node_modules', 'viewstamp');
  fs.mkdirSync(installed, { recursive: true });
  const untar = spawnSync('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'], { encoding: 'utf8' });
  t.equal(untar.status, 0, `tar: ${untar.stderr}`);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }));
  const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')) as PackedManifest;
  const dependencies = Object.keys(manifest.dependencies ?? {});
  // The consumer's own dependencies, as npm would install them: the package's, plus the type
  // packages a TypeScript consumer adds.
  for (const name of [...dependencies, '@types/node', '@types/debug']) {
    const target = path.join(app, 'node_modules', name);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules', name), target, 'dir');
  }
  const shipped = filesUnder(installed);

  await t.test('what npm needs to install it is in the package', async (t) => {
    const builtins = new Set(builtinModules);
    const undeclared = new Set<string>();
    for (const file of shipped.filter((f) => f.endsWith('.js'))) {
      const text = fs.readFileSync(path.join(installed, file), 'utf8');
      for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) {
        const specifier = match[1] ?? match[2]!;
        if (specifier.startsWith('.') || specifier.startsWith('node:') || builtins.has(specifier)) continue;
        if (!dependencies.includes(packageOf(specifier))) undeclared.add(`${file}: ${specifier}`);
      }
    }
    t.same([...undeclared], [], 'every bare import is a built-in or a declared dependency');
    t.ok(dependencies.length > 0, 'the package declares its dependencies');

    const programs = Object.entries(manifest.bin ?? {});
    t.ok(programs.length >= 5, 'the programs are named in bin');
    for (const [name, file] of programs) {
      const script = path.join(installed, file);
      t.ok(fs.existsSync(script) && fs.readFileSync(script, 'utf8').startsWith('#!/usr/bin/env node'), `${name}: ${file} shipped, with a node shebang`);
    }

    const unshipped: string[] = [];
    for (const map of shipped.filter((f) => f.endsWith('.js.map'))) {
      const { sources } = JSON.parse(fs.readFileSync(path.join(installed, map), 'utf8')) as { sources: string[] };
      for (const source of sources) {
        const target = path.join(installed, path.dirname(map), source);
        if (!target.startsWith(installed + path.sep) || !fs.existsSync(target)) unshipped.push(`${map}: ${source}`);
      }
    }
    t.ok(shipped.some((f) => f.endsWith('.js.map')), 'source maps are shipped');
    t.same(unshipped, [], 'every source map names only shipped files');
    for (const readme of ['README.md', 'lib/README.md', 'paxos/README.md', 'rsm/README.md', 'lockserver/README.md', 'tester/README.md']) {
      t.ok(shipped.includes(readme), `${readme} is shipped`);
    }
    t.notOk(shipped.some((f) => f.startsWith('dist/test/') || f.startsWith('test/')), 'the tests are not shipped');
  });

  await t.test("the README's example runs against the installed start_cluster", async (t) => {
    const base = await freeBasePort();
    const startCluster = path.join(installed, manifest.bin!.start_cluster!);
    const cluster = spawn(process.execPath, [startCluster, '--base-port', String(base), '--log-dir', path.join(dir, 'logs')], {
      cwd: app,
      env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    pids.add(cluster.pid!);
    let output = '';
    cluster.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    cluster.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const deadline = Date.now() + 90_000;
    while (!/^Try, in another terminal/m.test(output)) {
      if (Date.now() > deadline || cluster.exitCode !== null) throw new Error(`start_cluster did not come up:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const match of output.matchAll(/\(pid (\d+)\)$/gm)) pids.add(Number(match[1]));

    const example = readmeBlock('example');
    t.match(example, /from 'viewstamp'/, 'the example imports the package by its name');
    const moved = example.replace(/\b377([2-7])\b/g, (_, digit: string) => String(base + Number(digit) - 2));
    fs.writeFileSync(path.join(app, 'example.mjs'), moved);
    const run = spawnSync(process.execPath, ['example.mjs'], { cwd: app, encoding: 'utf8', timeout: 60_000, env: { ...process.env, RPC_LOSSY: '' } });
    t.equal(run.status, 0, `example.mjs exits 0: ${run.stderr}`);
    const held = /^holding orders with fencing token (\d+)$/m.exec(run.stdout);
    const last = /^(\d+)$/m.exec(run.stdout);
    t.ok(held, `it prints the hold: ${run.stdout}`);
    t.ok(last, 'it prints the token withLock returns');
    // Nobody else wants the lock, so the client keeps it cached between the holds, and a re-grant
    // from the cache carries the token of the client's hold: never lower, never 0.
    if (held && last) t.ok(Number(held[1]) >= 1 && Number(last[1]) >= Number(held[1]), `tokens ${held[1]} then ${last[1]}`);

    // The lock_tester line start_cluster prints works from the consumer's folder as it is.
    const printed = new RegExp(`^  (node \\S+lock_tester\\.js ${base})\\s`, 'm').exec(output);
    t.ok(printed, 'start_cluster prints how to run lock_tester from here');
    if (printed) {
      t.match(printed[1], /^node node_modules\/viewstamp\//, `${printed[1]}: the installed script`);
      const tester = spawnSync('sh', ['-c', `${printed[1]} 1`], { cwd: app, encoding: 'utf8', timeout: 120_000, env: { ...process.env, RPC_LOSSY: '' } });
      t.match(`${tester.stdout}${tester.stderr}`, /passed all tests successfully/, `${printed[1]} 1 passes`);
    }

    cluster.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => (cluster.exitCode !== null ? resolve(cluster.exitCode) : cluster.on('exit', (c) => resolve(c))));
    t.equal(code, 0, 'start_cluster stops on Ctrl-C');
  });

  await t.test('a TypeScript consumer type-checks against the shipped declarations', async (t) => {
    fs.writeFileSync(
      path.join(app, 'consumer.ts'),
      [
        "import { connect, LockError, type Lock, type LockClient } from 'viewstamp';",
        "import type { StateMachine } from 'viewstamp/rsm';",
        "import * as sim from 'viewstamp/sim';",
        '',
        "const locks: LockClient = await connect({ members: ['127.0.0.1:3772'], session: { ttlMs: 10_000 } });",
        '{',
        "  await using lock = await locks.acquire('orders', { timeoutMs: 1_000 });",
        '  const token: number = lock.token;',
        '  const name: string = lock.name;',
        '  console.log(name, token, lock.signal.aborted);',
        '}',
        "const maybe: Lock | null = await locks.tryAcquire('orders');",
        'await maybe?.release();',
        "const doubled: number = await locks.withLock('orders', (held) => held.token * 2);",
        'console.log(doubled, LockError.name, Object.keys(sim).length);',
        'export type Service = StateMachine;',
        'await locks.close();',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022', 'esnext.disposable'], types: ['node'], strict: true, noEmit: true },
        files: ['consumer.ts'],
      }),
    );
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    t.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
    // The check can fail: a misuse of the API is reported.
    fs.appendFileSync(path.join(app, 'consumer.ts'), "const wrong: string = (await locks.acquire('orders')).token;\n");
    const misuse = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    t.not(misuse.status, 0, 'a token used as a string is a type error');
    t.match(misuse.stdout, /TS2322/, 'reported as an assignment error');
  });
});
