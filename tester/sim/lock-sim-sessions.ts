/**
 * Session clients of the rsm_sim lock workload: lock clients with a short-TTL session
 * (lockserver/session.ts) beside the workload's session-less ones, so that sessions expire under
 * the simulator's faults. Each is partitioned with the other clients (its owner is one of the
 * fault driver's client owners), and some crash once during the fault phase.
 *
 * Drawn from a stream of its own (`rsm-sim-lock-sessions:<seed>`), so the rest of a seed's
 * parameters are unchanged: 0–2 session clients, TTL 2, 4 or 8 s, 1–2 callers of 2–5 acquire/release
 * pairs each, and for each a crash time in the fault phase or none.
 *
 * What the LockChecker sees: a caller holds a lock from its acquire's return until it releases,
 * or until its client's session is lost locally (SessionKeeper: deadline TTL − margin after the
 * last renewal's send), or until its client crashes (a dead process holds nothing). So "no two
 * unexpired holders of one lock, and tokens increase" is checked at every acquire, as for the
 * other clients. A lost or crashed client retires its callers (counted as done) and drops out of
 * the cache checks. Session callers are not written to the history file: its format has no lease
 * expiry, so a lost hold would read as an overlapping one.
 */
import { RpcEndpoint } from '../../lib/rpc.js';
import type { Random } from '../../lib/env.js';
import { SeededRandom } from '../../lib/random.js';
import type { SimWorld } from '../../lib/sim/world.js';
import type { SimNetwork } from '../../lib/sim/network.js';
import { CachingLockClient } from '../../lockserver/cache-client.js';
import { LockError } from '../../lockserver/protocol.js';
import { rsmConnection } from '../../lockserver/rsm-connection.js';
import { SessionKeeper } from '../../lockserver/session.js';
import { RsmClient } from '../../rsm/client.js';
import type { CheckedLockClient, LockChecker } from './lock-checkers.js';
import { pick } from './sim-common.js';

export interface SessionClientPlan {
  readonly name: string;
  readonly ttlMs: number;
  readonly callers: ReadonlyArray<readonly number[]>;
  readonly holdMsMax: number;
  /** Virtual time (from the start of the fault phase) at which it crashes, if it does. */
  readonly crashAfterMs: number | undefined;
}

export function drawSessionClients(seed: number, locks: readonly number[], firstIndex: number, faultPhaseMs: number): SessionClientPlan[] {
  const draw = new SeededRandom(`rsm-sim-lock-sessions:${seed}`);
  const count = draw.int(3);
  const plans: SessionClientPlan[] = [];
  for (let i = 0; i < count; i++) {
    const callers = Array.from({ length: 1 + draw.int(2) }, () => Array.from({ length: 2 + draw.int(4) }, () => pick(draw, locks)));
    plans.push({
      name: `lc${firstIndex + i}`,
      ttlMs: pick(draw, [2_000, 4_000, 8_000]),
      callers,
      holdMsMax: pick(draw, [50, 500, 4_000]),
      crashAfterMs: draw.int(2) === 0 ? draw.int(Math.max(1, faultPhaseMs)) : undefined,
    });
  }
  return plans;
}

export function describeSessionClients(plans: readonly SessionClientPlan[]): string {
  return plans
    .map((p) => `${p.name}:ttl=${p.ttlMs}ms:${p.callers.map((c) => c.length).join('+')}${p.crashAfterMs === undefined ? '' : `/crash@${p.crashAfterMs}ms`}`)
    .join(' ');
}

interface RunningSessionClient {
  readonly plan: SessionClientPlan;
  readonly client: CachingLockClient;
  readonly keeper: SessionKeeper;
  /** Lost its session (locally) or crashed: holds nothing, asks nothing. */
  out: 'lost' | 'crashed' | undefined;
  /** lid → the caller (owner) holding it at the API. */
  readonly held: Map<number, string>;
  /** Callers that finished their pairs. */
  doneCallers: number;
}

export class SessionClients {
  callersTotal = 0;
  lost = 0;
  crashed = 0;
  grants = 0;
  private readonly running: RunningSessionClient[] = [];
  private faultPhaseStart = 0;

  constructor(
    private readonly world: SimWorld,
    private readonly checker: LockChecker,
    readonly plans: readonly SessionClientPlan[],
  ) {}

