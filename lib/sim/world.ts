import { createHash, type Hash } from 'node:crypto';
import type { Clock, Timer } from '../env.js';
import { SeededRandom } from '../random.js';

/**
 * A discrete-event scheduler with virtual time: the heart of the simulated environment. Time does
 * not flow; it jumps to the next event. Every event runs alone and is followed by a full drain of
 * the microtask queue, so promise-based protocol code interleaves the same way on every run. The
 * world's `random` is the only randomness of a run, so one seed fixes the whole run, and `trace`
 * hashes what happened so two runs can be compared byte for byte.
 */

export interface SimWorldOptions {
  /** Keep trace lines in `traceLines` (the most recent TRACE_LINES_MAX), not only their hash. */
  readonly keepTrace?: boolean;
  /** Safety bound on events run by one `runUntil`/`runFor` call; exceeding it throws. */
  readonly maxEventsPerRun?: number;
}

export const MAX_EVENTS_PER_RUN_DEFAULT = 10_000_000;
export const TRACE_LINES_MAX = 1_000_000;

interface SimEvent {
  readonly time: number;
  /** Insertion order: breaks ties between events at the same time, first scheduled first. */
  readonly seq: number;
  readonly owner: string | undefined;
  readonly fn: () => void;
  state: 'pending' | 'ran' | 'cancelled';
}

