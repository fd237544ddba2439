import t from 'tap';
import type { Storage } from '../lib/env.js';
import { SimDisk, SimWorld, UNSYNCED_BATCHES_MAX } from '../lib/sim/index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string): Uint8Array => encoder.encode(text);

async function read(storage: Storage, key: string): Promise<string | undefined> {
  const value = await storage.get(key);
  return value === undefined ? undefined : decoder.decode(value);
}

t.test('reads see unsynced writes; values are copied in and out', async (t) => {
  const disk = new SimDisk(new SimWorld(1));
  const storage = disk.open('n1');
  const value = bytes('v1');
  await storage.write([{ type: 'put', key: 'k', value }], { sync: false });
  value.fill(0);
  t.equal(await read(storage, 'k'), 'v1');
  (await storage.get('k'))!.fill(0);
  t.equal(await read(storage, 'k'), 'v1');
  await storage.write([{ type: 'del', key: 'k' }], { sync: false });
  t.equal(await storage.get('k'), undefined);
});

t.test('list(prefix) returns matching entries in key (code point) order', async (t) => {
  const disk = new SimDisk(new SimWorld(2));
  const storage = disk.open('n1');
  const keys = ['p/b', 'q/a', 'p/a', 'p/\u{1F600}', 'p/\uFFFD', 'p/', 'p'];
  await storage.write(keys.map((key) => ({ type: 'put', key, value: bytes(key) })), { sync: true });
  const listed = await storage.list('p/');
  // U+FFFD sorts before U+1F600 in UTF-8 byte order, although not in UTF-16 unit order.
  t.same(listed.map(([key]) => key), ['p/', 'p/a', 'p/b', 'p/\uFFFD', 'p/\u{1F600}']);
  t.same(listed.map(([, value]) => decoder.decode(value)), listed.map(([key]) => key));
  t.same(await storage.list('none'), []);
});

t.test('synced batches survive every crash; unsynced ones are lost as a suffix of whole batches', async (t) => {
  let sawLoss = false;
  let sawKeep = false;
  for (let seed = 0; seed < 200; seed++) {
    const world = new SimWorld(seed);
    const disk = new SimDisk(world);
    const storage = disk.open('n1');
    // Batches 0..9, each writing three keys; batch 4 is synced, the others are not.
    for (let batch = 0; batch < 10; batch++) {
      const ops = ['x', 'y', 'z'].map((name) => ({ type: 'put' as const, key: `${name}${batch}`, value: bytes(`${batch}`) }));
      await storage.write(ops, { sync: batch === 4 });
    }
    storage.crash();
    const reopened = disk.open('n1');
    const present: boolean[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const found = await Promise.all(['x', 'y', 'z'].map((name) => reopened.get(`${name}${batch}`)));
      const count = found.filter((value) => value !== undefined).length;
      t.ok(count === 0 || count === 3, `seed ${seed}: batch ${batch} is atomic`);
      present.push(count === 3);
    }
    t.ok(present.slice(0, 5).every(Boolean), `seed ${seed}: synced batch 4 and all before it survive`);
    const survivors = present.lastIndexOf(true) + 1;
    t.ok(present.slice(0, survivors).every(Boolean), `seed ${seed}: what survives is a prefix`);
    if (survivors < 10) sawLoss = true;
    if (survivors > 5) sawKeep = true;
  }
  t.ok(sawLoss, 'some crash lost unsynced batches');
  t.ok(sawKeep, 'some crash kept unsynced batches');
});

t.test('a synced delete survives a crash', async (t) => {
  const world = new SimWorld(3);
  const disk = new SimDisk(world);
  const storage = disk.open('n1');
  await storage.write([{ type: 'put', key: 'k', value: bytes('v') }], { sync: true });
  await storage.write([{ type: 'del', key: 'k' }], { sync: true });
  storage.crash();
  t.equal(await disk.open('n1').get('k'), undefined);
});

t.test('world.crash(owner) crashes the storage of that name, and it hangs afterwards', async (t) => {
  const world = new SimWorld(4, { keepTrace: true });
  const disk = new SimDisk(world);
  const storage = disk.open('n1');
  await storage.write([{ type: 'put', key: 'k', value: bytes('v') }], { sync: true });
  world.crash('n1');
  let settled = false;
  void storage.get('k').finally(() => (settled = true));
  void storage.write([], { sync: true }).finally(() => (settled = true));
  await world.runFor(1000);
  t.equal(settled, false, 'a dead process never sees its I/O finish');
  t.equal(await read(disk.open('n1'), 'k'), 'v', 'the crash released the name for reopening');
  t.ok(world.traceLines!.some((line) => /disk-crash n1 kept 0\/0/.test(line)));
});

t.test('a synced write whose process dies in the same turn never settles, and nothing throws', async (t) => {
  const world = new SimWorld(6);
  const disk = new SimDisk(world);
  const storage = disk.open('n1');
  storage.syncDelayMs = 5;
  let settled = false;
  // The process writes, then kills itself before its turn ends (a breakpoint): the write was
  // issued, and its sync must not be scheduled on the dead node's clock.
  void storage.write([{ type: 'put', key: 'k', value: bytes('v') }], { sync: true }).finally(() => (settled = true));
  world.crash('n1');
  await world.runFor(1000);
  t.equal(settled, false, 'a dead process never sees its fsync return');
});

t.test('use after close is an error; a clean close keeps unsynced writes', async (t) => {
  const disk = new SimDisk(new SimWorld(5));
  const storage = disk.open('n1');
  await storage.write([{ type: 'put', key: 'k', value: bytes('v') }], { sync: false });
  await storage.close();
  await storage.close();
  await t.rejects(storage.get('k'), { code: 'STORAGE_CLOSED' });
  await t.rejects(storage.write([], { sync: false }), { code: 'STORAGE_CLOSED' });
  const reopened = disk.open('n1');
  reopened.crash();
  t.equal(await read(disk.open('n1'), 'k'), 'v');
  t.same(disk.names(), ['n1']);
});

t.test('only one open storage per name', async (t) => {
  const disk = new SimDisk(new SimWorld(6));
  disk.open('n1');
  t.throws(() => disk.open('n1'), { code: 'STORAGE_LOCKED' });
  t.doesNotThrow(() => disk.open('n2'));
});

t.test('bad ops are refused and change nothing', async (t) => {
  const disk = new SimDisk(new SimWorld(7));
  const storage = disk.open('n1');
  const bad = [
    { type: 'put', key: 'a', value: bytes('1') },
    { type: 'put', key: 'b', value: 'not bytes' },
  ] as never;
  await t.rejects(storage.write(bad, { sync: true }), TypeError);
  t.equal(await storage.get('a'), undefined);
});

t.test('the unsynced list is bounded by writing back its oldest batches', async (t) => {
  const world = new SimWorld(8);
  const disk = new SimDisk(world);
  const storage = disk.open('n1');
  const total = UNSYNCED_BATCHES_MAX + 10;
  for (let i = 0; i < total; i++) {
    await storage.write([{ type: 'put', key: `k${String(i).padStart(5, '0')}`, value: bytes('v') }], { sync: false });
  }
  storage.crash();
  const kept = await disk.open('n1').list('k');
  t.ok(kept.length >= 10, 'the overflow was written back');
  t.same(kept.map(([key]) => key), [...Array(kept.length).keys()].map((i) => `k${String(i).padStart(5, '0')}`));
});
