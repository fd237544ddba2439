/**
 * Fencing tokens across a primary kill, with real processes: three `lock_server MASTER ME`
 * replicas (tester/cluster.ts, as `npm start` runs them), a LockClient in this process.
 * Tokens granted after the primary is SIGKILLed are larger than every token before.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { connect, type LockClient } from '../lockserver/locks.js';
import { LocalCluster } from '../tester/cluster.js';
import { freeBasePort } from './helpers/ports.js';

t.test('tokens strictly increase across a primary kill', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'lock-tokens-'));
  const base = await freeBasePort();
  const cluster = new LocalCluster({
    replicas: 3,
    basePort: base,
    logDir: dir,
    dataDir: path.join(dir, 'data'),
    binDir: fileURLToPath(new URL('../lockserver/bin/', import.meta.url)),
    env: { ...process.env, RPC_LOSSY: '', RPC_COUNT: '' },
  });
  const clients: LockClient[] = [];
  t.teardown(async () => {
    for (const client of clients) await client.close();
    await cluster.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  await cluster.start(() => {});
  const members = cluster.replicas.map((r) => `127.0.0.1:${r.port}`);
  const a = await connect({ members });
  const b = await connect({ members });
  clients.push(a, b);
  const tokens: number[] = [];
  for (let i = 0; i < 3; i++) {
    for (const client of [a, b]) {
      const lock = await client.acquire('fenced', { timeoutMs: 30_000 });
      tokens.push(lock.token);
      await lock.release();
    }
  }
  const before = Math.max(...tokens);
  const primary = cluster.replicas[0]!; // the first replica is the first primary
  primary.process?.signal('SIGKILL');
  await primary.process?.waitForExit(10_000);
  // a first: b made the last grant before the kill and still caches the lock (a local re-grant
  // to b would rightly carry its hold's token); every grant here alternates between clients.
  for (let i = 0; i < 3; i++) {
    for (const client of [a, b]) {
      const lock = await client.acquire('fenced', { timeoutMs: 60_000 });
      tokens.push(lock.token);
      await lock.release();
    }
  }
  for (let i = 1; i < tokens.length; i++) t.ok(tokens[i]! > tokens[i - 1]!, `grant ${i}: token ${tokens[i]} > ${tokens[i - 1]}`);
  t.ok(tokens.slice(6).every((token) => token > before), 'every token after the kill is above every token before');
});
