/**
 * Host wiring (not protocol code): the real environment for clerks created without an endpoint
 * of their own: TCP (with RPC_LOSSY), Node timers, OS-seeded randomness.
 */
import { realClock } from '../../lib/clock.js';
import { osRandom } from '../../lib/random.js';
import { RpcEndpoint } from '../../lib/rpc.js';
import { lossyPercentFromEnv, tcpNetwork } from '../../lib/tcp.js';

export function realClerkEndpoint(): RpcEndpoint {
  return new RpcEndpoint(tcpNetwork({ lossyPercent: lossyPercentFromEnv() }).connect(), realClock, osRandom());
}
