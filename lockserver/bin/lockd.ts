#!/usr/bin/env node
/**
 * lockd: one server of the two-server primary/backup lock service (lockserver/README.md).
 *
 *   lockd -p PRIMARY BACKUP    the primary (listens on PRIMARY, forwards to BACKUP)
 *   lockd -b PRIMARY BACKUP    the backup (listens on BACKUP)
 *
 * Program/host file: wires the real environment (TCP, Node timers, OS randomness) into the service.
 */
import { realClock } from '../../lib/clock.js';
import { UsageError, parseAddressArgument, parseCommandLine, programName, runMain, type CommandSpec } from '../../lib/cli.js';
import { ViewstampError } from '../../lib/errors.js';
import { osRandom } from '../../lib/random.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';
import { PrimaryBackupLockServer } from '../pb/index.js';

const spec: CommandSpec = {
  usage: ['lockd -p|-b [host:]PRIMARY [host:]BACKUP'],
  help: `Runs one server of the two-server primary/backup lock service: -p the primary (it listens
on PRIMARY and forwards every operation to BACKUP before it replies), -b the backup (it listens
on BACKUP). Start the primary, then the backup. A bare port means 127.0.0.1. Use lockc to call it.
The service survives one fail-stop failure of either server; it is never repaired.
Stops on SIGINT (Ctrl-C) or SIGTERM.

Options:
  -p            run the primary
  -b            run the backup

Environment:
  RPC_LOSSY=N   lose, else duplicate, else delay N% of the messages sent (0..100)
  DEBUG=viewstamp:pb   diagnostic logging on stderr (fail-over, forwarding)`,
  minPositionals: 2,
  maxPositionals: 2,
  options: { p: { type: 'boolean', short: 'p' }, b: { type: 'boolean', short: 'b' } },
};

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const asPrimary = values['p'] === true;
  const asBackup = values['b'] === true;
  if (asPrimary === asBackup) throw new UsageError('give exactly one of -p (primary) and -b (backup)');
  const primary = parseAddressArgument(positionals[0]!, 'PRIMARY');
  const backup = parseAddressArgument(positionals[1]!, 'BACKUP');
  if (primary === backup) throw new UsageError(`PRIMARY and BACKUP must be two different addresses, both are ${primary}`);
  const role = asPrimary ? 'primary' : 'backup';
  const stop = new Promise<string>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  let server: PrimaryBackupLockServer;
  try {
    server = await PrimaryBackupLockServer.start(
      { network: tcpNetwork({ lossyPercent: lossyPercentFromEnv() }), clock: realClock, random: osRandom() },
      { primary, backup, role },
    );
  } catch (error) {
    if (error instanceof ViewstampError && error.code === 'LISTEN_FAILED') {
      throw new ViewstampError('LISTEN_FAILED', `cannot serve as ${role} on ${role === 'primary' ? primary : backup}: address in use or not available (${(error.cause as Error | undefined)?.message ?? error.message})`, { cause: error });
    }
    throw error;
  }
  process.stdout.write(`${programName()}: ${role} on ${server.address} (primary ${primary}, backup ${backup})\n`);
  const signal = await stop;
  process.stdout.write(`${programName()}: ${signal}, stopping\n`);
  await server.close();
  return 0;
});
