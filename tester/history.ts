/**
 * Operation histories for linearizability checking, in the JSON Lines format of
 * HISTORY.md at the repository root (one line per client operation).
 *
 * A HistoryActor is one sequential caller: it has a `client` number and an `owner` string, and
 * runs one operation at a time. Each operation reads `call` from the clock just before the API is
 * invoked and `ret` just after it settles. An operation whose outcome is unknown (timeout, abort,
 * RPC failure, still pending when the recorder closes) may take effect at any later time, so the
 * recorder retires its actor: the next operation of that actor gets a new client number and a new
 * owner, because the service may believe the old owner still holds a lock.
 *
 * Lines are written as operations finish (pending ones at close), so a recorder killed mid-run
 * leaves a file holding every operation that finished before.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { assert } from '../lib/assert.js';

/** The environment variable naming the directory histories go to. */
export const HISTORY_DIR_ENV = 'LOCK_HISTORY_DIR';

export type HistoryOp = 'acquire' | 'release' | 'try_acquire';
export type HistoryOutcome = 'ok' | 'fail' | 'unknown';

/** One line of the file. Times are decimal strings of nanoseconds (they exceed 2^53). */
export interface HistoryRecord {
  readonly client: number;
  readonly op: HistoryOp;
  /** Decimal string. */
  readonly lock: string;
  readonly owner: string;
  readonly outcome: HistoryOutcome;
  readonly token?: number;
  readonly call: string;
  /** Absent for unknown outcomes. */
  readonly ret?: string;
  readonly note?: string;
}

/** Where lines go. `write` receives one line without its newline. */
export interface HistorySink {
  write(line: string): void;
  close(): void;
}

/** A sink appending to `path` with one synchronous write per line (so a kill loses nothing written). */
export function fileHistorySink(path: string): HistorySink {
  const fd = openSync(path, 'w');
  let open = true;
  return {
    write: (line) => {
      if (open) writeSync(fd, `${line}\n`);
    },
    close: () => {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** Collects lines in memory (for tests). */
export function memoryHistorySink(): HistorySink & { readonly lines: string[] } {
  const lines: string[] = [];
  return { lines, write: (line) => lines.push(line), close: () => {} };
}

export class HistoryRecorder {
  private nextClient = 0;
  private readonly pending = new Set<HistoryOperation>();
  private closed = false;

  /** `now` must be one monotonic nanosecond clock for the whole file (hosts: process.hrtime.bigint). */
  constructor(
    private readonly sink: HistorySink,
    private readonly now: () => bigint,
  ) {}

  /**
   * A recorder writing `<dir>/<name>-<pid>.jsonl` when `LOCK_HISTORY_DIR` is set in `env`, else
   * undefined. `name` identifies the test, e.g. "lock_tester-test3".
   */
  static fromEnv(name: string, env: NodeJS.ProcessEnv = process.env): HistoryRecorder | undefined {
    const dir = env[HISTORY_DIR_ENV];
    if (dir === undefined || dir === '') return undefined;
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `${name}-${process.pid}.jsonl`);
    const recorder = new HistoryRecorder(fileHistorySink(path), () => process.hrtime.bigint());
    recorder.comment(`${name} pid ${process.pid}`);
    return recorder;
  }

  /** A new sequential actor. `owner` names it at the granularity of mutual exclusion ("c3/w1"). */
  actor(owner: string): HistoryActor {
    assert(owner !== '', 'owner must be non-empty');
    return new HistoryActor(this, owner);
  }

  /** Writes a `#` comment line (ignored by checkers). */
  comment(text: string): void {
    if (!this.closed) this.sink.write(`# ${text.replace(/\n/g, ' ')}`);
  }

  /** Writes every operation still pending as unknown and closes the sink. Idempotent. */
  close(): void {
    if (this.closed) return;
    for (const operation of [...this.pending]) operation.unknown('pending when the recorder closed');
    this.closed = true;
    this.sink.close();
  }

  /** @internal */
  allocateClient(): number {
    return this.nextClient++;
  }

  /** @internal */
  clock(): bigint {
    return this.now();
  }

  /** @internal */
  started(operation: HistoryOperation): void {
    this.pending.add(operation);
  }

  /** @internal */
  finished(operation: HistoryOperation, record: HistoryRecord): void {
    this.pending.delete(operation);
    if (!this.closed) this.sink.write(JSON.stringify(record));
  }
}

export class HistoryActor {
  private clientNumber: number;
  private generation = 0;
  private current: HistoryOperation | undefined;

  /** @internal Use HistoryRecorder.actor(). */
  constructor(
    private readonly recorder: HistoryRecorder,
    private readonly baseOwner: string,
  ) {
    this.clientNumber = recorder.allocateClient();
  }

  get client(): number {
    return this.clientNumber;
  }

  /** The base owner, then `<base>/r<n>` after the n-th retirement. */
  get owner(): string {
    return this.generation === 0 ? this.baseOwner : `${this.baseOwner}/r${this.generation}`;
  }

  /** Starts an operation: reads `call` now. Call it immediately before invoking the API. */
  begin(op: HistoryOp, lock: number | bigint | string): HistoryOperation {
    assert(this.current === undefined, `actor ${this.owner} is sequential: one operation at a time`);
    const lockText = String(lock);
    assert(/^\d+$/.test(lockText), `lock id must be a non-negative integer, got ${lockText}`);
    const operation = new HistoryOperation(this, { client: this.client, op, lock: lockText, owner: this.owner }, this.recorder.clock());
    this.current = operation;
    this.recorder.started(operation);
    return operation;
  }

  /** @internal */
  finished(operation: HistoryOperation, record: HistoryRecord): void {
    assert(this.current === operation, 'finishing an operation that is not current');
    this.current = undefined;
    this.recorder.finished(operation, record);
    if (record.outcome === 'unknown') {
      // The service may act on the old identity later: never reuse it.
      this.clientNumber = this.recorder.allocateClient();
      this.generation++;
    }
  }

  /** @internal */
  now(): bigint {
    return this.recorder.clock();
  }
}

type Identity = Pick<HistoryRecord, 'client' | 'op' | 'lock' | 'owner'>;

/** One operation in progress. Exactly one of ok/fail/unknown finishes it; later calls do nothing. */
export class HistoryOperation {
  private done = false;

  /** @internal */
  constructor(
    private readonly actor: HistoryActor,
    private readonly identity: Identity,
    private readonly call: bigint,
  ) {}

  /** The API confirmed the operation. Call it immediately after the promise settles. */
  ok(options: { token?: number; note?: string } = {}): void {
    if (!this.done) this.finish('ok', this.actor.now(), options);
  }

  /** The operation certainly had no effect. */
  fail(options: { note?: string } = {}): void {
    if (!this.done) this.finish('fail', this.actor.now(), options);
  }

  /** The outcome is not known: it may take effect at any time after `call`. Retires the actor. */
  unknown(note?: string): void {
    this.finish('unknown', undefined, note === undefined ? {} : { note });
  }

  private finish(outcome: HistoryOutcome, ret: bigint | undefined, extra: { token?: number; note?: string }): void {
    if (this.done) return;
    this.done = true;
    const record: HistoryRecord = {
      ...this.identity,
      outcome,
      ...(extra.token === undefined ? {} : { token: extra.token }),
      call: String(this.call),
      ...(ret === undefined ? {} : { ret: String(ret) }),
      ...(extra.note === undefined ? {} : { note: extra.note }),
    };
    this.actor.finished(this, record);
  }
}
