/**
 * Bad input to the primary/backup lock service: malformed requests, unknown procedures and names
 * over 256 bytes get error statuses and the servers keep serving; a clerk given the same address
 * twice gets a clear error.
 */
import t from 'tap';
import { codecs, procedure, RpcEndpoint } from '../lib/rpc.js';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { tcpNetwork } from '../lib/tcp.js';
import { PbLockError, PbStatus, PrimaryBackupLockClerk, pbProtocol } from '../lockserver/pb/index.js';
import { startPair } from './helpers/pb.js';

t.test('malformed requests, unknown procedures and long names get errors; servers keep serving', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.close());
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  t.teardown(() => rpc.close());
  // Same id as pb.lock, arguments that do not decode (a lone u32).
  const malformed = procedure(pbProtocol.lock.id, 'malformed', codecs.u32, codecs.bool);
  const unknown = procedure(0xa0ff, 'unknown', codecs.u32, codecs.bool);
  for (const address of [pair.primaryAddress, pair.backupAddress]) {
    const bad = await rpc.call(address, malformed, 7);
    t.equal(bad.ok ? bad.status : bad.error.code, 'RPC_BAD_ARGS', `${address}: malformed request → RPC_BAD_ARGS`);
    const none = await rpc.call(address, unknown, 7);
    t.equal(none.ok ? none.status : none.error.code, 'RPC_NO_SUCH_PROC', `${address}: unknown procedure → RPC_NO_SUCH_PROC`);
    for (const name of ['x'.repeat(257), 'é'.repeat(129), '']) {
      const reply = await rpc.call(address, pbProtocol.lock, { clerk: 1, seq: 1, name });
      t.same(reply.ok ? reply.status : reply.error.code, PbStatus.BAD_NAME, `${address}: ${Buffer.byteLength(name)}-byte name → BAD_NAME`);
    }
    const huge = await rpc.call(address, pbProtocol.lock, { clerk: 1, seq: 1, name: 'y'.repeat(70_000) });
    t.equal(huge.ok ? huge.status : huge.error.code, 'RPC_BAD_ARGS', `${address}: a name beyond the wire bound → RPC_BAD_ARGS`);
  }
  const forward = await rpc.call(pair.primaryAddress, pbProtocol.forward, { clerk: 1, seq: 1, op: 'lock', name: 'z', result: true });
  t.same(forward.ok ? forward.status : forward.error.code, PbStatus.NOT_BACKUP, 'a forward to the primary → NOT_BACKUP');
  t.equal(pair.primary.isHeld('z'), false, 'and nothing was applied');
  // Still serving, with the backup still following the primary.
  const ck = pair.clerk();
  t.equal(await ck.lock('x'.repeat(256)), true, 'a 256-byte name is fine');
  t.equal(await ck.lock('ok'), true);
  t.equal(await ck.lock('ok'), false);
  t.equal(ck.usingBackup, false);
  t.equal(pair.backup.isHeld('ok'), true, 'the backup applied the forwarded Lock');
  await t.rejects(ck.lock('x'.repeat(257)), { code: 'PB_BAD_NAME' }, 'the clerk refuses long names itself');
});

t.test('a clerk given the same address twice gets a clear error', async (t) => {
  t.throws(() => new PrimaryBackupLockClerk('4000', '127.0.0.1:4000'), { code: 'PB_SAME_ADDRESS', message: /two servers/ });
  t.throws(() => new PrimaryBackupLockClerk('4000', '4000'), PbLockError);
});

t.test('a clerk makes one call at a time', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.close());
  const ck = pair.clerk();
  const first = ck.lock('a');
  await t.rejects(ck.lock('b'), { code: 'PB_CLERK_BUSY' });
  t.equal(await first, true);
});
