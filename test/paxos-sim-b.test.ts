/** Simulator seeds 400-799 of the Paxos/membership swarm; see paxos-sim-a.test.ts. */
import { runSwarmSeeds } from './paxos-sim-seeds.js';

runSwarmSeeds(1);
