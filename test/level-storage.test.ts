import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Storage } from '../lib/env.js';
import { LARGE_VALUE_BYTES, openLevelStorage } from '../lib/level-storage.js';

/** What the helpers need of a tap test. */
interface Cleanup {
  teardown(fn: () => unknown): void;
}

/** A fresh directory under the OS temp dir, removed when the test ends. */
async function tempDir(t: Cleanup): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'viewstamp-level-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const b = (...values: number[]): Uint8Array => Uint8Array.from(values);

async function open(t: Cleanup, directory: string): Promise<Storage> {
  const storage = await openLevelStorage(directory);
  t.teardown(() => storage.close());
  return storage;
}

t.test('write, get and list', async (t) => {
  // A nested directory that does not exist yet is created.
  const storage = await open(t, path.join(await tempDir(t), 'node', '3772'));
  t.equal(await storage.get('missing'), undefined);

  await storage.write(
    [
      { type: 'put', key: 'acc/2', value: b(2) },
      { type: 'put', key: 'acc/1', value: b(1) },
      { type: 'put', key: 'acc/\u{1F600}', value: b(9) }, // beyond U+FFFF right after the prefix
      { type: 'put', key: 'acc', value: b(0) },
      { type: 'put', key: 'acd', value: b(3) },
      { type: 'put', key: 'ab', value: b(4) },
      { type: 'put', key: 'gone', value: b(5) },
    ],
    { sync: false },
  );
  await storage.write([{ type: 'del', key: 'gone' }], { sync: false });

  t.same(await storage.get('acc/1'), b(1));
  t.equal(await storage.get('gone'), undefined);
  t.same(await storage.list('acc/'), [
    ['acc/1', b(1)],
    ['acc/2', b(2)],
    ['acc/\u{1F600}', b(9)],
  ]);
  t.same(
    (await storage.list('')).map(([key]) => key),
    ['ab', 'acc', 'acc/1', 'acc/2', 'acc/\u{1F600}', 'acd'],
  );
  t.same(await storage.list('zzz'), []);
  const value = await storage.get('acc/2');
  t.equal(value?.constructor, Uint8Array, 'values are plain Uint8Arrays, not Buffers');
});

t.test('a batch is atomic: a put and a del in one write', async (t) => {
  const storage = await open(t, await tempDir(t));
  await storage.write([{ type: 'put', key: 'k', value: b(1) }], { sync: true });
  await storage.write(
    [
      { type: 'del', key: 'k' },
      { type: 'put', key: 'k2', value: b(2) },
    ],
    { sync: true },
  );
  t.same(await storage.list('k'), [['k2', b(2)]]);
});

t.test('synced data survives close and reopen', async (t) => {
  const dir = await tempDir(t);
  const first = await openLevelStorage(dir);
  await first.write([{ type: 'put', key: 'promise/1', value: b(7, 7) }], { sync: true });
  await first.close();
  await first.close(); // idempotent
  await t.rejects(first.get('promise/1'), { code: 'STORAGE_FAILED' }, 'use after close fails cleanly');
  await t.rejects(first.write([{ type: 'put', key: 'promise/2', value: new Uint8Array([1]) }], { sync: true }), { code: 'STORAGE_FAILED' }, 'a write after close fails cleanly');

  const second = await open(t, dir);
  t.same(await second.get('promise/1'), b(7, 7));
});

t.test('a second open of the same directory fails with STORAGE_LOCKED', async (t) => {
  const dir = await tempDir(t);
  await open(t, dir);
  const error = await openLevelStorage(dir).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.match(error, { name: 'ViewstampError', code: 'STORAGE_LOCKED' });
  t.ok((error as Error).cause, 'wraps the LevelDB error');
});

// Large values (LARGE_VALUE_BYTES and up) live in files of their own under values/.

const large = (fill: number, extra = 0): Uint8Array => new Uint8Array(LARGE_VALUE_BYTES + extra).fill(fill);
const valueFiles = async (dir: string): Promise<string[]> => (await readdir(path.join(dir, 'values'))).sort();

