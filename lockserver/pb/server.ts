/**
 * One server of the primary/backup lock service: the async host around PbLockCore (core.ts).
 *
 * Host obligations, in order, for each request:
 *   1. Check the fault state first (test-only hook, testing.ts): a killed server, or a dying one
 *      that already swallowed its request, answers UNAVAILABLE and executes nothing.
 *   2. Run client requests one at a time (SerialQueue): the backup must apply forwards in the
 *      primary's order, so the primary holds the queue from execution until the forward's answer.
 *   3. Give the request to the core. When it says "forward", send {request id, op, result} to the
 *      backup and wait (at most forwardTimeoutMs); report applied / refused (NOT_BACKUP) / failed.
 *   4. Call `core.invariants()` after every step, then reply with the core's answer.
 *
 * The armed `dying` fault takes the next request that arrives: it is executed (and forwarded) as
 * usual, its answer is withheld, every other request meanwhile gets UNAVAILABLE (the listener is
 * gone), and after dyingDelayMs (2 s, as in the lab) the withheld request is answered UNAVAILABLE
 * (its connection closes without a reply) and the server is dead. Time comes from the injected clock.
 */
import { sleep } from '../../lib/clock.js';
import type { Clock, Network, Random } from '../../lib/env.js';
import { logger } from '../../lib/log.js';
import { RpcEndpoint, type HandlerReply, type RpcOptions } from '../../lib/rpc.js';
import { SerialQueue } from '../../lib/serial-queue.js';
import { normalizeAddress } from '../../lib/tcp.js';
import { DEFAULT_MAX_CLERKS, DEFAULT_MAX_HELD_LOCKS, PbLockCore, type ForwardOutcome, type PbMode, type PbRole } from './core.js';
import { PbLockError, PbStatus, pbProtocol, type PbOp, type PbRequest } from './protocol.js';

const log = logger('pb');

/** How long the primary waits for the backup's answer to a forward before serving alone. */
export const DEFAULT_FORWARD_TIMEOUT_MS = 2_000;
/** The lab's dying delay: the swallowed request's connection closes this long after it arrived. */
export const DYING_DELAY_MS = 2_000;

export interface PbServerOptions {
  readonly forwardTimeoutMs: number;
  /** Only tests change this (the lab tests rely on the 2 s default). */
  readonly dyingDelayMs: number;
  readonly maxClerks: number;
  readonly maxHeldLocks: number;
}

export interface PbServerConfig {
  /** Address of the primary ("host:port"; a bare port means 127.0.0.1). */
  readonly primary: string;
  readonly backup: string;
  readonly role: PbRole;
}

/** The fault states of the test hook. */
export type FaultState = 'none' | 'dying-armed' | 'dying' | 'dead';

/** @internal The key of the test-only fault hook; exported to testing.ts, not from index.ts. */
export const faultHook: unique symbol = Symbol('pb.faultHook');

export interface FaultHook {
  readonly state: FaultState;
  kill(): void;
  armDying(): void;
}

export class PrimaryBackupLockServer {
  readonly options: PbServerOptions;
  readonly primary: string;
  readonly backup: string;
  private readonly core: PbLockCore;
  private readonly queue = new SerialQueue();
  private fault: FaultState = 'none';
  private readonly clock: Clock;

  constructor(
    readonly rpc: RpcEndpoint,
    config: PbServerConfig,
    options: Partial<PbServerOptions> = {},
  ) {
    this.options = {
      forwardTimeoutMs: DEFAULT_FORWARD_TIMEOUT_MS,
      dyingDelayMs: DYING_DELAY_MS,
      maxClerks: DEFAULT_MAX_CLERKS,
      maxHeldLocks: DEFAULT_MAX_HELD_LOCKS,
      ...options,
    };
    this.primary = normalizeAddress(config.primary);
    this.backup = normalizeAddress(config.backup);
    if (this.primary === this.backup) {
      throw new PbLockError('PB_SAME_ADDRESS', `primary and backup are the same address ${this.primary}`);
    }
    this.clock = rpc.clock;
    this.core = new PbLockCore(config.role, { maxClerks: this.options.maxClerks, maxHeldLocks: this.options.maxHeldLocks });
    rpc.handle(pbProtocol.lock, (args) => this.admit(() => this.serveClient('lock', args)));
    rpc.handle(pbProtocol.unlock, (args) => this.admit(() => this.serveClient('unlock', args)));
    rpc.handle(pbProtocol.forward, (args) =>
      this.admit(async () => {
        const status = this.core.applyForward(args);
        this.core.invariants();
        return { status, result: false };
      }),
    );
  }

