import { fnv1a32 } from '../codec.js';
import type { Endpoint, Network, PeerDownReason } from '../env.js';
import type { SimWorld } from './world.js';

/**
 * An in-process network over a SimWorld. Every message becomes a world event after a random delay,
 * and every fault (loss, duplication, delay, hence reordering) is drawn from the world's PRNG, so a
 * seed fixes what arrives, when and in what order.
 *
 * Links and partitions are between *owners* (nodes), not addresses: a node reaches others through
 * its listening endpoint and through client endpoints from `connect()` whose labels it does not
 * choose, and a partition must cut all of them alike. Endpoints opened through `forOwner(owner)`
 * belong to that owner; an endpoint opened directly on the network is its own owner, named by its
 * address. Everything else (sends, replies, in-flight bounds, the trace) is by address.
 *
 * Peer-down hints, as TCP gives them: a message that arrives where no endpoint is open (never
 * opened, closed, or crashed) is a refused connection, and the sender's `onPeerDown(to,
 * 'unreachable')` is called one link delay later (the way back), if the sender is still open and
 * the link still connects them. A partition reports nothing: TCP cannot tell a cut link from a slow
 * one either. Reports are world events like any other, so runs stay deterministic.
 */

export interface LinkFaults {
  /** Each message's delay is drawn uniformly from [delayMinMs, delayMaxMs], whole milliseconds. */
  readonly delayMinMs: number;
  readonly delayMaxMs: number;
  /** Probability that a message is lost. */
  readonly loss: number;
  /** Probability that a message is delivered twice; the copy gets its own independent delay. */
  readonly duplicate: number;
}

/** The starting defaults: no loss, no duplicates, a fixed 1 ms delay (so FIFO per link). */
export const RELIABLE_LINK: LinkFaults = { delayMinMs: 1, delayMaxMs: 1, loss: 0, duplicate: 0 };

export const IN_FLIGHT_MAX_PER_LINK_DEFAULT = 10_000;
/** Ports handed out for "host:0", from the usual ephemeral range. */
const EPHEMERAL_PORT_FIRST = 49152;

export interface SimNetworkOptions {
  /** Messages in flight per ordered address pair; beyond it new ones are dropped. */
  readonly inFlightMaxPerLink?: number;
}

/** What the network keeps per endpoint. */
interface Port {
  readonly address: string;
  readonly owner: string;
  handler: Handler | undefined;
  peerDownHandler: ((to: string, reason: PeerDownReason) => void) | undefined;
  open: boolean;
}

type Handler = (from: string, message: Uint8Array) => void;

export class SimNetwork implements Network {
  /** Open endpoints by address. */
  private readonly ports = new Map<string, Port>();
  private defaults: LinkFaults = RELIABLE_LINK;
  /** Per-link settings by owner pair; each is a full snapshot, independent of later defaults. */
  private readonly overrides = new Map<string, LinkFaults>();
  /** Owner → partition group; undefined when there is no partition. */
  private groups: Map<string, number> | undefined;
  private readonly isolated = new Set<string>();
  private readonly inFlight = new Map<string, number>();
  private readonly inFlightMaxPerLink: number;
  private nextPort = EPHEMERAL_PORT_FIRST;
  private nextClient = 1;
  private nextMessage = 1;

  constructor(private readonly world: SimWorld, options: SimNetworkOptions = {}) {
    this.inFlightMaxPerLink = options.inFlightMaxPerLink ?? IN_FLIGHT_MAX_PER_LINK_DEFAULT;
    if (!(this.inFlightMaxPerLink >= 1)) throw new RangeError('inFlightMaxPerLink must be ≥ 1');
    world.onCrash((owner) => this.crashOwner(owner));
  }

  /** Listens at `address`, owned by itself. Rejects with code EADDRINUSE when the address is taken. */
  async listen(address: string): Promise<Endpoint> {
    return this.bind(address, undefined);
  }

  /** A client-only endpoint labelled `client-N`, owned by itself. */
  connect(): Endpoint {
    return this.bind(undefined, undefined);
  }

  /**
   * The network as seen by one node: its endpoints belong to `owner`, so partitions and link
   * faults for the owner apply to them and `world.crash(owner)` closes them all. The view is tied
   * to the owner's current incarnation: once the owner crashes, endpoints it opens are born closed.
   */
  forOwner(owner: string): Network {
    if (this.world.isDown(owner)) throw new Error(`SimNetwork.forOwner: "${owner}" is crashed; restart it first`);
    const incarnation = this.world.incarnationOf(owner);
    const alive = (): boolean => this.world.incarnationOf(owner) === incarnation;
    return {
      listen: async (address) => (alive() ? this.bind(address, owner) : deadEndpoint(address)),
      connect: () => (alive() ? this.bind(undefined, owner) : deadEndpoint('client-dead')),
    };
  }

