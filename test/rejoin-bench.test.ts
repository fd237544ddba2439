/**
 * Benchmark (e), rejoin (tester/bench/rejoin-bench.ts): the seeded state is what the header says
 * (checked by installing it in a fresh lock service and asking it), and a shortened run prints
 * its comparisons and says the state was seeded by writing a checkpoint. Times are never checked.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { CachingLockServer } from '../lockserver/cache-server.js';
import { FileService } from '../lockserver/file/file-service.js';
import { LockedFileService } from '../lockserver/file/locked-files.js';
import { buildSeededState } from '../tester/bench/rejoin-bench.js';

const BENCH = fileURLToPath(new URL('../tester/bench/index.js', import.meta.url));

function installed(state: Uint8Array, limits: ConstructorParameters<typeof CachingLockServer>[0]): { locks: CachingLockServer; result: ReturnType<LockedFileService['unmarshalState']> } {
  const locks = new CachingLockServer(limits);
  const service = new LockedFileService(locks, new FileService({ holdToken: (lock) => locks.holderOf(lock)?.token }));
  return { locks, result: service.unmarshalState(state) };
}

t.test('the seeded state: every lock remembered with its grants, 1 in 100 held, spread over the clients', async (t) => {
  const limits = { maxIdleLocks: 30_000 };
  const seed = buildSeededState(25_000, limits, () => {});
  const { locks, result } = installed(seed.state, limits);
  t.same(result, { ok: true }, 'a lock service with the same limits installs it');
  t.equal(seed.clients, 3, 'one client per 10,000 locks');
  t.same(locks.sizes, { busyLocks: seed.held, idleLocks: 25_000 - seed.held, clients: 3, records: seed.records });
  // One in 100 of each client's locks (its 1st, 101st, …) stays held: client c's n-th lock is lock 3n + c.
  const expectedHeld = Array.from({ length: 25_000 }, (_, i) => i).filter((i) => Math.floor(i / 3) % 100 === 0).length;
  t.equal(seed.held, expectedHeld, 'one in 100 of each client\'s locks stays held');
  // Lock i belongs to client i % 3; a held lock is held by its own client, an idle one by nobody.
  let heldSeen = 0;
  for (let i = 0; i < 25_000; i++) {
    const holder = locks.holderOf(`seed-lock-${i}`);
    const shouldBeHeld = Math.floor(i / 3) % 100 === 0;
    if ((holder !== undefined) !== shouldBeHeld || (holder !== undefined && holder.id !== `seed-client-${i % 3}`)) t.fail(`seed-lock-${i} is held by ${holder?.id ?? 'nobody'}`);
    if (holder !== undefined) heldSeen++;
    if (locks.grantsOf(`seed-lock-${i}`) !== (i % 8 === 0 ? 2 : 1)) t.fail(`seed-lock-${i} has ${locks.grantsOf(`seed-lock-${i}`)} grants`);
  }
  t.equal(heldSeen, seed.held);
  for (const probe of seed.probes) {
    t.equal(locks.grantsOf(probe.lid), probe.grants, `probe ${probe.lid}: grants`);
    t.equal(locks.holderOf(probe.lid)?.id, probe.holder, `probe ${probe.lid}: holder`);
  }
  t.ok(seed.probes.some((p) => p.holder !== undefined), 'a held lock is among the probes');
  const other = installed(seed.state, {});
  t.equal(other.result.ok, false, 'a lock service with other limits refuses it');
  t.match(other.result, { reason: /limits differ/ });
});

t.test('the seed is refused when the limits cannot hold it (no silent forgetting)', async (t) => {
  t.throws(() => buildSeededState(200, { maxIdleLocks: 100 }, () => {}), /seeding: the table has \d+ busy and 100 idle locks, expected 2 and 198/);
});

t.test('npm run bench --only e (shortened): seeded checkpoint, both rejoins, their comparisons; exit 0', async (t) => {
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [BENCH, '--only', 'e', '--rejoin-locks', '50', '--duration-ms', '200'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('exit', (exitCode) => {
      clearTimeout(timer);
      resolve({ code: exitCode, output: text });
    });
  });
  t.equal(code, 0, 'exits 0');
  t.match(output, /^\(e\) rejoin: /m);
  t.match(output, /The state is SEEDED/);
  t.match(output, /The REJOIN is real/);
  t.match(output, /^ {4}50 locks: 49 idle \(grant counts 1-2\), 1 held, 1 client\(s\), 50 duplicate-suppression records; [\d,]+ bytes marshalled/m);
  t.match(output, /seeded checkpoint written to the 3 replicas at viewstamp \d+\.\d+; restarting them on it/);
  t.match(output, /the service answers for the seeded locks \(seed-lock-0, seed-lock-49\)/);
  t.match(output, /^ {4}\(e1\) full transfer: restart with a wiped data directory → in sync$/m);
  t.match(output, /^ {4}\(e2\) 1,000 requests behind: restart with its data → in sync$/m);
  t.match(output, /^ {6}10 locks \(baseline\) +[\d,]+ ms +1\.00×/m);
  t.match(output, /^ {6}50 locks +[\d,]+ ms /m);
  t.match(output, /^ {6}target +2,000 ms$/m);
  t.match(output, /^ {4}\(e1\) CPU of the rejoining replica/m);
  t.match(output, /^ {4}\(e2\) CPU of the replica that was primary at the restart, over the same window/m);
  t.notMatch(output, /could not run|did not get in sync/, 'small states get in sync');
});
