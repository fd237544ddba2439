#!/usr/bin/env node
/**
 * lock_tester [host:]PORT [test 1-5]: the five classic lock tests (tester/lock-tester.ts) with six
 * basic lock clients against the lock server at PORT. Prints "<program>: passed all tests
 * successfully" and exits 0, or prints an `error: …` line and exits 1.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';
import { HISTORY_DIR_ENV, HistoryRecorder } from '../history.js';
import { DEFAULT_TIMEOUT_MS, TESTER_CLIENTS, basicClientFactory, isTestNumber, runLockTester, type TestNumber } from '../lock-tester.js';
import { EXIT_FAILURE, UsageError, parseAddressArgument, parseCommandLine, parseCount, programName, runMain, type CommandSpec } from './cli.js';

const spec: CommandSpec = {
  usage: ['lock_tester [--timeout-ms MS] [host:]PORT [test 1-5]'],
  help: `Runs the classic lock tests 1-5 (or only the one given) with ${TESTER_CLIENTS} lock clients against the
lock server at PORT (a bare PORT means 127.0.0.1).

Options:
  --timeout-ms MS   bound on the whole run (default ${DEFAULT_TIMEOUT_MS}); on expiry the hung test is named

Environment:
  RPC_LOSSY=N          lose, else duplicate, else delay N% of the messages sent (0..100)
  ${HISTORY_DIR_ENV}=DIR  write each test's operation history to DIR/lock_tester-test<N>-<pid>.jsonl
  DEBUG=viewstamp:*    diagnostic logging on stderr`,
  minPositionals: 1,
  maxPositionals: 2,
  options: { 'timeout-ms': { type: 'string' } },
};

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const server = parseAddressArgument(positionals[0]!, 'PORT');
  let tests: TestNumber[] | undefined;
  if (positionals[1] !== undefined) {
    const test = parseCount(positionals[1], 'test number');
    if (!isTestNumber(test)) throw new UsageError('test number must be between 1 and 5');
    tests = [test];
  }
  const timeoutText = values['timeout-ms'];
  const timeoutMs = typeof timeoutText === 'string' ? parseCount(timeoutText, '--timeout-ms', 2 ** 31 - 1) : DEFAULT_TIMEOUT_MS;
  const network = tcpNetwork({ lossyPercent: lossyPercentFromEnv() });

  process.stdout.write(`${programName()}: ${TESTER_CLIENTS} basic lock clients against ${server}\n`);
  const result = await runLockTester({
    clients: basicClientFactory(server, { network, clock: realClock, random: osRandom() }),
    ...(tests === undefined ? {} : { tests }),
    timeoutMs,
    history: (name) => HistoryRecorder.fromEnv(name),
  });
  if (!result.ok) return EXIT_FAILURE;
  process.stdout.write(`${programName()}: passed all tests successfully\n`);
  return 0;
});
