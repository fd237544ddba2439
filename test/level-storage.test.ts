import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Storage } from '../lib/env.js';
import { openLevelStorage } from '../lib/level-storage.js';

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
