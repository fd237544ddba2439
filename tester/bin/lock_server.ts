#!/usr/bin/env node
/**
 * lock_server: the lock service host.
 *
 *   lock_server [host:]PORT          one unreplicated basic (lab 1) lock server
 *   lock_server [host:]MASTER [host:]ME   a replica (view management; the lock service follows with the RSM)
 *
 * Wires the real environment (TCP, Node timers, OS-seeded randomness) into the service code.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';
import { BasicLockServer } from '../../lockserver/basic-server.js';
import { startReplica } from '../replica.js';
import { countFromEnv, parseAddressArgument, parseCommandLine, programName, runMain, type CommandSpec } from './cli.js';

const spec: CommandSpec = {
  usage: ['lock_server [host:]PORT', 'lock_server [host:]MASTER [host:]ME'],
  help: `With one argument, runs a single unreplicated basic lock server (lab 1) on PORT.
A bare PORT binds 127.0.0.1. Stops on SIGINT or SIGTERM.

With two arguments, runs a replica of the replicated lock service: MASTER is the first node
(and the one a joining node asks), ME is this node's port (control RPCs on ME+1). For now a
replica runs view management only (Paxos, heartbeats, joins); the replicated lock service comes
with the RSM. Logs go to $RSM_LOG_DIR (default logs/), durable state to $RSM_DATA_DIR/<ME>.

Environment:
  RPC_LOSSY=N   lose, else duplicate, else delay N% of the messages sent (0..100)
  RPC_COUNT=N   print "RPC STATS: <proc>:<count> ..." every N new requests
  DEBUG=viewstamp:*   diagnostic logging on stderr`,
  minPositionals: 1,
  maxPositionals: 2,
};

runMain(spec, async () => {
  const { positionals } = parseCommandLine(spec);
  if (positionals.length === 2) {
    // Node ids are canonical: a bare port for 127.0.0.1 (as in the lab and its logs), else host:port.
    const nodeId = (text: string, what: string): string => parseAddressArgument(text, what).replace(/^127\.0\.0\.1:/, '');
    const master = nodeId(positionals[0]!, 'MASTER');
    const me = nodeId(positionals[1]!, 'ME');
    const stop = new Promise<string>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    const replica = await startReplica({ master, me, rpcOptions: { statsEvery: countFromEnv('RPC_COUNT', 0) } });
    process.stdout.write(`${programName()}: replica ${replica.me} (master ${master}) on ${replica.address}\n`);
    // SIGTERM means "this node stops now": no goodbye messages, no view changes of its own.
    const signal = await stop;
    process.stdout.write(`${programName()}: ${signal}, stopping\n`);
    await replica.close();
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
  const rpc = new RpcEndpoint(await network.listen(address), realClock, osRandom(), { statsEvery });
  new BasicLockServer(rpc);
  process.stdout.write(`${programName()}: serving basic locks on ${rpc.address}\n`);

  const signal = await stop;
  process.stdout.write(`${programName()}: ${signal}, stopping\n`);
  await rpc.close();
  return 0;
});
