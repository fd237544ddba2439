#!/usr/bin/env node
/**
 * file_client: the file service from a shell. Connects, takes the lock, appends, releases, closes.
 *
 *   file_client HOST:PORT… append FILE TEXT      append TEXT (one argument) to FILE
 *   file_client HOST:PORT… append FILE           append standard input to FILE
 *   file_client HOST:PORT… cat FILE              print FILE as the service holds it
 */
import { EXIT_FAILURE, UsageError, parseAddressArgument, parseCommandLine, runMain, type CommandSpec } from '../../lib/cli.js';
import { connectFiles } from '../file/connect.js';
import { DEFAULT_FILE_LOCK, FILE_NOT_FOUND } from '../file/file-client.js';
import { MAX_APPEND_BYTES } from '../file/file-protocol.js';

const spec: CommandSpec = {
  usage: ['file_client [--lock NAME] HOST:PORT… append FILE [TEXT]', 'file_client HOST:PORT… cat FILE'],
  help: `Talks to the lock-protected append-only file service that every lock_server replica
serves (lockserver/file/README.md). HOST:PORT names one or more replicas (a bare PORT means
127.0.0.1); one is enough.

append FILE [TEXT]  holds the lock (default "${DEFAULT_FILE_LOCK}", which protects all files), appends TEXT
                    (or standard input when TEXT is absent) to FILE, releases the lock and prints
                    "appended N bytes to FILE at offset …"; FILE is file_0 … file_99
cat FILE            prints the file's contents as the replicated service holds them

Options:
  --lock NAME       the lock that protects FILE (for one lock per file, e.g. --lock file_7)

Exit status: 0 done, 1 the service refused (the code is printed), 2 bad arguments.`,
  minPositionals: 3,
  maxPositionals: 64,
  options: { lock: { type: 'string' } },
};

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total > MAX_APPEND_BYTES) throw new UsageError(`standard input is more than ${MAX_APPEND_BYTES} bytes (the largest append)`);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const verbAt = positionals.findIndex((word) => word === 'append' || word === 'cat');
  if (verbAt < 1) throw new UsageError('name at least one replica, then "append" or "cat"');
  const members = positionals.slice(0, verbAt).map((text) => parseAddressArgument(text, 'HOST:PORT'));
  const verb = positionals[verbAt]!;
  const rest = positionals.slice(verbAt + 1);
  const file = rest[0];
  if (file === undefined) throw new UsageError(`${verb} needs a FILE`);
  if (verb === 'cat' && rest.length !== 1) throw new UsageError('cat takes one FILE');
  if (verb === 'append' && rest.length > 2) throw new UsageError('append takes FILE and at most one TEXT argument (quote it)');

  const files = await connectFiles({ members });
  try {
    await files.init();
    if (verb === 'cat') {
      process.stdout.write(await files.read(file));
      return 0;
    }
    const data = rest[1] !== undefined ? new TextEncoder().encode(rest[1]) : await readStdin();
    await files.acquire(typeof values['lock'] === 'string' ? values['lock'] : DEFAULT_FILE_LOCK);
    const code = await files.append(file, data);
    await files.release();
    if (code === FILE_NOT_FOUND) {
      process.stderr.write(`file_client: ${file}: no such file (code 1)\n`);
      return EXIT_FAILURE;
    }
    process.stdout.write(`appended ${data.length} bytes to ${file}\n`);
    return 0;
  } finally {
    await files.close().catch(() => undefined);
  }
});