function runsBefore(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

/** A binary min-heap of events ordered by (time, seq). The order is total, so pops are unique. */
class EventHeap {
  private items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): SimEvent | undefined {
    return this.items[0];
  }

  push(event: SimEvent): void {
    this.items.push(event);
    this.siftUp(this.items.length - 1);
  }

  pop(): SimEvent | undefined {
    const top = this.items[0];
    const last = this.items.pop();
    if (this.items.length > 0 && last !== undefined) {
      this.items[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  /** Drops the events `keep` rejects and restores the heap property (Floyd's heapify). */
  filter(keep: (event: SimEvent) => boolean): void {
    this.items = this.items.filter(keep);
    for (let i = (this.items.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  private siftUp(index: number): void {
    const items = this.items;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!runsBefore(items[index]!, items[parent]!)) return;
      [items[index], items[parent]] = [items[parent]!, items[index]!];
      index = parent;
    }
  }

  private siftDown(index: number): void {
    const items = this.items;
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let first = index;
      if (left < items.length && runsBefore(items[left]!, items[first]!)) first = left;
      if (right < items.length && runsBefore(items[right]!, items[first]!)) first = right;
      if (first === index) return;
      [items[index], items[first]] = [items[first]!, items[index]!];
      index = first;
    }
  }
}

/** Resolves after every queued microtask (and every microtask those queue) has run. */
function drainMicrotasks(): Promise<void> {
  // Node runs the whole microtask queue, to exhaustion, before it runs an immediate.
  return new Promise((resolve) => setImmediate(resolve));
}

const inertTimer: Timer = { cancel: () => {} };

export class SimWorld {
  /** The run's only source of randomness. Fork it for nodes (see `simEnv`); never use Math.random. */
  readonly random: SeededRandom;
  /** The trace, when the world was created with `keepTrace`; otherwise undefined. */
  readonly traceLines: string[] | undefined;
  /** Events run so far (cancelled timers are not counted). */
  eventsRun = 0;

  private time = 0;
  private seq = 0;
  private readonly queue = new EventHeap();
  /** Cancelled events still in the heap; compacted away when they become the majority. */
  private cancelledInQueue = 0;
  private readonly timersByOwner = new Map<string, Set<SimEvent>>();
  /** Bumped by every crash so that clocks handed to an earlier incarnation go dead. */
  private readonly incarnations = new Map<string, number>();
  private readonly down = new Set<string>();
  private readonly crashListeners: Array<(owner: string) => void> = [];
  private readonly hash: Hash = createHash('sha256');
  private readonly maxEventsPerRun: number;
  private running = false;

  constructor(readonly seed: number | string, options: SimWorldOptions = {}) {
    this.random = new SeededRandom(seed);
    this.traceLines = options.keepTrace ? [] : undefined;
    this.maxEventsPerRun = options.maxEventsPerRun ?? MAX_EVENTS_PER_RUN_DEFAULT;
    if (!(this.maxEventsPerRun >= 1)) throw new RangeError(`maxEventsPerRun must be ≥ 1`);
  }

  /** Virtual milliseconds since the world was created. */
  now(): number {
    return this.time;
  }

  /** Events waiting to run, cancelled timers excluded. */
  get pendingEvents(): number {
    return this.queue.size - this.cancelledInQueue;
  }

  /**
   * Runs `fn` as its own event `delayMs` (clamped to ≥ 0) from now, after every event already
   * scheduled for that time. An `owner` tags it as that owner's timer for `cancelTimers`.
   */
  schedule(delayMs: number, fn: () => void, owner?: string): Timer {
    if (!Number.isFinite(delayMs)) throw new RangeError(`SimWorld.schedule: bad delay ${delayMs}`);
    const event: SimEvent = { time: this.time + Math.max(0, delayMs), seq: this.seq++, owner, fn, state: 'pending' };
    this.queue.push(event);
    if (owner !== undefined) {
      let timers = this.timersByOwner.get(owner);
      if (timers === undefined) this.timersByOwner.set(owner, (timers = new Set()));
      timers.add(event);
    }
    return { cancel: () => this.cancel(event) };
  }

  /**
   * A Clock whose timers belong to `owner` (a node name). The clock belongs to the owner's current
   * incarnation: after `crash(owner)` its timers never fire and new ones are ignored, so code of a
   * crashed node that is still mid-flight cannot act again through time.
   */
  clockFor(owner: string): Clock {
    if (this.down.has(owner)) throw new Error(`SimWorld.clockFor: "${owner}" is crashed; restart it first`);
    const incarnation = this.incarnationOf(owner);
    return {
      now: () => this.time,
      setTimer: (delayMs, fn) =>
        this.incarnationOf(owner) === incarnation ? this.schedule(delayMs, fn, owner) : inertTimer,
    };
  }

  /** Cancels every pending timer of `owner`; returns how many. */
  cancelTimers(owner: string): number {
    const timers = this.timersByOwner.get(owner);
    if (timers === undefined) return 0;
    const count = timers.size;
    for (const event of [...timers]) this.cancel(event);
    this.timersByOwner.delete(owner);
    return count;
  }

  /** Current incarnation number of `owner` (0 until its first crash). */
  incarnationOf(owner: string): number {
    return this.incarnations.get(owner) ?? 0;
  }

  isDown(owner: string): boolean {
    return this.down.has(owner);
  }

  /** Registers a component (network, disk) to be told of every crash. Called in registration order. */
  onCrash(listener: (owner: string) => void): void {
    this.crashListeners.push(listener);
  }

  /**
   * Crashes `owner` without ceremony: its timers are cancelled, its clocks go dead, and every
   * registered component drops what belongs to it (endpoints close, unsynced writes may be lost).
   */
  crash(owner: string): void {
    if (this.down.has(owner)) throw new Error(`SimWorld.crash: "${owner}" is already crashed`);
    this.trace(`crash ${owner}`);
    this.down.add(owner);
    this.incarnations.set(owner, this.incarnationOf(owner) + 1);
    this.cancelTimers(owner);
    for (const listener of this.crashListeners) listener(owner);
  }

  /** Marks a crashed owner as up again; the caller then builds its new incarnation (`simEnv`). */
  restart(owner: string): void {
    if (!this.down.has(owner)) throw new Error(`SimWorld.restart: "${owner}" is not crashed`);
    this.down.delete(owner);
    this.trace(`restart ${owner}`);
  }

  /**
   * Runs events in (time, insertion) order until `predicate` holds (checked before the first event
   * and after each one, once microtasks are drained) or the next event lies more than `limitMs` of
   * virtual time ahead. Returns whether the predicate held. On the time limit the clock is left at
   * the limit, as if the world idled until then.
   */
  async runUntil(predicate: () => boolean, limitMs: number): Promise<boolean> {
    if (!(limitMs >= 0) || !Number.isFinite(limitMs)) throw new RangeError(`SimWorld.runUntil: bad limit ${limitMs}`);
    if (this.running) throw new Error('SimWorld.runUntil: already running (called from inside an event?)');
    this.running = true;
    try {
      const deadline = this.time + limitMs;
      let events = 0;
      await drainMicrotasks();
      for (;;) {
        if (predicate()) return true;
        const event = this.nextLiveEvent();
        if (event === undefined || event.time > deadline) {
          this.time = deadline;
          return false;
        }
        if (++events > this.maxEventsPerRun) {
          throw new Error(
            `SimWorld: more than ${this.maxEventsPerRun} events in one run (virtual time ${this.time} ms, ` +
              `seed ${String(this.seed)}); likely a livelock such as a zero-delay timer rescheduling itself`,
          );
        }
        this.queue.pop();
        event.state = 'ran';
        this.forget(event);
        this.time = event.time;
        this.eventsRun++;
        // A throw here is a bug in the code under test: let it propagate to the caller.
        event.fn();
        await drainMicrotasks();
      }
    } finally {
      this.running = false;
    }
  }

  /** Runs every event due within the next `ms` of virtual time; the clock ends exactly `ms` later. */
  async runFor(ms: number): Promise<void> {
    await this.runUntil(() => false, ms);
  }

  /** Records one line, stamped with the virtual time, in the running trace hash. */
  trace(line: string): void {
    const stamped = `${this.time} ${line}`;
    this.hash.update(stamped).update('\n');
    if (this.traceLines === undefined) return;
    // Keep the most recent lines (the end of a trace is what explains a failure); halving keeps
    // the cost amortised O(1).
    if (this.traceLines.length >= TRACE_LINES_MAX) this.traceLines.splice(0, TRACE_LINES_MAX / 2);
    this.traceLines.push(stamped);
  }

  /** sha256 (hex) of every trace line so far. Same seed and same code give the same hash. */
  traceHash(): string {
    return this.hash.copy().digest('hex');
  }

  private cancel(event: SimEvent): void {
    if (event.state !== 'pending') return;
    event.state = 'cancelled';
    this.forget(event);
    this.cancelledInQueue++;
    // Lazy deletion keeps cancel O(1); compact when dead events dominate so memory stays bounded.
    if (this.cancelledInQueue > 1024 && this.cancelledInQueue * 2 > this.queue.size) {
      this.queue.filter((e) => e.state === 'pending');
      this.cancelledInQueue = 0;
    }
  }

  private forget(event: SimEvent): void {
    if (event.owner === undefined) return;
    const timers = this.timersByOwner.get(event.owner);
    timers?.delete(event);
    if (timers?.size === 0) this.timersByOwner.delete(event.owner);
  }

  /** The next event that was not cancelled, left at the top of the heap. */
  private nextLiveEvent(): SimEvent | undefined {
    let event = this.queue.peek();
    while (event?.state === 'cancelled') {
      this.queue.pop();
      this.cancelledInQueue--;
      event = this.queue.peek();
    }
    return event;
  }
}