  /** Sets network-wide faults, or, with `link` = [fromOwner, toOwner], that one direction's faults. */
  setLinkFaults(faults: Partial<LinkFaults>, link?: readonly [from: string, to: string]): void {
    if (link === undefined) {
      this.defaults = validFaults({ ...this.defaults, ...faults });
      this.world.trace(`faults * ${describeFaults(this.defaults)}`);
    } else {
      const merged = validFaults({ ...this.faultsOf(link[0], link[1]), ...faults });
      this.overrides.set(linkKey(link[0], link[1]), merged);
      this.world.trace(`faults ${link[0]}->${link[1]} ${describeFaults(merged)}`);
    }
  }

  /** Drops the per-link setting of `link`, or of every link; they follow the defaults again. */
  clearLinkFaults(link?: readonly [from: string, to: string]): void {
    if (link === undefined) this.overrides.clear();
    else this.overrides.delete(linkKey(link[0], link[1]));
    this.world.trace(`faults-clear ${link === undefined ? '*' : `${link[0]}->${link[1]}`}`);
  }

  /** The faults in force from `fromOwner` to `toOwner`. */
  faultsOf(fromOwner: string, toOwner: string): LinkFaults {
    return this.overrides.get(linkKey(fromOwner, toOwner)) ?? this.defaults;
  }

  /**
   * Replaces the partition: owners in the same group reach each other, owners in different groups
   * do not, and an owner listed in no group is cut off from everyone (it is in a group of its own).
   * Clears `isolate`. An owner always reaches itself.
   */
  partition(groups: readonly (readonly string[])[]): void {
    const next = new Map<string, number>();
    groups.forEach((group, index) => {
      for (const owner of group) {
        if (next.has(owner)) throw new Error(`SimNetwork.partition: "${owner}" is in two groups`);
        next.set(owner, index);
      }
    });
    this.groups = next;
    this.isolated.clear();
    this.world.trace(`partition ${groups.map((group) => `[${group.join(' ')}]`).join(' ')}`);
  }

  /** Cuts `owner` off from everyone else, on top of any partition. */
  isolate(owner: string): void {
    this.isolated.add(owner);
    this.world.trace(`isolate ${owner}`);
  }

  /** Removes every partition and isolation (link faults stay). */
  heal(): void {
    this.groups = undefined;
    this.isolated.clear();
    this.world.trace('heal');
  }

  /** Whether messages can pass between two owners right now. Symmetric. */
  connected(a: string, b: string): boolean {
    if (a === b) return true;
    if (this.isolated.has(a) || this.isolated.has(b)) return false;
    if (this.groups === undefined) return true;
    const group = this.groups.get(a);
    return group !== undefined && group === this.groups.get(b);
  }

  /** Closes the endpoint at `address` without ceremony (no-op if none). Messages to it are dropped. */
  crash(address: string): void {
    const port = this.ports.get(address);
    if (port !== undefined) this.release(port, 'crash');
  }

  /** Addresses of the open endpoints, sorted. */
  addresses(): string[] {
    return [...this.ports.keys()].sort();
  }

  private crashOwner(owner: string): void {
    for (const port of [...this.ports.values()]) if (port.owner === owner) this.release(port, 'crash');
  }

  /** Opens an endpoint; `address` undefined means a client label, `owner` undefined means itself. */
  private bind(requested: string | undefined, owner: string | undefined): Endpoint {
    let address: string;
    if (requested === undefined) {
      do address = `client-${this.nextClient++}`;
      while (this.ports.has(address));
    } else if (requested.endsWith(':0')) {
      const host = requested.slice(0, -2);
      do address = `${host}:${this.nextPort++}`;
      while (this.ports.has(address));
    } else {
      address = requested;
      if (this.ports.has(address)) {
        throw Object.assign(new Error(`SimNetwork: address ${address} is in use`), { code: 'EADDRINUSE' });
      }
    }
    const port: Port = { address, owner: owner ?? address, handler: undefined, peerDownHandler: undefined, open: true };
    this.ports.set(address, port);
    this.world.trace(`${requested === undefined ? 'connect' : 'listen'} ${address} owner=${port.owner}`);
    return {
      address,
      send: (to, message) => {
        // A closed endpoint stops sending; code of a crashed node may still try.
        if (port.open) this.transmit(port, to, message);
      },
      onMessage: (handler) => {
        port.handler = handler;
      },
      onPeerDown: (handler) => {
        port.peerDownHandler = handler;
      },
      close: async () => {
        if (port.open) this.release(port, 'close');
      },
    };
  }

  private release(port: Port, how: 'close' | 'crash'): void {
    port.open = false;
    port.handler = undefined;
    port.peerDownHandler = undefined;
    if (this.ports.get(port.address) === port) this.ports.delete(port.address);
    this.world.trace(`${how === 'crash' ? 'crash-endpoint' : 'close'} ${port.address}`);
  }

