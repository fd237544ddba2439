#!/usr/bin/env node
/**
 * file_tester: N clients of the lock-protected file service against a local cluster it starts,
 * with optional faults, then a check of every replica's files (tester/file-tester.ts).
 * `--worker I` is the client process it runs for each client.
 */
import fs from 'node:fs';
import { EXIT_FAILURE, UsageError, parseCommandLine, parseCount, runMain, type CommandSpec } from '../../lib/cli.js';
import { connectFiles } from '../../lockserver/file/connect.js';
import { FileError } from '../../lockserver/file/file-client.js';
import { FILE_COUNT, fileName } from '../../lockserver/file/file-protocol.js';
import { formatRecord } from '../file-check.js';
import { runFileTest } from '../file-tester.js';

const spec: CommandSpec = {
  usage: ['file_tester [--clients N] [--holds M] [--appends K] [--lock-per-file] [--kill-primary] [--kill-all] [--kill-clients] [--pause-client] [options]'],
  help: `Starts a local cluster of lock_server replicas (which serve the lock service and the
append-only file service), runs N client processes that each do init, then M times (acquire the
lock, append K self-describing records to random files, release), then close, and checks every
replica's copy of file_0 … file_99: every acknowledged append present exactly once, nothing
twice, the records of one hold contiguous in each file (mutual exclusion held), all replicas
identical. Prints "file_tester: OK" and exits 0, or lists the problems and exits 1.

Options:
  --clients N       client processes, 1..64 (default 4)
  --holds M         lock holds per client, 1..100000 (default 50)
  --appends K       appends per hold, 1..1000 (default 3)
  --lock-per-file   each hold takes the lock of one file and writes only that file (default: one
                    lock, "files", protects all files)
  --replicas R      1..7 (default 3)
  --ttl-ms T        the clients' session TTL, 1000..600000 (default 10000)
  --kill-primary    SIGKILL the primary once 30 % of the appends are done, then restart it
  --kill-all        SIGKILL every replica once 50 % are done, then restart them all
  --kill-clients    SIGKILL client 0 while it holds the lock (the others go on after its lease ends;
                    with this or --pause-client, client 0 starts first and the others once it holds)
  --pause-client    SIGSTOP client 0 while it holds the lock until another client got it, then
                    SIGCONT: its next append must be refused (FILE_STALE_TOKEN)
  --timeout-ms MS   bound on the whole run (default 600000)
  --keep            keep the run directory (logs, data, mirror files) even when the run passes

Environment: RPC_LOSSY=N is passed on to every replica and client.`,
  minPositionals: 0,
  maxPositionals: 0,
  options: {
    clients: { type: 'string' },
    holds: { type: 'string' },
    appends: { type: 'string' },
    'lock-per-file': { type: 'boolean' },
    replicas: { type: 'string' },
    'ttl-ms': { type: 'string' },
    'kill-primary': { type: 'boolean' },
    'kill-all': { type: 'boolean' },
    'kill-clients': { type: 'boolean' },
    'pause-client': { type: 'boolean' },
    'timeout-ms': { type: 'string' },
    keep: { type: 'boolean' },
    worker: { type: 'string' },
    members: { type: 'string' },
    'hold-ms': { type: 'string' },
  },
};

function ranged(values: Record<string, unknown>, name: string, min: number, max: number, fallback: number): number {
  const text = values[name];
  if (text === undefined) return fallback;
  const value = parseCount(String(text), `--${name}`, max);
  if (value < min) throw new UsageError(`--${name} must be ${min}..${max}, got ${value}`);
  return value;
}

/** Writes a line to stdout (the worker's log file) before going on, so a kill cannot lose it. */
function say(line: string): void {
  fs.writeSync(1, `${line}\n`);
}

async function worker(values: Record<string, unknown>): Promise<number> {
  const client = ranged(values, 'worker', 0, 1_000_000, 0);
  const members = String(values['members'] ?? '').split(',').filter((m) => m.length > 0);
  if (members.length === 0) throw new UsageError('--worker needs --members');
  const holds = ranged(values, 'holds', 1, 100_000, 50);
  const appends = ranged(values, 'appends', 1, 1000, 3);
  const ttlMs = ranged(values, 'ttl-ms', 1000, 600_000, 10_000);
  const lockPerFile = values['lock-per-file'] === true;
  const holdMs = ranged(values, 'hold-ms', 0, 60_000, 0);
  const files = await connectFiles({ members, session: { ttlMs } });
  const hello = await files.init();
  say(`init ${client} ${hello.code} ${hello.message}`);
  let seq = 0;
  const randomFile = (): string => fileName(Math.floor(Math.random() * FILE_COUNT));
  for (let hold = 1; hold <= holds; hold++) {
    const lock = lockPerFile ? randomFile() : 'files';
    try {
      await files.acquire(lock);
    } catch (error) {
      // A client paused past its lease has lost its session: it is done (a new one would connect again).
      if ((error as { code?: string }).code !== 'LOCK_SESSION_EXPIRED') throw error;
      say(`session-lost ${client} ${hold}`);
      break;
    }
    say(`hold ${client} ${hold} ${files.held!.token}`);
    if (holdMs > 0) await new Promise((resolve) => setTimeout(resolve, holdMs));
    for (let k = 0; k < appends; k++) {
      const file = lockPerFile ? lock : randomFile();
      const record = { client, hold, seq: ++seq, file };
      try {
        await files.append(file, formatRecord(record));
        say(`ack ${client} ${hold} ${record.seq} ${file}`);
      } catch (error) {
        if (!(error instanceof FileError) || error.code !== 'FILE_STALE_TOKEN') throw error;
        say(`stale ${client} ${hold} ${record.seq} ${file}`);
        break; // this hold is over: the lock went to someone else
      }
    }
    await files.release().catch(() => undefined); // a lost lock cannot be released
    say(`released ${client} ${hold}`);
  }
  const bye = await files.close();
  say(`closed ${client} ${bye.code} ${bye.message}`);
  return 0;
}

runMain(spec, async () => {
  const { values } = parseCommandLine(spec);
  if (values['worker'] !== undefined) return worker(values);
  const result = await runFileTest({
    clients: ranged(values, 'clients', 1, 64, 4),
    holds: ranged(values, 'holds', 1, 100_000, 50),
    appends: ranged(values, 'appends', 1, 1000, 3),
    lockPerFile: values['lock-per-file'] === true,
    replicas: ranged(values, 'replicas', 1, 7, 3),
    ttlMs: ranged(values, 'ttl-ms', 1000, 600_000, 10_000),
    killPrimary: values['kill-primary'] === true,
    killAll: values['kill-all'] === true,
    killClients: values['kill-clients'] === true,
    pauseClient: values['pause-client'] === true,
    timeoutMs: ranged(values, 'timeout-ms', 1000, 86_400_000, 600_000),
    keep: values['keep'] === true,
    out: (line) => process.stdout.write(`${line}\n`),
  });
  if (result.ok) {
    process.stdout.write(`file_tester: ${result.acknowledged} appends acknowledged, ${result.records} records in the files, ${result.refused} refused as stale\nfile_tester: OK\n`);
    return 0;
  }
  for (const problem of result.problems.slice(0, 50)) process.stdout.write(`file_tester: FAILED: ${problem}\n`);
  process.stdout.write(`file_tester: logs and files kept in ${result.dir}\n`);
  return EXIT_FAILURE;
});
