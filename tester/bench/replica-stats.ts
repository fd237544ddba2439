/**
 * What the benchmarks read of the replica processes they started: CPU time from /proc, and the
 * last executed viewstamp and the primary's batch count from the replicas' status. Shared by (b), (d), (f) and (g).
 */
import fsp from 'node:fs/promises';
import type { LocalCluster } from '../cluster.js';

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * CPU time (user + system, µs) used so far by the processes `pids`, from /proc/<pid>/stat; undefined
 * if any cannot be read (no /proc, or a process exited). The replicas are separate processes, so
 * process.cpuUsage() here would measure the clients instead.
 */
export async function processesCpuUs(pids: readonly number[]): Promise<number | undefined> {
  let total = 0;
  for (const pid of pids) {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) return undefined;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    total += ((utime + stime) * 1e6) / CLOCK_TICKS_PER_SECOND;
  }
  return total;
}

export function replicaPids(cluster: LocalCluster): number[] {
  return cluster.replicas.flatMap((replica) => (replica.process?.running === true ? [replica.process.pid] : []));
}

/** CPU time (ms) of all of the cluster's replicas together, or undefined unless every one is running and readable. */
export async function replicasCpuMs(cluster: LocalCluster): Promise<number | undefined> {
  const pids = replicaPids(cluster);
  if (pids.length !== cluster.replicas.length) return undefined;
  const us = await processesCpuUs(pids);
  return us === undefined ? undefined : us / 1000;
}

/**
 * The last executed viewstamp (vid and seqno) of the first replica that answers, and the batches
 * (replication rounds) executed since it started by the primary it names (undefined if unknown),
 * from one status query; undefined if no replica answers.
 */
export async function executedOf(cluster: LocalCluster): Promise<{ vid: string; seqno: number; batches: number | undefined } | undefined> {
  const statuses = (await cluster.status()).filter((s) => s.state === 'up');
  const first = statuses.find((s) => s.lastViewstamp !== undefined);
  if (first?.lastViewstamp === undefined) return undefined;
  const [vid, seqno] = first.lastViewstamp.split('.');
  const batches = statuses.find((s) => s.replica.id === first.primary)?.batches;
  return { vid: vid!, seqno: Number(seqno), batches };
}
