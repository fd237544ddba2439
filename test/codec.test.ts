import t from 'tap';
import { decode, encode } from '../lib/codec.js';

t.test('u64 round trip', async (t) => {
  const bytes = encode((w) => w.u64(2 ** 40 + 5).string('héllo'));
  const back = decode(bytes, (r) => [r.u64(), r.string()] as const);
  t.same(back, { ok: true, value: [2 ** 40 + 5, 'héllo'] });
});
