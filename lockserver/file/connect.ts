/**
 * Program/host file: connects a FileClient to the replicated lock and file service, over one lock
 * client (so the file client gets sessions, leases, fencing tokens and fail-over from there) and
 * its RSM client (appends travel on the same connection as the lock requests).
 */
import { osRandom } from '../../lib/random.js';
import { connect, type ConnectOptions } from '../locks.js';
import { FileClient } from './file-client.js';

export interface ConnectFilesOptions extends ConnectOptions {
  /** The lock client's session (its lease); passed on to connect(). */
  readonly session?: { readonly ttlMs: number };
  /** Deadline of one file call, fail-overs included (default: wait until the service answers). */
  readonly callTimeoutMs?: number;
}

export async function connectFiles(options: ConnectFilesOptions): Promise<FileClient> {
  const locks = await connect(options);
  // The id must never be reused by another client (its duplicate-suppression record would answer
  // the newcomer): the callback address alone may be, so a random suffix makes it unique.
  const clientId = `${locks.id}/${osRandom().u32().toString(16).padStart(8, '0')}`;
  return new FileClient({
    rsm: locks.rsmClient,
    locks,
    clientId,
    ...(options.callTimeoutMs === undefined ? {} : { timeoutMs: options.callTimeoutMs }),
    onClose: () => locks.close(),
  });
}
