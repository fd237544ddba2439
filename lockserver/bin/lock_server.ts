#!/usr/bin/env node
/**
 * lock_server: the lock service host.
 *
 *   lock_server [host:]PORT               one unreplicated caching lock server (lockserver/README.md)
 *   lock_server --basic [host:]PORT       one unreplicated basic (lab 1) lock server, for comparisons
 *   lock_server [host:]MASTER [host:]ME   a replica of the replicated caching lock service
 *
 * The caching forms take the lock table's limits (--max-locks N, …; LOCK_LIMIT_OPTIONS in
 * lock-replica.ts), which every replica of a group must share.
 *
 * Wires the real environment (TCP, Node timers, OS-seeded randomness) into the service code.
 */
import { realClock } from '../../lib/clock.js';
import { startCpuProfileFromEnv } from '../../lib/cpu-profile.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';
import { BasicLockServer } from '../basic-server.js';
import { startCachingLockServer } from '../cache-host.js';
import { defaultCachingLockServerLimits } from '../cache-server.js';
import { LOCK_LIMIT_MAX, LOCK_LIMIT_OPTIONS, lockLimitsFromOptions, startLockReplica } from '../lock-replica.js';
import { UsageError, countFromEnv, parseAddressArgument, parseCommandLine, programName, runMain, type CommandSpec } from '../../lib/cli.js';

const spec: CommandSpec = {
  usage: ['lock_server [--basic | LIMITS] [host:]PORT', 'lock_server [--unfenced] [LIMITS] [host:]MASTER [host:]ME'],
  help: `With one argument, runs a single unreplicated caching lock server on PORT: clients cache
locks, and the server revokes a cached lock when another client wants it (lockserver/README.md).
Use lock_tester (its default client is the caching one) against it. With --basic, runs the basic
non-caching lock server of lab 1 instead (every acquire and release reaches the server), for
comparisons; test it with lock_tester --basic. A bare PORT binds 127.0.0.1. Stops on SIGINT or
SIGTERM.

With two arguments, runs a replica of the replicated caching lock service: MASTER is the first
node (and the one a joining node asks), ME is this node's port (control RPCs on ME+1). The lock
table is the replica's state machine; the primary sends revoke and retry. Run lock_tester against
any replica's port. Logs go to $RSM_LOG_DIR (default logs/), durable state to $RSM_DATA_DIR/<ME>.
Every replica also serves the lock-protected append-only file service (file_0 … file_99, see
file_client and lockserver/file/README.md), fenced by the lock service's tokens, and writes its
copy of the files to $RSM_DATA_DIR/files-<ME>/.

Options:
  --basic       serve the basic (lab 1) lock service instead of the caching one (one-argument form only)
  --unfenced    the file service's basic, unfenced mode: appends without a fencing token are
                accepted (every replica must use the same mode)

LIMITS: the caching lock table's bounds (both caching forms; not with --basic). N is an integer
1..${LOCK_LIMIT_MAX}. Every replica of a group must be started with the same values, and a
replica restarted with the values it had: the replicated state records them, a replica stops
(RSM_STATE_CORRUPT) on a checkpoint made with other limits and ignores a transferred state made
with other limits (so it never gets in sync), and its log is replayed under them.
${LOCK_LIMIT_OPTIONS.map(({ option, limit, what }) => `  ${`--${option} N`.padEnd(26)}${what} (default ${defaultCachingLockServerLimits[limit]})`).join('\n')}
  A table near raised bounds is a large state: every replica holds it in memory, and a replica
  that joins or falls behind gets it by state transfer (see rsm/README.md for that one's limits).

Environment:
  RPC_LOSSY=N   lose, else duplicate, else delay N% of the messages sent (0..100)
  RPC_COUNT=N   print "RPC STATS: <proc>:<count> ..." every N new requests
  RSM_HEARTBEAT_MS=N          a replica's heartbeat interval, 10..10000 ms (default 100)
  RSM_HEARTBEAT_TIMEOUT_MS=N  silence after which a member is taken for failed, 2 intervals..60000
                              ms (default 1000); a crashed member is found at once regardless (its
                              connection is refused), so this bounds only pauses and cut links
  DEBUG=viewstamp:*   diagnostic logging on stderr
  VIEWSTAMP_CPU_PROFILE_DIR=DIR  sample this process's CPU and write lock_server-<port>-<pid>.cpuprofile
                              into DIR when it stops cleanly (for Chrome DevTools or speedscope)`,
  minPositionals: 1,
  maxPositionals: 2,
  options: {
    basic: { type: 'boolean' },
    unfenced: { type: 'boolean' },
    ...Object.fromEntries(LOCK_LIMIT_OPTIONS.map(({ option }) => [option, { type: 'string' as const }])),
  },
};

