/**
 * The caching lock client's connection to the REPLICATED lock service: acquire and release travel
 * as RSM requests (`RsmClient.invoke(proc, bytes)`), which the primary stamps and every replica's
 * CachingLockServer executes in the same order. The RSM client finds the primary and fails over;
 * a request resent to a new primary after a failure is answered from the server's per-client xid
 * record without being executed twice (see README.md, "Duplicate handling, end to end").
 */
import type { RsmClient } from '../rsm/client.js';
import { CacheProc, LockStatus, decodeTokenReply, encodeCacheLockRequest } from './cache-protocol.js';
import type { AcquireAnswer, LockServerConnection } from './cache-client.js';
import { LockError, formatLockName } from './protocol.js';

export interface RsmConnectionOptions {
  /** Deadline of one acquire or release, fail-overs included. Default: the RSM client's. */
  readonly invokeTimeoutMs?: number;
  /** Close the RSM client when the lock client closes (default true: the connection owns it). */
  readonly closeClient?: boolean;
}

export function rsmConnection(client: RsmClient, options: RsmConnectionOptions = {}): LockServerConnection {
  const call = async (proc: number, which: string, lid: string, id: string, xid: number): Promise<AcquireAnswer> => {
    let answer: { status: number; reply: Uint8Array };
    try {
      answer = await client.invoke(proc, encodeCacheLockRequest({ lid, id, xid }), {
        ...(options.invokeTimeoutMs === undefined ? {} : { timeoutMs: options.invokeTimeoutMs }),
      });
    } catch (error) {
      // No answer from any primary: the outcome is unknown, which is what a rejection means here.
      throw new LockError('LOCK_RPC_FAILED', `${which} ${formatLockName(lid)} through the RSM: ${(error as Error).message}`, { cause: error });
    }
    const token = decodeTokenReply(answer.reply);
    // An unreadable reply with OK would be a grant we cannot use: treat it as no answer.
    if (!token.ok && answer.status === LockStatus.OK) throw new LockError('LOCK_RPC_FAILED', `${which} ${formatLockName(lid)}: bad reply (${token.reason})`);
    return { status: answer.status, token: token.ok ? token.value : 0 };
  };
  return {
    acquire: (lid, id, xid, tryOnly) => call(tryOnly === true ? CacheProc.TRY_ACQUIRE : CacheProc.ACQUIRE, 'acquire', lid, id, xid),
    release: async (lid, id, xid) => (await call(CacheProc.RELEASE, 'release', lid, id, xid)).status,
    close: () => {
      if (options.closeClient ?? true) client.close();
    },
  };
}
