#!/usr/bin/env node
/**
 * lock_tester [--basic] [host:]PORT [test 1-5]: the five classic lock tests (tester/lock-tester.ts)
 * with six lock clients against the lock server at PORT: caching lock clients (each listening on
 * its own ephemeral port for revoke and retry) by default, basic lab-1 clients with --basic.
 * Prints "<program>: passed all tests successfully" and exits 0, or prints an `error: …` line and
 * exits 1.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';
import type { RsmClient } from '../../rsm/client.js';
import { HISTORY_DIR_ENV, HistoryRecorder } from '../history.js';
import {
  DEFAULT_TIMEOUT_MS,
  TESTER_CLIENTS,
  basicClientFactory,
  cachingClientFactory,
  describeReplicaWait,
  describeRsmClients,
  detectLockService,
  isTestNumber,
  rsmCachingClientFactory,
  runLockTester,
  type TesterClientFactory,
  type TestNumber,
} from '../lock-tester.js';
import { EXIT_FAILURE, EXIT_USAGE, UsageError, parseAddressArgument, parseCommandLine, parseCount, programName, runMain, type CommandSpec } from '../../lib/cli.js';

/** While a test has not finished, a "waiting: …" line this often says why. */
const WAITING_EVERY_MS = 5_000;

const spec: CommandSpec = {
  usage: ['lock_tester [--basic] [--callback-host HOST] [--timeout-ms MS] [host:]PORT [test 1..5]'],
  help: `Runs the classic lock tests 1-5 (or only the one given) with ${TESTER_CLIENTS} lock clients against the
lock server at PORT (a bare PORT means 127.0.0.1).

By default the clients are caching lock clients: each listens on its own ephemeral port for the
server's revoke and retry calls, keeps locks it was granted until the server revokes them, and
hands them between its own threads without asking the server. PORT may be a replica of the
replicated lock service (lock_server MASTER ME) or an unreplicated caching server
(lock_server PORT): lock_tester asks PORT for the RSM members first; a replica answers, and then
every client goes through its own RSM client (which finds the primary and fails over), while an
unreplicated server answers "no such procedure", and then the clients call it directly. One line
says which. With --basic they are basic (lab 1) clients for a basic server (lock_server --basic
PORT), without detection.

Options:
  --basic                use basic lock clients (every acquire and release goes to the server)
  --callback-host HOST   address caching clients listen on for revoke/retry (default 127.0.0.1);
                         must be reachable from the server
  --timeout-ms MS        bound on the whole run (default ${DEFAULT_TIMEOUT_MS}); on expiry the hung test is named

Environment:
  RPC_LOSSY=N          lose, else duplicate, else delay N% of the messages sent (0..100)
  ${HISTORY_DIR_ENV}=DIR  write each test's operation history to DIR/lock_tester-test<N>-<pid>.jsonl
  DEBUG=viewstamp:*    diagnostic logging on stderr`,
  minPositionals: 1,
  maxPositionals: 2,
  options: {
    'timeout-ms': { type: 'string' },
    basic: { type: 'boolean' },
    'callback-host': { type: 'string' },
  },
};

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const server = parseAddressArgument(positionals[0]!, 'PORT');
  let tests: TestNumber[] | undefined;
  if (positionals[1] !== undefined) {
    const test = parseCount(positionals[1], 'test number', 5, 1);
    if (!isTestNumber(test)) throw new UsageError(`test number must be an integer 1..5, got ${JSON.stringify(positionals[1])}`);
    tests = [test];
  }
  const timeoutText = values['timeout-ms'];
  const timeoutMs = typeof timeoutText === 'string' ? parseCount(timeoutText, '--timeout-ms', 2 ** 31 - 1) : DEFAULT_TIMEOUT_MS;
  const basic = values['basic'] === true;
  const callbackHost = values['callback-host'];
  if (basic && callbackHost !== undefined) throw new UsageError('--callback-host applies to caching clients only (not with --basic)');
  let host: string | undefined;
  if (typeof callbackHost === 'string') {
    // Validated as an address with port 0: the port is always ephemeral.
    host = parseAddressArgument(`${callbackHost}:0`, '--callback-host').replace(/:0$/, '');
  }
  const lossyPercent = lossyPercentFromEnv();
  if (lossyPercent > 0) process.stdout.write(`${programName()}: RPC_LOSSY=${lossyPercent}: ${lossyPercent}% of the messages sent are lost, duplicated or delayed\n`);
  const network = tcpNetwork({ lossyPercent });
  const env = { network, clock: realClock, random: osRandom() };

  let clients: TesterClientFactory;
  let waiting: { everyMs: number; describe: () => Promise<string> } | undefined;
  const probeRpc = new RpcEndpoint(network.connect(), realClock, env.random.fork());
  if (basic) {
    process.stdout.write(`${programName()}: ${TESTER_CLIENTS} basic lock clients against ${server}\n`);
    clients = basicClientFactory(server, env);
  } else {
    const probe = new RpcEndpoint(network.connect(), realClock, env.random.fork());
    const service = await detectLockService(probe, server).finally(() => probe.close());
    const cachingEnv = { ...env, ...(host === undefined ? {} : { host }) };
    if (service.kind === 'replicated') {
      process.stdout.write(
        `${programName()}: ${TESTER_CLIENTS} caching lock clients against ${server}: a replica (replicated lock service, view {${service.members.join(',')}}, primary ${service.primary || '-'}); through the RSM client\n`,
      );
      const members = [...new Set([...service.members, server.replace(/^127\.0\.0\.1:/, '')])];
      const created: RsmClient[] = [];
      // Each client starts from the named server and also knows the members seen here, so losing
      // that one server never leaves a client without anyone to ask.
      clients = rsmCachingClientFactory(server, cachingEnv, { alsoKnown: service.members, created });
      waiting = { everyMs: WAITING_EVERY_MS, describe: async () => `${await describeReplicaWait(probeRpc, members)}; ${describeRsmClients(created)}` };
    } else if (service.kind === 'unreplicated') {
      process.stdout.write(`${programName()}: ${TESTER_CLIENTS} caching lock clients against ${server}: an unreplicated lock server; direct\n`);
      clients = cachingClientFactory(server, cachingEnv);
    } else if (service.kind === 'control') {
      process.stderr.write(`${programName()}: WRONG_PORT: ${server} is a replica's control port; its lock service is on port ${service.mainPort.replace(/^127\.0\.0\.1:/, '')} (the control port is the replica's port + 1)\n`);
      return EXIT_USAGE;
    } else {
      process.stderr.write(`${programName()}: NO_SERVICE: cannot tell which lock service is at ${server}: ${service.reason}\n`);
      return EXIT_FAILURE;
    }
  }
  const result = await runLockTester({
    clients,
    ...(tests === undefined ? {} : { tests }),
    timeoutMs,
    history: (name) => HistoryRecorder.fromEnv(name),
    ...(waiting === undefined ? {} : { waiting }),
  }).finally(() => probeRpc.close());
  if (!result.ok) return EXIT_FAILURE;
  process.stdout.write(`${programName()}: passed all tests successfully\n`);
  return 0;
});