  /** Listens on its own address (the primary's or the backup's) and serves. */
  static async start(
    env: { readonly network: Network; readonly clock: Clock; readonly random: Random },
    config: PbServerConfig,
    options: Partial<PbServerOptions> = {},
    rpcOptions: Partial<RpcOptions> = {},
  ): Promise<PrimaryBackupLockServer> {
    const primary = normalizeAddress(config.primary);
    const backup = normalizeAddress(config.backup);
    if (primary === backup) throw new PbLockError('PB_SAME_ADDRESS', `primary and backup are the same address ${primary}`);
    const endpoint = await env.network.listen(config.role === 'primary' ? primary : backup);
    return new PrimaryBackupLockServer(new RpcEndpoint(endpoint, env.clock, env.random, rpcOptions), config, options);
  }

  get role(): PbRole {
    return this.core.role;
  }

  get mode(): PbMode {
    return this.core.mode;
  }

  get address(): string {
    return this.rpc.address;
  }

  /** For tests and status lines: is `name` held in this server's table? */
  isHeld(name: string): boolean {
    return this.core.isHeld(name);
  }

  /** Forwards whose result disagreed with this backup's own computation (0 unless a bug). */
  get mismatches(): number {
    return this.core.mismatches;
  }

  close(): Promise<void> {
    this.fault = 'dead';
    return this.rpc.close();
  }

  /** The test-only fault hook (import it through testing.ts). */
  get [faultHook](): FaultHook {
    return {
      state: this.fault,
      kill: () => {
        if (this.fault !== 'dead') log('%s: killed', this.address);
        this.fault = 'dead';
      },
      armDying: () => {
        if (this.fault === 'none') this.fault = 'dying-armed';
      },
    };
  }

  private async admit(serve: () => Promise<HandlerReply<boolean>>): Promise<HandlerReply<boolean>> {
    if (this.fault === 'dead' || this.fault === 'dying') return { status: PbStatus.UNAVAILABLE, result: false };
    if (this.fault === 'dying-armed') {
      this.fault = 'dying';
      log('%s: dying: serving one last request and withholding its reply', this.address);
      await serve(); // executed and forwarded as usual; the answer is swallowed
      await sleep(this.clock, this.options.dyingDelayMs);
      this.fault = 'dead';
      log('%s: dead', this.address);
      return { status: PbStatus.UNAVAILABLE, result: false };
    }
    return serve();
  }

  private serveClient(op: PbOp, request: PbRequest): Promise<HandlerReply<boolean>> {
    return this.queue.run(async () => {
      const decision = this.core.clientRequest(op, request);
      this.core.invariants();
      if (decision.kind === 'reply') return decision.answer;
      const reply = await this.rpc.call(this.backup, pbProtocol.forward, decision.forward, { timeoutMs: this.options.forwardTimeoutMs });
      let outcome: ForwardOutcome;
      if (reply.ok && reply.status === PbStatus.OK) outcome = 'applied';
      else if (reply.ok && reply.status === PbStatus.NOT_BACKUP) outcome = 'refused';
      else outcome = 'failed';
      if (outcome !== 'applied') {
        const why = reply.ok ? `status ${reply.status}` : reply.error.code;
        log('%s: forward to backup %s %s (%s)', this.address, this.backup, outcome, why);
      }
      const answer = this.core.forwardOutcome(outcome);
      this.core.invariants();
      if (outcome === 'failed') log('%s: backup presumed dead; serving alone', this.address);
      if (outcome === 'refused') log('%s: the backup took over; this primary stops serving', this.address);
      return answer;
    });
  }
}
