/**
 * The idle locks of the caching lock server: each lock's name → its grant count, least recently
 * freed first. A replica may remember a million of them, and every checkpoint and every full state
 * transfer carries all of them, so they are kept flat rather than as a Map of strings:
 *
 * - the arena: entries back to back, each `[u32 name length][name, UTF-8][u64 grant count]`,
 *   big-endian. This is exactly the marshalled list's element layout (lib/codec.ts), so
 *   marshalling copies bytes, and unmarshalling checks and copies them and only rebuilds the index.
 * - the index: open addressing with linear probing; a slot holds an entry's arena offset + 1 (0:
 *   empty) and the entry's hash. Load stays ≤ 1/2.
 *
 * Freeing a lock appends its entry at the tail. Taking one out (it became busy, or it is the
 * oldest and the table is full) marks its entry dead by setting the length's top bit, and removes
 * it from the index by backward shift, so lookups never meet tombstones. Dead entries at the head
 * are skipped for good; the others are squeezed out when dead bytes outnumber live ones, or when
 * the arena is full (compaction: one pass, then an index rebuild that rehashes every live name;
 * amortised O(1) per operation, but a pause proportional to the table: about 0.3 s at a million
 * names on the 2-core VM). A full arena without dead entries in the middle only slides down or
 * doubles (one copy, offsets shifted, nothing rehashed), and a growing index places entries
 * again by their stored hashes.
 *
 * Why: with 1,000,000 idle locks on the 2-core VM, inserting the names into a Map alone took about
 * 1 s, a third of unmarshalState's 2.8 s (plus the garbage collector's share of a million small
 * strings), and a rejoin waits for it. Here the names stay bytes until someone asks for them.
 *
 * Determinism: the marshalled bytes depend only on the sequence of operations, as the Map's order
 * did (same layout, same order), so replicas and older checkpoints agree byte for byte.
 */
import { assert } from '../lib/assert.js';
import { fnv1a32, utf8ToString, type Reader, type Writer } from '../lib/codec.js';

/** The longest lock name in UTF-8 bytes (as cache-protocol's MAX_LOCK_NAME_BYTES). */
const MAX_NAME_BYTES = 256;
/** Marks a dead entry in its length word (a live length is ≤ MAX_NAME_BYTES). */
const DEAD_BIT = 0x8000_0000;
/** Bytes of an entry around its name: the length and the grant count. */
const ENTRY_OVERHEAD = 12;
const MIN_SLOTS = 16;
const MIN_ARENA_BYTES = 1024;
/** Dead bytes are squeezed out only past this much, so small tables never compact back and forth. */
const COMPACT_MIN_DEAD_BYTES = 64 * 1024;

const textEncoder = new TextEncoder();

function read32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function write32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

function isAscii(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i]! >= 0x80) return false;
  return true;
}

function decodeName(bytes: Uint8Array, from: number, to: number): string {
  const name = utf8ToString(bytes.subarray(from, to));
  assert(name !== undefined, 'IdleLocks: a name that is not UTF-8');
  return name;
}

function slotsFor(entries: number): number {
  let slots = MIN_SLOTS;
  while (slots < 2 * entries) slots *= 2;
  return slots;
}

export class IdleLocks {
  private arena: Uint8Array;
  /** Offset of the first entry that may be live; every entry before it is dead. */
  private head = 0;
  /** End of the written entries. */
  private tail = 0;
  /** Live entries. */
  private live = 0;
  /** Bytes of dead entries in [head, tail). */
  private deadBytes = 0;
  /**
   * Two words per slot, side by side so a probe touches one cache line: the entry's arena offset
   * + 1 (0: an empty slot), then its hash (so probing and backward shift never rehash a name).
   */
  private index: Uint32Array;
  /** The name being looked up, as UTF-8. */
  private readonly key = new Uint8Array(3 * MAX_NAME_BYTES);