runMain(spec, async () => {
  const { positionals, values } = parseCommandLine(spec);
  const basic = values['basic'] === true;
  if (basic && positionals.length === 2) throw new UsageError('--basic applies to the one-argument form (an unreplicated server) only');
  const unfenced = values['unfenced'] === true;
  if (unfenced && positionals.length !== 2) throw new UsageError('--unfenced applies to the two-argument form (a replica) only');
  const limits = lockLimitsFromOptions(values);
  const limitsGiven = Object.keys(limits).length > 0;
  if (basic && limitsGiven) throw new UsageError('the --max-… limits apply to the caching lock table, not to --basic');
  // Once the command line is accepted. Written when the process exits (after a clean stop);
  // nothing unless the variable is set.
  startCpuProfileFromEnv(`lock_server-${positionals.at(-1)!.replace(/^.*:/, '')}`);
  // Said once at startup when any limit is given, so a log shows what a replica ran with.
  const sayLimits = (): void => {
    if (!limitsGiven) return;
    const all = { ...defaultCachingLockServerLimits, ...limits };
    const text = LOCK_LIMIT_OPTIONS.map(({ option, limit }) => `${option} ${all[limit]}`).join(', ');
    process.stdout.write(`${programName()}: lock table limits: ${text}\n`);
  };
  if (positionals.length === 2) {
    // Node ids are canonical: a bare port for 127.0.0.1 (as in the lab and its logs), else host:port.
    const nodeId = (text: string, what: string): string => parseAddressArgument(text, what).replace(/^127\.0\.0\.1:/, '');
    const master = nodeId(positionals[0]!, 'MASTER');
    const me = nodeId(positionals[1]!, 'ME');
    const stop = new Promise<string>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    const service = await startLockReplica({ master, me, limits, unfencedFiles: unfenced, rpcOptions: { statsEvery: countFromEnv('RPC_COUNT', 0) } });
    const replica = service.replica;
    process.stdout.write(`${programName()}: replica ${replica.me} (master ${master}) on ${replica.address}, serving caching locks\n`);
    process.stdout.write(
      `${programName()}: file service ${unfenced ? 'UNFENCED (appends without a token are accepted)' : 'fenced'}; files in ${service.filesDir}\n`,
    );
    sayLimits();
    // SIGTERM means "this node stops now": no goodbye messages, no view changes of its own.
    const signal = await stop;
    process.stdout.write(`${programName()}: ${signal}, stopping\n`);
    await service.close();
    return 0;
  }
  const address = parseAddressArgument(positionals[0]!, 'PORT');
  const statsEvery = countFromEnv('RPC_COUNT', 0);
  const network = tcpNetwork({ lossyPercent: lossyPercentFromEnv() });

  // Install the handlers first, so a signal during startup still stops us cleanly.
  const stop = new Promise<string>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  if (basic) {
    const rpc = new RpcEndpoint(await network.listen(address), realClock, osRandom(), { statsEvery });
    new BasicLockServer(rpc);
    process.stdout.write(`${programName()}: serving basic locks on ${rpc.address}\n`);
    const signal = await stop;
    process.stdout.write(`${programName()}: ${signal}, stopping\n`);
    await rpc.close();
    return 0;
  }
  const server = await startCachingLockServer({ network, clock: realClock, random: osRandom(), address, limits, rpcOptions: { statsEvery } });
  process.stdout.write(`${programName()}: serving caching locks on ${server.address}\n`);
  sayLimits();
  const signal = await stop;
  process.stdout.write(`${programName()}: ${signal}, stopping\n`);
  await server.close();
  return 0;
});
