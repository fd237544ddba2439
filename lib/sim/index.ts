/**
 * The simulated environment: virtual time, a faulty in-process network and crash-prone storage,
 * all driven by one seed. See README.md for the fault model.
 */
import type { Env } from '../env.js';
import type { SimNetwork } from './network.js';
import type { SimWorld } from './world.js';

export * from './world.js';
export * from './network.js';
export * from './storage.js';

/**
 * The environment of one node (incarnation) named `owner`: its own timers, its own PRNG stream
 * forked from the world's (so the order of `simEnv` calls is part of the run), and the network as
 * that owner sees it. After `world.crash(owner)`, call `world.restart(owner)` and then `simEnv`
 * again for the new incarnation; the old environment is dead.
 */
export function simEnv(world: SimWorld, network: SimNetwork, owner: string): Env {
  return { clock: world.clockFor(owner), random: world.random.fork(), network: network.forOwner(owner) };
}
