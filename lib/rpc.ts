/**
 * Request/reply RPC with at-most-once execution over any `Endpoint` (TCP or the simulated network).
 *
 * One `RpcEndpoint` wraps one transport endpoint and plays both roles: it serves the procedures
 * registered with `handle()`, and it calls other endpoints through per-destination `RpcClient`s
 * (like the lab's rpcc). The protocol, error codes and limits are described in lib/README.md.
 *
 * Wire format (all big-endian), inside one transport message:
 *
 *   request: u8 kind=1 | u32 xid | u32 proc | u32 clientNonce | u32 serverNonce | u32 xidRep | args
 *   reply:   u8 kind=2 | u32 xid | i32 ret  | u32 clientNonce | result (empty when ret < 0)
 *
 * The reply echoes the client nonce so an endpoint with several clients to one destination can
 * route it. `ret` ≥ 0 is the handler's status; `ret` < 0 is an RPC-layer error (RpcStatus).
 */
import { AssertionError, assert } from './assert.js';
import { Reader, Writer } from './codec.js';
import type { Clock, Endpoint, PeerDownReason, Random, Timer } from './env.js';
import { RpcError, type RpcErrorCode } from './errors.js';
import { logger } from './log.js';

const log = logger('rpc');

/** RPC-layer status codes carried in a reply's `ret` (the lab's rpc_const, plus two of ours). */
export const RpcStatus = {
  TIMEOUT: -1,
  BAD_ARGS: -2,
  BAD_REPLY: -3,
  FORGOTTEN: -4,
  OLDSRV: -5,
  ABORTED: -7,
  NO_SUCH_PROC: -8,
  OVERLOADED: -9,
  HANDLER_FAILED: -10,
} as const;

const errorCodeOfStatus = new Map<number, RpcErrorCode>([
  [RpcStatus.TIMEOUT, 'RPC_TIMEOUT'],
  [RpcStatus.BAD_ARGS, 'RPC_BAD_ARGS'],
  [RpcStatus.BAD_REPLY, 'RPC_BAD_REPLY'],
  [RpcStatus.FORGOTTEN, 'RPC_FORGOTTEN'],
  [RpcStatus.OLDSRV, 'RPC_OLDSRV'],
  [RpcStatus.ABORTED, 'RPC_ABORTED'],
  [RpcStatus.NO_SUCH_PROC, 'RPC_NO_SUCH_PROC'],
  [RpcStatus.OVERLOADED, 'RPC_OVERLOADED'],
  [RpcStatus.HANDLER_FAILED, 'RPC_HANDLER_FAILED'],
]);

const KIND_REQUEST = 1;
const KIND_REPLY = 2;
const REQUEST_HEADER_BYTES = 21;
const REPLY_HEADER_BYTES = 13;

/** The reserved procedure a client calls first to learn the server instance's nonce. */
export const BIND_PROC = 1;

// ---------------------------------------------------------------------------------------------
// Procedures: typed descriptions of what goes over the wire.

/** Encodes and decodes one value. `read` never throws: it marks the Reader failed instead. */
export interface Codec<T> {
  write(writer: Writer, value: T): void;
  read(reader: Reader): T;
}

export interface Procedure<Args, Result> {
  readonly id: number;
  readonly name: string;
  readonly args: Codec<Args>;
  readonly result: Codec<Result>;
}

export function procedure<Args, Result>(
  id: number,
  name: string,
  args: Codec<Args>,
  result: Codec<Result>,
): Procedure<Args, Result> {
  assert(Number.isInteger(id) && id > BIND_PROC && id <= 0xffff_ffff, `bad procedure id ${id}`);
  return { id, name, args, result };
}

