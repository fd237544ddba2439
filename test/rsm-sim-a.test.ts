/** rsm_sim seeds, part 0 (see rsm-sim-seeds.ts): the kv service replicated under random faults, checked from outside. */
import { runRsmSimSeeds } from './rsm-sim-seeds.js';

runRsmSimSeeds(0);
