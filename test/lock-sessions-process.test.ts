/**
 * Sessions with real processes: three `lock_server MASTER ME` replicas (tester/cluster.ts), a
 * holder in a child process (test/helpers/lock-holder.ts) with a 2 s TTL, a waiter in this process.
 * - SIGKILL the holder: the waiter gets the lock within TTL + 1 s.
 * - SIGSTOP the holder past its TTL: its local deadline passes before the waiter is granted, it
 *   reports LOCK_LOST after SIGCONT, and its writes with the old token are rejected by a fenced
 *   resource (it keeps the highest token it has seen).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { connect, type LockClient } from '../lockserver/locks.js';
import { LocalCluster } from '../tester/cluster.js';
import { freeBasePort } from './helpers/ports.js';

const TTL_MS = 2_000;
const HOLDER = fileURLToPath(new URL('./helpers/lock-holder.js', import.meta.url));

interface HolderEvent {
  readonly event: 'held' | 'write' | 'lost';
  readonly token: number;
  readonly code?: string;
  readonly deadlineEpochMs?: number;
  readonly atEpochMs?: number;
}

/** A fenced resource: accepts a write only with a token ≥ the highest seen. */
class FencedResource {
  highest = 0;
  accepted: number[] = [];
  rejected: number[] = [];
  write(token: number): boolean {
    if (token < this.highest) {
      this.rejected.push(token);
      return false;
    }
    this.highest = token;
    this.accepted.push(token);
    return true;
  }
}

function startHolder(members: string[], name: string, onEvent: (e: HolderEvent) => void): ChildProcess {
  const child = spawn(process.execPath, [HOLDER, members.join(','), String(TTL_MS), name], { stdio: ['ignore', 'pipe', 'inherit'] });
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      onEvent(JSON.parse(line) as HolderEvent);
    } catch {
      // not ours
    }
  });
  return child;
}

async function waitFor<T>(get: () => T | undefined, limitMs: number, what: string): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

t.test('sessions with real processes', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'lock-sessions-'));
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
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGCONT');
      } catch {
        // gone
      }
      child.kill('SIGKILL');
    }
    for (const client of clients) await client.close();
    await cluster.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  await cluster.start(() => {});
  const members = cluster.replicas.map((r) => `127.0.0.1:${r.port}`);
  const waiter = await connect({ members, session: { ttlMs: 10_000 } });
  clients.push(waiter);

  await t.test('a SIGKILLed holder’s lock goes to a waiting client within TTL + 1 s', async (t) => {
    const events: HolderEvent[] = [];
    const child = startHolder(members, 'killed', (e) => events.push(e));
    children.push(child);
    const held = await waitFor(() => events.find((e) => e.event === 'held'), 30_000, 'the holder holds the lock');
    const acquired = waiter.acquire('killed', { timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 300)); // the waiter is queued
    const killedAt = Date.now();
    child.kill('SIGKILL');
    const lock = await acquired;
    const elapsed = Date.now() - killedAt;
    t.ok(elapsed <= TTL_MS + 1_000, `granted ${elapsed} ms after the kill (TTL ${TTL_MS} ms)`);
    t.ok(lock.token > held.token, 'a higher token');
    await lock.release();
  });

  await t.test('a SIGSTOPped holder loses its lock before it is granted elsewhere; its old token is fenced off', async (t) => {
    const resource = new FencedResource();
    const events: HolderEvent[] = [];
    let writesAfterCont = 0;
    let continued = false;
    const child = startHolder(members, 'stopped', (e) => {
      events.push(e);
      if (e.event === 'write') {
        resource.write(e.token);
        if (continued) writesAfterCont++;
      }
    });
    children.push(child);
    const held = await waitFor(() => events.find((e) => e.event === 'held'), 30_000, 'the holder holds the lock');
    await waitFor(() => (resource.accepted.length > 0 ? true : undefined), 5_000, 'a first write');
    const acquired = waiter.acquire('stopped', { timeoutMs: 30_000 });
    process.kill(child.pid!, 'SIGSTOP');
    const lock = await acquired;
    const grantedAt = Date.now();
    t.ok(lock.token > held.token, 'the waiter got a higher token');
    t.ok(resource.write(lock.token), 'the new holder writes');
    await new Promise((resolve) => setTimeout(resolve, 200));
    continued = true;
    process.kill(child.pid!, 'SIGCONT');
    const lost = await waitFor(() => events.find((e) => e.event === 'lost'), 10_000, 'the holder reports the loss');
    t.equal(lost.code, 'LOCK_LOST');
    t.ok(lost.deadlineEpochMs! < grantedAt, `the holder's local deadline (${lost.deadlineEpochMs}) came before the grant elsewhere (${grantedAt})`);
    await waitFor(() => (writesAfterCont > 0 ? true : undefined), 5_000, 'a write after SIGCONT');
    t.ok(resource.rejected.length > 0 && resource.rejected.every((tok) => tok === held.token), 'its writes with the old token are rejected');
    t.equal(resource.highest, lock.token);
    await lock.release();
    child.kill('SIGKILL');
  });
});
