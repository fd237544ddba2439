/**
 * Program/host file: connects a FileClient to the replicated lock and file service. Locks come
 * from a lock client (`connect()`: its session, lease, fencing tokens and fail-over); appends go
 * through an RSM client of their own, so they still reach the service after the lock client's
 * session was lost — which is exactly when fencing must refuse them.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../../lib/tcp.js';
import { RsmClient } from '../../rsm/client.js';
import { connect, type ConnectOptions } from '../locks.js';
import { FileClient } from './file-client.js';

export interface ConnectFilesOptions extends ConnectOptions {
  /** Deadline of one file call, fail-overs included (default: wait until the service answers). */
  readonly callTimeoutMs?: number;
}

export async function connectFiles(options: ConnectFilesOptions): Promise<FileClient> {
  const locks = await connect(options);
  const random = osRandom();
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, random.fork());
  const rsm = new RsmClient({ rpc, knownMembers: [...(options.members ?? options.connection?.members ?? [])], clock: realClock, addressOf: addressOfMember });
  // The id must never be reused by another client (its duplicate-suppression record would answer
  // the newcomer): the callback address alone may be, so a random suffix makes it unique.
  const clientId = `${locks.id}/${random.u32().toString(16).padStart(8, '0')}`;
  return new FileClient({
    rsm,
    locks,
    clientId,
    ...(options.callTimeoutMs === undefined ? {} : { timeoutMs: options.callTimeoutMs }),
    onClose: async () => {
      await locks.close();
      rsm.close();
      await rpc.close();
    },
  });
}

function addressOfMember(id: string): string {
  try {
    return normalizeAddress(id);
  } catch {
    return id;
  }
}
