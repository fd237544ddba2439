/**
 * The composition root of a replica of the replicated caching lock service (`lock_server MASTER
 * ME`): a CachingLockServer as the replica's StateMachine, and a ReplicatedLockHost that sends
 * revoke/retry from the primary.
 */
import { realClock } from '../lib/clock.js';
import { normalizeAddress } from '../lib/tcp.js';
import { RsmClient } from '../rsm/client.js';
import { startReplica, type Replica, type ReplicaOptions } from '../rsm/replica-process.js';
import { CachingLockServer, type CachingLockServerLimits } from './cache-server.js';
import { ReplicatedLockHost } from './replicated-host.js';

export interface LockReplicaOptions extends Omit<ReplicaOptions, 'stateMachine'> {
  readonly limits?: Partial<CachingLockServerLimits>;
  readonly noticeResendMs?: number;
}

export interface LockReplica {
  readonly replica: Replica;
  readonly stateMachine: CachingLockServer;
  readonly host: ReplicatedLockHost;
  /** Stops the notifier, then the replica. */
  close(): Promise<void>;
}

/**
 * A replica of the replicated caching lock service (`lock_server MASTER ME`): a CachingLockServer
 * as the replica's StateMachine, and a ReplicatedLockHost sending revoke/retry from the primary.
 */
export async function startLockReplica(options: LockReplicaOptions): Promise<LockReplica> {
  const { limits, noticeResendMs, ...replicaOptions } = options;
  const stateMachine = new CachingLockServer(limits);
  const replica = await startReplica({ ...replicaOptions, stateMachine });
  // The lease ticker's requests go through the RSM like any client's, starting at this replica.
  const ticker = new RsmClient({ rpc: replica.rpc, knownMembers: [options.me], clock: realClock, addressOf: addressOfMember });
  const host = new ReplicatedLockHost({
    node: replica.node,
    rpc: replica.rpc,
    clock: realClock,
    stateMachine,
    invoke: (proc, request) => ticker.invoke(proc, request, { timeoutMs: 5_000 }),
    sessionCount: () => stateMachine.sessionCount,
    ...(noticeResendMs === undefined ? {} : { noticeResendMs }),
  });
  return {
    replica,
    stateMachine,
    host,
    async close() {
      host.close();
      ticker.close();
      await replica.close();
    },
  };
}

/** A replica id ("3772" or host:port) to its address. */
function addressOfMember(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}
