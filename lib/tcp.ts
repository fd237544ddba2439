import net from 'node:net';
import { realClock } from './clock.js';
import type { Clock, Endpoint, Network, PeerDownReason, Random, Timer } from './env.js';
import { ViewstampError } from './errors.js';
import { DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameDecoder, encodeFrame } from './frame.js';
import { logger } from './log.js';
import { osRandom } from './random.js';

/**
 * The real transport: length-prefixed frames (lib/frame.ts) over TCP, with TCP_NODELAY.
 *
 * Routing. A listening endpoint accepts connections; each accepted connection gets an opaque reply
 * address (`conn:<n>@<listen address>`) that is the `from` of everything arriving on it, and
 * sending to it writes back on that connection (or drops the message once it has closed).
 * Sending to "host:port" uses one cached outgoing connection per destination, opened lazily;
 * whatever the peer sends back on it arrives with `from` = the normalized destination. Sends made
 * while the connection is being opened are queued by the socket.
 *
 * Failure model (the Transport contract is weak on purpose): nothing here retries or reports
 * delivery. A failed connect or a dead connection drops what it had queued and leaves the cache;
 * the next send opens a new one. The RPC layer above retransmits. What the kernel does tell us
 * is passed up as a hint, `onPeerDown(to, reason)`: an outgoing connection that was refused or
 * timed out before connecting reports `unreachable`, one that closed or was reset after
 * connecting reports `lost`, once per destination string it carried, and only when no newer
 * connection to that destination has replaced it (its messages then go on the new one). The RPC
 * layer fails the calls waiting on it at once instead of retransmitting into a dead socket until
 * their deadline. Closing the endpoint reports nothing. Errors from the network and
 * malformed input from peers are logged (DEBUG=viewstamp:tcp) and never thrown: bad framing
 * destroys that one connection only.
 *
 * Bounds: frames ≤ maxFrameBytes (both directions: oversized sends are dropped here rather than
 * making the receiver kill the connection); at most maxQueuedBytes waiting in any one socket
 * (while connecting or behind a slow peer), beyond which messages are dropped; a connect attempt
 * gives up after CONNECT_TIMEOUT_MS; at most MAX_NAMES_PER_CONNECTION destination spellings are
 * remembered per outgoing connection for peer-down reports. Accepted connections are not capped
 * here.
 *
 * Lossy mode (RPC_LOSSY=N, DESIGN.md semantics, not the lab's connection kill): every message sent
 * in either direction is independently lost with probability N%, else sent twice with probability
 * N%, else delayed by 1..200 ms with probability N% (so it can be reordered).
 */

const log = logger('tcp');

/** Default bound on bytes waiting in one socket; leaves room for one maximal frame and then some. */
export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024;

/** A connect that has not completed by then is abandoned (and its queue dropped). */
export const CONNECT_TIMEOUT_MS = 5_000;

/** Lossy mode delays a message by 1..LOSSY_MAX_DELAY_MS. */
export const LOSSY_MAX_DELAY_MS = 200;

const REPLY_ADDRESS_PREFIX = 'conn:';

/** Destination spellings remembered per outgoing connection for peer-down reports. */
const MAX_NAMES_PER_CONNECTION = 8;

export interface TcpOptions {
  /** Percentage 0..100 of messages lost, else duplicated, else delayed (see above). Default 0. */
  readonly lossyPercent?: number;
  /** Largest frame sent or accepted, header included. Default 10 MiB. */
  readonly maxFrameBytes?: number;
  /** Source of lossy-mode draws. Default: seeded from the OS. */
  readonly random?: Random;
  /** Times connect timeouts and lossy delays. Default: the real clock. */
  readonly clock?: Clock;
  /** Bound on bytes waiting in one socket; messages beyond it are dropped. Default 16 MiB. */
  readonly maxQueuedBytes?: number;
}

interface Config {
  readonly lossyPercent: number;
  readonly maxFrameBytes: number;
  readonly random: Random;
  readonly clock: Clock;
  readonly maxQueuedBytes: number;
}

/**
 * Reads RPC_LOSSY: 0 when unset or empty, else an integer percentage 0..100. Anything else throws
 * (code CONFIG_INVALID) so a typo fails at startup instead of silently running without faults.
 */
export function lossyPercentFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env['RPC_LOSSY'];
  if (raw === undefined || raw.trim() === '') return 0;
  const text = raw.trim();
  if (!/^\d{1,3}$/.test(text) || Number(text) > 100) {
    throw new ViewstampError('CONFIG_INVALID', `RPC_LOSSY must be an integer percentage 0..100, got ${JSON.stringify(raw)}`);
  }
  return Number(text);
}

interface HostPort {
  /** Host without IPv6 brackets, as node:net wants it. */
  readonly host: string;
  readonly port: number;
}

