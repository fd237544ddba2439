import fc from 'fast-check';
import t from 'tap';
import {
  CONNECTED_MESSAGE,
  DISCONNECTED_MESSAGE,
  FileProc,
  FileStatus,
  MAX_APPEND_BYTES,
  decodeOffsetReply,
  decodeReadReply,
  decodeStringReply,
  encodeAppendRequest,
  encodeClientRequest,
  encodeReadRequest,
  fileIndex,
} from '../lockserver/file/file-protocol.js';
import { FileService, type FileObserver, type LockHolds } from '../lockserver/file/file-service.js';
import { localContext } from '../rsm/state-machine.js';

const text = new TextEncoder();
const ctx = localContext(0);

/** A lock table the tests set by hand: lock name → token of the current hold. */
class Holds implements LockHolds {
  readonly current = new Map<string, number>();
  holdToken(lock: string): number | undefined {
    return this.current.get(lock);
  }
}

function append(service: FileService, args: { client?: string; seq: number; file?: string; lock?: string; token: number; data?: Uint8Array | string }) {
  const data = typeof args.data === 'string' || args.data === undefined ? text.encode(args.data ?? 'x') : args.data;
  const request = encodeAppendRequest({ client: args.client ?? 'c1', seq: args.seq, file: args.file ?? 'file_0', lock: args.lock ?? 'files', token: args.token, data });
  return service.execute(FileProc.APPEND, request, ctx);
}

t.test('file names: exactly file_0 … file_99', async (t) => {
  t.equal(fileIndex('file_0'), 0);
  t.equal(fileIndex('file_99'), 99);
  for (const bad of ['file_100', 'file_07', 'file_', 'file_-1', 'File_1', 'file_1 ', 'file_1x', '']) t.equal(fileIndex(bad), undefined, bad);
});

t.test('hello and goodbye answer the specification messages with code 0', async (t) => {
  const service = new FileService(new Holds());
  const hello = service.execute(FileProc.HELLO, encodeClientRequest('c1'), ctx);
  t.equal(hello.status, 0);
  t.same(decodeStringReply(hello.reply), { ok: true, value: CONNECTED_MESSAGE });
  const bye = service.execute(FileProc.GOODBYE, encodeClientRequest('c1'), ctx);
  t.equal(bye.status, 0);
  t.same(decodeStringReply(bye.reply), { ok: true, value: DISCONNECTED_MESSAGE });
});

t.test('fenced appends: the current hold appends, a lower token is stale, no token is not locked', async (t) => {
  const holds = new Holds();
  const service = new FileService(holds);
  t.equal(append(service, { seq: 1, token: 0 }).status, FileStatus.NOT_LOCKED, 'no token');
  t.equal(append(service, { seq: 2, token: 5 }).status, FileStatus.NOT_LOCKED, 'a token of no current hold');
  holds.current.set('files', 5);
  const ok = append(service, { seq: 3, token: 5, data: 'abc' });
  t.equal(ok.status, FileStatus.OK);
  t.same(decodeOffsetReply(ok.reply), { ok: true, value: 0 });
  t.equal(decodeOffsetReply(append(service, { seq: 4, token: 5, data: 'de' }).reply).ok, true);
  t.equal(new TextDecoder().decode(service.contents(0)), 'abcde');
  // Another client now holds the lock with a higher token and writes; the old holder is fenced off.
  holds.current.set('files', 9);
  t.equal(append(service, { client: 'c2', seq: 1, token: 9, data: 'Z' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 5, token: 5, data: 'late' }).status, FileStatus.STALE_TOKEN);
  t.equal(new TextDecoder().decode(service.contents(0)), 'abcdeZ', 'the stale append changed nothing');
  // A current hold with a higher token than the request, before the new holder wrote anything.
  holds.current.set('other', 12);
  t.equal(append(service, { seq: 6, lock: 'other', token: 11 }).status, FileStatus.STALE_TOKEN);
  holds.current.delete('other');
  t.equal(append(service, { seq: 7, lock: 'other', token: 12 }).status, FileStatus.NOT_LOCKED, 'the hold ended');
  t.equal(service.highestTokenOf('files'), 9);
});

