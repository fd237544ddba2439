/**
 * A clerk that gives up on a primary which is only slow: the backup takes over, the primary's next
 * forward is refused, and the primary stops (deposed) instead of serving from a table the backup
 * no longer follows. In the simulator, with the clerk's link to the primary made slower than its
 * timeout.
 */
import t from 'tap';
import { RpcEndpoint } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import { PrimaryBackupLockClerk, PrimaryBackupLockServer } from '../lockserver/pb/index.js';
import { resolved } from './helpers/sim.js';

const PRIMARY = '127.0.0.1:7001';
const BACKUP = '127.0.0.1:7002';

t.test('a falsely suspected primary is deposed, and answers stay consistent', async (t) => {
  const world = new SimWorld('pb-takeover');
  const net = new SimNetwork(world);
  const start = (owner: 'primary' | 'backup'): Promise<PrimaryBackupLockServer> =>
    PrimaryBackupLockServer.start(
      { network: net.forOwner(owner), clock: world.clockFor(owner), random: world.random.fork() },
      { primary: PRIMARY, backup: BACKUP, role: owner },
    );
  const primary = await start('primary');
  const backup = await start('backup');
  const clerk = (owner: string): PrimaryBackupLockClerk =>
    new PrimaryBackupLockClerk(PRIMARY, BACKUP, { rpc: new RpcEndpoint(net.forOwner(owner).connect(), world.clockFor(owner), world.random.fork()) });
  const slow = clerk('slow');
  const other = clerk('other');
  t.equal(await resolved(world, other.lock('a')), true);
  t.equal(await resolved(world, slow.lock('b')), true);
  // slow's requests now take longer than its 2 s patience to reach the primary.
  net.setLinkFaults({ delayMinMs: 3_000, delayMaxMs: 3_000 }, ['slow', 'primary']);
  t.equal(await resolved(world, slow.lock('a')), false, 'the backup has a (forwarded)');
  t.equal(slow.usingBackup, true, 'slow gave up on the primary');
  t.equal(backup.mode, 'backup-took-over');
  t.equal(await resolved(world, other.unlock('b')), true, 'other gets the right answer through the backup');
  t.equal(primary.mode, 'deposed', 'the primary stopped when its forward was refused');
  t.equal(other.usingBackup, true, 'other moved to the backup');
  t.equal(await resolved(world, slow.lock('b')), true, 'b was freed once, at the backup');
  t.equal(backup.mismatches, 0);
});
