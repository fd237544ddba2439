/**
 * Benchmark (a): the caching lab's workload. Several clients (default two) each repeatedly acquire
 * and release their own locks (default 100 each, 10 rounds), against a real unreplicated lock
 * server on 127.0.0.1 over TCP, in this process, on an ephemeral port. Once with basic clients
 * (the baseline: every acquire and release reaches the server) and once with caching clients
 * (a client keeps a granted lock until the server revokes it; nobody else wants these locks, so
 * nothing is revoked). Counted at the server: new acquire and release requests, with the RPC
 * layer's RPC_COUNT statistics (retransmissions of one request are not new requests). The ideal is
 * one acquire per distinct lock.
 *
 * Each variant first runs one untimed warm-up round on a server of its own, so the timed figures
 * compare warmed-up code.
 */
import { performance } from 'node:perf_hooks';
import { realClock } from '../../lib/clock.js';
import type { Random } from '../../lib/env.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint, type RpcOptions } from '../../lib/rpc.js';
import { tcpNetwork } from '../../lib/tcp.js';
import { BasicLockClient } from '../../lockserver/basic-client.js';
import { BasicLockServer } from '../../lockserver/basic-server.js';
import { CachingLockClient } from '../../lockserver/cache-client.js';
import { CacheProc } from '../../lockserver/cache-protocol.js';
import { startCachingLockServer } from '../../lockserver/cache-host.js';
import { lockProtocol } from '../../lockserver/protocol.js';
import type { Benchmark, BenchReport } from './framework.js';

export interface CacheWorkloadOptions {
  readonly clients: number;
  /** Locks per client; client c uses lock ids c·locks + 1 … c·locks + locks. */
  readonly locks: number;
  readonly rounds: number;
  /** Bound on one acquire (a stuck run fails instead of hanging). */
  readonly acquireTimeoutMs: number;
}

export const DEFAULT_CACHE_WORKLOAD: CacheWorkloadOptions = { clients: 2, locks: 100, rounds: 10, acquireTimeoutMs: 60_000 };

export type ClientKind = 'basic' | 'caching';

export interface WorkloadResult {
  /** New acquire requests the server received during the workload. */
  readonly acquires: number;
  /** New release requests the server received during the workload. */
  readonly releases: number;
  /** Further releases when the clients closed (caching clients give their cached locks back). */
  readonly releasesAtClose: number;
  /** Acquire and release calls the workload made (the same for both kinds). */
  readonly operations: number;
  /** Wall time of the workload, setup and close excluded. */
  readonly elapsedMs: number;
}

/** The server's RPC_COUNT statistics, kept in memory: statsEvery 1 and a parser of the lines. */
export class ServerRequestCounter {
  private counts = new Map<number, number>();

  /** RpcOptions for the server endpoint. */
  readonly rpcOptions: Partial<RpcOptions> = {
    statsEvery: 1,
    printStats: (line) => (this.counts = parseRpcStats(line)),
  };

  /** New requests of procedure `proc` so far. */
  count(proc: number): number {
    return this.counts.get(proc) ?? 0;
  }
}

/** "RPC STATS: 7001:12 7002:3" → {0x7001 → 12, 0x7002 → 3}. */
export function parseRpcStats(line: string): Map<number, number> {
  const counts = new Map<number, number>();
  const match = /^RPC STATS:((?: [0-9a-f]+:\d+)*)$/.exec(line);
  if (match === null) throw new Error(`not an RPC STATS line: ${JSON.stringify(line)}`);
  for (const entry of match[1]!.trim().split(' ').filter((e) => e !== '')) {
    const [proc, count] = entry.split(':') as [string, string];
    counts.set(parseInt(proc, 16), Number(count));
  }
  return counts;
}

interface WorkloadClient {
  acquire(lid: number): Promise<void>;
  release(lid: number): Promise<void>;
  close(): Promise<void>;
}

interface Setup {
  readonly clients: readonly WorkloadClient[];
  close(): Promise<void>;
}

// Both lock services number acquire 0x7001 and release 0x7002.
const ACQUIRE = lockProtocol.acquire.id;
const RELEASE = lockProtocol.release.id;
if (ACQUIRE !== CacheProc.ACQUIRE || RELEASE !== CacheProc.RELEASE) throw new Error('basic and caching procedure numbers differ');

