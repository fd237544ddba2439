import fc from 'fast-check';
import t from 'tap';
import { KvProc, KvService, KvStatus, decodeKvReply, encodeKvRequest } from '../rsm/kv/kv-service.js';

const op = fc.record({
  proc: fc.constantFrom(KvProc.PUT, KvProc.GET, KvProc.APPEND),
  client: fc.constantFrom('a', 'b', 'c'),
  key: fc.constantFrom('x', 'y', 'z'),
  value: fc.string({ maxLength: 4 }),
  resend: fc.boolean(),
});

function run(service: KvService, proc: number, client: string, seq: number, key: string, value: string) {
  const { status, reply } = service.execute(proc, encodeKvRequest({ client, seq, key, value }));
  const text = decodeKvReply(reply);
  return { status, value: text.ok ? text.value : '' };
}

t.test('kv agrees with a Map model, and a resent request is answered again without re-executing', async (t) => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const service = new KvService();
      const model = new Map<string, string>();
      const seqs = new Map<string, number>();
      for (const o of ops) {
        const seq = (seqs.get(o.client) ?? 0) + 1;
        seqs.set(o.client, seq);
        const current = model.get(o.key);
        let expected: { status: number; value: string };
        if (o.proc === KvProc.GET) expected = current === undefined ? { status: KvStatus.NO_KEY, value: '' } : { status: KvStatus.OK, value: current };
        else {
          const next = o.proc === KvProc.PUT ? o.value : (current ?? '') + o.value;
          model.set(o.key, next);
          expected = { status: KvStatus.OK, value: next };
        }
        const got = run(service, o.proc, o.client, seq, o.key, o.value);
        if (got.status !== expected.status || got.value !== expected.value) return false;
        // A duplicate (same client, same seq) must return the same reply and change nothing.
        if (o.resend && JSON.stringify(run(service, o.proc, o.client, seq, o.key, o.value)) !== JSON.stringify(got)) return false;
      }
      return [...model].every(([k, v]) => service.valueOf(k) === v);
    }),
    { numRuns: 300 },
  );
  t.pass('model agreement held for 300 random histories');
});

t.test('an older request than the last executed is STALE and has no effect', async (t) => {
  const service = new KvService();
  t.equal(run(service, KvProc.PUT, 'a', 2, 'k', 'new').status, KvStatus.OK);
  t.equal(run(service, KvProc.PUT, 'a', 1, 'k', 'old').status, KvStatus.STALE);
  t.same(run(service, KvProc.GET, 'b', 1, 'k', ''), { status: KvStatus.OK, value: 'new' });
});

t.test('marshal/unmarshal round-trips and the copy behaves identically afterwards', async (t) => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 30 }), fc.array(op, { maxLength: 30 }), (before, after) => {
      const original = new KvService();
      let seq = 0;
      for (const o of before) run(original, o.proc, o.client, ++seq, o.key, o.value);
      const copy = new KvService();
      if (!copy.unmarshalState(original.marshalState()).ok) return false;
      if (Buffer.compare(copy.marshalState(), original.marshalState()) !== 0) return false;
      for (const o of after) {
        seq++;
        if (JSON.stringify(run(original, o.proc, o.client, seq, o.key, o.value)) !== JSON.stringify(run(copy, o.proc, o.client, seq, o.key, o.value))) return false;
      }
      return true;
    }),
    { numRuns: 200 },
  );
  t.pass('round trip held for 200 random states');
});

t.test('malformed requests and states are rejected without throwing or changing state', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: -5, max: 10 }), fc.uint8Array({ maxLength: 80 }), (proc, bytes) => {
      const service = new KvService();
      run(service, KvProc.PUT, 'a', 1, 'k', 'v');
      const before = service.marshalState();
      const result = service.execute(proc, bytes);
      const afterExecute = service.marshalState();
      if (result.status === KvStatus.BAD_REQUEST && Buffer.compare(afterExecute, before) !== 0) return false;
      const unmarshalled = service.unmarshalState(bytes);
      return unmarshalled.ok || Buffer.compare(service.marshalState(), afterExecute) === 0;
    }),
    { numRuns: 1000 },
  );
  t.equal(new KvService().execute(99, encodeKvRequest({ client: 'a', seq: 1, key: 'k', value: '' })).status, KvStatus.BAD_REQUEST, 'unknown procedure');
  t.notOk(new KvService().unmarshalState(Uint8Array.of(0, 0, 0, 9)).ok, 'a forged count is rejected');
});