  constructor() {
    this.arena = new Uint8Array(MIN_ARENA_BYTES);
    this.index = new Uint32Array(2 * MIN_SLOTS);
  }

  get size(): number {
    return this.live;
  }

  has(name: string): boolean {
    return this.findSlot(name) >= 0;
  }

  /** The grant count of idle lock `name`, or undefined when it is not idle. */
  get(name: string): number | undefined {
    const slot = this.findSlot(name);
    return slot < 0 ? undefined : this.grantsAt(this.index[2 * slot]! - 1);
  }

  /** Takes `name` out; its grant count, or undefined when it was not idle. */
  take(name: string): number | undefined {
    const slot = this.findSlot(name);
    if (slot < 0) return undefined;
    const offset = this.index[2 * slot]! - 1;
    const grants = this.grantsAt(offset);
    this.removeSlot(slot);
    this.kill(offset);
    return grants;
  }

  /** Appends `name` as the most recently freed lock. It must not be idle already. */
  add(name: string, grants: number): void {
    assert(Number.isSafeInteger(grants) && grants >= 0, `IdleLocks: bad grant count ${grants}`);
    const length = this.encodeKey(name);
    assert(length > 0, `IdleLocks: bad lock name ${name}`);
    const hash = fnv1a32(this.key, 0, length);
    assert(this.findKey(length, hash) < 0, `IdleLocks: ${name} is idle already`);
    const size = ENTRY_OVERHEAD + length;
    this.makeRoom(size);
    const offset = this.tail;
    const arena = this.arena;
    write32(arena, offset, length);
    arena.set(this.key.subarray(0, length), offset + 4);
    write32(arena, offset + 4 + length, Math.floor(grants / 0x1_0000_0000));
    write32(arena, offset + 8 + length, grants % 0x1_0000_0000);
    this.tail += size;
    this.live++;
    if (4 * this.live > this.index.length) this.growIndex();
    this.place(offset, hash);
  }

  /** The least recently freed lock's name, or undefined when there is none. */
  oldest(): string | undefined {
    if (this.live === 0) return undefined;
    const length = read32(this.arena, this.head);
    assert(length <= MAX_NAME_BYTES, 'IdleLocks: the head entry is dead');
    return decodeName(this.arena, this.head + 4, this.head + 4 + length);
  }

  /** Forgets the least recently freed lock (the table is full). */
  dropOldest(): void {
    assert(this.live > 0, 'IdleLocks: dropOldest on an empty table');
    const length = read32(this.arena, this.head);
    const from = this.head + 4;
    const slot = this.findBytes(this.arena, from, length, fnv1a32(this.arena, from, from + length));
    assert(slot >= 0, 'IdleLocks: the head entry is not indexed');
    this.removeSlot(slot);
    this.kill(this.head);
  }

  /** The live entries, least recently freed first (for tests and checkers; decodes every name). */
  *entries(): IterableIterator<[string, number]> {
    for (let at = this.head; at < this.tail; ) {
      const word = read32(this.arena, at);
      const length = word & ~DEAD_BIT;
      if ((word & DEAD_BIT) === 0) yield [decodeName(this.arena, at + 4, at + 4 + length), this.grantsAt(at)];
      at += ENTRY_OVERHEAD + length;
    }
  }

  /** Writes the table as a counted list of (string name, u64 grants), oldest first. */
  writeTo(writer: Writer): void {
    writer.u32(this.live);
    if (this.deadBytes === 0) {
      writer.raw(this.arena.subarray(this.head, this.tail));
      return;
    }
    // Copy maximal runs of live entries.
    let runStart = this.head;
    let at = this.head;
    while (at < this.tail) {
      const word = read32(this.arena, at);
      const size = ENTRY_OVERHEAD + (word & ~DEAD_BIT);
      if ((word & DEAD_BIT) !== 0) {
        if (runStart < at) writer.raw(this.arena.subarray(runStart, at));
        runStart = at + size;
      }
      at += size;
    }
    if (runStart < this.tail) writer.raw(this.arena.subarray(runStart, this.tail));
  }