  private transmit(source: Port, to: string, message: Uint8Array): void {
    const id = this.nextMessage++;
    // Copy now: the sender may reuse its buffer, and a receiver must not see later changes.
    const bytes = message.slice();
    this.world.trace(`send #${id} ${source.address}->${to} ${bytes.length}B ${fnv1a(bytes)}`);
    // With no endpoint at `to` yet, the owner is unknown until delivery; use the address meanwhile.
    const target = this.ports.get(to);
    const targetOwner = target?.owner ?? to;
    // A cut link drops at both ends of the flight: when sent and when it would arrive.
    if (!this.connected(source.owner, targetOwner)) return this.drop(`#${id}`, 'partition');
    const faults = this.faultsOf(source.owner, targetOwner);
    const random = this.world.random;
    if (random.float() < faults.loss) return this.drop(`#${id}`, 'loss');
    this.enqueue(`#${id}`, source, to, bytes, faults);
    if (random.float() < faults.duplicate) this.enqueue(`#${id}d`, source, to, bytes.slice(), faults);
  }

  private enqueue(label: string, source: Port, to: string, bytes: Uint8Array, faults: LinkFaults): void {
    const key = linkKey(source.address, to);
    const count = this.inFlight.get(key) ?? 0;
    if (count >= this.inFlightMaxPerLink) return this.drop(label, 'overflow');
    this.inFlight.set(key, count + 1);
    const delayMs = faults.delayMinMs + this.world.random.int(faults.delayMaxMs - faults.delayMinMs + 1);
    this.world.trace(`flight ${label} ${delayMs}ms`);
    this.world.schedule(delayMs, () => {
      const left = this.inFlight.get(key)! - 1;
      if (left === 0) this.inFlight.delete(key);
      else this.inFlight.set(key, left);
      this.deliver(label, source, to, bytes, delayMs);
    });
  }

  private deliver(label: string, source: Port, to: string, bytes: Uint8Array, delayMs: number): void {
    const target = this.ports.get(to);
    if (target === undefined) {
      this.drop(label, 'closed');
      return this.refuse(label, source, to, delayMs);
    }
    if (!this.connected(source.owner, target.owner)) return this.drop(label, 'partition');
    const handler = target.handler;
    if (handler === undefined) return this.drop(label, 'no-handler');
    this.world.trace(`deliver ${label} ${source.address}->${to}`);
    // No try/catch: a handler that throws has a bug, and the run must stop on it.
    handler(source.address, bytes);
  }

  /** The "connection refused" coming back to the sender of `label` after `delayMs`. */
  private refuse(label: string, source: Port, to: string, delayMs: number): void {
    if (source.peerDownHandler === undefined) return;
    this.world.schedule(delayMs, () => {
      const handler = source.peerDownHandler;
      if (!source.open || handler === undefined || !this.connected(source.owner, this.ports.get(to)?.owner ?? to)) return;
      // A new endpoint at `to` meanwhile would have accepted the connection: nothing to report.
      if (this.ports.has(to)) return;
      this.world.trace(`peer-down ${label} ${source.address}->${to} unreachable`);
      handler(to, 'unreachable');
    });
  }

  private drop(label: string, reason: 'partition' | 'loss' | 'overflow' | 'closed' | 'no-handler'): void {
    this.world.trace(`drop ${label} ${reason}`);
  }
}

function deadEndpoint(address: string): Endpoint {
  return { address, send: () => {}, onMessage: () => {}, close: async () => {} };
}

function linkKey(from: string, to: string): string {
  return `${from}\u0000${to}`;
}

function validFaults(faults: LinkFaults): LinkFaults {
  const { delayMinMs, delayMaxMs, loss, duplicate } = faults;
  if (!Number.isSafeInteger(delayMinMs) || !Number.isSafeInteger(delayMaxMs) || delayMinMs < 0 || delayMinMs > delayMaxMs) {
    throw new RangeError(`SimNetwork: need whole 0 ≤ delayMinMs ≤ delayMaxMs, got ${delayMinMs}..${delayMaxMs}`);
  }
  for (const [name, p] of [['loss', loss], ['duplicate', duplicate]] as const) {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`SimNetwork: ${name} must be a probability, got ${p}`);
  }
  return { delayMinMs, delayMaxMs, loss, duplicate };
}

function describeFaults(f: LinkFaults): string {
  return `delay=${f.delayMinMs}..${f.delayMaxMs} loss=${f.loss} dup=${f.duplicate}`;
}

/** 32-bit FNV-1a of the payload, so the trace (and its hash) pins message contents too. */
function fnv1a(bytes: Uint8Array): string {
  return fnv1a32(bytes).toString(16).padStart(8, '0');
}
