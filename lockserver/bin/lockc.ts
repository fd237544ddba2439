#!/usr/bin/env node
/**
 * lockc: one Lock or Unlock on the primary/backup lock service; prints `reply: true|false`.
 *
 *   lockc -l|-u PRIMARY BACKUP LOCKNAME
 *
 * Program/host file: the clerk it makes uses the real environment.
 */
import { UsageError, parseAddressArgument, parseCommandLine, runMain, type CommandSpec } from '../../lib/cli.js';
import { PrimaryBackupLockClerk, isValidLockName } from '../pb/index.js';

const spec: CommandSpec = {
  usage: ['lockc -l|-u [host:]PRIMARY [host:]BACKUP LOCKNAME'],
  help: `Makes a clerk of the primary/backup lock service (see lockd), calls Lock (-l) or Unlock (-u)
on LOCKNAME once, and prints "reply: true" or "reply: false". Lock is true when the lock was free
(it is now held), false at once when it is held; Unlock is true when it was held (it is now free).
The clerk tries the primary and, when it does not answer (about 2 s), the backup. A bare port
means 127.0.0.1. LOCKNAME is 1..256 bytes of UTF-8. Exits 1 if neither server answers.

Options:
  -l            Lock LOCKNAME
  -u            Unlock LOCKNAME`,
  minPositionals: 3,
  maxPositionals: 3,
  options: { l: { type: 'boolean', short: 'l' }, u: { type: 'boolean', short: 'u' } },
};

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const lock = values['l'] === true;
  if (lock === (values['u'] === true)) throw new UsageError('give exactly one of -l (Lock) and -u (Unlock)');
  const primary = parseAddressArgument(positionals[0]!, 'PRIMARY');
  const backup = parseAddressArgument(positionals[1]!, 'BACKUP');
  if (primary === backup) throw new UsageError(`PRIMARY and BACKUP must be two different addresses, both are ${primary}`);
  const name = positionals[2]!;
  if (!isValidLockName(name)) throw new UsageError('LOCKNAME must be 1..256 bytes of UTF-8');
  const clerk = new PrimaryBackupLockClerk(primary, backup);
  try {
    const reply = lock ? await clerk.lock(name) : await clerk.unlock(name);
    process.stdout.write(`reply: ${reply}\n`);
    return 0;
  } finally {
    await clerk.close();
  }
});