async function setUp(kind: ClientKind, options: CacheWorkloadOptions, counter: ServerRequestCounter, random: Random): Promise<Setup> {
  const network = tcpNetwork({ lossyPercent: 0 });
  const timeout = { timeoutMs: options.acquireTimeoutMs };
  if (kind === 'basic') {
    const serverRpc = new RpcEndpoint(await network.listen('127.0.0.1:0'), realClock, random.fork(), counter.rpcOptions);
    new BasicLockServer(serverRpc);
    const clients = Array.from({ length: options.clients }, (): WorkloadClient => {
      const rpc = new RpcEndpoint(network.connect(), realClock, random.fork());
      const client = new BasicLockClient(rpc, serverRpc.address);
      return {
        acquire: (lid) => client.acquire(lid, timeout),
        release: (lid) => client.release(lid),
        close: async () => {
          client.close();
          await rpc.close();
        },
      };
    });
    return { clients, close: () => serverRpc.close() };
  }
  const server = await startCachingLockServer({ network, clock: realClock, random: random.fork(), address: '127.0.0.1:0', rpcOptions: counter.rpcOptions });
  const clients: WorkloadClient[] = [];
  try {
    for (let i = 0; i < options.clients; i++) {
      const client = await CachingLockClient.open({ network, clock: realClock, random: random.fork(), server: server.address });
      clients.push({
        acquire: async (lid) => void (await client.acquire(String(lid), timeout)),
        release: (lid) => client.release(String(lid)),
        close: () => client.close(),
      });
    }
  } catch (error) {
    await Promise.all(clients.map((client) => client.close()));
    await server.close();
    throw error;
  }
  return { clients, close: () => server.close() };
}

/** Runs the workload once with `kind` clients on a fresh server. */
export async function runCacheWorkload(kind: ClientKind, options: CacheWorkloadOptions, random: Random = osRandom()): Promise<WorkloadResult> {
  const counter = new ServerRequestCounter();
  const setup = await setUp(kind, options, counter, random);
  let closed = false;
  const closeAll = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await Promise.all(setup.clients.map((client) => client.close()));
  };
  try {
    const started = performance.now();
    await Promise.all(
      setup.clients.map(async (client, c) => {
        for (let round = 0; round < options.rounds; round++) {
          for (let i = 1; i <= options.locks; i++) {
            const lid = c * options.locks + i;
            await client.acquire(lid);
            await client.release(lid);
          }
        }
      }),
    );
    const elapsedMs = performance.now() - started;
    const acquires = counter.count(ACQUIRE);
    const releases = counter.count(RELEASE);
    await closeAll();
    return {
      acquires,
      releases,
      releasesAtClose: counter.count(RELEASE) - releases,
      operations: 2 * options.clients * options.locks * options.rounds,
      elapsedMs,
    };
  } finally {
    await closeAll();
    await setup.close();
  }
}

export const cacheWorkloadBenchmark: Benchmark<CacheWorkloadOptions> = {
  id: 'a',
  title: 'lock caching: the caching lab workload, basic versus caching clients',
  async run(report: BenchReport, options: CacheWorkloadOptions): Promise<void> {
    const { clients, locks, rounds } = options;
    const distinct = clients * locks;
    report.note(
      `${clients} clients, each acquiring and releasing its own ${locks} locks in turn, ${rounds} rounds ` +
        `(${(clients * locks * rounds).toLocaleString('en-US')} acquires in all, ${distinct} distinct locks);`,
    );
    report.note('one unreplicated lock server in this process, on 127.0.0.1 over TCP; requests counted at the server (RPC_COUNT)');

    const results = new Map<ClientKind, WorkloadResult>();
    for (const kind of ['basic', 'caching'] as const) {
      await runCacheWorkload(kind, { ...options, rounds: 1 }); // warm-up, discarded
      results.set(kind, await runCacheWorkload(kind, options));
    }
    const basic = results.get('basic')!;
    const caching = results.get('caching')!;

    report.compare({
      what: 'acquire requests reaching the server',
      unit: 'requests',
      words: ['fewer', 'more'],
      rows: [
        { label: 'basic client', value: basic.acquires, baseline: true },
        { label: 'caching client', value: caching.acquires },
        { label: 'ideal', value: distinct, reference: true, note: 'one per distinct lock' },
      ],
    });
    report.compare({
      what: 'release requests reaching the server',
      unit: 'requests',
      words: ['fewer', 'more'],
      rows: [
        { label: 'basic client', value: basic.releases + basic.releasesAtClose, baseline: true },
        {
          label: 'caching client',
          value: caching.releases + caching.releasesAtClose,
          note: `${caching.releasesAtClose} of them at close, giving the cached locks back`,
        },
      ],
    });
    report.compare({
      what: 'wall time of the workload',
      unit: 'ms',
      words: ['less time', 'more time'],
      rows: [
        { label: 'basic client', value: Math.round(basic.elapsedMs), baseline: true },
        { label: 'caching client', value: Math.round(caching.elapsedMs) },
      ],
    });
    const perOp = (result: WorkloadResult): string => `${((result.elapsedMs * 1000) / result.operations).toFixed(1)} µs`;
    report.note(`per acquire or release call: basic ${perOp(basic)}, caching ${perOp(caching)} (one run each after a warm-up; wall times vary with load)`);
  },
};
