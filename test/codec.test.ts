import fc from 'fast-check';
import t from 'tap';
import { decode, encode, utf8ByteLength } from '../lib/codec.js';

t.test('u64 round trip', async (t) => {
  const bytes = encode((w) => w.u64(2 ** 40 + 5).string('héllo'));
  const back = decode(bytes, (r) => [r.u64(), r.string()] as const);
  t.same(back, { ok: true, value: [2 ** 40 + 5, 'héllo'] });
});

// The Writer writes bytes by hand and strings through an ASCII fast path; these pin its output
// to the layout (big-endian, UTF-8 as TextEncoder encodes it) and the Reader to its inverse.
const textEncoder = new TextEncoder();

t.test('strings: the bytes are TextEncoder\'s, length first, for any string (lone surrogates included)', async (t) => {
  const strings = fc.oneof(fc.string({ unit: 'grapheme-ascii', maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 300 }));
  fc.assert(
    fc.property(strings, (value) => {
      const bytes = encode((w) => w.string(value));
      const expected = textEncoder.encode(value);
      if (bytes.length !== 4 + expected.length) return false;
      if (new DataView(bytes.buffer, bytes.byteOffset).getUint32(0) !== expected.length) return false;
      if (!bytes.subarray(4).every((b, i) => b === expected[i])) return false;
      if (utf8ByteLength(value) !== expected.length) return false;
      const back = decode(bytes, (r) => r.string());
      // A lone surrogate comes back as U+FFFD, exactly as TextDecoder would decode the bytes
      // (keeping a leading U+FEFF: a name is data, not a document with a byte-order mark).
      return back.ok && back.value === new TextDecoder('utf-8', { ignoreBOM: true }).decode(expected);
    }),
    { numRuns: 2000 },
  );
  t.pass('2000 strings');
});

t.test('a string that starts with U+FEFF comes back with it', async (t) => {
  for (const value of ['\uFEFF', '\uFEFFx', '\uFEFF\uFEFFx']) {
    t.same(decode(encode((w) => w.string(value)), (r) => r.string()), { ok: true, value }, JSON.stringify(value));
  }
});

t.test('integers: big-endian, signed and unsigned, and their round trip', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }), fc.integer({ min: 0, max: 255 }), fc.maxSafeNat(), (u, i, b, big) => {
      const bytes = encode((w) => w.u32(u).i32(i).u8(b).u64(big).bool(true));
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (view.getUint32(0) !== u || view.getInt32(4) !== i || view.getUint8(8) !== b) return false;
      if (view.getUint32(9) * 2 ** 32 + view.getUint32(13) !== big) return false;
      const back = decode(bytes, (r) => [r.u32(), r.i32(), r.u8(), r.u64(), r.bool()] as const);
      return back.ok && back.value[0] === u && back.value[1] === i && back.value[2] === b && back.value[3] === big && back.value[4];
    }),
    { numRuns: 2000 },
  );
  t.pass('2000 tuples');
});

t.test('bad UTF-8 is refused, short or long', async (t) => {
  for (const raw of [[0xc3], [0x61, 0xff, 0x62], [...new Array(300).fill(0x61), 0xc3]]) {
    const bytes = new Uint8Array([0, 0, 0, raw.length, ...raw].map((b, i) => (i < 4 ? (raw.length >>> (8 * (3 - i))) & 0xff : b)));
    const back = decode(bytes, (r) => r.string());
    t.same(back, { ok: false, reason: 'invalid utf-8' }, `${raw.length} bytes`);
  }
});
