#!/usr/bin/env node
/**
 * rsm_ctl [host:]CONTROL_PORT status | breakpoint N | partition 0|1
 *
 * The lab's rsm_tester client (lab reference §5.3): sends one test-control RPC to a replica's
 * control server (its port + 1) and prints the lab's line. Exit status: 0 if the node answered OK,
 * 1 if it answered another status or did not answer within the timeout, 2 on a usage error.
 */
import { RsmTestStatus } from '../../rsm/protocol.js';
import { CONTROL_TIMEOUT_MS, controlEndpoint, parseRsmCtlArgs, sendControl } from '../rsm-tester.js';
import { EXIT_FAILURE, UsageError, parseCommandLine, programName, runMain, type CommandSpec } from '../../lib/cli.js';

const spec: CommandSpec = {
  usage: ['rsm_ctl [host:]CONTROL_PORT status', 'rsm_ctl [host:]CONTROL_PORT breakpoint N', 'rsm_ctl [host:]CONTROL_PORT partition 0|1'],
  help: `Sends a test-control RPC to a lock_server replica. CONTROL_PORT is the node's port + 1 (a bare
port means 127.0.0.1).

  status           print the replica's view, primary, last viewstamp, whether it is in a view
                   change, and whether it reaches a majority of its view ("no quorum: …")
  breakpoint 1|2   arm RSM breakpoint 1 (dies mid-request) or 2 (dies committing a view with it in it)
  breakpoint 3|4   arm Paxos breakpoint 1 (dies after the prepare phase) or 2 (after the accept phase)
  partition 0      arm a partition of the node (it takes effect at the node's next client request)
  partition 1      heal the partition

Prints the status line, or "breakpoint N returned S" or "net_repair returned S", and exits 0 if
S is OK (0), else 1. Pointed at a replica's main port it says to use port + 1.
Exits 1 with a message if the node does not answer within ${CONTROL_TIMEOUT_MS / 1000} s.`,
  minPositionals: 2,
  maxPositionals: 3,
};

runMain(spec, async () => {
  const { positionals } = parseCommandLine(spec);
  const args = parseRsmCtlArgs(positionals);
  if (!args.ok) throw new UsageError(args.message);
  const rpc = controlEndpoint();
  try {
    const result = await sendControl(rpc, args.address, args.command);
    if (!result.answered) {
      process.stderr.write(`${programName()}: ${result.message}\n`);
      return EXIT_FAILURE;
    }
    process.stdout.write(`${result.line}\n`);
    return result.status === RsmTestStatus.OK ? 0 : EXIT_FAILURE;
  } finally {
    await rpc.close();
  }
});
