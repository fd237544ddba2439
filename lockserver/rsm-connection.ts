/**
 * The caching lock client's connection to the REPLICATED lock service: acquire and release travel
 * as RSM requests (`RsmClient.invoke(proc, bytes)`), which the primary stamps and every replica's
 * CachingLockServer executes in the same order. The RSM client finds the primary and fails over;
 * a request resent to a new primary after a failure is answered from the server's per-client xid
 * record without being executed twice (see README.md, "Duplicate handling, end to end").
 */
import type { RsmClient } from '../rsm/client.js';
import { CacheProc, encodeCacheLockRequest } from './cache-protocol.js';
import type { LockServerConnection } from './cache-client.js';
import { LockError, formatLockId } from './protocol.js';

export interface RsmConnectionOptions {
  /** Deadline of one acquire or release, fail-overs included. Default: the RSM client's. */
  readonly invokeTimeoutMs?: number;
  /** Close the RSM client when the lock client closes (default true: the connection owns it). */
  readonly closeClient?: boolean;
}

export function rsmConnection(client: RsmClient, options: RsmConnectionOptions = {}): LockServerConnection {
  const call = async (proc: number, which: string, lid: number, id: string, xid: number): Promise<number> => {
    try {
      const { status } = await client.invoke(proc, encodeCacheLockRequest({ lid, id, xid }), {
        ...(options.invokeTimeoutMs === undefined ? {} : { timeoutMs: options.invokeTimeoutMs }),
      });
      return status;
    } catch (error) {
      // No answer from any primary: the outcome is unknown, which is what a rejection means here.
      throw new LockError('LOCK_RPC_FAILED', `${which} ${formatLockId(lid)} through the RSM: ${(error as Error).message}`, { cause: error });
    }
  };
  return {
    acquire: (lid, id, xid) => call(CacheProc.ACQUIRE, 'acquire', lid, id, xid),
    release: (lid, id, xid) => call(CacheProc.RELEASE, 'release', lid, id, xid),
    close: () => {
      if (options.closeClient ?? true) client.close();
    },
  };
}
