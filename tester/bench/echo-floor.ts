/**
 * The floor of benchmark (b): what the same machine does along the same chain with no replication
 * work at all. Three `echo-node` processes on 127.0.0.1 (a "primary" that forwards each echo to two
 * "backups" and answers once both did); N clients in this process, each with its own endpoint,
 * each looping two echo calls per operation (as an acquire+release is two replicated requests),
 * one call at a time per client, like (b)'s clients. (b)'s throughput divided by this is how close
 * the replication core is to the transport's own limit.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { realClock, sleep } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint, codecs, procedure } from '../../lib/rpc.js';
import { tcpNetwork } from '../../lib/tcp.js';
import { chooseBasePort } from '../cluster.js';
import { ChildHandle, isPortFree } from '../processes.js';

/** The floor's one procedure: bytes in, the same bytes out. */
export const echo = procedure<Uint8Array, Uint8Array>(0x7e01, 'bench.echo', codecs.bytes, codecs.bytes);

/** About the size of an encoded acquire request. */
const PAYLOAD = new Uint8Array(48);
const WARMUP_MS = 500;
const READY_LIMIT_MS = 10_000;

export interface FloorLevel {
  readonly clients: number;
  readonly opsPerSecond: number;
  readonly errors: number;
}

/** Runs the echo chain at each client count for `durationMs` (after a warm-up) and stops it. */
export async function measureFloor(clientCounts: readonly number[], durationMs: number): Promise<FloorLevel[]> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'viewstamp-floor-'));
  const script = fileURLToPath(new URL('./echo-node.js', import.meta.url));
  const random = osRandom();
  let base: number | undefined;
  for (let draw = 0; draw < 50 && base === undefined; draw++) {
    const choice = await chooseBasePort(3, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) base = choice.base;
  }
  if (base === undefined) throw new Error('no free ports for the echo floor');
  const [primary, backupA, backupB] = [base, base + 2, base + 4];
  const nodes = [
    ChildHandle.spawn(script, [String(backupA)], path.join(dir, 'backup-a.log'), process.env),
    ChildHandle.spawn(script, [String(backupB)], path.join(dir, 'backup-b.log'), process.env),
    ChildHandle.spawn(script, [String(primary), String(backupA), String(backupB)], path.join(dir, 'primary.log'), process.env),
  ];
  try {
    await waitUntilListening(nodes, [backupA, backupB, primary]);
    // Unmeasured first, as (b) does, so both sides are measured on warmed-up processes (JIT).
    await runLevel(`127.0.0.1:${primary}`, Math.max(...clientCounts), durationMs);
    const levels: FloorLevel[] = [];
    for (const clients of clientCounts) levels.push(await runLevel(`127.0.0.1:${primary}`, clients, durationMs));
    return levels;
  } finally {
    for (const node of nodes) node.signal('SIGKILL');
    await Promise.all(nodes.map((node) => node.exited));
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Waits until each node listens on its port. A node that exits first, or a port still free after
 * READY_LIMIT_MS, fails the floor with what the node wrote, so the cause is in the report.
 */
async function waitUntilListening(nodes: readonly ChildHandle[], ports: readonly number[]): Promise<void> {
  const deadline = Date.now() + READY_LIMIT_MS;
  for (;;) {
    const free = await Promise.all(ports.map(isPortFree));
    if (!free.some(Boolean)) return;
    const exited = nodes.findIndex((node) => node.exitInfo !== undefined);
    const late = Date.now() > deadline;
    if (exited >= 0 || late) {
      const node = nodes[exited >= 0 ? exited : free.indexOf(true)]!;
      const output = await fsp.readFile(node.logFile, 'utf8').catch(() => '');
      const what = exited >= 0 ? `exited (${JSON.stringify(node.exitInfo)})` : `is not listening after ${READY_LIMIT_MS} ms`;
      throw new Error(`echo node ${node.command} ${what}; its output: ${output.trim().split('\n').slice(-5).join(' | ')}`);
    }
    await sleep(realClock, 20);
  }
}

async function runLevel(primary: string, clients: number, durationMs: number): Promise<FloorLevel> {
  const endpoints = Array.from({ length: clients }, () => new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom()));
  let operations = 0;
  let errors = 0;
  let measuring = false;
  let stop = false;
  const loops = endpoints.map(async (rpc) => {
    while (!stop) {
      const first = await rpc.call(primary, echo, PAYLOAD, { timeoutMs: 10_000 });
      const second = await rpc.call(primary, echo, PAYLOAD, { timeoutMs: 10_000 });
      if (!measuring) continue;
      if (first.ok && second.ok && first.status === 0 && second.status === 0) operations++;
      else errors++;
    }
  });
  await sleep(realClock, WARMUP_MS);
  measuring = true;
  const started = performance.now();
  await sleep(realClock, durationMs);
  stop = true;
  await Promise.all(loops);
  const wall = performance.now() - started;
  await Promise.all(endpoints.map((rpc) => rpc.close()));
  return { clients, opsPerSecond: (operations / wall) * 1000, errors };
}
