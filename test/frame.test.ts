import fc from 'fast-check';
import t from 'tap';
import { FrameDecoder, encodeFrame } from '../lib/frame.js';

/** Concatenates arrays. */
function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Cuts `bytes` at the given offsets (any order, duplicates allowed: empty chunks are legal too). */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [0, ...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length];
  const chunks: Uint8Array[] = [];
  for (let i = 1; i < points.length; i++) chunks.push(bytes.subarray(points[i - 1], points[i]));
  return chunks;
}

t.test('the length prefix counts itself', async (t) => {
  t.same([...encodeFrame(new Uint8Array(0))], [0, 0, 0, 4]);
  t.same([...encodeFrame(Uint8Array.of(7, 8))], [0, 0, 0, 6, 7, 8]);
});

t.test('payloads split at arbitrary chunk boundaries decode to the same frames', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      (payloads, cuts) => {
        const decoder = new FrameDecoder();
        const decoded: Uint8Array[] = [];
        for (const chunk of split(concat(payloads.map(encodeFrame)), cuts)) {
          const result = decoder.push(chunk);
          if (result.error !== undefined) return false;
          decoded.push(...result.frames);
        }
        return (
          decoder.bufferedBytes === 0 &&
          decoded.length === payloads.length &&
          decoded.every((frame, i) => Buffer.from(frame).equals(Buffer.from(payloads[i]!)))
        );
      },
    ),
  );
});

t.test('decoded frames are copies: reusing a pushed chunk does not change them', async (t) => {
  const decoder = new FrameDecoder();
  const chunk = encodeFrame(Uint8Array.of(1, 2, 3));
  const head = chunk.slice(0, 5);
  t.same(decoder.push(head).frames, []);
  const tail = chunk.slice(5);
  const [frame] = decoder.push(tail).frames;
  head.fill(0);
  tail.fill(0);
  t.same([...frame!], [1, 2, 3]);
});

t.test('frames cut from Node Buffers are plain copies, not views of the chunk', async (t) => {
  const decoder = new FrameDecoder();
  const chunk = Buffer.from(concat([encodeFrame(Uint8Array.of(1, 2)), encodeFrame(Uint8Array.of(3))]));
  const frames = decoder.push(chunk).frames;
  chunk.fill(0);
  t.same(
    frames.map((f) => [f.constructor, [...f]]),
    [
      [Uint8Array, [1, 2]],
      [Uint8Array, [3]],
    ],
  );
});

t.test('one byte at a time, including the length prefix', async (t) => {
  const decoder = new FrameDecoder();
  const stream = concat([encodeFrame(Uint8Array.of(9)), encodeFrame(new Uint8Array(0)), encodeFrame(Uint8Array.of(1, 2))]);
  const frames: number[][] = [];
  const errors: string[] = [];
  for (const byte of stream) {
    const result = decoder.push(Uint8Array.of(byte));
    if (result.error !== undefined) errors.push(result.error);
    frames.push(...result.frames.map((f) => [...f]));
  }
  t.same(errors, []);
  t.same(frames, [[9], [], [1, 2]]);
});

t.test('random bytes never throw, and an error is sticky', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), fc.integer({ min: 4, max: 1000 }), (chunks, max) => {
      const decoder = new FrameDecoder(max);
      let error: string | undefined;
      for (const chunk of chunks) {
        const result = decoder.push(chunk);
        if (error !== undefined) {
          // After an error nothing more is decoded.
          if (result.error !== error || result.frames.length !== 0) return false;
        }
        error ??= result.error;
        if (result.frames.some((f) => f.length + 4 > max)) return false;
      }
      return true;
    }),
  );
});

t.test('a 4 GB announcement is rejected as soon as its header is complete', async (t) => {
  const decoder = new FrameDecoder();
  t.same(decoder.push(Uint8Array.of(0xff, 0xff)), { frames: [] });
  const result = decoder.push(Uint8Array.of(0xff, 0xff));
  t.same(result.frames, []);
  t.match(result.error, /bad frame length 4294967295/);
  t.equal(decoder.bufferedBytes, 0, 'nothing held for the claimed frame');
});

t.test('lengths below 4 and above the limit are errors; frames before them are delivered', async (t) => {
  for (const bad of [0, 3, 1001]) {
    const decoder = new FrameDecoder(1000);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, bad);
    const result = decoder.push(concat([encodeFrame(Uint8Array.of(5)), header, new Uint8Array(20)]));
    t.same(
      result.frames.map((f) => [...f]),
      [[5]],
      `length ${bad}`,
    );
    t.type(result.error, 'string', `length ${bad}`);
  }
  // The limit counts the header: a frame of exactly max bytes is fine.
  const decoder = new FrameDecoder(10);
  t.same(decoder.push(encodeFrame(new Uint8Array(6))).frames.length, 1);
  t.type(decoder.push(encodeFrame(new Uint8Array(7))).error, 'string');
});

t.test('a frame larger than the idle buffer, arriving in small chunks', async (t) => {
  const payload = new Uint8Array(300_000).map((_, i) => i * 7);
  const decoder = new FrameDecoder();
  const frames: Uint8Array[] = [];
  const errors: string[] = [];
  const stream = concat([encodeFrame(payload), encodeFrame(Uint8Array.of(1))]);
  for (const chunk of split(stream, Array.from({ length: 500 }, (_, i) => i * 611))) {
    const result = decoder.push(chunk);
    if (result.error !== undefined) errors.push(result.error);
    frames.push(...result.frames);
  }
  t.same(errors, []);
  t.equal(frames.length, 2);
  t.ok(Buffer.from(frames[0]!).equals(Buffer.from(payload)));
  t.same([...frames[1]!], [1]);
});
