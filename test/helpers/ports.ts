/**
 * Shared helpers of the tests that start real replicas on loopback: a free block of ports and a
 * bounded wait for a condition.
 */
import { osRandom } from '../../lib/random.js';
import { chooseBasePort } from '../../tester/cluster.js';
import { isPortFree } from '../../tester/processes.js';

/**
 * The first port of a free block for `replicas` replicas (each with its control port above it),
 * drawn from 20000..31000: below Linux's ephemeral range, where outgoing connections take ports.
 */
export async function freeBasePort(replicas = 3): Promise<number> {
  const random = osRandom();
  for (let draw = 0; draw < 100; draw++) {
    const choice = await chooseBasePort(replicas, 20_000 + random.int(11_000), isPortFree);
    if (choice.ok) return choice.base;
  }
  throw new Error('no free block of ports');
}

/** Polls `condition` every 50 ms for at most `limitMs`; throws naming `what` after that. */
export async function waitUntil(condition: () => boolean, limitMs: number, what: string): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
