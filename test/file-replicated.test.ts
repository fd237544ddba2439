/**
 * The file service on real replicas: three in-process `startLockReplica`s (the lock_server
 * composition root) on free loopback ports, FileClients through connectFiles, the mirror files
 * compared byte for byte with the replicated state, and malformed requests that must not hurt.
 * Then the file_tester program, as a user runs it: a primary kill, every replica killed and
 * restarted, a holder killed, a holder paused past its lease.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { connectFiles } from '../lockserver/file/connect.js';
import { FILE_NOT_FOUND, FILE_OK, type FileClient } from '../lockserver/file/file-client.js';
import { FileProc, FileStatus, fileName } from '../lockserver/file/file-protocol.js';
import { startLockReplica, type LockReplica } from '../lockserver/lock-replica.js';
import { connect } from '../lockserver/locks.js';
import { clusterPorts } from '../tester/cluster.js';
import { freeBasePort, waitUntil } from './helpers/ports.js';

t.test('appends reach every replica and its mirror files exactly once; bad input changes nothing', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'file-replicated-'));
  const replicas: LockReplica[] = [];
  const clients: FileClient[] = [];
  t.teardown(async () => {
    for (const client of clients) await client.close().catch(() => undefined);
    for (const replica of replicas) await replica.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const ports = clusterPorts(await freeBasePort(), 3).map(String);
  for (const [i, me] of ports.entries()) {
    replicas.push(await startLockReplica({ master: ports[0]!, me, logDir: dir, dataDir: path.join(dir, 'data'), lossyPercent: 0 }));
    const node = replicas[i]!.replica.node;
    await waitUntil(() => node.status().members.length === i + 1 && !node.isInViewChange, 30_000, `${me} in view ${i + 1}`);
  }
  await waitUntil(() => replicas[0]!.replica.node.isPrimary && !replicas[0]!.replica.node.isInViewChange, 30_000, 'p0 serving');
  const members = ports.map((port) => `127.0.0.1:${port}`);

  const a = await connectFiles({ members });
  const b = await connectFiles({ members });
  clients.push(a, b);
  t.same(await a.init(), { code: 0, message: 'Connected!' });
  t.same(await b.init(), { code: 0, message: 'Connected!' });
  t.equal(await a.acquire(), FILE_OK);
  t.equal(await a.append('file_3', 'α one\n'), FILE_OK, 'non-ASCII data');
  t.equal(await a.append('file_99', 'two\n'), FILE_OK);
  t.equal(await a.append('file_100', 'x'), FILE_NOT_FOUND, 'outside file_0 … file_99: 1');
  await t.rejects(a.append('file_3', ''), { code: 'FILE_BAD_DATA' }, 'empty data');
  await t.rejects(a.append('file_3', new Uint8Array(1024 * 1024 + 1)), { code: 'FILE_BAD_DATA' }, 'over 1 MiB');
  await t.rejects(b.append('file_3', 'not locked\n'), { code: 'FILE_NOT_LOCKED' }, 'appending without holding the lock');
  // b waits for the lock (it is not refused) and gets it when a releases.
  const bAcquired = b.acquire();
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(await a.release(), FILE_OK);
  t.equal(await bAcquired, FILE_OK);
  t.equal(await b.append('file_3', 'three\n'), FILE_OK);
  t.equal(await b.release(), FILE_OK);

  // Malformed file requests through the RSM: refused with a status, the replicas keep serving.
  const raw = await connect({ members });
  t.teardown(() => raw.close());
  for (const junk of [new Uint8Array(0), new Uint8Array([1, 2, 3]), new Uint8Array(64).fill(0xff)]) {
    for (const proc of [FileProc.APPEND, FileProc.HELLO, FileProc.READ, 0x72ee]) {
      const reply = await raw.rsmClient.invoke(proc, junk, { timeoutMs: 10_000 });
      t.equal(reply.status, FileStatus.BAD_REQUEST, `proc ${proc.toString(16)} with ${junk.length} junk bytes`);
    }
  }

  const expected = 'α one\nthree\n';
  t.equal(new TextDecoder().decode(await a.read('file_3')), expected, 'read back through the service');
  // Backups execute a request before the primary answers it, so every replica holds it now;
  // the mirror is written off the request path: wait for it.
  for (const replica of replicas) {
    await waitUntil(() => {
      try {
        return fs.readFileSync(path.join(replica.filesDir, 'file_3'), 'utf8') === expected;
      } catch {
        return false;
      }
    }, 10_000, `${replica.replica.me}'s mirror of file_3`);
    t.same(new Uint8Array(fs.readFileSync(path.join(replica.filesDir, 'file_3'))), replica.files.contents(3), `${replica.replica.me}: mirror = state, byte for byte`);
    t.equal(fs.readFileSync(path.join(replica.filesDir, fileName(99)), 'utf8'), 'two\n');
    replica.files.invariants();
  }
});

const fileTester = fileURLToPath(new URL('../tester/bin/file_tester.js', import.meta.url));

function runTester(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [fileTester, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (out += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 400_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

t.test('file_tester under RPC_LOSSY=10 on every process, 4 clients × 50 holds × 3 appends, a primary SIGKILL and restart: exactly once, holds contiguous, replicas identical', async (t) => {
  const { code, out } = await runTester(['--clients', '4', '--holds', '50', '--appends', '3', '--kill-primary', '--timeout-ms', '380000'], { RPC_LOSSY: '10' });
  t.equal(code, 0, out);
  t.match(out, /SIGKILL the primary/);
  // file_tester fails the run when an untargeted client loses its session, so OK also says that
  // every session survived the loss and the primary change.
  t.match(out, /600 appends acknowledged, 600 records in the files/);
  t.match(out, /file_tester: OK/);
});

t.test('file_tester: a primary SIGKILL and restart in the middle: every acknowledged append exactly once', async (t) => {
  const { code, out } = await runTester(['--clients', '4', '--holds', '6', '--appends', '3', '--kill-primary', '--timeout-ms', '300000'], { RPC_LOSSY: '' });
  t.equal(code, 0, out);
  t.match(out, /SIGKILL the primary/);
  t.match(out, /72 appends acknowledged, 72 records in the files/);
  t.match(out, /file_tester: OK/);
});

t.test('file_tester: every replica SIGKILLed and restarted keeps every acknowledged append', async (t) => {
  const { code, out } = await runTester(['--clients', '3', '--holds', '6', '--appends', '3', '--lock-per-file', '--kill-all', '--timeout-ms', '300000'], { RPC_LOSSY: '' });
  t.equal(code, 0, out);
  t.match(out, /SIGKILL every replica/);
  t.match(out, /54 appends acknowledged, 54 records in the files/);
  t.match(out, /file_tester: OK/);
});

t.test('file_tester: a client SIGKILLed while holding the lock: the others go on after its lease, its unacknowledged append at most once', async (t) => {
  const { code, out } = await runTester(['--clients', '3', '--holds', '6', '--appends', '3', '--ttl-ms', '2000', '--kill-clients', '--timeout-ms', '300000'], { RPC_LOSSY: '' });
  t.equal(code, 0, out);
  t.match(out, /SIGKILL client 0 while it holds the lock/);
  t.match(out, /file_tester: OK/);
});

t.test('file_tester: a client SIGSTOPped past its lease, then resumed: its next append is refused (FILE_STALE_TOKEN) and changes nothing', async (t) => {
  const { code, out } = await runTester(['--clients', '3', '--holds', '6', '--appends', '3', '--ttl-ms', '2000', '--pause-client', '--timeout-ms', '300000'], { RPC_LOSSY: '' });
  t.equal(code, 0, out);
  t.match(out, /SIGSTOP client 0 while it holds the lock/);
  t.match(out, /another client holds the lock now; SIGCONT client 0/);
  t.match(out, /[1-9]\d* refused as stale/);
  t.match(out, /file_tester: OK/);
});
