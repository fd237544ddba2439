/**
 * lock_tester over the replicated lock service, in process: three replicas (startLockReplica:
 * a CachingLockServer as each RsmNode's StateMachine, the primary's Notifier sending revoke and
 * retry) on free loopback ports, the five classic tests through RSM clients, and the detection of
 * which service listens at a port (a replica answers `members`, an unreplicated server does not
 * know the procedure). Also the status RPC on the control port.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { startCachingLockServer } from '../lockserver/cache-host.js';
import { RsmTestStatus, rsmTestProtocol } from '../rsm/protocol.js';
import { clusterPorts } from '../tester/cluster.js';
import { detectLockService, rsmCachingClientFactory, runLockTester } from '../tester/lock-tester.js';
import { startLockReplica, type LockReplica } from '../lockserver/lock-replica.js';
import { freeBasePort, waitUntil } from './helpers/ports.js';

t.test('lock_tester passes through the RSM against 3 in-process replicas; detection tells replica from unreplicated server', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lock-tester-rsm-'));
  const replicas: LockReplica[] = [];
  const endpoints: RpcEndpoint[] = [];
  t.teardown(async () => {
    for (const replica of replicas) await replica.close();
    for (const rpc of endpoints) await rpc.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const base = await freeBasePort();
  const ports = clusterPorts(base, 3).map(String);

  for (const [i, me] of ports.entries()) {
    const replica = await startLockReplica({ master: ports[0]!, me, logDir: dir, dataDir: path.join(dir, 'data'), lossyPercent: 0 });
    replicas.push(replica);
    const node = replica.replica.node;
    await waitUntil(() => node.status().members.length === i + 1 && !node.isInViewChange, 30_000, `${me} in view ${i + 1}`);
  }
  const primary = replicas[0]!.replica.node;
  await waitUntil(() => primary.isPrimary && primary.status().members.length === 3, 30_000, 'p0 primary of a synchronised 3-member view');

  const network = tcpNetwork({ lossyPercent: 0 });
  const probe = new RpcEndpoint(network.connect(), realClock, osRandom());
  endpoints.push(probe);

  // Detection: a backup's port answers members too (any replica works for lock_tester).
  const detected = await detectLockService(probe, `127.0.0.1:${ports[1]}`);
  t.same(detected, { kind: 'replicated', members: ports, primary: ports[0] }, 'a replica answers members: replicated');

  const unreplicated = await startCachingLockServer({ network, clock: realClock, random: osRandom(), address: '127.0.0.1:0' });
  t.teardown(() => unreplicated.close());
  t.same(await detectLockService(probe, unreplicated.address), { kind: 'unreplicated' }, 'an unreplicated server: no such procedure');

  // The status RPC on the control port: view, primary, last viewstamp.
  const status = await probe.newClient(replicas[0]!.replica.controlAddress).call(rsmTestProtocol.status, { dummy: 0 }, { timeoutMs: 5_000 });
  t.ok(status.ok && status.status === RsmTestStatus.OK, 'status answers OK');
  if (status.ok) t.match(status.result, { vid: 3, members: ports, primary: ports[0], inViewChange: false, phase: 'normal in view 3 as primary', last: { vid: 0, seqno: 0 } });

  // The five tests through a backup's port: the RSM clients find the primary.
  const lines: string[] = [];
  const errors: string[] = [];
  const result = await runLockTester({
    clients: rsmCachingClientFactory(`127.0.0.1:${ports[2]}`, { network, clock: realClock, random: osRandom() }),
    print: (line) => lines.push(line),
    printError: (line) => errors.push(line),
    timeoutMs: 240_000,
  });
  t.same(errors, []);
  t.same(result, { ok: true, passed: [1, 2, 3, 4, 5] });

  // Every replica executed the same requests: same last viewstamp, same state.
  await waitUntil(() => replicas.every((r) => r.replica.node.lastExecuted.seqno === primary.lastExecuted.seqno), 10_000, 'backups caught up');
  const last = primary.lastExecuted;
  t.equal(last.vid, 3, 'requests stamped in view 3');
  t.ok(last.seqno > 10, `many requests executed (last ${last.vid}.${last.seqno})`);
  const state = Buffer.from(replicas[0]!.stateMachine.marshalState()).toString('hex');
  for (const r of replicas.slice(1)) t.equal(Buffer.from(r.stateMachine.marshalState()).toString('hex'), state, `${r.replica.me} has the primary's state`);
  for (const r of replicas) r.stateMachine.invariants();
  // Notices went out only from the primary.
  t.ok(replicas[0]!.host.notifier.sent > 0, 'the primary sent revoke/retry notices');
  t.equal(replicas[1]!.host.notifier.sent + replicas[2]!.host.notifier.sent, 0, 'backups sent none');
});