t.test('large values: get, list in key order among small ones, overwrite and delete, one file each', async (t) => {
  const dir = await tempDir(t);
  const storage = await open(t, dir);
  await storage.write(
    [
      { type: 'put', key: 'ckpt', value: large(1) },
      { type: 'put', key: 'log/2', value: b(2) },
      { type: 'put', key: 'log/1', value: large(3, 5) },
      { type: 'put', key: 'log/3', value: b(4) },
    ],
    { sync: true },
  );
  t.same(await storage.get('ckpt'), large(1));
  t.same((await storage.list('log/')).map(([key, value]) => [key, value.length]), [['log/1', LARGE_VALUE_BYTES + 5], ['log/2', 1], ['log/3', 1]]);
  t.same((await storage.list('')).map(([key]) => key), ['ckpt', 'log/1', 'log/2', 'log/3'], 'list("") shows no name records');
  t.equal((await valueFiles(dir)).length, 2, 'a file per large value');
  t.equal((await storage.get('ckpt'))?.constructor, Uint8Array, 'a plain Uint8Array');

  // large → large → small → large → deleted: each step reads back, and dropped files go.
  await storage.write([{ type: 'put', key: 'ckpt', value: large(5) }], { sync: true });
  t.same(await storage.get('ckpt'), large(5));
  t.equal((await valueFiles(dir)).length, 2, 'the replaced file is gone after a synced write');
  await storage.write([{ type: 'put', key: 'ckpt', value: b(6) }], { sync: true });
  t.same(await storage.get('ckpt'), b(6));
  await storage.write([{ type: 'put', key: 'ckpt', value: large(7) }], { sync: false });
  t.same(await storage.get('ckpt'), large(7));
  await storage.write([{ type: 'del', key: 'ckpt' }, { type: 'del', key: 'log/1' }], { sync: false });
  t.equal(await storage.get('ckpt'), undefined);
  t.same((await storage.list('')).map(([key]) => key), ['log/2', 'log/3']);
  t.equal((await valueFiles(dir)).length, 2, 'files dropped by unsynced writes stay until a synced one');
  await storage.write([{ type: 'put', key: 'x', value: b(1) }], { sync: true });
  t.same(await valueFiles(dir), [], 'and then go');
});

t.test('large values: a write after a large one never lands before it', async (t) => {
  const dir = await tempDir(t);
  const storage = await open(t, dir);
  // Not awaited in between: the small put is issued while the large value is being written.
  const first = storage.write([{ type: 'put', key: 'k', value: large(1) }], { sync: false });
  const second = storage.write([{ type: 'put', key: 'k', value: b(2) }], { sync: false });
  const third = storage.write([{ type: 'del', key: 'other' }, { type: 'put', key: 'k2', value: large(3) }], { sync: true });
  await Promise.all([first, second, third]);
  t.same(await storage.get('k'), b(2), 'the later small value wins');
  t.same(await storage.get('k2'), large(3));
  t.equal((await valueFiles(dir)).length, 1, 'k\'s file is gone, k2\'s stays');
});

t.test('large values survive reopen; files no record names, and .tmp files, are removed at open', async (t) => {
  const dir = await tempDir(t);
  const first = await openLevelStorage(dir);
  await first.write([{ type: 'put', key: 'ckpt', value: large(9) }], { sync: true });
  await first.close();
  // What a crash leaves: a file written for a batch that was lost, and one half written.
  await writeFile(path.join(dir, 'values', '77'), 'orphan');
  await writeFile(path.join(dir, 'values', '78.tmp'), 'torn');
  const second = await open(t, dir);
  t.same(await second.get('ckpt'), large(9));
  t.equal((await valueFiles(dir)).length, 1, 'only the named file is left');
  // New files get numbers past every file seen, so an orphan's number is never reused.
  await second.write([{ type: 'put', key: 'next', value: large(1) }], { sync: true });
  t.ok((await valueFiles(dir)).every((file) => Number(file) < 77 || Number(file) > 78), 'numbers past 78');
});

t.test('large values: a process killed after an unsynced overwrite leaves one consistent value and no stray file', async (t) => {
  const dir = await tempDir(t);
  const moduleUrl = new URL('../lib/level-storage.js', import.meta.url).href;
  const script = `
    const { openLevelStorage, LARGE_VALUE_BYTES } = await import(${JSON.stringify(moduleUrl)});
    const s = await openLevelStorage(${JSON.stringify(dir)});
    await s.write([{ type: 'put', key: 'ckpt', value: new Uint8Array(LARGE_VALUE_BYTES).fill(1) }], { sync: true });
    await s.write([{ type: 'put', key: 'ckpt', value: new Uint8Array(LARGE_VALUE_BYTES).fill(2) }], { sync: false });
    process.stdout.write('written\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the writer did not report within 20 s')), 20_000);
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('written')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.equal((await valueFiles(dir)).length, 2, 'before reopening: the replaced file was not unlinked (its batch was unsynced)');
  const storage = await open(t, dir);
  const value = await storage.get('ckpt');
  // A killed process loses nothing the OS already has, so the unsynced overwrite is there.
  t.same(value, new Uint8Array(LARGE_VALUE_BYTES).fill(2));
  t.equal((await valueFiles(dir)).length, 1, 'the file nothing names any more is removed at open');
});

t.test('keys starting with U+0000 are reserved', async (t) => {
  const storage = await open(t, await tempDir(t));
  await t.rejects(storage.write([{ type: 'put', key: '\u0000large/x', value: b(1) }], { sync: true }), { code: 'STORAGE_FAILED' });
  t.same(await storage.list(''), []);
});
