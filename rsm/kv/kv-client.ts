/**
 * A thin client of the replicated kv service over an RsmClient: put, get and append, each stamped
 * with the client's id and the next sequence number, so the service recognises a request the RSM
 * client sends again (to the same or to a new primary) and answers it without executing it twice.
 *
 * Operations run one at a time (a SerialQueue), as the service requires of one client id. A
 * sequence number is used up even when its operation fails (RSM_NO_QUORUM, RSM_ABORTED): that
 * operation may still take effect, but only before the client's next operation, never after it
 * (the service answers an older sequence number STALE, without effect).
 *
 * The client id must be unique among all clients that ever talk to the group (for example a
 * random nonce with the host name): two clients sharing an id would see each other's replies.
 */
import { SerialQueue } from '../../lib/serial-queue.js';
import type { RsmClient, RsmInvokeOptions } from '../client.js';
import { KV_KEY_BYTES_MAX, KvProc, decodeKvReply, encodeKvRequest } from './kv-service.js';

export interface KvResult {
  /** KvStatus: OK, NO_KEY (get of a missing key), STALE, BAD_REQUEST, TOO_LARGE. */
  readonly status: number;
  /** put/append: the value after the operation; get: the value read ('' when NO_KEY). */
  readonly value: string;
  /** The sequence number the operation was sent with. */
  readonly seq: number;
}

export class KvClient {
  private readonly queue = new SerialQueue();
  private seq: number;

  constructor(
    readonly rsm: RsmClient,
    readonly clientId: string,
    options: { readonly lastSeq?: number } = {},
  ) {
    if (clientId === '' || new TextEncoder().encode(clientId).length > KV_KEY_BYTES_MAX) {
      throw new RangeError(`KvClient: bad client id ${JSON.stringify(clientId)}`);
    }
    this.seq = options.lastSeq ?? 0;
  }

  /** The sequence number of the last operation started. */
  get lastSeq(): number {
    return this.seq;
  }

  put(key: string, value: string, options?: RsmInvokeOptions): Promise<KvResult> {
    return this.call(KvProc.PUT, key, value, options);
  }

  get(key: string, options?: RsmInvokeOptions): Promise<KvResult> {
    return this.call(KvProc.GET, key, '', options);
  }

  append(key: string, value: string, options?: RsmInvokeOptions): Promise<KvResult> {
    return this.call(KvProc.APPEND, key, value, options);
  }

  private call(proc: KvProc, key: string, value: string, options?: RsmInvokeOptions): Promise<KvResult> {
    return this.queue.run(async () => {
      const seq = ++this.seq;
      const request = encodeKvRequest({ client: this.clientId, seq, key, value });
      const { status, reply } = await this.rsm.invoke(proc, request, options);
      const decoded = decodeKvReply(reply);
      return { status, value: decoded.ok ? decoded.value : '', seq };
    });
  }
}
