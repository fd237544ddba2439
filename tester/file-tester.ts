/**
 * The file tester: a local replica cluster serving the lock and file service, N client processes
 * that each run init → (acquire → append k records to files → release) × M → close, optional
 * faults, and a check of the replicas' files afterwards (tester/file-check.ts).
 *
 * The run, step by step:
 * 1. Start the replicas (lock_server MASTER ME, with RSM_DATA_DIR in a fresh directory) and wait
 *    until each is in a view.
 * 2. Start the clients: each is this program in worker mode, a process of its own, so it can be
 *    SIGKILLed or SIGSTOPped. A worker prints one line per event to its log file, written before
 *    it goes on: `hold C H TOKEN`, `ack C H SEQ FILE` (the append was acknowledged), `stale C H
 *    SEQ FILE` (the service refused it: FILE_STALE_TOKEN), `released C H`, `closed C`.
 * 3. Faults, when asked, once the clients have made some progress:
 *    - `--kill-primary`: SIGKILL the primary, then restart it (it rejoins through a live member);
 *    - `--kill-all`: SIGKILL every replica, then restart them all;
 *    - `--kill-clients`: SIGKILL one client while it holds the lock (its lease must end and the
 *      others go on; its unacknowledged append may appear at most once);
 *    - `--pause-client`: SIGSTOP one client while it holds the lock, until another client has held
 *      it after the paused one's lease ended, then SIGCONT: its next append must be refused
 *      (FILE_STALE_TOKEN) and change nothing.
 * 4. Wait for every client (bounded), then until every replica has executed the same requests
 *    and written its mirror files.
 * 5. Check: every acknowledged append present exactly once in every replica's copy, nothing twice,
 *    holds contiguous, replicas identical; for `--pause-client`, a refused append was seen.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FILE_COUNT, fileName } from '../lockserver/file/file-protocol.js';
import { LocalCluster, chooseBasePort, pause, type Replica } from './cluster.js';
import { checkFiles, formatRecord, type FileRecord } from './file-check.js';
import { ChildHandle, isPortFree, killAllChildren, lockServerScript } from './processes.js';

export interface FileTestOptions {
  readonly clients: number;
  readonly holds: number;
  readonly appends: number;
  /** One lock per file (each hold writes one file) instead of one lock for all files. */
  readonly lockPerFile: boolean;
  readonly replicas: number;
  readonly ttlMs: number;
  readonly killPrimary: boolean;
  readonly killAll: boolean;
  readonly killClients: boolean;
  readonly pauseClient: boolean;
  /** Bound on the whole run. */
  readonly timeoutMs: number;
  readonly keep: boolean;
  readonly out: (line: string) => void;
}

export interface FileTestResult {
  readonly ok: boolean;
  readonly problems: string[];
  readonly acknowledged: number;
  readonly records: number;
  readonly refused: number;
  readonly dir: string;
}

const WORKER_SCRIPT = (): string => fileURLToPath(new URL('./bin/file_tester.js', import.meta.url));

interface Worker {
  readonly index: number;
  readonly logFile: string;
  child: ChildHandle;
}

/** Parses a worker's log into the events of the protocol above. */
export function parseWorkerLog(text: string): { acks: FileRecord[]; stale: FileRecord[]; holds: Array<{ hold: number; token: number }>; released: number; closed: boolean } {
  const acks: FileRecord[] = [];
  const stale: FileRecord[] = [];
  const holds: Array<{ hold: number; token: number }> = [];
  let released = 0;
  let closed = false;
  for (const line of text.split('\n')) {
    const words = line.trim().split(' ');
    const [kind] = words;
    if ((kind === 'ack' || kind === 'stale') && words.length === 5) {
      const record = { client: Number(words[1]), hold: Number(words[2]), seq: Number(words[3]), file: words[4]! };
      (kind === 'ack' ? acks : stale).push(record);
    } else if (kind === 'hold' && words.length === 4) holds.push({ hold: Number(words[2]), token: Number(words[3]) });
    else if (kind === 'released') released++;
    else if (kind === 'closed') closed = true;
  }
  return { acks, stale, holds, released, closed };
}