  /** Starts every client: opens its session, then runs its callers. */
  async start(network: SimNetwork, ids: readonly string[], random: Random): Promise<void> {
    for (const plan of this.plans) {
      const owner = plan.name;
      const net = network.forOwner(owner);
      const clock = this.world.clockFor(owner);
      const callbacks = new RpcEndpoint(await net.listen(`${owner}:cb`), clock, random.fork());
      const rpc = new RpcEndpoint(net.connect(), clock, random.fork(), { callTimeoutMs: 3000 });
      const rsmClient = new RsmClient({ rpc, knownMembers: [...ids], callTimeoutMs: 2000, backoffMsMax: 1000 });
      let keeper: SessionKeeper | undefined;
      const client = new CachingLockClient({
        rpc: callbacks,
        server: rsmConnection(rsmClient),
        clock,
        checkInvariants: true,
        ownedEndpoints: [callbacks, rpc],
        onSessionExpired: () => keeper?.expiredAtService(),
      });
      const running: RunningSessionClient = { plan, client, keeper: undefined as unknown as SessionKeeper, out: undefined, held: new Map(), doneCallers: 0 };
      keeper = new SessionKeeper({
        rsm: rsmClient,
        clock,
        id: client.id,
        ttlMs: plan.ttlMs,
        onLost: (reason) => {
          this.retire(running, 'lost');
          void client.abandon(new LockError('LOCK_SESSION_EXPIRED', reason.message));
        },
      });
      (running as { keeper: SessionKeeper }).keeper = keeper;
      this.running.push(running);
      this.callersTotal += plan.callers.length;
      const pause = (ms: number): Promise<void> => new Promise((resolve) => clock.setTimer(ms, resolve));
      void keeper.open(60_000).then(
        () => {
          plan.callers.forEach((lids, w) => void this.runCaller(running, `${owner}/w${w}`, lids, pause));
        },
        () => this.retire(running, 'lost'),
      );
    }
  }

  private async runCaller(running: RunningSessionClient, owner: string, lids: readonly number[], pause: (ms: number) => Promise<void>): Promise<void> {
    const times = new SeededRandom(`rsm-sim-lock-session-times:${owner}`);
    try {
      for (const lid of lids) {
        if (running.out !== undefined) return;
        let token: number;
        try {
          token = await running.client.acquire(String(lid), { timeoutMs: 20_000 });
        } catch {
          continue; // timed out, or the session is over (checked at the top)
        }
        if (running.out !== undefined) return;
        this.grants++;
        this.checker.acquired(lid, owner, running.client.id, token);
        running.held.set(lid, owner);
        await pause(times.int(running.plan.holdMsMax + 1));
        if (running.out !== undefined) return; // the checker already counted the hold as ended
        running.held.delete(lid);
        this.checker.releasing(lid, owner);
        await running.client.release(String(lid));
      }
    } finally {
      running.doneCallers++;
    }
  }

  /** The client holds nothing from now on; its callers count as done. */
  private retire(running: RunningSessionClient, why: 'lost' | 'crashed'): void {
    if (running.out !== undefined) return;
    running.out = why;
    if (why === 'lost') this.lost++;
    else this.crashed++;
    for (const [lid, owner] of running.held) this.checker.lost(lid, owner);
    running.held.clear();
  }

  /** Marks the start of the fault phase (crash times count from it). */
  faultPhaseStarted(): void {
    this.faultPhaseStart = this.world.now();
  }

  /** Crashes the clients whose crash time has come (called between fault steps). */
  crashDue(): void {
    for (const running of this.running) {
      const at = running.plan.crashAfterMs;
      if (at === undefined || running.out !== undefined || this.world.now() < this.faultPhaseStart + at) continue;
      this.retire(running, 'crashed');
      running.keeper.stop();
      if (!this.world.isDown(running.plan.name)) this.world.crash(running.plan.name);
    }
  }

  /** Whether every caller finished (or retired with its client). */
  get allDone(): boolean {
    return this.running.length === this.plans.length && this.running.every((r) => r.out !== undefined || r.doneCallers === r.plan.callers.length);
  }

  /** The live clients, for the cache checks. */
  checked(): CheckedLockClient[] {
    return this.running
      .filter((r) => r.out === undefined)
      .map((r) => ({ id: r.client.id, cacheStateOf: (lid: string) => r.client.cacheStateOf(lid), xidOf: (lid: string) => r.client.xidOf(lid) }));
  }

  /** Whether `id` is a session client that lost its session or crashed. */
  isOut(id: string): boolean {
    return this.running.some((r) => r.client.id === id && r.out !== undefined);
  }

  /** Whether every live client's cache is quiet for `locks`. */
  quiet(locks: readonly number[]): boolean {
    return this.running.every((r) => r.out !== undefined || locks.every((lid) => ['none', 'free'].includes(r.client.cacheStateOf(String(lid)))));
  }

  keepalives(): number {
    return this.running.reduce((sum, r) => sum + r.keeper.keepalivesSent, 0);
  }

  /** Crashes every client still up (end of run). */
  stopAll(): void {
    for (const r of this.running) {
      r.keeper.stop();
      if (!this.world.isDown(r.plan.name)) this.world.crash(r.plan.name);
    }
  }
}
