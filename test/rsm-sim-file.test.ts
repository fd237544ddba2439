/**
 * rsm_sim --workload file seeds: the lock service and the file service it fences, replicated under
 * random faults; callers append records while they hold a lock. At the end every acknowledged
 * append is present exactly once in every replica's files, the records of one hold are
 * contiguous, and the replicas' files are identical (tester/file-check.ts). 3 × 100 seeds (the
 * file workload is the dearest per seed, and every replica's invariants are checked after every
 * event; longer soaks: `rsm_sim --workload file --seeds N`).
 */
import { runRsmSimSeeds } from './rsm-sim-seeds.js';

for (let part = 0; part < 3; part++) runRsmSimSeeds(part, 'file');