  /**
   * Reads what `writeTo` wrote: at most `maxCount` entries, each name 1–256 bytes of valid UTF-8,
   * each grant count a safe integer, no name twice. On bad bytes marks `reader` failed (as every
   * Reader read does) and returns an empty table.
   */
  static readFrom(reader: Reader, maxCount: number): IdleLocks {
    const table = new IdleLocks();
    const count = reader.u32();
    if (reader.error !== undefined) return table;
    const bytes = reader.rest();
    if (count > maxCount || count * (ENTRY_OVERHEAD + 1) > bytes.length) {
      reader.fail(`idle lock count ${count} impossible here`);
      return table;
    }
    // One pass: check each entry and index it.
    table.index = new Uint32Array(2 * slotsFor(count));
    // Until the copy below, the table probes the input: the entries indexed so far sit at the
    // same offsets there.
    table.arena = bytes;
    let at = 0;
    for (let i = 0; i < count; i++) {
      if (bytes.length - at < ENTRY_OVERHEAD + 1) {
        reader.fail(`truncated idle lock ${i}`);
        return new IdleLocks();
      }
      const length = read32(bytes, at);
      if (length < 1 || length > MAX_NAME_BYTES || bytes.length - at < ENTRY_OVERHEAD + length) {
        reader.fail(`idle lock ${i}: bad name length ${length}`);
        return new IdleLocks();
      }
      const from = at + 4;
      const to = from + length;
      const hash = fnv1a32(bytes, from, to);
      if (!isAscii(bytes, from, to) && utf8ToString(bytes.subarray(from, to)) === undefined) {
        reader.fail(`idle lock ${i}: name is not UTF-8`);
        return new IdleLocks();
      }
      // A safe integer's high word is below 2^21.
      if (read32(bytes, to) >= 0x20_0000) {
        reader.fail(`idle lock ${i}: grant count beyond 2^53`);
        return new IdleLocks();
      }
      if (table.findBytes(bytes, from, length, hash) >= 0) {
        reader.fail(`idle lock ${decodeName(bytes, from, to)} twice`);
        return new IdleLocks();
      }
      table.place(at, hash);
      at = to + 8;
    }
    // Room for an eighth more, so the first frees after a state transfer do not copy it all.
    table.arena = new Uint8Array(Math.max(at + (at >>> 3), MIN_ARENA_BYTES));
    table.arena.set(bytes.subarray(0, at));
    table.tail = at;
    table.live = count;
    reader.skip(at);
    return table;
  }

  /** Checks the arena and the index against each other; a violation is a bug (AssertionError). */
  invariants(): void {
    assert(0 <= this.head && this.head <= this.tail && this.tail <= this.arena.length, 'IdleLocks: head/tail out of order');
    let live = 0;
    let dead = 0;
    for (let at = this.head; at < this.tail; ) {
      const word = read32(this.arena, at);
      const length = word & ~DEAD_BIT;
      assert(length >= 1 && length <= MAX_NAME_BYTES, `IdleLocks: bad length ${length} at ${at}`);
      assert(at + ENTRY_OVERHEAD + length <= this.tail, `IdleLocks: entry at ${at} runs past the tail`);
      if ((word & DEAD_BIT) !== 0) {
        assert(at !== this.head, 'IdleLocks: the head entry is dead');
        dead += ENTRY_OVERHEAD + length;
      } else {
        live++;
        const hash = fnv1a32(this.arena, at + 4, at + 4 + length);
        const slot = this.findBytes(this.arena, at + 4, length, hash);
        assert(slot >= 0 && this.index[2 * slot] === at + 1, `IdleLocks: live entry at ${at} not indexed`);
      }
      at += ENTRY_OVERHEAD + length;
    }
    assert(live === this.live, `IdleLocks: ${live} live entries, counted ${this.live}`);
    assert(dead === this.deadBytes, `IdleLocks: ${dead} dead bytes, counted ${this.deadBytes}`);
    let indexed = 0;
    for (let word = 0; word < this.index.length; word += 2) if (this.index[word] !== 0) indexed++;
    assert(indexed === this.live, `IdleLocks: ${indexed} indexed, ${this.live} live`);
    assert(4 * this.live <= this.index.length, 'IdleLocks: index over half full');
  }

