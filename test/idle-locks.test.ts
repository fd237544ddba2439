/**
 * IdleLocks (lockserver/idle-locks.ts) against a Map model: the same answers, the same order, the
 * same marshalled bytes as a counted list of (string, u64) written entry by entry, and invariants
 * after every step; readFrom refuses every malformed section without throwing.
 */
import fc from 'fast-check';
import t from 'tap';
import { Reader, Writer, decode, encode } from '../lib/codec.js';
import { IdleLocks } from '../lockserver/idle-locks.js';

/** The model's bytes: what marshalState wrote when the idle locks were a Map. */
function modelBytes(model: Map<string, number>): Uint8Array {
  return encode((w) => w.list([...model], (w2, [name, grants]) => w2.string(name).u64(grants)));
}

function tableBytes(table: IdleLocks): Uint8Array {
  const writer = new Writer();
  table.writeTo(writer);
  return writer.finish();
}

function read(bytes: Uint8Array, maxCount = 1_000_000): { table: IdleLocks; error: string | undefined; remaining: number } {
  const reader = new Reader(bytes);
  const table = IdleLocks.readFrom(reader, maxCount);
  return { table, error: reader.error, remaining: reader.remaining };
}

type Op =
  | { kind: 'add'; name: string; grants: number }
  | { kind: 'take'; name: string }
  | { kind: 'get'; name: string }
  | { kind: 'dropOldest' }
  | { kind: 'roundTrip' };

// Few names, so adds, takes and lookups meet; some non-ASCII, one with a leading U+FEFF, one of
// the full 256 bytes; long runs of adds and takes to reach compaction.
const names = ['a', 'b', 'lock-1', 'lock-2', '17', 'héllo', '日本', '\uFEFFx', '🙂', 'x'.repeat(256), ...Array.from({ length: 40 }, (_, i) => `n${i}`)];
const nameArb = fc.constantFrom(...names);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('add' as const), name: nameArb, grants: fc.oneof(fc.nat(3), fc.maxSafeNat()) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('take' as const), name: nameArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('get' as const), name: fc.oneof(nameArb, fc.string({ maxLength: 300 })) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'dropOldest' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'roundTrip' as const }) },
);

function run(ops: readonly Op[]): boolean {
  const model = new Map<string, number>();
  let table = new IdleLocks();
  for (const op of ops) {
    switch (op.kind) {
      case 'add':
        if (model.has(op.name)) continue; // a precondition of add
        model.set(op.name, op.grants);
        table.add(op.name, op.grants);
        break;
      case 'take': {
        const expected = model.get(op.name);
        model.delete(op.name);
        if (table.take(op.name) !== expected) return false;
        break;
      }
      case 'get':
        if (table.get(op.name) !== model.get(op.name) || table.has(op.name) !== model.has(op.name)) return false;
        break;
      case 'dropOldest': {
        const oldest = model.keys().next();
        if (table.oldest() !== (oldest.done ? undefined : oldest.value)) return false;
        if (oldest.done) continue;
        model.delete(oldest.value);
        table.dropOldest();
        break;
      }
      case 'roundTrip': {
        const back = read(tableBytes(table));
        if (back.error !== undefined || back.remaining !== 0) return false;
        table = back.table;
        break;
      }
    }
    table.invariants();
    if (table.size !== model.size) return false;
  }
  const bytes = tableBytes(table);
  const expected = modelBytes(model);
  return Buffer.compare(Buffer.from(bytes), Buffer.from(expected)) === 0 && JSON.stringify([...table.entries()]) === JSON.stringify([...model]);
}

t.test('same answers, order and bytes as a Map, for any sequence of operations', async (t) => {
  fc.assert(fc.property(fc.array(opArb, { maxLength: 300 }), run), { numRuns: 500 });
  t.pass('500 sequences');
});

