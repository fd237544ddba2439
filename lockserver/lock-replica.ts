/**
 * The composition root of a replica of the replicated caching lock service (`lock_server MASTER
 * ME`): the replica's StateMachine is a LockedFileService, i.e. a CachingLockServer and beside it
 * the lock-protected file service (lockserver/file/README.md) fenced by its tokens; a
 * ReplicatedLockHost sends revoke/retry/grant from the primary; a FileMirror writes the files to
 * `<data dir>/files-<ME>/`.
 */
import path from 'node:path';
import { realClock } from '../lib/clock.js';
import { normalizeAddress } from '../lib/tcp.js';
import { RsmClient } from '../rsm/client.js';
import { startReplica, type Replica, type ReplicaOptions } from '../rsm/replica-process.js';
import { CachingLockServer, type CachingLockServerLimits } from './cache-server.js';
import { FileMirror } from './file/file-mirror.js';
import { FileService } from './file/file-service.js';
import { LockedFileService } from './file/locked-files.js';
import { ReplicatedLockHost } from './replicated-host.js';

export interface LockReplicaOptions extends Omit<ReplicaOptions, 'stateMachine'> {
  readonly limits?: Partial<CachingLockServerLimits>;
  readonly noticeResendMs?: number;
  /**
   * The file service's mode: fenced (default) refuses appends without the token of a current
   * hold; unfenced is the specification's basic form (see lockserver/file/README.md).
   */
  readonly unfencedFiles?: boolean;
}

export interface LockReplica {
  readonly replica: Replica;
  readonly stateMachine: CachingLockServer;
  readonly files: FileService;
  /** Where the replica's copies of file_0 … file_99 are. */
  readonly filesDir: string;
  readonly host: ReplicatedLockHost;
  /** Stops the notifier, then the replica. */
  close(): Promise<void>;
}

/**
 * A replica of the replicated caching lock service (`lock_server MASTER ME`): a CachingLockServer
 * as the replica's StateMachine, and a ReplicatedLockHost sending revoke/retry from the primary.
 */
export async function startLockReplica(options: LockReplicaOptions): Promise<LockReplica> {
  const { limits, noticeResendMs, unfencedFiles, ...replicaOptions } = options;
  const stateMachine = new CachingLockServer(limits);
  const files = new FileService({ holdToken: (lock) => stateMachine.holderOf(lock)?.token }, { fenced: unfencedFiles !== true });
  const replica = await startReplica({ ...replicaOptions, stateMachine: new LockedFileService(stateMachine, files) });
  // Beside the node's storage directory <data dir>/<ME>.
  const filesDir = path.join(path.dirname(replica.dataPath), `files-${replica.me}`);
  files.observe(new FileMirror(filesDir));
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
    files,
    filesDir,
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