/** Parses "host:port", "[v6]:port" or a bare "port" (meaning 127.0.0.1); undefined if malformed. */
function parseAddress(address: string): HostPort | undefined {
  const colon = address.lastIndexOf(':');
  let host = colon < 0 ? '127.0.0.1' : address.slice(0, colon);
  const portText = colon < 0 ? address : address.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port > 65535) return undefined;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  else if (host.includes(':')) return undefined; // an unbracketed v6 literal is ambiguous
  if (host === '' || /[\s\[\]]/.test(host)) return undefined;
  return { host, port };
}

function formatAddress({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The canonical form of an address, used as the connection-cache key and as `from` for replies:
 * "3772" → "127.0.0.1:3772", "host:0080" → "host:80". Throws ADDRESS_INVALID if malformed.
 */
export function normalizeAddress(address: string): string {
  const parsed = parseAddress(address);
  if (parsed === undefined) throw new ViewstampError('ADDRESS_INVALID', `invalid address ${JSON.stringify(address)}`);
  return formatAddress(parsed);
}

export function tcpNetwork(options: TcpOptions = {}): Network {
  const config: Config = {
    lossyPercent: options.lossyPercent ?? 0,
    maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    random: options.random ?? osRandom(),
    clock: options.clock ?? realClock,
    maxQueuedBytes: options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES,
  };
  if (!Number.isInteger(config.lossyPercent) || config.lossyPercent < 0 || config.lossyPercent > 100) {
    throw new ViewstampError('CONFIG_INVALID', `lossyPercent must be an integer 0..100, got ${config.lossyPercent}`);
  }
  if (!Number.isInteger(config.maxQueuedBytes) || config.maxQueuedBytes < 0) {
    throw new ViewstampError('CONFIG_INVALID', `maxQueuedBytes must be a non-negative integer, got ${config.maxQueuedBytes}`);
  }
  // FrameDecoder validates maxFrameBytes; fail here, at construction, rather than on first connection.
  new FrameDecoder(config.maxFrameBytes);

  let clients = 0;
  return {
    listen: (address) => TcpEndpoint.listen(config, address),
    connect: () => new TcpEndpoint(config, `client:${++clients}`),
  };
}

class TcpEndpoint implements Endpoint {
  private handler: ((from: string, message: Uint8Array) => void) | undefined;
  private peerDownHandler: ((to: string, reason: PeerDownReason) => void) | undefined;
  /** Per outgoing connection: the destination strings sent on it (as given to `send`). */
  private readonly destinationsOf = new WeakMap<net.Socket, Set<string>>();
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Connections peers opened to us, by reply address. */
  private readonly accepted = new Map<string, net.Socket>();
  /** Connections we opened, by normalized destination. */
  private readonly outgoing = new Map<string, net.Socket>();
  /** Lossy-mode delayed sends, cancelled on close. */
  private readonly delayed = new Set<Timer>();
  private acceptedCount = 0;

  constructor(
    private readonly config: Config,
    public address: string,
    private readonly server?: net.Server,
  ) {}

  static async listen(config: Config, address: string): Promise<TcpEndpoint> {
    const parsed = parseAddress(address);
    if (parsed === undefined) throw new ViewstampError('ADDRESS_INVALID', `invalid address ${JSON.stringify(address)}`);
    const server = net.createServer();
    const endpoint = new TcpEndpoint(config, formatAddress(parsed), server);
    server.on('connection', (socket) => endpoint.onConnection(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: parsed.host, port: parsed.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      server.close();
      throw new ViewstampError('LISTEN_FAILED', `cannot listen on ${address}: ${(error as Error).message}`, { cause: error });
    }
    // Accept errors (EMFILE, …) must not crash the host; the server keeps listening.
    server.on('error', (error) => log('%s: server error: %s', endpoint.address, error.message));
    const bound = server.address() as net.AddressInfo;
    endpoint.address = formatAddress({ host: parsed.host, port: bound.port });
    log('%s: listening', endpoint.address);
    return endpoint;
  }

  onMessage(handler: (from: string, message: Uint8Array) => void): void {
    this.handler = handler;
  }

  onPeerDown(handler: (to: string, reason: PeerDownReason) => void): void {
    this.peerDownHandler = handler;
  }

  send(to: string, message: Uint8Array): void {
    if (this.closed) return;
    if (FRAME_HEADER_BYTES + message.length > this.config.maxFrameBytes) {
      log('%s: dropping %d-byte message to %s: exceeds the frame limit', this.address, message.length, to);
      return;
    }
    const frame = encodeFrame(message);
    const { lossyPercent, random, clock } = this.config;
    if (lossyPercent > 0) {
      if (random.int(100) < lossyPercent) {
        log('%s: lossy: dropping message to %s', this.address, to);
        return;
      }
      if (random.int(100) < lossyPercent) {
        log('%s: lossy: duplicating message to %s', this.address, to);
        this.transmit(to, frame);
        this.transmit(to, frame);
        return;
      }
      if (random.int(100) < lossyPercent) {
        const delayMs = 1 + random.int(LOSSY_MAX_DELAY_MS);
        log('%s: lossy: delaying message to %s by %d ms', this.address, to, delayMs);
        const timer = clock.setTimer(delayMs, () => {
          this.delayed.delete(timer);
          this.transmit(to, frame);
        });
        this.delayed.add(timer);
        return;
      }
    }
    this.transmit(to, frame);
  }

  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closed = true;
      this.closing = this.shutdown();
    }
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const timer of this.delayed) timer.cancel();
    this.delayed.clear();
    // destroy() drops anything still queued: close means stop sending now, not flush.
    for (const socket of this.accepted.values()) socket.destroy();
    for (const socket of this.outgoing.values()) socket.destroy();
    this.accepted.clear();
    this.outgoing.clear();
    const server = this.server;
    if (server !== undefined) {
      // Resolves once the listening socket and every accepted connection are closed: the port is free.
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    log('%s: closed', this.address);
  }

  /** Writes a frame on the connection `to` names, opening an outgoing one if needed. */
  private transmit(to: string, frame: Uint8Array): void {
    if (this.closed) return;
    const socket = to.startsWith(REPLY_ADDRESS_PREFIX) ? this.accepted.get(to) : this.outgoingTo(to);
    if (socket === undefined || !writable(socket)) {
      log('%s: dropping message to %s: no connection', this.address, to);
      return;
    }
    if (!to.startsWith(REPLY_ADDRESS_PREFIX)) {
      const destinations = this.destinationsOf.get(socket);
      // Bounded: one destination is usually named one or two ways ("3772", "127.0.0.1:3772").
      if (destinations !== undefined && destinations.size < MAX_NAMES_PER_CONNECTION) destinations.add(to);
    }
    if (socket.writableLength + frame.length > this.config.maxQueuedBytes) {
      log('%s: dropping message to %s: %d bytes already queued', this.address, to, socket.writableLength);
      return;
    }
    // Frames sent to one connection in the same turn of the event loop leave in one system call
    // (writev), and reach the peer in one read: a client's release and its next acquire then
    // arrive together and can share the primary's next batch, and replies to many requests of one
    // shared connection cost one write.
    if (socket.writableCorked === 0) {
      socket.cork();
      process.nextTick(uncorkSoon, socket);
    }
    socket.write(frame);
  }

  private outgoingTo(to: string): net.Socket | undefined {
    const parsed = parseAddress(to);
    if (parsed === undefined) {
      log('%s: invalid address %s', this.address, to);
      return undefined;
    }
    const key = formatAddress(parsed);
    const cached = this.outgoing.get(key);
    // A connection the peer has ended is replaced now rather than when its 'close' event comes.
    if (cached !== undefined && writable(cached)) return cached;

    const socket = net.createConnection({ host: parsed.host, port: parsed.port });
    socket.setNoDelay(true);
    this.outgoing.set(key, socket);
    const connectTimer = this.config.clock.setTimer(CONNECT_TIMEOUT_MS, () => {
      socket.destroy(new Error(`connect timed out after ${CONNECT_TIMEOUT_MS} ms`));
    });
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      connectTimer.cancel();
    });
    this.destinationsOf.set(socket, new Set());
    this.attach(socket, key, () => {
      connectTimer.cancel();
      // Only forget our own entry: a newer connection may already have replaced it, and then the
      // messages of the calls waiting go (retransmitted) on that one: nothing to report.
      if (this.outgoing.get(key) !== socket) return;
      this.outgoing.delete(key);
      if (this.closed) return;
      const reason: PeerDownReason = connected ? 'lost' : 'unreachable';
      for (const to of this.destinationsOf.get(socket) ?? []) {
        log('%s: peer %s down (%s)', this.address, to, reason);
        this.peerDownHandler?.(to, reason);
      }
    });
    return socket;
  }

  private onConnection(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // Never reused, so a stale reply address can never reach a newer connection.
    const replyAddress = `${REPLY_ADDRESS_PREFIX}${++this.acceptedCount}@${this.address}`;
    this.accepted.set(replyAddress, socket);
    this.attach(socket, replyAddress, () => this.accepted.delete(replyAddress));
  }

  /** Wires a socket's input to the handler, with `from` as the sender of everything it carries. */
  private attach(socket: net.Socket, from: string, onClose: () => void): void {
    const decoder = new FrameDecoder(this.config.maxFrameBytes);
    socket.on('data', (chunk: Buffer) => {
      const { frames, error } = decoder.push(chunk);
      // Frames before a framing error are intact and delivered. A throwing handler is a
      // programmer error and is deliberately not caught here.
      for (const frame of frames) {
        if (this.closed) return;
        this.handler?.(from, frame);
      }
      if (error !== undefined) {
        log('%s: closing connection %s: %s', this.address, from, error);
        socket.destroy();
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      log('%s: connection %s: %s', this.address, from, error.code ?? error.message);
    });
    socket.on('close', onClose);
  }
}

function uncorkSoon(socket: net.Socket): void {
  if (!socket.destroyed) socket.uncork();
}

/** Whether writing to `socket` can still reach the peer (not destroyed, not ended by either side). */
function writable(socket: net.Socket): boolean {
  return !socket.destroyed && !socket.writableEnded;
}
