import t from 'tap';
import { FileClient, FILE_NOT_FOUND, FILE_OK, type FileInvoker, type FileLockHold, type FileLocks } from '../lockserver/file/file-client.js';
import { FileService, type LockHolds } from '../lockserver/file/file-service.js';
import { localContext } from '../rsm/state-machine.js';

/** A one-process lock table handing out increasing tokens (no waiting: tests use one holder at a time). */
class FakeLocks implements FileLocks, LockHolds {
  private next = 1;
  readonly holds = new Map<string, number>();
  async acquire(name: string): Promise<FileLockHold> {
    if (this.holds.has(name)) throw new Error(`fake: ${name} is held`);
    const token = this.next++;
    this.holds.set(name, token);
    return { name, token, release: async () => void (this.holds.get(name) === token && this.holds.delete(name)) };
  }
  holdToken(lock: string): number | undefined {
    return this.holds.get(lock);
  }
  /** The lease of `name` ends (as when its holder is paused past its TTL). */
  expire(name: string): void {
    this.holds.delete(name);
  }
}

/** Executes every request on the service, twice when `duplicate` is set (a resend after a lost reply). */
function invoker(service: FileService, duplicate: () => boolean): FileInvoker {
  let time = 0;
  return {
    async invoke(proc, request) {
      const first = service.execute(proc, request, localContext(++time));
      if (duplicate()) {
        const again = service.execute(proc, request, localContext(++time));
        if (again.status !== first.status) throw new Error('a resend was answered differently');
      }
      return first;
    },
  };
}

t.test('the five calls with the specification codes; resends apply once; a lost lock is fenced off', async (t) => {
  const locks = new FakeLocks();
  const service = new FileService(locks);
  let n = 0;
  const client = new FileClient({ rsm: invoker(service, () => n++ % 2 === 0), locks, clientId: 'c1' });
  t.same(await client.init(), { code: 0, message: 'Connected!' });
  t.equal(await client.acquire(), FILE_OK);
  t.equal(await client.append('file_7', 'one\n'), FILE_OK);
  t.equal(await client.append('file_7', 'two\n'), FILE_OK);
  t.equal(await client.append('file_700', 'x'), FILE_NOT_FOUND);
  await t.rejects(client.append('file_7', ''), { code: 'FILE_BAD_DATA' });
  await t.rejects(client.append('file_7', new Uint8Array(1024 * 1024 + 1)), { code: 'FILE_BAD_DATA' });
  t.equal(new TextDecoder().decode(service.contents(7)), 'one\ntwo\n', 'each append once, bad ones not at all');
  t.equal(await client.release(), FILE_OK);
  await t.rejects(client.release(), { code: 'FILE_NOT_LOCKED' });
  await t.rejects(client.append('file_7', 'no lock'), { code: 'FILE_NOT_LOCKED' });

  // Another client takes the lock after the first one's lease ended, and writes.
  t.equal(await client.acquire('files'), FILE_OK);
  locks.expire('files');
  const other = new FileClient({ rsm: invoker(service, () => false), locks, clientId: 'c2' });
  await other.acquire('files');
  t.equal(await other.append('file_7', 'three\n'), FILE_OK);
  await t.rejects(client.append('file_7', 'stale\n'), { code: 'FILE_STALE_TOKEN' });
  t.equal(new TextDecoder().decode(service.contents(7)), 'one\ntwo\nthree\n');
  t.same(await other.close(), { code: 0, message: 'Disconnected!' });
  await t.rejects(other.append('file_7', 'x'), { code: 'FILE_CLOSED' });
  t.equal(locks.holds.size, 0, 'close released the lock');
});

t.test('a bad client id is refused at construction', async (t) => {
  const locks = new FakeLocks();
  t.throws(() => new FileClient({ rsm: invoker(new FileService(locks), () => false), locks, clientId: '' }), { code: 'FILE_BAD_ARGUMENT' });
});
