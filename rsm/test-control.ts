/**
 * The test-control hooks of a replica (rsm_tester, rsm_ctl, the simulator), served on a separate
 * endpoint (port ME+1) so that a self-partition does not cut the tester off:
 *
 * 1. `breakpoint b`: 1 arms rsm breakpoint 1 (the primary dies right after its first backup
 *    answers a batch; a backup right after it executed one and made it durable), 2 arms rsm
 *    breakpoint 2 (a node dies when it commits a view it is a member of), 3 and 4 arm the Paxos
 *    breakpoints; anything else is ERR.
 * 2. `net_repair heal`: 0 arms a partition, which takes effect at the primary's next batch
 *    (`partition1`, on the request path); 1 reconnects at once; anything else is ERR.
 * 3. `status`: the replica's view, primary, phase and last executed viewstamp.
 *
 * The replica calls `partition1`, `breakpoint1` and `breakpoint2` at those points; each does
 * nothing unless armed.
 */
import { logger } from '../lib/log.js';
import type { RpcEndpoint } from '../lib/rpc.js';
import { RsmTestStatus, rsmTestProtocol, type StatusRes } from './protocol.js';

const log = logger('rsm');

/** What the hooks act on. */
export interface TestControlHost {
  readonly me: string;
  /** Cuts this node off the network (false) or reconnects it (true). */
  setReachable(reachable: boolean): void;
  /** Arms Paxos breakpoint 3 or 4. */
  armPaxosBreakpoint(b: 3 | 4): void;
  disarmPaxosBreakpoints(): void;
  /** Ends the process as a crash would, with `message` (the lab's exit at a breakpoint). */
  die(message: string): void;
  status(): StatusRes;
}

export class TestControl {
  private break1 = false;
  private break2 = false;
  /** A partition is armed: the next partition1() cuts the network. */
  private partitionArmed = false;
  private cut = false;

  constructor(private readonly host: TestControlHost) {}

  /** Serves breakpoint, net_repair and status on `control` (its own endpoint). */
  register(control: RpcEndpoint): void {
    control.handle(rsmTestProtocol.breakpoint, (args) => ({ status: this.breakpoint(args.b), result: 0 }));
    control.handle(rsmTestProtocol.net_repair, (args) => ({ status: this.netRepair(args.heal), result: 0 }));
    control.handle(rsmTestProtocol.status, () => ({ status: RsmTestStatus.OK, result: this.host.status() }));
  }

  /** The node cut itself off (partition1) and was not reconnected since. */
  get isPartitioned(): boolean {
    return this.cut;
  }

  breakpoint(b: number): number {
    log('%s breakpoint %d', this.host.me, b);
    switch (b) {
      case 1:
        this.break1 = true;
        return RsmTestStatus.OK;
      case 2:
        this.break2 = true;
        return RsmTestStatus.OK;
      case 3:
      case 4:
        this.host.armPaxosBreakpoint(b);
        return RsmTestStatus.OK;
      default:
        return RsmTestStatus.ERR;
    }
  }

  /** Disarms every breakpoint, RSM and Paxos (the simulator's liveness phase; no RPC for it). */
  disarm(): void {
    this.break1 = false;
    this.break2 = false;
    this.host.disarmPaxosBreakpoints();
  }

  netRepair(heal: number): number {
    log('%s net_repair %d', this.host.me, heal);
    if (heal === 1) {
      this.host.setReachable(true);
      this.cut = false;
      this.partitionArmed = false;
      return RsmTestStatus.OK;
    }
    if (heal === 0) {
      this.partitionArmed = true;
      return RsmTestStatus.OK;
    }
    return RsmTestStatus.ERR;
  }

  /** Cuts this node off if a partition is armed (called from the primary's request path). */
  partition1(): void {
    if (!this.partitionArmed) return;
    log('%s partition1: cutting the network', this.host.me);
    this.host.setReachable(false);
    this.partitionArmed = false;
    this.cut = true;
  }

  /** rsm breakpoint 1 (called mid-request by the invoke paths). */
  breakpoint1(): void {
    if (this.break1) this.host.die('Dying at breakpoint 1 in rsm!');
  }

  /** rsm breakpoint 2: fires when this node commits a view it is a member of. */
  breakpoint2(): void {
    if (this.break2) this.host.die('Dying at breakpoint 2 in rsm!');
  }
}