  // -------------------------------------------------------------------------------------------

  /** Puts `name`'s UTF-8 bytes into `key`; their length, or -1 when it cannot be a lock name. */
  private encodeKey(name: string): number {
    const units = name.length;
    if (units === 0 || units > MAX_NAME_BYTES) return -1;
    const key = this.key;
    for (let i = 0; i < units; i++) {
      const unit = name.charCodeAt(i);
      if (unit >= 0x80) {
        const { written } = textEncoder.encodeInto(name, key);
        return written > MAX_NAME_BYTES ? -1 : written;
      }
      key[i] = unit;
    }
    return units;
  }

  private findSlot(name: string): number {
    const length = this.encodeKey(name);
    return length < 0 ? -1 : this.findKey(length, fnv1a32(this.key, 0, length));
  }

  private findKey(length: number, hash: number): number {
    return this.findBytes(this.key, 0, length, hash);
  }

  /** The slot of the live entry whose name is bytes[from, from + length), or -1. */
  private findBytes(bytes: Uint8Array, from: number, length: number, hash: number): number {
    const index = this.index;
    const mask = (index.length >>> 1) - 1;
    const arena = this.arena;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const stored = index[2 * slot]!;
      if (stored === 0) return -1;
      if (index[2 * slot + 1] !== hash) continue;
      const at = stored - 1;
      if (read32(arena, at) !== length) continue;
      let same = true;
      for (let i = 0; i < length; i++) {
        if (arena[at + 4 + i] !== bytes[from + i]) {
          same = false;
          break;
        }
      }
      if (same) return slot;
    }
  }

  private place(offset: number, hash: number): void {
    const index = this.index;
    const mask = (index.length >>> 1) - 1;
    let slot = hash & mask;
    while (index[2 * slot] !== 0) slot = (slot + 1) & mask;
    index[2 * slot] = offset + 1;
    index[2 * slot + 1] = hash;
  }

  /** Empties `slot`, shifting back later entries of its probe run so no lookup stops early. */
  private removeSlot(slot: number): void {
    const index = this.index;
    const mask = (index.length >>> 1) - 1;
    let hole = slot;
    for (let next = (slot + 1) & mask; index[2 * next] !== 0; next = (next + 1) & mask) {
      const home = index[2 * next + 1]! & mask;
      // `next` may fill the hole when the hole lies on its probe path: home … hole … next.
      if (((next - home) & mask) >= ((next - hole) & mask)) {
        index[2 * hole] = index[2 * next]!;
        index[2 * hole + 1] = index[2 * next + 1]!;
        hole = next;
      }
    }
    index[2 * hole] = 0;
    index[2 * hole + 1] = 0;
  }

  private grantsAt(offset: number): number {
    const length = read32(this.arena, offset) & ~DEAD_BIT;
    const at = offset + 4 + length;
    return read32(this.arena, at) * 0x1_0000_0000 + read32(this.arena, at + 4);
  }

  /** Marks the (already unindexed) entry at `offset` dead, then drops dead entries at the head. */
  private kill(offset: number): void {
    const length = read32(this.arena, offset);
    write32(this.arena, offset, length | DEAD_BIT);
    this.live--;
    this.deadBytes += ENTRY_OVERHEAD + length;
    while (this.head < this.tail) {
      const word = read32(this.arena, this.head);
      if ((word & DEAD_BIT) === 0) break;
      const size = ENTRY_OVERHEAD + (word & ~DEAD_BIT);
      this.head += size;
      this.deadBytes -= size;
    }
    if (this.live === 0) {
      this.head = this.tail = 0;
      assert(this.deadBytes === 0, 'IdleLocks: dead bytes in an empty table');
    }
    if (this.deadBytes > COMPACT_MIN_DEAD_BYTES && this.deadBytes > this.tail - this.head - this.deadBytes) this.compact();
  }

  /**
   * Makes room for `size` more bytes at the tail: in the same arena when half of it is waste, else
   * in one twice as large. Without dead entries between head and tail the entries just slide
   * down (one copy, offsets shifted in the index); otherwise they are compacted.
   */
  private makeRoom(size: number): void {
    if (this.tail + size <= this.arena.length) return;
    const used = this.tail - this.head - this.deadBytes;
    let capacity = this.arena.length;
    if (this.head + this.deadBytes < used + size) {
      capacity = Math.max(MIN_ARENA_BYTES, 2 * capacity);
      while (capacity < used + size) capacity *= 2;
    }
    if (this.deadBytes === 0) this.slide(capacity);
    else this.compact(capacity);
    assert(this.tail + size <= this.arena.length, 'IdleLocks: no room after making room');
  }

  /** Moves [head, tail), which holds no dead entry, to the start of an arena of `capacity` bytes. */
  private slide(capacity: number): void {
    const shift = this.head;
    if (capacity === this.arena.length) {
      this.arena.copyWithin(0, this.head, this.tail);
    } else {
      const to = new Uint8Array(capacity);
      to.set(this.arena.subarray(this.head, this.tail));
      this.arena = to;
    }
    this.tail -= shift;
    this.head = 0;
    if (shift === 0) return;
    const index = this.index;
    for (let word = 0; word < index.length; word += 2) if (index[word] !== 0) index[word] -= shift;
  }

  /**
   * Moves the live entries, in order, to the start of an arena of `capacity` bytes (the same one
   * when it is the current size) and rebuilds the index for their new offsets.
   */
  private compact(capacity = this.arena.length): void {
    const from = this.arena;
    const used = this.tail - this.head - this.deadBytes;
    const to = capacity === from.length ? from : new Uint8Array(capacity);
    let write = 0;
    // Runs of live entries are copied whole; moving towards the start, in order, never
    // overwrites bytes not yet moved.
    const copy = (start: number, end: number): void => {
      if (to === from) to.copyWithin(write, start, end);
      else to.set(from.subarray(start, end), write);
      write += end - start;
    };
    let runStart = this.head;
    for (let at = this.head; at < this.tail; ) {
      const word = read32(from, at);
      const size = ENTRY_OVERHEAD + (word & ~DEAD_BIT);
      if ((word & DEAD_BIT) !== 0) {
        if (runStart < at) copy(runStart, at);
        runStart = at + size;
      }
      at += size;
    }
    if (runStart < this.tail) copy(runStart, this.tail);
    assert(write === used, 'IdleLocks: compaction lost bytes');
    this.arena = to;
    this.head = 0;
    this.tail = write;
    this.deadBytes = 0;
    this.rebuildIndex(slotsFor(this.live));
  }

  /** A larger index with the same entries: placed again by their stored hashes, no name rehashed. */
  private growIndex(): void {
    const old = this.index;
    this.index = new Uint32Array(2 * old.length);
    for (let word = 0; word < old.length; word += 2) if (old[word] !== 0) this.place(old[word]! - 1, old[word + 1]!);
  }

  private rebuildIndex(slots: number): void {
    this.index = new Uint32Array(2 * slots);
    for (let at = this.head; at < this.tail; ) {
      const word = read32(this.arena, at);
      const length = word & ~DEAD_BIT;
      if ((word & DEAD_BIT) === 0) this.place(at, fnv1a32(this.arena, at + 4, at + 4 + length));
      at += ENTRY_OVERHEAD + length;
    }
  }
}
