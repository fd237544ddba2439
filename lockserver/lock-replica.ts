/**
 * The composition root of a replica of the replicated caching lock service (`lock_server MASTER
 * ME`): the replica's StateMachine is a LockedFileService, i.e. a CachingLockServer and beside it
 * the lock-protected file service (lockserver/file/README.md) fenced by its tokens; a
 * ReplicatedLockHost sends revoke/retry/grant from the primary; a FileMirror writes the files to
 * `<data dir>/files-<ME>/`.
 */
import path from 'node:path';
import { UsageError, parseCount } from '../lib/cli.js';
import { realClock } from '../lib/clock.js';
import { normalizeAddress } from '../lib/tcp.js';
import { RsmClient } from '../rsm/client.js';
import { startReplica, type Replica, type ReplicaOptions } from '../rsm/replica-process.js';
import { CachingLockServer, defaultCachingLockServerLimits, type CachingLockServerLimits } from './cache-server.js';
import { FileMirror } from './file/file-mirror.js';
import { FileService } from './file/file-service.js';
import { LockedFileService } from './file/locked-files.js';
import { ReplicatedLockHost } from './replicated-host.js';

/**
 * The lock table's bounds as `lock_server` options (CachingLockServerLimits, one option each). They
 * decide answers (an acquire beyond a bound answers IOERR, a forgotten idle lock's stat restarts at
 * 0), so they are part of the replicated state: every replica of a group must run with the same
 * values, and keep them across restarts (its log is replayed under them).
 */
export const LOCK_LIMIT_OPTIONS: ReadonlyArray<{ readonly option: string; readonly limit: keyof CachingLockServerLimits; readonly what: string }> = [
  { option: 'max-locks', limit: 'maxLocks', what: 'busy locks, held or waited on' },
  { option: 'max-idle-locks', limit: 'maxIdleLocks', what: 'idle locks whose grant count is remembered' },
  { option: 'max-waiters-per-lock', limit: 'maxWaitersPerLock', what: 'clients queued on one lock' },
  { option: 'max-clients', limit: 'maxClients', what: 'client ids remembered, and sessions' },
  { option: 'max-locks-per-client', limit: 'maxLocksPerClient', what: 'duplicate-suppression records per client' },
];

/**
 * Largest value of a limit option. The table is in memory and marshalled whole (a state transfer
 * ships all of it), so the bound only catches typos and values the u32 fields of the marshalled
 * state could not hold; memory runs out well before it.
 */
export const LOCK_LIMIT_MAX = 100_000_000;

/**
 * The limits given on a command line (`values` from parseCommandLine, keyed by option name), or
 * UsageError for a value that is not an integer 1..LOCK_LIMIT_MAX. Options not given are absent
 * from the result (the defaults apply).
 */
export function lockLimitsFromOptions(values: Readonly<Record<string, string | boolean | undefined>>): Partial<CachingLockServerLimits> {
  const limits: Partial<Record<keyof CachingLockServerLimits, number>> = {};
  for (const { option, limit } of LOCK_LIMIT_OPTIONS) {
    const value = values[option];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new UsageError(`--${option} needs a value`);
    limits[limit] = parseCount(value, `--${option}`, LOCK_LIMIT_MAX, 1);
  }
  return limits;
}

/** The `lock_server` options that give `limits` (those that differ from the defaults), e.g. for a tool starting replicas. */
export function lockLimitArguments(limits: Partial<CachingLockServerLimits>): string[] {
  return LOCK_LIMIT_OPTIONS.flatMap(({ option, limit }) => {
    const value = limits[limit];
    return value === undefined || value === defaultCachingLockServerLimits[limit] ? [] : [`--${option}`, String(value)];
  });
}

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