t.test('bad input: unknown file is 1 (not found), bad data and malformed requests change nothing', async (t) => {
  const holds = new Holds();
  holds.current.set('files', 1);
  const service = new FileService(holds);
  t.equal(append(service, { seq: 1, token: 1, file: 'file_100' }).status, FileStatus.NOT_FOUND);
  t.equal(FileStatus.NOT_FOUND, 1, "the specification's code for a missing file");
  t.equal(append(service, { seq: 2, token: 1, data: '' }).status, FileStatus.BAD_DATA, 'empty');
  t.equal(append(service, { seq: 3, token: 1, data: new Uint8Array(MAX_APPEND_BYTES + 1) }).status, FileStatus.BAD_DATA, 'over 1 MiB');
  t.equal(append(service, { seq: 4, token: 1, data: new Uint8Array(MAX_APPEND_BYTES) }).status, FileStatus.OK, 'exactly 1 MiB');
  t.equal(service.execute(FileProc.APPEND, new Uint8Array([1, 2, 3]), ctx).status, FileStatus.BAD_REQUEST);
  t.equal(service.execute(0x7299, new Uint8Array(0), ctx).status, FileStatus.BAD_REQUEST);
  t.equal(service.execute(FileProc.HELLO, new Uint8Array(0), ctx).status, FileStatus.BAD_REQUEST);
  t.equal(append(service, { seq: 0, token: 1 }).status, FileStatus.BAD_REQUEST, 'seq 0');
  t.equal(append(service, { client: '', seq: 5, token: 1 }).status, FileStatus.BAD_REQUEST, 'empty client');
  t.equal(service.length(0), MAX_APPEND_BYTES);
  for (let i = 0; i < 200; i++) {
    const junk = new Uint8Array(i % 40).map((_, k) => (k * 37 + i) & 0xff);
    for (const proc of [FileProc.HELLO, FileProc.APPEND, FileProc.READ, FileProc.GOODBYE]) service.execute(proc, junk, ctx);
  }
  service.invariants();
  t.equal(service.length(0), MAX_APPEND_BYTES, 'junk requests appended nothing');
});

t.test('a retried append is answered again and applied once; an older one is refused', async (t) => {
  const holds = new Holds();
  holds.current.set('files', 3);
  const service = new FileService(holds);
  const first = append(service, { seq: 1, token: 3, data: 'one' });
  const again = append(service, { seq: 1, token: 3, data: 'one' });
  t.same(again, first);
  t.equal(append(service, { seq: 2, token: 3, data: 'two' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 1, token: 3, data: 'one' }).status, FileStatus.OLD_REQUEST);
  t.equal(new TextDecoder().decode(service.contents(0)), 'onetwo');
  // A retry of a refused append gets the same refusal even after the lock situation changed.
  holds.current.set('files', 4);
  t.equal(append(service, { seq: 3, token: 3 }).status, FileStatus.STALE_TOKEN);
  holds.current.set('files', 3);
  t.equal(append(service, { seq: 3, token: 3 }).status, FileStatus.STALE_TOKEN, 'remembered answer');
});

t.test('unfenced mode accepts appends without a token, and still fences appends that carry one', async (t) => {
  const service = new FileService(new Holds(), { fenced: false });
  t.equal(append(service, { seq: 1, token: 0, data: 'a' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 2, token: 7, data: 'b' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 3, token: 6, data: 'c' }).status, FileStatus.STALE_TOKEN);
  t.equal(new TextDecoder().decode(service.contents(0)), 'ab');
});

t.test('read returns a range and the length', async (t) => {
  const holds = new Holds();
  holds.current.set('L', 1);
  const service = new FileService(holds);
  for (const [seq, data] of ['ab', 'cde', 'f'].entries()) append(service, { seq: seq + 1, file: 'file_42', lock: 'L', token: 1, data });
  const reply = service.execute(FileProc.READ, encodeReadRequest({ file: 'file_42', offset: 1, maxBytes: 4 }), ctx);
  t.equal(reply.status, FileStatus.OK);
  const decoded = decodeReadReply(reply.reply);
  t.ok(decoded.ok);
  if (decoded.ok) {
    t.equal(decoded.value.length, 6);
    t.equal(new TextDecoder().decode(decoded.value.data), 'bcde');
  }
  t.equal(service.execute(FileProc.READ, encodeReadRequest({ file: 'nope', offset: 0, maxBytes: 4 }), ctx).status, FileStatus.NOT_FOUND);
});

t.test('the client table is bounded: the least recently active record goes', async (t) => {
  const holds = new Holds();
  holds.current.set('files', 1);
  const service = new FileService(holds, { maxClients: 3 });
  for (const client of ['a', 'b', 'c']) append(service, { client, seq: 1, token: 1 });
  append(service, { client: 'a', seq: 1, token: 1 }); // touches a (a duplicate)
  append(service, { client: 'd', seq: 1, token: 1 }); // evicts b
  t.equal(service.clientCount, 3);
  t.equal(service.length(0), 4, 'the duplicate did not append');
  service.invariants();
});

