/**
 * Big-endian marshalling in the classic lab's layout: u8/bool 1 byte, u32/i32 4 bytes, u64 8 bytes
 * (high word first), strings and byte arrays as a u32 length and the raw bytes, lists as a u32
 * count and the elements.
 *
 * The Reader never throws on bad input. A read past the end, an oversized length or a value out of
 * range marks the reader failed, returns a harmless default, and every later read returns defaults
 * too; the caller checks `reader.finish()` (or `reader.error`) once at the end. This keeps decoders
 * short and makes "malformed bytes from the network" an ordinary return value.
 */

const textEncoder = new TextEncoder();
// ignoreBOM: a string that starts with U+FEFF keeps it. Without it the decoder drops a leading
// BOM, so a lock named "\uFEFFx" came back from a state transfer as "x".
const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Strings up to this many UTF-16 units are tried as ASCII first (no encoder call, no allocation). */
const ASCII_FAST_MAX = 256;

/**
 * The UTF-8 length of `value` as TextEncoder would encode it (a lone surrogate becomes U+FFFD,
 * 3 bytes), without encoding it.
 */
export function utf8ByteLength(value: string): number {
  let bytes = 0;
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < value.length && (value.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * The string whose UTF-8 encoding is `bytes`, or undefined when they are not valid UTF-8. A
 * leading U+FEFF is kept. Short ASCII (the names most messages carry) skips the decoder.
 */
export function utf8ToString(bytes: Uint8Array): string | undefined {
  if (bytes.length <= ASCII_FAST_MAX) {
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  try {
    return textDecoder.decode(bytes);
  } catch {
    return undefined;
  }
}

/** 32-bit FNV-1a of bytes[from, to). */
export function fnv1a32(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let hash = 0x811c9dc5;
  for (let i = from; i < to; i++) hash = Math.imul(hash ^ bytes[i]!, 0x0100_0193);
  return hash >>> 0;
}

/**
 * `length` uninitialised bytes as a plain Uint8Array. Below 4 KiB they are carved from Node's
 * shared 8 KiB Buffer pool instead of a backing store of their own: every message is a Writer
 * (and a frame), and a malloc plus a free per small array was about a sixth of a replica's CPU
 * (perf: _int_malloc, malloc_consolidate, the ArrayBuffer sweeper). A small array kept for long
 * keeps its 8 KiB slab alive, so code that stores bytes for long copies them (the primary
 * each request, the at-most-once table each saved reply). Callers write every byte they expose.
 */
export function pooledBytes(length: number): Uint8Array {
  const pooled = Buffer.allocUnsafe(length);
  return new Uint8Array(pooled.buffer, pooled.byteOffset, length);
}

export class Writer {
  private buffer: Uint8Array;
  private length = 0;

  // Bytes are written by hand rather than through a DataView: one Writer is made per message,
  // and a DataView per Writer (and per growth) costs more than the shifts.
  constructor(initialCapacity = 64) {
    this.buffer = pooledBytes(initialCapacity);
  }

  private reserve(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    let capacity = Math.max(1, this.buffer.length * 2);
    while (capacity < this.length + n) capacity *= 2;
    const next = pooledBytes(capacity);
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
  }

  private put32(at: number, value: number): void {
    const buffer = this.buffer;
    buffer[at] = value >>> 24;
    buffer[at + 1] = value >>> 16;
    buffer[at + 2] = value >>> 8;
    buffer[at + 3] = value;
  }

  u8(value: number): this {
    this.reserve(1);
    this.buffer[this.length] = value;
    this.length += 1;
    return this;
  }

  bool(value: boolean): this {
    return this.u8(value ? 1 : 0);
  }

  u32(value: number): this {
    this.reserve(4);
    this.put32(this.length, value >>> 0);
    this.length += 4;
    return this;
  }

  i32(value: number): this {
    this.reserve(4);
    this.put32(this.length, value | 0);
    this.length += 4;
    return this;
  }

  /** A u64 on the wire; values must be safe non-negative integers (≤ 2^53 − 1). */
  u64(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`u64 out of range: ${value}`);
    this.u32(Math.floor(value / 0x1_0000_0000));
    return this.u32(value % 0x1_0000_0000);
  }

  bytes(value: Uint8Array): this {
    return this.u32(value.length).raw(value);
  }

  /** The UTF-8 bytes of `value` (as TextEncoder encodes it), length first. */
  string(value: string): this {
    const units = value.length;
    if (units <= ASCII_FAST_MAX) {
      this.reserve(4 + units);
      const buffer = this.buffer;
      const start = this.length + 4;
      let i = 0;
      for (; i < units; i++) {
        const unit = value.charCodeAt(i);
        if (unit >= 0x80) break;
        buffer[start + i] = unit;
      }
      if (i === units) {
        this.put32(this.length, units);
        this.length = start + units;
        return this;
      }
    }
    // At most 3 bytes per UTF-16 unit (a surrogate pair: 2 units, 4 bytes).
    this.reserve(4 + 3 * units);
    const { written } = textEncoder.encodeInto(value, this.buffer.subarray(this.length + 4));
    this.put32(this.length, written);
    this.length += 4 + written;
    return this;
  }

  /** `value` as it is: no length (for a section whose layout the reader knows). */
  raw(value: Uint8Array): this {
    this.reserve(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
    return this;
  }

  list<T>(values: readonly T[], writeOne: (writer: this, value: T) => void): this {
    this.u32(values.length);
    for (const value of values) writeOne(this, value);
    return this;
  }

  /** The bytes written so far (a copy-free view; do not write to the Writer afterwards). */
  finish(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

export class Reader {
  private offset = 0;
  /** Why decoding failed, or undefined while it has not. */
  error: string | undefined;

  constructor(private readonly buffer: Uint8Array) {
  }

  get remaining(): number {
    return this.buffer.length - this.offset;
  }

  /** Marks the reader failed (first reason wins). Decoders use it for semantic checks too. */
  fail(reason: string): void {
    if (this.error === undefined) this.error = reason;
  }

  private take(n: number, what: string): number | undefined {
    if (this.error !== undefined) return undefined;
    if (this.remaining < n) {
      this.fail(`truncated ${what} at offset ${this.offset}`);
      return undefined;
    }
    const at = this.offset;
    this.offset += n;
    return at;
  }

  /** The big-endian 32 bits at `at`, as a signed int. */
  private get32(at: number): number {
    const b = this.buffer;
    return (b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!;
  }

  u8(): number {
    const at = this.take(1, 'u8');
    return at === undefined ? 0 : this.buffer[at]!;
  }

  bool(): boolean {
    const value = this.u8();
    if (value > 1) this.fail(`bad bool ${value}`);
    return value === 1;
  }

  u32(): number {
    const at = this.take(4, 'u32');
    return at === undefined ? 0 : this.get32(at) >>> 0;
  }

  i32(): number {
    const at = this.take(4, 'i32');
    return at === undefined ? 0 : this.get32(at);
  }

  u64(): number {
    const high = this.u32();
    const low = this.u32();
    const value = high * 0x1_0000_0000 + low;
    if (!Number.isSafeInteger(value)) {
      this.fail('u64 beyond 2^53');
      return 0;
    }
    return value;
  }

  /**
   * The bytes not read yet, as a view (nothing consumed; empty once failed). For a section that a
   * decoder walks itself; it then consumes what it used with `skip`.
   */
  rest(): Uint8Array {
    return this.error !== undefined ? new Uint8Array(0) : this.buffer.subarray(this.offset);
  }

  /** Consumes `n` bytes unread (fails past the end). */
  skip(n: number): void {
    this.take(n, 'section');
  }

  /** A length-prefixed byte array; the result is a view into the input, not a copy. */
  bytes(maxLength = Number.MAX_SAFE_INTEGER): Uint8Array {
    const length = this.u32();
    if (length > maxLength) {
      this.fail(`byte string of ${length} exceeds limit ${maxLength}`);
      return new Uint8Array(0);
    }
    const at = this.take(length, 'bytes');
    return at === undefined ? new Uint8Array(0) : this.buffer.subarray(at, at + length);
  }

  string(maxLength = Number.MAX_SAFE_INTEGER): string {
    const raw = this.bytes(maxLength);
    if (this.error !== undefined) return '';
    const value = utf8ToString(raw);
    if (value === undefined) this.fail('invalid utf-8');
    return value ?? '';
  }

  /** A counted list. The count is checked against the bytes left so a forged count cannot allocate. */
  list<T>(readOne: (reader: this) => T, minElementBytes = 1, maxCount = Number.MAX_SAFE_INTEGER): T[] {
    const count = this.u32();
    if (count > maxCount || count * minElementBytes > this.remaining) {
      this.fail(`list count ${count} impossible here`);
      return [];
    }
    const out: T[] = [];
    for (let i = 0; i < count && this.error === undefined; i++) out.push(readOne(this));
    return out;
  }

  /** Succeeds only if nothing failed and every byte was consumed. */
  finish<T>(value: T): Decoded<T> {
    if (this.error === undefined && this.remaining !== 0) this.fail(`${this.remaining} trailing bytes`);
    if (this.error !== undefined) return { ok: false, reason: this.error };
    return { ok: true, value };
  }
}

/** Decodes `bytes` with `read`, requiring that all bytes are consumed. Never throws. */
export function decode<T>(bytes: Uint8Array, read: (reader: Reader) => T): Decoded<T> {
  const reader = new Reader(bytes);
  const value = read(reader);
  return reader.finish(value);
}

/** Encodes with a fresh Writer. */
export function encode(write: (writer: Writer) => void): Uint8Array {
  const writer = new Writer();
  write(writer);
  return writer.finish();
}
