/**
 * A replicated key/value store: the example service that shows the StateMachine interface serves
 * more than locks. Operations are put, get and append. Each request carries the client's id and a
 * per-client sequence number; the service remembers, per client, the last sequence number it
 * executed and the reply, so a request resent to a new primary (the RSM client does that when a
 * primary dies mid-request) is answered again without being executed twice.
 *
 * A client must issue its requests one at a time with increasing sequence numbers (the RSM client
 * does); a request older than the last one executed is answered STALE with no effect.
 */
import { Reader, Writer, decode } from '../../lib/codec.js';
import type { ExecuteResult, StateMachine } from '../state-machine.js';

export const KvProc = { PUT: 1, GET: 2, APPEND: 3 } as const;
export type KvProc = (typeof KvProc)[keyof typeof KvProc];

export const KvStatus = {
  OK: 0,
  /** get of a key that was never written */
  NO_KEY: 1,
  /** the request is older than the client's last executed one */
  STALE: 2,
  /** the request did not decode, or names an unknown procedure */
  BAD_REQUEST: 3,
  /** a bound below was exceeded */
  TOO_LARGE: 4,
} as const;

/** Bounds, so that no client can grow a replica's memory without limit. */
export const KV_KEY_BYTES_MAX = 1024;
export const KV_VALUE_BYTES_MAX = 1024 * 1024;
export const KV_KEYS_MAX = 100_000;
export const KV_CLIENTS_MAX = 10_000;

export interface KvRequest {
  readonly client: string;
  readonly seq: number;
  readonly key: string;
  /** The value for put and append; ignored by get. */
  readonly value: string;
}

export function encodeKvRequest(request: KvRequest): Uint8Array {
  return new Writer().string(request.client).u64(request.seq).string(request.key).string(request.value).finish();
}

function readKvRequest(reader: Reader): KvRequest {
  return {
    client: reader.string(KV_KEY_BYTES_MAX),
    seq: reader.u64(),
    key: reader.string(KV_KEY_BYTES_MAX),
    value: reader.string(KV_VALUE_BYTES_MAX),
  };
}

/** The reply of every operation: the value read (get) or the value after the operation. */
export function decodeKvReply(reply: Uint8Array): ReturnType<typeof decode<string>> {
  return decode(reply, (r) => r.string());
}

interface LastExecuted {
  readonly seq: number;
  readonly status: number;
  readonly reply: Uint8Array;
}

export class KvService implements StateMachine {
  private values = new Map<string, string>();
  private lastByClient = new Map<string, LastExecuted>();

  execute(proc: number, request: Uint8Array): ExecuteResult {
    const decoded = decode(request, readKvRequest);
    if (!decoded.ok || !isKvProc(proc)) return { status: KvStatus.BAD_REQUEST, reply: new Uint8Array(0) };
    const { client, seq, key, value } = decoded.value;

    const last = this.lastByClient.get(client);
    if (last !== undefined && seq === last.seq) return { status: last.status, reply: last.reply };
    if (last !== undefined && seq < last.seq) return { status: KvStatus.STALE, reply: new Uint8Array(0) };
    if (last === undefined && this.lastByClient.size >= KV_CLIENTS_MAX) {
      return { status: KvStatus.TOO_LARGE, reply: new Uint8Array(0) };
    }

    const result = this.apply(proc, key, value);
    this.lastByClient.set(client, { seq, ...result });
    return result;
  }

  private apply(proc: KvProc, key: string, value: string): ExecuteResult {
    const reply = (status: number, text: string): ExecuteResult => ({ status, reply: new Writer().string(text).finish() });
    const current = this.values.get(key);
    switch (proc) {
      case KvProc.GET:
        return current === undefined ? reply(KvStatus.NO_KEY, '') : reply(KvStatus.OK, current);
      case KvProc.PUT:
      case KvProc.APPEND: {
        const next = proc === KvProc.PUT ? value : (current ?? '') + value;
        if (next.length > KV_VALUE_BYTES_MAX) return reply(KvStatus.TOO_LARGE, current ?? '');
        if (current === undefined && this.values.size >= KV_KEYS_MAX) return reply(KvStatus.TOO_LARGE, '');
        this.values.set(key, next);
        return reply(KvStatus.OK, next);
      }
    }
  }

  /** Keys and client records in sorted order, so equal states marshal to equal bytes. */
  marshalState(): Uint8Array {
    const w = new Writer();
    const keys = [...this.values.keys()].sort();
    w.list(keys, (w2, key) => w2.string(key).string(this.values.get(key)!));
    const clients = [...this.lastByClient.keys()].sort();
    w.list(clients, (w2, client) => {
      const last = this.lastByClient.get(client)!;
      w2.string(client).u64(last.seq).u32(last.status).bytes(last.reply);
    });
    return w.finish();
  }

  unmarshalState(state: Uint8Array): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    const decoded = decode(state, (r) => {
      const values = new Map(r.list((r2) => [r2.string(KV_KEY_BYTES_MAX), r2.string(KV_VALUE_BYTES_MAX)] as const, 8, KV_KEYS_MAX));
      const clients = new Map(
        r.list((r2) => [r2.string(KV_KEY_BYTES_MAX), { seq: r2.u64(), status: r2.u32(), reply: r2.bytes(KV_VALUE_BYTES_MAX).slice() }] as const, 24, KV_CLIENTS_MAX),
      );
      return { values, clients };
    });
    if (!decoded.ok) return decoded;
    this.values = decoded.value.values;
    this.lastByClient = decoded.value.clients;
    return { ok: true };
  }

  /** For checkers: the current value of `key`. */
  valueOf(key: string): string | undefined {
    return this.values.get(key);
  }
}

function isKvProc(proc: number): proc is KvProc {
  return proc === KvProc.PUT || proc === KvProc.GET || proc === KvProc.APPEND;
}