t.test('state round-trips, refuses other settings and bad bytes, and tells the observer', async (t) => {
  const holds = new Holds();
  holds.current.set('files', 2);
  const service = new FileService(holds);
  append(service, { seq: 1, token: 2, file: 'file_3', data: 'hello' });
  append(service, { seq: 2, token: 2, file: 'file_99', data: 'world' });
  const state = service.marshalState();
  const events: string[] = [];
  const observer: FileObserver = {
    appended: (index, offset, data) => events.push(`append ${index}@${offset} ${new TextDecoder().decode(data)}`),
    reset: (contents) => events.push(`reset ${contents(3).length} ${contents(99).length}`),
  };
  const copy = new FileService(holds, { observer });
  t.same(copy.unmarshalState(state), { ok: true });
  t.same(copy.marshalState(), state);
  t.equal(new TextDecoder().decode(copy.contents(3)), 'hello');
  t.same(append(copy, { seq: 2, token: 2, file: 'file_99', data: 'world' }).status, FileStatus.OK, 'duplicate record survived');
  t.equal(copy.length(99), 5, 'and was not re-applied');
  append(copy, { seq: 3, token: 2, file: 'file_3', data: '!' });
  t.same(events, ['reset 1 1', 'append 3@5 !']);
  t.match(new FileService(holds, { fenced: false }).unmarshalState(state), { ok: false });
  for (let cut = 0; cut < state.length; cut += Math.max(1, Math.floor(state.length / 50))) {
    t.equal(copy.unmarshalState(state.subarray(0, cut)).ok, false, `truncated at ${cut}`);
  }
  t.equal(new TextDecoder().decode(copy.contents(3)), 'hello!', 'refused states changed nothing');
});

t.test('property: appends agree with a model of files, tokens and per-client sequence numbers', async (t) => {
  const step = fc.record({
    client: fc.constantFrom('a', 'b', 'c'),
    file: fc.constantFrom('file_0', 'file_1', 'file_7', 'file_100'),
    lock: fc.constantFrom('L0', 'L1'),
    token: fc.integer({ min: 0, max: 6 }),
    grant: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    data: fc.string({ minLength: 0, maxLength: 3 }),
    resend: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(step, { maxLength: 50 }), fc.boolean(), (steps, fenced) => {
      const holds = new Holds();
      const service = new FileService(holds, { fenced });
      const files = new Map<string, string>();
      const highest = new Map<string, number>();
      const seqs = new Map<string, number>();
      for (const s of steps) {
        if (s.grant !== undefined) holds.current.set(s.lock, s.grant);
        const seq = (seqs.get(s.client) ?? 0) + 1;
        seqs.set(s.client, seq);
        const current = holds.current.get(s.lock);
        const top = highest.get(s.lock) ?? 0;
        let expected: number;
        if (fileIndex(s.file) === undefined) expected = FileStatus.NOT_FOUND;
        else if (s.data.length === 0) expected = FileStatus.BAD_DATA;
        else if (!fenced && s.token === 0) expected = FileStatus.OK;
        else if (s.token === 0) expected = FileStatus.NOT_LOCKED;
        else if (s.token < top) expected = FileStatus.STALE_TOKEN;
        else if (!fenced) expected = FileStatus.OK;
        else if (current === undefined) expected = FileStatus.NOT_LOCKED;
        else if (current > s.token) expected = FileStatus.STALE_TOKEN;
        else if (current !== s.token) expected = FileStatus.NOT_LOCKED;
        else expected = FileStatus.OK;
        const got = append(service, { client: s.client, seq, file: s.file, lock: s.lock, token: s.token, data: s.data });
        if (got.status !== expected) return false;
        if (expected === FileStatus.OK) {
          files.set(s.file, (files.get(s.file) ?? '') + s.data);
          if (s.token !== 0) highest.set(s.lock, s.token);
        }
        if (s.resend && JSON.stringify(append(service, { client: s.client, seq, file: s.file, lock: s.lock, token: s.token, data: s.data })) !== JSON.stringify(got)) return false;
        service.invariants();
      }
      for (const name of ['file_0', 'file_1', 'file_7']) {
        if (new TextDecoder().decode(service.contents(fileIndex(name)!)) !== (files.get(name) ?? '')) return false;
      }
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass('300 random runs agreed with the model');
});

t.test('the files are bounded one by one and together: FULL, nothing appended', async (t) => {
  const holds = new Holds();
  holds.current.set('files', 1);
  const service = new FileService(holds, { maxFileBytes: 8, maxTotalBytes: 12 });
  t.equal(append(service, { seq: 1, token: 1, file: 'file_0', data: '123456' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 2, token: 1, file: 'file_0', data: '789' }).status, FileStatus.FULL, 'one file over 8 bytes');
  t.equal(append(service, { seq: 3, token: 1, file: 'file_1', data: '123456' }).status, FileStatus.OK);
  t.equal(append(service, { seq: 4, token: 1, file: 'file_2', data: 'x' }).status, FileStatus.FULL, 'all files over 12 bytes');
  t.equal(service.totalBytes(), 12);
  service.invariants();
});
