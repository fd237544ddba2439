/**
 * The kv history checker of the simulator (tester/sim/kv-model.ts) accepts linearizable histories
 * and catches the violations it is there for: a lost or duplicated write, a reordering of
 * non-overlapping operations, a stale read, a write that took effect twice or was never made.
 */
import t from 'tap';
import { KvStatus } from '../rsm/kv/kv-service.js';
import { checkKvHistory, type KvOpKind, type KvOpRecord } from '../tester/sim/kv-model.js';

let seq = 0;
function op(kind: KvOpKind, key: string, call: number, ret: number | undefined, value: string | undefined, token = ''): KvOpRecord {
  seq++;
  const status = value === undefined ? KvStatus.NO_KEY : KvStatus.OK;
  return { client: 'c', seq, kind, key, token, call, ret, result: ret === undefined ? undefined : { status, value: value ?? '' } };
}
const append = (token: string, call: number, ret: number | undefined, after: string): KvOpRecord => op('append', 'k', call, ret, after, token);
const put = (token: string, call: number, ret: number | undefined): KvOpRecord => op('put', 'k', call, ret, token, token);
const get = (call: number, ret: number | undefined, value: string | undefined): KvOpRecord => op('get', 'k', call, ret, value);
const check = (ops: KvOpRecord[], final: string | undefined): string[] => checkKvHistory(ops, new Map([['k', final]]), 1000).violations;

t.test('linearizable histories pass', async (t) => {
  t.same(check([append('a;', 1, 5, 'a;'), append('b;', 6, 9, 'a;b;')], 'a;b;'), [], 'sequential');
  t.same(check([append('a;', 1, 9, 'b;a;'), append('b;', 2, 8, 'b;')], 'b;a;'), [], 'overlapping, either order');
  t.same(check([get(1, 2, undefined), put('p;', 3, 4), append('x;', 5, 6, 'p;x;'), get(7, 8, 'p;x;')], 'p;x;'), [], 'puts and gets');
  t.same(check([append('a;', 1, 5, 'a;'), append('u;', 6, undefined, ''), append('b;', 7, 9, 'a;u;b;')], 'a;u;b;'), [], 'an unknown outcome that took effect');
  t.same(check([append('a;', 1, 5, 'a;'), append('u;', 6, undefined, ''), append('b;', 7, 9, 'a;b;')], 'a;b;'), [], 'an unknown outcome that did not');
  t.same(check([put('p;', 1, 2), append('u;', 3, undefined, ''), put('q;', 10, 11)], 'q;'), [], 'an unknown append erased by a later put');
});

t.test('violations are caught', async (t) => {
  t.match(check([append('a;', 1, 5, 'a;'), append('b;', 6, 9, 'a;b;')], 'b;').join('\n'), /append\(k, a;\).*missing from the final value/, 'a lost acknowledged append');
  t.match(check([append('a;', 1, 5, 'a;')], 'a;a;').join('\n'), /appears twice/, 'an append applied twice');
  t.match(check([append('a;', 1, 5, 'a;'), append('b;', 6, 9, 'b;a;')], 'b;a;').join('\n'), /completed before .* was called/, 'real-time order broken');
  t.match(check([append('a;', 1, 5, 'a;')], 'a;z;').join('\n'), /never written/, 'a token nobody wrote');
  t.match(check([put('p;', 1, 2), get(3, 4, undefined)], 'p;').join('\n'), /no linearization/, 'a stale read after a completed put');
  t.match(check([put('p;', 1, 2), put('q;', 3, 4), get(5, 6, 'p;')], 'q;').join('\n'), /no linearization/, 'a read of an overwritten value');
  t.match(check([append('a;', 1, 5, 'a;'), get(6, 7, 'a;'), append('b;', 8, 9, 'a;b;')], 'a;').join('\n'), /missing|no linearization/, 'a final value that lost the last append');
  t.match(check([put('p;', 1, 2), append('u;', 3, undefined, ''), get(10, 11, 'p;u;u;')], 'p;u;u;').join('\n'), /twice|no linearization/, 'an unknown append applied twice');
});