export async function runFileTest(options: FileTestOptions): Promise<FileTestResult> {
  const out = options.out;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'file_tester-'));
  const deadline = Date.now() + options.timeoutMs;
  const problems: string[] = [];
  const basePort = await freeBasePort(options.replicas);
  const cluster = new LocalCluster({
    replicas: options.replicas,
    basePort,
    logDir: dir,
    dataDir: path.join(dir, 'data'),
    binDir: path.dirname(lockServerScript()),
  });
  const members = cluster.replicas.map((replica) => `127.0.0.1:${replica.port}`);
  const workers: Worker[] = [];
  let stats = { acknowledged: 0, records: 0, refused: 0 };
  try {
    out(`file_tester: ${options.replicas} replicas on ports ${cluster.replicas.map((r) => r.port).join(', ')}; logs in ${dir}`);
    await cluster.start(out);
    workers.push(startWorker(options, dir, members, 0));
    if (options.killClients || options.pauseClient) {
      // The targeted client takes the lock first and the others start behind it, so they still
      // have all their work when the fault hits it: with a fast service, clients started together
      // could finish every hold before the targeted one's first, and nobody would be left to show
      // that the lock comes back after the lease.
      await waitFor(() => {
        const log = parseWorkerLog(readText(workers[0]!.logFile));
        return log.holds.length >= 1 || log.closed;
      }, deadline);
    }
    for (let index = 1; index < options.clients; index++) workers.push(startWorker(options, dir, members, index));
    out(`file_tester: ${options.clients} clients × ${options.holds} holds × ${options.appends} appends (${options.lockPerFile ? 'one lock per file' : 'one lock for all files'})`);

    const faults = runFaults(options, cluster, workers, deadline, problems);
    await waitForWorkers(options, workers, deadline, problems);
    await faults;
    const texts = workers.map((worker) => readText(worker.logFile));
    const logs = texts.map((text) => parseWorkerLog(text));
    // Only the client a fault paused may lose its session; any other loss is a failure of the service.
    texts.forEach((text, index) => {
      const targeted = index === 0 && (options.pauseClient || options.killClients);
      if (!targeted && /^session-lost /m.test(text)) problems.push(`client ${index} lost its session (see ${workers[index]!.logFile})`);
    });
    const acknowledged = logs.flatMap((log) => log.acks);
    const refused = logs.flatMap((log) => log.stale);
    out(`file_tester: clients done: ${acknowledged.length} appends acknowledged, ${refused.length} refused as stale`);

    const replicas = await settledMirrors(cluster, dir, deadline);
    const check = checkFiles({ replicas, acknowledged });
    problems.push(...check.problems);
    for (const record of refused) {
      const text = replicas.get(cluster.replicas[0]!.name)?.get(record.file) ?? '';
      if (text.includes(formatRecord(record))) problems.push(`the refused append ${record.client}/${record.seq} is in ${record.file}`);
    }
    if (options.pauseClient && refused.length === 0) problems.push('the paused client resumed, but no append of its old hold was refused');
    stats = { acknowledged: acknowledged.length, records: check.records, refused: refused.length };
  } catch (error) {
    problems.push((error as Error).message);
  } finally {
    for (const worker of workers) worker.child.signal('SIGKILL');
    await cluster.stop();
    killAllChildren();
  }
  const ok = problems.length === 0;
  if (ok && !options.keep) await fsp.rm(dir, { recursive: true, force: true });
  return { ok, problems, ...stats, dir };
}

/** A random block of free ports (never the default 3772 block a user's `npm start` may hold). */
async function freeBasePort(replicas: number): Promise<number> {
  for (let draw = 0; draw < 50; draw++) {
    const choice = await chooseBasePort(replicas, 20_000 + Math.floor(Math.random() * 11_000), isPortFree);
    if (choice.ok) return choice.base;
  }
  throw new Error('found no free block of ports for the replicas');
}

function startWorker(options: FileTestOptions, dir: string, members: readonly string[], index: number): Worker {
  const logFile = path.join(dir, `client-${index}.log`);
  const args = [
    '--worker',
    String(index),
    '--members',
    members.join(','),
    '--holds',
    String(options.holds),
    '--appends',
    String(options.appends),
    '--ttl-ms',
    String(options.ttlMs),
    ...(options.lockPerFile ? ['--lock-per-file'] : []),
    // The client a fault targets holds each lock a little longer, so the fault finds it holding.
    ...(index === 0 && (options.killClients || options.pauseClient) ? ['--hold-ms', '300'] : []),
  ];
  return { index, logFile, child: ChildHandle.spawn(WORKER_SCRIPT(), args, logFile, process.env) };
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

async function waitForWorkers(options: FileTestOptions, workers: readonly Worker[], deadline: number, problems: string[]): Promise<void> {
  for (const worker of workers) {
    const exit = await worker.child.waitForExit(Math.max(0, deadline - Date.now()));
    if (exit === undefined) {
      problems.push(`client ${worker.index} did not finish in time (see ${worker.logFile})`);
      continue;
    }
    const killed = worker.child.signalSent === 'SIGKILL';
    if (!killed && exit.code !== 0) problems.push(`client ${worker.index} failed (exit ${exit.code ?? exit.signal}); see ${worker.logFile}`);
  }
  void options;
}

/** Resolves when `predicate` holds (polled), or false at the deadline. */
async function waitFor(predicate: () => boolean | Promise<boolean>, deadline: number): Promise<boolean> {
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await pause(100, undefined);
  }
  return false;
}

function totalAcks(workers: readonly Worker[]): number {
  return workers.reduce((sum, worker) => sum + parseWorkerLog(readText(worker.logFile)).acks.length, 0);
}

