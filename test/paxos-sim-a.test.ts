/**
 * Simulator seeds 0-399 of the Paxos/membership swarm (tester/sim/paxos-swarm.ts): random cluster
 * size, network faults, crashes and restarts (losing unsynced writes), partitions and
 * breakpoints; then heal and converge. Split over two files so tap runs them in parallel.
 * PAXOS_SIM_SEEDS=N runs N seeds per file instead of 400 (for longer soaks; 400 keeps CI under its 20 minutes).
 */
import { runSwarmSeeds } from './paxos-sim-seeds.js';

runSwarmSeeds(0);
