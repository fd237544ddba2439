/** rsm_sim --workload lock seeds, part 0 (see rsm-sim-seeds.ts): the replicated caching lock service under random faults, mutual exclusion checked from outside. */
import { runRsmSimSeeds } from './rsm-sim-seeds.js';

runRsmSimSeeds(0, 'lock');
