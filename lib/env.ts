/**
 * The environment seam. Protocol code (paxos, rsm, lockserver) reaches time, randomness, the
 * network and durable storage only through these interfaces, never through globals. Hosts wire in
 * the real implementations (Node timers, OS-seeded PRNG, TCP, classic-level); the simulator wires
 * in simulated ones (virtual time, seeded PRNG, in-process network, in-memory storage), so a whole
 * cluster runs in one process and the same seed gives the same run.
 */

/** A pending timer. Cancelling a timer that already fired or was cancelled does nothing. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic clock. Only differences are meaningful. */
  now(): number;
  /** Calls `fn` once, `delayMs` (≥ 0) from now. */
  setTimer(delayMs: number, fn: () => void): Timer;
}

/** A seeded pseudo-random source. Every draw advances the sequence. */
export interface Random {
  /** A float in [0, 1). */
  float(): number;
  /** An integer in [0, n), n ≥ 1. */
  int(n: number): number;
  /** An unsigned 32-bit integer. */
  u32(): number;
  /** A new independent generator seeded from this one (for giving each node its own stream). */
  fork(): Random;
}

/**
 * Delivers whole messages (frames) between addresses. The contract is weak on purpose: a message
 * may be lost, duplicated, delayed, reordered, or cut off by a partition. It is never corrupted
 * into a different valid message by the transport itself, but peers may send anything, so
 * receivers must validate.
 *
 * Addresses are strings. A listening endpoint's address is "host:port". A message that arrived over
 * a connection the peer opened carries a reply address that routes back over that connection; an
 * endpoint replies to `from` and never needs to know which kind it is.
 */
export interface Endpoint {
  /** This endpoint's own address ("127.0.0.1:3772"), or a local label for client-only endpoints. */
  readonly address: string;
  /** Sends one message. Never throws for network reasons; delivery is best-effort. */
  send(to: string, message: Uint8Array): void;
  /** Installs the receive handler. Messages that arrive before a handler is set are dropped. */
  onMessage(handler: (from: string, message: Uint8Array) => void): void;
  /** Stops sending and receiving and releases the port. Idempotent. */
  close(): Promise<void>;
  /**
   * Installs the peer-down handler (optional: a transport that cannot tell may leave it out). The
   * transport calls it when it knows that what it sent to `to` will not be answered: the
   * connection was refused or never came up (`unreachable`), or it closed or was reset
   * (`lost`). `to` is the destination exactly as given to `send`. A hint only: the next send
   * tries again.
   */
  onPeerDown?(handler: (to: string, reason: PeerDownReason) => void): void;
}

/** Why a transport gave up on a destination (see `Endpoint.onPeerDown`). */
export type PeerDownReason = 'unreachable' | 'lost';

export interface Network {
  /** Opens an endpoint that accepts messages at `address` ("host:port"; port 0 = any free port). */
  listen(address: string): Promise<Endpoint>;
  /** Opens a client-only endpoint: it can send to listening endpoints and receive their replies. */
  connect(): Endpoint;
}

/** One write in a storage batch. */
export type StorageOp =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: string };

/**
 * Durable key/value storage for one node. A batch is applied atomically. Only a batch written with
 * `sync: true` is guaranteed to survive a crash (and with it every earlier batch); an unsynced
 * batch may be lost by a crash. Reads see every batch written so far, synced or not.
 */
export interface Storage {
  get(key: string): Promise<Uint8Array | undefined>;
  /** All entries whose key starts with `prefix`, in ascending key order. */
  list(prefix: string): Promise<Array<[string, Uint8Array]>>;
  write(ops: readonly StorageOp[], options: { readonly sync: boolean }): Promise<void>;
  close(): Promise<void>;
}

/** Everything a node's protocol code may use to touch the outside world. */
export interface Env {
  readonly clock: Clock;
  readonly random: Random;
  readonly network: Network;
}