async function runFaults(options: FileTestOptions, cluster: LocalCluster, workers: Worker[], deadline: number, problems: string[]): Promise<void> {
  const out = options.out;
  const expected = options.clients * options.holds * options.appends;
  const progress = (fraction: number) => waitFor(() => totalAcks(workers) >= Math.max(1, Math.floor(expected * fraction)), deadline);

  if (options.killClients || options.pauseClient) {
    // No progress wait: the others started behind client 0's first hold (see runFileTest).
    const victim = workers[0]!;
    const holding = async (): Promise<boolean> => {
      const log = parseWorkerLog(readText(victim.logFile));
      return log.holds.length > log.released && log.holds.length >= 1 && !log.closed;
    };
    const finished = (): boolean => parseWorkerLog(readText(victim.logFile)).closed;
    if (!(await waitFor(async () => finished() || (await holding()), deadline)) || finished()) {
      problems.push('client 0 was never seen holding the lock, so it could not be stopped while holding it');
      return;
    }
    const held = parseWorkerLog(readText(victim.logFile)).holds.at(-1)!;
    if (options.killClients) {
      out(`file_tester: SIGKILL client 0 while it holds the lock (hold ${held.hold}, token ${held.token})`);
      victim.child.signal('SIGKILL');
    } else {
      out(`file_tester: SIGSTOP client 0 while it holds the lock (hold ${held.hold}, token ${held.token})`);
      victim.child.signal('SIGSTOP');
      // Another client must hold the lock with a newer token before the paused one resumes.
      const overtaken = (): boolean =>
        workers.slice(1).some((worker) => parseWorkerLog(readText(worker.logFile)).holds.some((hold) => hold.token > held.token));
      const after = Date.now() + options.ttlMs;
      const ok = await waitFor(() => Date.now() > after && overtaken(), deadline);
      out(`file_tester: ${ok ? 'another client holds the lock now' : 'no other client got the lock'}; SIGCONT client 0`);
      victim.child.signal('SIGCONT');
      if (!ok) problems.push('no other client got the lock while client 0 was stopped past its lease');
    }
  }

  if (options.killPrimary) {
    await progress(0.3);
    const primary = await findPrimary(cluster);
    if (primary === undefined) {
      problems.push('no primary found to kill');
      return;
    }
    out(`file_tester: SIGKILL the primary ${primary.name} (pid ${primary.process?.pid})`);
    primary.process?.signal('SIGKILL');
    await primary.process?.waitForExit(5_000);
    await pause(1_000, undefined);
    const master = cluster.replicas.find((replica) => replica !== primary && replica.process?.running === true);
    restart(cluster, primary, master ?? cluster.master);
    out(`file_tester: restarted ${primary.name} (it rejoins through ${(master ?? cluster.master).name})`);
  }

  if (options.killAll) {
    await progress(0.5);
    out('file_tester: SIGKILL every replica');
    for (const replica of cluster.replicas) replica.process?.signal('SIGKILL');
    for (const replica of cluster.replicas) await replica.process?.waitForExit(5_000);
    await pause(500, undefined);
    for (const replica of cluster.replicas) restart(cluster, replica, cluster.master);
    out('file_tester: restarted every replica');
  }
}

async function findPrimary(cluster: LocalCluster): Promise<Replica | undefined> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const status = await cluster.status();
    const named = status.find((s) => s.state === 'up' && s.primary !== undefined && s.primary !== '')?.primary;
    const primary = cluster.replicas.find((replica) => replica.id === named);
    if (primary !== undefined) return primary;
    await pause(100, undefined);
  }
  return undefined;
}

function restart(cluster: LocalCluster, replica: Replica, master: Replica): void {
  replica.process = ChildHandle.spawn(lockServerScript(), [master.id, replica.id], replica.logFile, {
    ...process.env,
    RSM_LOG_DIR: cluster.options.logDir,
    RSM_DATA_DIR: cluster.options.dataDir,
  });
}

/** The replicas' mirror files, once every running replica has executed the same requests and the copies agree (or at the deadline). */
async function settledMirrors(cluster: LocalCluster, dir: string, deadline: number): Promise<Map<string, Map<string, string>>> {
  const read = (): Map<string, Map<string, string>> =>
    new Map(
      cluster.replicas.map((replica) => {
        const files = new Map<string, string>();
        for (let index = 0; index < FILE_COUNT; index++) files.set(fileName(index), readText(path.join(dir, 'data', `files-${replica.id}`, fileName(index))));
        return [replica.name, files];
      }),
    );
  const same = (copies: Map<string, Map<string, string>>): boolean => {
    const all = [...copies.values()].map((files) => [...files.values()].join('\u0000'));
    return all.every((text) => text === all[0]);
  };
  let copies = read();
  // Mirrors are written off the request path, and a backup executes a request when the commit
  // point reaches it: poll until every copy is the same (bounded by the run's deadline).
  await waitFor(async () => {
    const status = await cluster.status();
    const vs = new Set(status.filter((s) => s.state === 'up').map((s) => s.lastViewstamp));
    copies = read();
    return vs.size === 1 && same(copies);
  }, Math.min(deadline, Date.now() + 20_000));
  return copies;
}
