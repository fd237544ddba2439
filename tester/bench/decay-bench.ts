/**
 * Benchmark (g): no decay with use. The throughput of (b)'s workload with 8 clients on a fresh
 * cluster after a short warm-up (the baseline: the service remembers 16 clients), then again after 10,000
 * other clients each did one acquire+release of a lock of its own, so the lock table remembers
 * 10,000 more clients and locks (the service's `maxClients` bound). Before replication core v2
 * every request marshalled the whole state, so this cost grew with every client ever seen; with
 * the operation log and off-path checkpoints it should not.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { normalizeAddress, tcpNetwork } from '../../lib/tcp.js';
import { CacheProc, encodeCacheLockRequest } from '../../lockserver/cache-protocol.js';
import { LockStatus } from '../../lockserver/protocol.js';
import { RsmClient } from '../../rsm/client.js';
import type { LocalCluster } from '../cluster.js';
import type { Benchmark, BenchReport } from './framework.js';
import { runThroughputLevel, withCluster, type LevelResult } from './rsm-bench.js';

export interface DecayBenchOptions {
  /** Clients remembered before the second measurement. */
  readonly rememberedClients: number;
  readonly durationMs: number;
}

export const DEFAULT_DECAY_BENCH: Omit<DecayBenchOptions, 'durationMs'> = { rememberedClients: 10_000 };

const BUSY_CLIENTS = 8;
/** Concurrent callers while the remembered clients are created. */
const FILL_CONCURRENCY = 32;
const REQUEST_TIMEOUT_MS = 30_000;

/** `count` distinct client ids each acquire and release their own lock once; resolves the failures. */
async function remember(cluster: LocalCluster, count: number): Promise<number> {
  const rpc = new RpcEndpoint(tcpNetwork().connect(), realClock, osRandom());
  const rsm = new RsmClient({ rpc, knownMembers: [cluster.master.id], addressOf: (id) => normalizeAddress(id) });
  let next = 0;
  let failures = 0;
  try {
    await Promise.all(
      Array.from({ length: FILL_CONCURRENCY }, async () => {
        for (let i = next++; i < count; i = next++) {
          const request = encodeCacheLockRequest({ lid: `remembered-${i}`, id: `bench-g-client-${i}`, xid: 1 });
          const acquired = await rsm.invoke(CacheProc.ACQUIRE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined);
          const released = acquired?.status === LockStatus.OK ? await rsm.invoke(CacheProc.RELEASE, request, { timeoutMs: REQUEST_TIMEOUT_MS }).catch(() => undefined) : undefined;
          if (released?.status !== LockStatus.OK) failures++;
        }
      }),
    );
  } finally {
    rsm.close();
    await rpc.close();
  }
  return failures;
}

export const decayBenchmark: Benchmark<DecayBenchOptions> = {
  id: 'g',
  title: `no decay: (b)'s workload with ${BUSY_CLIENTS} clients on a fresh cluster and after 10,000 other clients were served`,
  async run(report: BenchReport, options: DecayBenchOptions): Promise<void> {
    report.note('3 lock_server MASTER ME processes on 127.0.0.1; clients in this process.');
    report.note(`Workload: ${BUSY_CLIENTS} clients, uncached acquire+release through the RSM (as (b)); ${options.durationMs} ms measured per level.`);
    report.note(`In between, ${options.rememberedClients} distinct client ids each acquire and release a lock of their own once.`);
    const { fresh, remembered, failures } = await withCluster(async (cluster) => {
      // A short unmeasured run first, so both measured levels run on warmed-up processes (JIT).
      await runThroughputLevel(cluster, BUSY_CLIENTS, 1_000, 9);
      const fresh: LevelResult = await runThroughputLevel(cluster, BUSY_CLIENTS, options.durationMs, 0);
      const failures = await remember(cluster, options.rememberedClients);
      const remembered: LevelResult = await runThroughputLevel(cluster, BUSY_CLIENTS, options.durationMs, 1);
      return { fresh, remembered, failures };
    });
    report.compare({
      what: 'throughput (acquire+release operations per second)',
      unit: 'ops/s',
      decimals: 1,
      words: ['lower', 'higher'],
      rows: [
        { label: `${2 * BUSY_CLIENTS} clients remembered`, value: fresh.opsPerSecond, baseline: true },
        {
          label: `${options.rememberedClients + 3 * BUSY_CLIENTS} clients remembered`,
          value: remembered.opsPerSecond,
          ...(failures > 0 ? { note: `${failures} of the ${options.rememberedClients} filling operations failed` } : {}),
        },
      ],
    });
    report.compare({
      what: 'server CPU per replicated request (3 replicas, from /proc)',
      unit: 'µs',
      words: ['less', 'more'],
      rows: [
        { label: `${2 * BUSY_CLIENTS} clients remembered`, value: fresh.serverCpuUsPerRequest, baseline: true },
        { label: `${options.rememberedClients + 3 * BUSY_CLIENTS} clients remembered`, value: remembered.serverCpuUsPerRequest },
      ],
    });
    report.note('Target (issue 8): 10,000 remembered clients cost at most 10 % of the throughput.');
  },
};
