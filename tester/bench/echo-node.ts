#!/usr/bin/env node
/**
 * One node of benchmark (b)'s floor: the chain of a replicated request (client → primary → every
 * backup → primary → client) with nothing on it but the project's TCP framing and RPC layer — no
 * storage, no fsync, no state machine, no view logic.
 *
 *   node dist/tester/bench/echo-node.js PORT              a "backup": answers each echo at once
 *   node dist/tester/bench/echo-node.js PORT BACKUP…      a "primary": forwards each echo to every
 *                                                         backup in parallel, answers once all did
 *
 * Listens on 127.0.0.1 only. Started and killed by the benchmark (tester/bench/echo-floor.ts).
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { tcpNetwork } from '../../lib/tcp.js';
import { echo } from './echo-floor.js';

const [portText, ...backupTexts] = process.argv.slice(2);
const port = Number(portText);
if (!Number.isInteger(port) || port < 1 || port > 65_535 || backupTexts.some((text) => !/^\d{1,5}$/.test(text))) {
  process.stderr.write('usage: echo-node PORT [BACKUP_PORT…]\n');
  process.exit(2);
}
const backups = backupTexts.map((text) => `127.0.0.1:${text}`);
const rpc = new RpcEndpoint(await tcpNetwork().listen(`127.0.0.1:${port}`), realClock, osRandom());
rpc.handle(echo, async (payload) => {
  if (backups.length > 0) {
    const replies = await Promise.all(backups.map((backup) => rpc.call(backup, echo, payload, { timeoutMs: 10_000 })));
    if (replies.some((reply) => !reply.ok)) return { status: 1, result: new Uint8Array(0) };
  }
  return { status: 0, result: payload };
});
process.stdout.write(`echo-node ${port} ready\n`);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void rpc.close().then(() => process.exit(0)));