t.test('churn past the compaction threshold: FIFO eviction, and taking every other lock', async (t) => {
  const model = new Map<string, number>();
  const table = new IdleLocks();
  const check = (what: string): void => {
    table.invariants();
    t.equal(Buffer.compare(Buffer.from(tableBytes(table)), Buffer.from(modelBytes(model))), 0, `${what}: bytes as the Map's`);
  };
  // A full table of 2,000 evicting its oldest on every add, 20,000 times (about 600 KB of entries
  // through a table of 60 KB: the dead head is dropped, the arena reused).
  for (let i = 0; i < 22_000; i++) {
    const name = `lock-${i}-${'p'.repeat(i % 17)}`;
    table.add(name, i);
    model.set(name, i);
    if (model.size > 2_000) {
      const oldest = model.keys().next().value as string;
      t.equal(table.oldest(), oldest);
      table.dropOldest();
      model.delete(oldest);
    }
    if (i % 5_000 === 0) table.invariants();
  }
  check('after FIFO churn');
  // Taking every other lock leaves dead entries in the middle; then more adds.
  let taken = 0;
  for (const name of [...model.keys()].filter((_, i) => i % 2 === 0)) {
    if (table.take(name) !== model.get(name)) t.fail(`take ${name}`);
    model.delete(name);
    taken++;
  }
  t.equal(taken, 1_000);
  check('after taking every other lock');
  for (let i = 0; i < 10_000; i++) {
    const name = `again-${i}`;
    table.add(name, 1);
    model.set(name, 1);
    if (i % 3 === 0) {
      const victim = `again-${i - 1}`;
      if (model.has(victim)) {
        t.equal(table.take(victim), 1);
        model.delete(victim);
      }
    }
  }
  check('after mixed adds and takes');
  for (const [name, grants] of model) if (table.get(name) !== grants) t.fail(`get ${name}`);
  // Emptied, it starts over.
  while (table.size > 0) table.dropOldest();
  table.invariants();
  t.equal(table.oldest(), undefined);
  t.same([...table.entries()], []);
  table.add('fresh', 7);
  t.equal(table.get('fresh'), 7);
});

t.test('readFrom: the bytes of a Map of names round-trip, and the reader goes on after the section', async (t) => {
  const model = new Map<string, number>([['a', 1], ['héllo', 2 ** 53 - 1], ['\uFEFFx', 0]]);
  const bytes = encode((w) => w.list([...model], (w2, [n, g]) => w2.string(n).u64(g)).u32(0xdeadbeef));
  const reader = new Reader(bytes);
  const table = IdleLocks.readFrom(reader, 10);
  t.equal(reader.u32(), 0xdeadbeef, 'the next field reads right after the section');
  t.same(reader.finish(undefined), { ok: true, value: undefined });
  t.same([...table.entries()], [...model]);
  t.equal(table.get('\uFEFFx'), 0, 'a leading U+FEFF is part of the name');
  t.equal(table.get('x'), undefined);
});

t.test('readFrom refuses malformed sections (the reader fails, nothing throws)', async (t) => {
  const entry = (name: Uint8Array, high = 0, low = 1): Uint8Array => encode((w) => w.bytes(name).u32(high).u32(low));
  const section = (...entries: Uint8Array[]): Uint8Array => encode((w) => {
    w.u32(entries.length);
    for (const e of entries) w.raw(e);
  });
  const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
  const cases: Array<[string, Uint8Array, RegExp, number?]> = [
    // One trailing byte, so the count check (13 bytes per entry at least) lets it through.
    ['an empty name', encode((w) => w.raw(section(entry(new Uint8Array(0)))).u8(0)), /bad name length 0/],
    ['a 257-byte name', section(entry(ascii('x'.repeat(257)))), /bad name length 257/],
    ['a name that is not UTF-8', section(entry(new Uint8Array([0x61, 0xff]))), /not UTF-8/],
    ['a lone continuation byte', section(entry(new Uint8Array([0x80]))), /not UTF-8/],
    ['a grant count beyond 2^53', section(entry(ascii('a'), 0x20_0000, 0)), /beyond 2\^53/],
    ['a name twice', section(entry(ascii('a')), entry(ascii('b')), entry(ascii('a'))), /idle lock a twice/],
    ['more entries than allowed', section(entry(ascii('a')), entry(ascii('b'))), /impossible/, 1],
    ['a count larger than the bytes', encode((w) => w.u32(1_000).raw(entry(ascii('a')))), /impossible/],
    ['a truncated entry', section(entry(ascii('abc'))).subarray(0, 12), /bad name length|truncated|impossible/],
    ['a length word with the top bit set', encode((w) => w.u32(1).u32(0x8000_0001).u8(0x61).u32(0).u32(1)), /bad name length/],
    ['nothing at all', new Uint8Array(0), /truncated/],
  ];
  for (const [what, bytes, reason, maxCount] of cases) {
    const result = read(bytes, maxCount);
    t.match(result.error, reason, what);
    t.equal(result.table.size, 0, `${what}: an empty table`);
  }
  // And arbitrary bytes never throw.
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const result = read(bytes);
      if (result.error === undefined) result.table.invariants();
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass('2000 random sections decoded or refused');
});

t.test('lookups of names that can never be lock names answer "not idle"', async (t) => {
  const table = new IdleLocks();
  table.add('a', 1);
  for (const name of ['', 'x'.repeat(257), 'é'.repeat(129)]) {
    t.equal(table.get(name), undefined, `get ${JSON.stringify(name.slice(0, 8))}…`);
    t.equal(table.take(name), undefined);
  }
  t.throws(() => table.add('', 1), /bad lock name/);
  t.throws(() => table.add('a', 1), /idle already/);
  t.throws(() => table.add('b', -1), /bad grant count/);
  t.equal(decode(tableBytes(table), (r) => IdleLocks.readFrom(r, 10).size).ok, true);
});
