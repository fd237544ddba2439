/**
 * Framing for a byte stream (TCP). A frame is a u32 big-endian length followed by the payload, and
 * the length COUNTS ITSELF, as in the classic lab's PDUs: total = 4 + payload length. So a valid
 * length is ≥ 4 and an empty payload is the 4-byte frame 00 00 00 04.
 *
 * The decoder is the boundary where bytes from an untrusted peer become messages, so it never
 * throws, never allocates more than the bytes actually received (an announced length is only a
 * claim), and turns a bad length into an error result after which the caller closes the
 * connection: a stream with a bad length prefix has lost frame alignment and cannot be resynced.
 */

import { pooledBytes } from './codec.js';

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

/** Largest frame (header included) accepted by default: 10 MiB, the lab's limit. */
export const DEFAULT_MAX_FRAME_BYTES = 10 * 1024 * 1024;

/** Largest total a u32 length can announce. */
const MAX_U32 = 0xffff_ffff;

/** Initial and "idle" capacity of the decoder's buffer; it shrinks back to this when drained. */
const IDLE_BUFFER_BYTES = 64 * 1024;

/**
 * Wraps `payload` in a frame. Throws RangeError if the payload cannot be described by a u32 length
 * (a programmer error: senders must respect the receiver's far smaller frame limit anyway).
 */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const total = FRAME_HEADER_BYTES + payload.length;
  if (total > MAX_U32) throw new RangeError(`frame of ${total} bytes exceeds the u32 length field`);
  // From the shared pool (pooledBytes): a frame lives only until the socket has written it.
  const frame = pooledBytes(total);
  frame[0] = total >>> 24;
  frame[1] = total >>> 16;
  frame[2] = total >>> 8;
  frame[3] = total;
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

export interface FrameResult {
  /** Payloads completed by this push, in stream order (fresh copies, owned by the caller). */
  readonly frames: Uint8Array[];
  /** Set when the stream is malformed; the connection must then be closed. Sticky. */
  readonly error?: string;
}

/**
 * Reassembles frames from chunks of arbitrary size. Partial input (including a length prefix split
 * across chunks) is kept in one growable buffer with doubling capacity, so a stream of many tiny
 * chunks costs linear copying, not quadratic, and memory stays within about twice the largest frame.
 */
export class FrameDecoder {
  private buffer = new Uint8Array(0);
  /** Unconsumed bytes are buffer[start, end). */
  private start = 0;
  private end = 0;
  private failure: string | undefined;

  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < FRAME_HEADER_BYTES || maxFrameBytes > MAX_U32) {
      throw new RangeError(`maxFrameBytes must be an integer in [${FRAME_HEADER_BYTES}, 2^32 - 1], got ${maxFrameBytes}`);
    }
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes(): number {
    return this.end - this.start;
  }

  /**
   * Feeds the next chunk of the stream. The chunk is read during this call only (frames are copied
   * out), so the caller may reuse it afterwards.
   */
  push(chunk: Uint8Array): FrameResult {
    if (this.failure !== undefined) return { frames: [], error: this.failure };
    const frames: Uint8Array[] = [];

    // Fast path: nothing buffered, so whole frames are copied straight out of the chunk and only
    // the incomplete tail (if any) is buffered.
    let source = chunk;
    let offset = 0;
    if (this.bufferedBytes > 0) {
      this.append(chunk);
      source = this.buffer;
      offset = this.start;
    }
    const limit = source === chunk ? chunk.length : this.end;
    const view = new DataView(source.buffer, source.byteOffset, source.byteLength);

    while (limit - offset >= FRAME_HEADER_BYTES) {
      const total = view.getUint32(offset);
      if (total < FRAME_HEADER_BYTES || total > this.maxFrameBytes) {
        // Judged on the header alone: a huge announcement is rejected before any of it arrives.
        this.fail(`bad frame length ${total} (must be in [${FRAME_HEADER_BYTES}, ${this.maxFrameBytes}])`);
        return { frames, error: this.failure };
      }
      if (limit - offset < total) break;
      // A copy, not a view: a small message must not pin a large socket chunk or our buffer, and
      // the caller gets a plain Uint8Array even when chunks are Node Buffers (whose slice() is a
      // view, unlike Uint8Array's).
      frames.push(new Uint8Array(source.subarray(offset + FRAME_HEADER_BYTES, offset + total)));
      offset += total;
    }

    if (source === chunk) {
      this.append(chunk.subarray(offset));
    } else {
      this.start = offset;
      if (this.start === this.end) this.reset();
    }
    return { frames };
  }

  private append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const live = this.end - this.start;
    const needed = live + bytes.length;
    if (this.end + bytes.length > this.buffer.length) {
      if (needed <= this.buffer.length) {
        // Room once consumed bytes are dropped. Only the one incomplete frame is ever live here
        // (push consumes every complete frame), and it sits at `start` until consumed, so each
        // byte is moved at most once: copying stays linear in total input.
        this.buffer.copyWithin(0, this.start, this.end);
      } else {
        let capacity = Math.max(this.buffer.length, IDLE_BUFFER_BYTES);
        while (capacity < needed) capacity *= 2;
        const next = new Uint8Array(capacity);
        next.set(this.buffer.subarray(this.start, this.end));
        this.buffer = next;
      }
      this.start = 0;
      this.end = live;
    }
    this.buffer.set(bytes, this.end);
    this.end += bytes.length;
  }

  /** Drained: drop a buffer that grew for a big frame so an idle connection holds little memory. */
  private reset(): void {
    this.start = 0;
    this.end = 0;
    if (this.buffer.length > IDLE_BUFFER_BYTES) this.buffer = new Uint8Array(0);
  }

  private fail(reason: string): void {
    this.failure = reason;
    this.buffer = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
  }
}