/** Codecs for the primitive wire types, and combinators to build message codecs from them. */
export const codecs = {
  u32: { write: (w, v) => w.u32(v), read: (r) => r.u32() } as Codec<number>,
  i32: { write: (w, v) => w.i32(v), read: (r) => r.i32() } as Codec<number>,
  u64: { write: (w, v) => w.u64(v), read: (r) => r.u64() } as Codec<number>,
  bool: { write: (w, v) => w.bool(v), read: (r) => r.bool() } as Codec<boolean>,
  string: { write: (w, v) => w.string(v), read: (r) => r.string() } as Codec<string>,
  bytes: { write: (w, v) => w.bytes(v), read: (r) => r.bytes() } as Codec<Uint8Array>,
  none: { write: () => {}, read: () => undefined } as Codec<void>,
  list<T>(element: Codec<T>, maxCount = 1 << 20): Codec<T[]> {
    return {
      write: (w, values) => w.list(values, (w2, v) => element.write(w2, v)),
      read: (r) => r.list((r2) => element.read(r2), 1, maxCount),
    };
  },
  /** A record whose fields are written in the order given. */
  struct<T extends object>(fields: { [K in keyof T]: Codec<T[K]> }): Codec<T> {
    const entries = Object.entries(fields) as Array<[keyof T, Codec<unknown>]>;
    return {
      write: (w, value) => {
        for (const [key, codec] of entries) codec.write(w, value[key]);
      },
      read: (r) => {
        const out = {} as T;
        for (const [key, codec] of entries) (out as Record<keyof T, unknown>)[key] = codec.read(r);
        return out;
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Handlers and replies.

export interface HandlerReply<Result> {
  /** Application status, ≥ 0 (0 is conventionally OK). */
  readonly status: number;
  readonly result: Result;
}

export interface CallContext {
  /** The transport address to reply to (opaque; for logging). */
  readonly from: string;
  readonly clientNonce: number;
}

export type Handler<Args, Result> = (
  args: Args,
  context: CallContext,
) => HandlerReply<Result> | Promise<HandlerReply<Result>>;

/** What a call resolves to. RPC-layer failures are values, not exceptions: they are expected. */
export type RpcReply<Result> =
  | { readonly ok: true; readonly status: number; readonly result: Result }
  | { readonly ok: false; readonly error: RpcError };

export interface CallOptions {
  /** Give up after this long (default: the endpoint's `callTimeoutMs`). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** First retransmission interval of this call (default: the endpoint's `retransmitMsMin`). */
  readonly retransmitMs?: number;
  /**
   * Longest retransmission interval of this call (default: the endpoint's `retransmitMsMax`): the
   * interval doubles after each try up to this. Equal to `retransmitMs` for a steady rate, as a
   * failure detector needs (many tries inside one short deadline).
   */
  readonly retransmitMsMax?: number;
  /**
   * On OLDSRV (the destination restarted since this client bound), bind to the new instance and
   * send the request again at once, within the same deadline, instead of failing the call. Only
   * for requests that may safely run again on the new instance (the old one may have run them):
   * Paxos messages and heartbeats are. Default false.
   */
  readonly resendOnOldServer?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Options and limits.

export interface RpcOptions {
  /** Default whole-call deadline. */
  callTimeoutMs: number;
  /** First retransmission interval; it doubles after each retransmission up to the max. */
  retransmitMsMin: number;
  retransmitMsMax: number;
  /** Print statistics every N new requests (RPC_COUNT); 0 disables. */
  statsEvery: number;
  /** Where statistics lines go (default: stdout). */
  printStats: (line: string) => void;
  /** Client reply windows kept by the server. The least recently active is evicted beyond this. */
  maxClients: number;
  /** Unacknowledged requests remembered per client; more are refused with OVERLOADED. */
  maxUnackedPerClient: number;
  /** Handlers running at once; requests beyond are dropped (the client retransmits). */
  maxConcurrentHandlers: number;
}

export const defaultRpcOptions: RpcOptions = {
  callTimeoutMs: 10_000,
  // Over TCP a message goes missing only under fault injection (RPC_LOSSY) or when a connection
  // breaks, which the transport reports at once; so the first retry comes after a few loopback/LAN
  // round trips, not the lab's 250 ms. With it, a 1 s call makes five tries (0, 50, 150, 350,
  // 750 ms) where it made three, and the primary's invoke to a backup under RPC_LOSSY=10 fails
  // about once in 3,000 calls instead of once in 100 (each failure stalled the primary ~2 s). The
  // doubling up to 1 s bounds what a call to a silent destination sends.
  retransmitMsMin: 50,
  retransmitMsMax: 1_000,
  statsEvery: 0,
  printStats: (line) => process.stdout.write(`${line}\n`),
  maxClients: 10_000,
  maxUnackedPerClient: 1_000,
  maxConcurrentHandlers: 1_000,
};

// ---------------------------------------------------------------------------------------------
// Server side: the at-most-once reply table.

/** Per client nonce: every xid the server may still be asked about. */
interface ReplyWindow {
  /** Every xid ≤ this has been acknowledged by the client and forgotten here. */
  forgottenThrough: number;
  /** xid → saved reply bytes, or `undefined` while the request is still executing. */
  readonly entries: Map<number, Uint8Array | undefined>;
}

export type DuplicateClass = 'new' | 'inprogress' | 'done' | 'forgotten' | 'overloaded';

/**
 * The at-most-once table, kept separate from I/O so it can be tested on its own. It remembers, per
 * client nonce, the xids the client has not acknowledged yet, with their saved replies.
 */
export class ReplyTable {
  private readonly windows = new Map<number, ReplyWindow>();

  constructor(
    private readonly maxClients: number,
    private readonly maxUnackedPerClient: number,
  ) {}

  /** Classifies a request and updates the table (the lab's checkduplicate_and_update). */
  check(clientNonce: number, xid: number, xidRep: number): DuplicateClass {
    let window = this.windows.get(clientNonce);
    if (window === undefined) {
      window = { forgottenThrough: 0, entries: new Map() };
      this.evictIfFull();
    } else {
      this.windows.delete(clientNonce); // re-inserted below: Map order doubles as LRU order
    }
    this.windows.set(clientNonce, window);

    // xid_rep only moves forward: retransmissions carry the stale value they were built with.
    if (xidRep > window.forgottenThrough) {
      window.forgottenThrough = xidRep;
      for (const seen of window.entries.keys()) if (seen <= xidRep) window.entries.delete(seen);
    }
    if (window.entries.has(xid)) return window.entries.get(xid) === undefined ? 'inprogress' : 'done';
    if (xid <= window.forgottenThrough) return 'forgotten';
    if (window.entries.size >= this.maxUnackedPerClient) return 'overloaded';
    window.entries.set(xid, undefined);
    return 'new';
  }

  /** Saves a finished request's reply, unless the client already acknowledged it meanwhile. */
  saveReply(clientNonce: number, xid: number, reply: Uint8Array): void {
    const window = this.windows.get(clientNonce);
    // A copy of its own: the reply may be a view of a shared pool slab (pooledBytes), and a
    // client that never calls again keeps its last reply here until its window is evicted.
    if (window?.entries.has(xid)) window.entries.set(xid, reply.slice());
  }

  savedReply(clientNonce: number, xid: number): Uint8Array | undefined {
    return this.windows.get(clientNonce)?.entries.get(xid);
  }

  get clientCount(): number {
    return this.windows.size;
  }

  /** Total remembered entries (in progress and saved), for statistics and tests. */
  get entryCount(): number {
    let total = 0;
    for (const window of this.windows.values()) total += window.entries.size;
    return total;
  }

  private evictIfFull(): void {
    // Evicting a window forgets which of that client's requests ran. It is the least recently
    // active client, far beyond any call timeout in practice; the bound keeps memory finite
    // against clients that come and go (each process start draws a new nonce).
    while (this.windows.size >= this.maxClients) {
      const oldest = this.windows.keys().next().value as number;
      this.windows.delete(oldest);
      log('evicted reply window of client %d', oldest);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Wire encoding of the RPC header.

interface RequestHeader {
  readonly xid: number;
  readonly proc: number;
  readonly clientNonce: number;
  readonly serverNonce: number;
  readonly xidRep: number;
}

function encodeRequest(header: RequestHeader, args: (w: Writer) => void): Uint8Array {
  const w = new Writer(64);
  w.u8(KIND_REQUEST).u32(header.xid).u32(header.proc).u32(header.clientNonce);
  w.u32(header.serverNonce).u32(header.xidRep);
  args(w);
  return w.finish();
}

function encodeReply(xid: number, ret: number, clientNonce: number, result?: (w: Writer) => void): Uint8Array {
  const w = new Writer(32);
  w.u8(KIND_REPLY).u32(xid).i32(ret).u32(clientNonce);
  result?.(w);
  return w.finish();
}

// ---------------------------------------------------------------------------------------------
// The endpoint.

interface Registered {
  readonly procedure: Procedure<unknown, unknown>;
  readonly handler: Handler<unknown, unknown>;
}

export class RpcEndpoint {
  readonly options: RpcOptions;
  /** This server instance's nonce: a restarted server draws a new one (OLDSRV detection). */
  readonly nonce: number;
  private readonly handlers = new Map<number, Registered>();
  private readonly replies: ReplyTable;
  private readonly clients = new Map<number, RpcClient>();
  private readonly clientsByDestination = new Map<string, RpcClient>();
  private runningHandlers = 0;
  private newRequests = 0;
  /** Copies of requests already running or answered (retransmissions, network duplicates). */
  private duplicateRequests = 0;
  private readonly newRequestsByProc = new Map<number, number>();
  private reachable = true;
  private closed = false;

  constructor(
    readonly endpoint: Endpoint,
    readonly clock: Clock,
    readonly random: Random,
    options: Partial<RpcOptions> = {},
  ) {
    this.options = { ...defaultRpcOptions, ...options };
    this.nonce = nonZeroU32(random);
    this.replies = new ReplyTable(this.options.maxClients, this.options.maxUnackedPerClient);
    endpoint.onMessage((from, message) => this.receive(from, message));
    endpoint.onPeerDown?.((to, reason) => this.peerDown(to, reason));
  }

  get address(): string {
    return this.endpoint.address;
  }

  /** Registers a procedure's handler. Registering one id twice is a programmer error. */
  handle<Args, Result>(procedure: Procedure<Args, Result>, handler: Handler<Args, Result>): void {
    assert(!this.handlers.has(procedure.id), `procedure ${procedure.name} registered twice`);
    this.handlers.set(procedure.id, {
      procedure: procedure as Procedure<unknown, unknown>,
      handler: handler as Handler<unknown, unknown>,
    });
  }

  /**
   * The cached client for `destination` (the lab's handle cache). Use `newClient` to get a fresh
   * one, e.g. after OLDSRV when at-most-once must start over with a new nonce.
   */
  client(destination: string): RpcClient {
    let client = this.clientsByDestination.get(destination);
    if (client === undefined || client.isClosed) {
      client = this.newClient(destination);
      this.clientsByDestination.set(destination, client);
    }
    return client;
  }

  newClient(destination: string): RpcClient {
    assert(!this.closed, 'RpcEndpoint is closed');
    let nonce = nonZeroU32(this.random);
    while (this.clients.has(nonce)) nonce = nonZeroU32(this.random);
    const client = new RpcClient(this, destination, nonce);
    this.clients.set(nonce, client);
    return client;
  }

  /** Shorthand: call through the cached client for `destination`. */
  call<Args, Result>(
    destination: string,
    procedure: Procedure<Args, Result>,
    args: Args,
    options?: CallOptions,
  ): Promise<RpcReply<Result>> {
    return this.client(destination).call(procedure, args, options);
  }

  /**
   * Cuts this endpoint off (false) or reconnects it (true): while unreachable, incoming requests
   * are dropped unanswered and outgoing requests are not sent (calls time out). Test hook for
   * partitions, as the lab's `reachable` flag.
   */
  setReachable(reachable: boolean): void {
    this.reachable = reachable;
  }

  get isReachable(): boolean {
    return this.reachable;
  }

  /** Statistics for logs and tests. */
  stats(): { clients: number; savedReplies: number; runningHandlers: number; newRequests: number; duplicateRequests: number } {
    return {
      clients: this.replies.clientCount,
      savedReplies: this.replies.entryCount,
      runningHandlers: this.runningHandlers,
      newRequests: this.newRequests,
      duplicateRequests: this.duplicateRequests,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
    this.clientsByDestination.clear();
    await this.endpoint.close();
  }

  /** @internal Used by RpcClient to send its requests. */
  sendRequest(destination: string, bytes: Uint8Array): void {
    if (this.closed || !this.reachable) return;
    this.endpoint.send(destination, bytes);
  }

  /** @internal */
  forgetClient(client: RpcClient): void {
    this.clients.delete(client.nonce);
    if (this.clientsByDestination.get(client.destination) === client) {
      this.clientsByDestination.delete(client.destination);
    }
  }

  /**
   * The transport says `to` will not answer what was sent (refused, reset, closed): every call
   * waiting on a client for that destination fails now with RPC_UNREACHABLE or
   * RPC_CONNECTION_LOST, instead of retransmitting into a dead socket until its deadline.
   */
  private peerDown(to: string, reason: PeerDownReason): void {
    if (this.closed) return;
    for (const client of [...this.clients.values()]) if (client.destination === to) client.peerDown(reason);
  }

  // Receive loop. Nothing in here may throw on bad input: every malformed message is dropped.
  private receive(from: string, message: Uint8Array): void {
    if (this.closed) return;
    if (message.length < 1) return log('%s: ignoring empty message from %s', this.address, from);
    const kind = message[0];
    if (kind === KIND_REQUEST) this.receiveRequest(from, message);
    else if (kind === KIND_REPLY) this.receiveReply(from, message);
    else log('%s: ignoring message of unknown kind %d from %s', this.address, kind, from);
  }

  private receiveReply(from: string, message: Uint8Array): void {
    if (message.length < REPLY_HEADER_BYTES) return log('%s: ignoring short reply from %s', this.address, from);
    const reader = new Reader(message.subarray(1));
    const xid = reader.u32();
    const ret = reader.i32();
    const clientNonce = reader.u32();
    const client = this.clients.get(clientNonce);
    if (client === undefined) return log('%s: ignoring reply for unknown client %d', this.address, clientNonce);
    client.receiveReply(xid, ret, message.subarray(REPLY_HEADER_BYTES));
  }

  private receiveRequest(from: string, message: Uint8Array): void {
    if (!this.reachable) return; // partitioned: the request never arrived
    if (message.length < REQUEST_HEADER_BYTES) return log('%s: ignoring short request from %s', this.address, from);
    const reader = new Reader(message.subarray(1));
    const header: RequestHeader = {
      xid: reader.u32(),
      proc: reader.u32(),
      clientNonce: reader.u32(),
      serverNonce: reader.u32(),
      xidRep: reader.u32(),
    };
    const body = message.subarray(REQUEST_HEADER_BYTES);

    if (header.proc === BIND_PROC) {
      // Bind is idempotent and outside at-most-once: it only reports which instance this is.
      const reply = encodeReply(header.xid, 0, header.clientNonce, (w) => w.u32(this.nonce));
      return this.endpoint.send(from, reply);
    }
    // A request meant for an earlier instance of this server must not run here (lab: -5).
    if (header.serverNonce !== this.nonce) {
      return this.endpoint.send(from, encodeReply(header.xid, RpcStatus.OLDSRV, header.clientNonce));
    }
    const registered = this.handlers.get(header.proc);
    if (registered === undefined) {
      log('%s: unknown procedure %s from %s', this.address, header.proc.toString(16), from);
      return this.endpoint.send(from, encodeReply(header.xid, RpcStatus.NO_SUCH_PROC, header.clientNonce));
    }

    const decision = this.replies.check(header.clientNonce, header.xid, header.xidRep);
    switch (decision) {
      case 'inprogress':
        this.duplicateRequests++;
        return; // the original execution's reply will answer it
      case 'done':
        this.duplicateRequests++;
        return this.endpoint.send(from, this.replies.savedReply(header.clientNonce, header.xid)!);
      case 'forgotten':
        return this.endpoint.send(from, encodeReply(header.xid, RpcStatus.FORGOTTEN, header.clientNonce));
      case 'overloaded':
        return this.endpoint.send(from, encodeReply(header.xid, RpcStatus.OVERLOADED, header.clientNonce));
      case 'new':
        break;
    }
    if (this.runningHandlers >= this.options.maxConcurrentHandlers) {
      // Refuse it for good: the saved OVERLOADED answers its retransmissions too, so the client
      // learns for certain that it did not run and may try again with a new xid.
      const reply = encodeReply(header.xid, RpcStatus.OVERLOADED, header.clientNonce);
      this.replies.saveReply(header.clientNonce, header.xid, reply);
      return this.endpoint.send(from, reply);
    }
    this.countNewRequest(header.proc);
    const argsReader = new Reader(body);
    const args = registered.procedure.args.read(argsReader);
    const decoded = argsReader.finish(args);
    if (!decoded.ok) {
      log('%s: bad arguments for %s from %s: %s', this.address, registered.procedure.name, from, decoded.reason);
      const reply = encodeReply(header.xid, RpcStatus.BAD_ARGS, header.clientNonce);
      this.replies.saveReply(header.clientNonce, header.xid, reply);
      return this.endpoint.send(from, reply);
    }
    void this.runHandler(from, header, registered, decoded.value);
  }

  private async runHandler(from: string, header: RequestHeader, registered: Registered, args: unknown): Promise<void> {
    this.runningHandlers++;
    let reply: Uint8Array;
    try {
      const { status, result } = await registered.handler(args, { from, clientNonce: header.clientNonce });
      assert(Number.isInteger(status) && status >= 0, `${registered.procedure.name} returned status ${status}`);
      reply = encodeReply(header.xid, status, header.clientNonce, (w) => registered.procedure.result.write(w, result));
    } catch (error) {
      if (error instanceof AssertionError) throw error; // a broken invariant: crash
      log('%s: handler %s failed: %O', this.address, registered.procedure.name, error);
      reply = encodeReply(header.xid, RpcStatus.HANDLER_FAILED, header.clientNonce);
    } finally {
      this.runningHandlers--;
    }
    if (this.closed) return;
    this.replies.saveReply(header.clientNonce, header.xid, reply);
    // A partition cut while the handler ran swallows its reply too.
    if (this.reachable) this.endpoint.send(from, reply);
  }

  private countNewRequest(proc: number): void {
    if (this.options.statsEvery <= 0) return;
    this.newRequests++;
    this.newRequestsByProc.set(proc, (this.newRequestsByProc.get(proc) ?? 0) + 1);
    if (this.newRequests % this.options.statsEvery === 0) {
      const counts = [...this.newRequestsByProc.entries()]
        .sort(([a], [b]) => a - b)
        .map(([p, n]) => `${p.toString(16)}:${n}`);
      this.options.printStats(`RPC STATS: ${counts.join(' ')}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Client side.

interface PendingCall {
  settle(ret: number, body: Uint8Array): void;
}

/**
 * Calls one destination (the lab's rpcc). It binds lazily to learn the server's nonce, numbers
 * its requests with xids, retransmits each on a timer with exponential backoff until a reply or
 * the deadline, and tells the server through `xidRep` which replies it no longer needs.
 */
export class RpcClient {
  private serverNonce: number | undefined;
  private binding: Promise<RpcReply<number>> | undefined;
  private nextXid = 1;
  /** Completed xids above `xidRepFront`, kept until the gap below them closes. */
  private readonly completedAbove = new Set<number>();
  /** Every xid ≤ this has completed (replied or given up): the `xidRep` sent to the server. */
  private xidRepFront = 0;
  private readonly pending = new Map<number, PendingCall>();
  private closed = false;

  constructor(
    private readonly owner: RpcEndpoint,
    readonly destination: string,
    readonly nonce: number,
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** True once a bind has told us the server instance's nonce. */
  get isBound(): boolean {
    return this.serverNonce !== undefined;
  }

  async call<Args, Result>(
    procedure: Procedure<Args, Result>,
    args: Args,
    options: CallOptions = {},
  ): Promise<RpcReply<Result>> {
    const timeoutMs = options.timeoutMs ?? this.owner.options.callTimeoutMs;
    const deadline = this.owner.clock.now() + timeoutMs;
    if (this.serverNonce === undefined) {
      // Concurrent first calls share one bind. It runs without any caller's signal (one caller
      // aborting must not fail the others); each caller stops waiting when its own signal fires.
      this.binding ??= this.bind(timeoutMs, options).finally(() => (this.binding = undefined));
      const bound = await raceAbort(this.binding, options.signal);
      if (!bound.ok) return bound;
    }
    const writeArgs = (w: Writer): void => procedure.args.write(w, args);
    let { ret, body } = await this.exchange(procedure.id, this.serverNonce!, writeArgs, deadline - this.owner.clock.now(), options);
    if (ret === RpcStatus.OLDSRV) {
      this.serverNonce = undefined; // the next call binds afresh
      if (options.resendOnOldServer === true) {
        // The destination restarted: bind to the new instance and resend once, at once.
        const rebound = await raceAbort((this.binding ??= this.bind(deadline - this.owner.clock.now(), options).finally(() => (this.binding = undefined))), options.signal);
        if (!rebound.ok) return rebound;
        ({ ret, body } = await this.exchange(procedure.id, this.serverNonce!, writeArgs, deadline - this.owner.clock.now(), options));
        if (ret === RpcStatus.OLDSRV) this.serverNonce = undefined;
      }
    }
    if (ret < 0) return { ok: false, error: rpcError(ret, procedure.name, this.destination) };
    const reader = new Reader(body);
    const decoded = reader.finish(procedure.result.read(reader));
    if (!decoded.ok) {
      return { ok: false, error: new RpcError('RPC_BAD_REPLY', `${procedure.name} to ${this.destination}: ${decoded.reason}`) };
    }
    return { ok: true, status: ret, result: decoded.value };
  }

  /** Fails every outstanding call with RPC_CLOSED and refuses new ones. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of [...this.pending.values()]) call.settle(CLOSED_STATUS, new Uint8Array(0));
    this.owner.forgetClient(this);
  }

  /** @internal The transport gave up on this destination: fail every outstanding call. */
  peerDown(reason: PeerDownReason): void {
    const status = reason === 'unreachable' ? UNREACHABLE_STATUS : CONNECTION_LOST_STATUS;
    for (const call of [...this.pending.values()]) call.settle(status, new Uint8Array(0));
  }

  /** @internal */
  receiveReply(xid: number, ret: number, body: Uint8Array): void {
    this.pending.get(xid)?.settle(ret, body); // a reply nobody waits for is a late duplicate
  }

  /** Binds at the retransmission pace of the call that asked (a heartbeat's is steady and fast). */
  private async bind(timeoutMs: number, pace: Pick<CallOptions, 'retransmitMs' | 'retransmitMsMax'>): Promise<RpcReply<number>> {
    const { retransmitMs, retransmitMsMax } = pace;
    const { ret, body } = await this.exchange(BIND_PROC, 0, (w) => w.u32(0), timeoutMs, {
      ...(retransmitMs === undefined ? {} : { retransmitMs }),
      ...(retransmitMsMax === undefined ? {} : { retransmitMsMax }),
    });
    if (ret < 0) return { ok: false, error: rpcError(ret, 'bind', this.destination) };
    const reader = new Reader(body);
    const decoded = reader.finish(reader.u32());
    if (!decoded.ok) return { ok: false, error: new RpcError('RPC_BAD_REPLY', `bind to ${this.destination}: ${decoded.reason}`) };
    this.serverNonce = decoded.value;
    return { ok: true, status: 0, result: decoded.value };
  }

  /**
   * Sends one request and retransmits the identical bytes until a reply, the deadline, the abort
   * signal or close. Resolves with the reply's ret and body (ret < 0 for RPC-layer failures).
   */
  private exchange(
    proc: number,
    serverNonce: number,
    writeArgs: (w: Writer) => void,
    timeoutMs: number,
    { signal, retransmitMs: firstRetransmitMs, retransmitMsMax }: CallOptions,
  ): Promise<{ ret: number; body: Uint8Array }> {
    if (this.closed) return Promise.resolve({ ret: CLOSED_STATUS, body: new Uint8Array(0) });
    if (signal?.aborted) return Promise.resolve({ ret: RpcStatus.ABORTED, body: new Uint8Array(0) });
    if (timeoutMs <= 0) return Promise.resolve({ ret: RpcStatus.TIMEOUT, body: new Uint8Array(0) });
    const { clock, options } = this.owner;
    const xid = this.nextXid++;
    const bytes = encodeRequest({ xid, proc, clientNonce: this.nonce, serverNonce, xidRep: this.xidRepFront }, writeArgs);

    return new Promise((resolve) => {
      let retransmitMs = firstRetransmitMs ?? options.retransmitMsMin;
      let retransmitTimer: Timer | undefined;
      const transmit = (): void => {
        this.owner.sendRequest(this.destination, bytes);
        retransmitTimer = clock.setTimer(retransmitMs, transmit);
        retransmitMs = Math.min(retransmitMs * 2, Math.max(retransmitMs, retransmitMsMax ?? options.retransmitMsMax));
      };
      const onAbort = (): void => settle(RpcStatus.ABORTED, new Uint8Array(0));
      const deadlineTimer = clock.setTimer(timeoutMs, () => settle(RpcStatus.TIMEOUT, new Uint8Array(0)));
      const settle = (ret: number, body: Uint8Array): void => {
        if (!this.pending.has(xid)) return;
        this.pending.delete(xid);
        retransmitTimer?.cancel();
        deadlineTimer.cancel();
        signal?.removeEventListener('abort', onAbort);
        // A call that gave up counts as acknowledged too (as in the lab): we will never use a
        // late reply, so the server may forget it.
        this.markCompleted(xid);
        resolve({ ret, body });
      };
      this.pending.set(xid, { settle });
      signal?.addEventListener('abort', onAbort, { once: true });
      transmit();
    });
  }

  private markCompleted(xid: number): void {
    this.completedAbove.add(xid);
    while (this.completedAbove.delete(this.xidRepFront + 1)) this.xidRepFront++;
  }
}

/** Internal statuses for calls failed locally (close(), the transport's peer-down); never on the wire. */
const CLOSED_STATUS = -100;
const UNREACHABLE_STATUS = -101;
const CONNECTION_LOST_STATUS = -102;

function rpcError(ret: number, what: string, destination: string): RpcError {
  if (ret === CLOSED_STATUS) return new RpcError('RPC_CLOSED', `${what} to ${destination}: client closed`);
  if (ret === UNREACHABLE_STATUS) return new RpcError('RPC_UNREACHABLE', `${what} to ${destination}: RPC_UNREACHABLE (connection refused or not established)`);
  if (ret === CONNECTION_LOST_STATUS) return new RpcError('RPC_CONNECTION_LOST', `${what} to ${destination}: RPC_CONNECTION_LOST (the connection closed before the reply)`);
  const code = errorCodeOfStatus.get(ret);
  if (code === undefined) return new RpcError('RPC_BAD_REPLY', `${what} to ${destination}: unknown RPC status ${ret}`);
  return new RpcError(code, `${what} to ${destination}: ${code}`);
}

function raceAbort<T>(promise: Promise<RpcReply<T>>, signal?: AbortSignal): Promise<RpcReply<T>> {
  if (signal === undefined) return promise;
  const aborted = (): RpcReply<T> => ({ ok: false, error: new RpcError('RPC_ABORTED', 'call aborted', { cause: signal.reason }) });
  if (signal.aborted) return Promise.resolve(aborted());
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(aborted());
    signal.addEventListener('abort', onAbort, { once: true });
    void promise.then((reply) => {
      signal.removeEventListener('abort', onAbort);
      resolve(reply);
    });
  });
}

function nonZeroU32(random: Random): number {
  let value = random.u32();
  while (value === 0) value = random.u32();
  return value;
}
