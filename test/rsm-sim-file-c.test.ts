/**
 * rsm_sim --workload file seeds, part 2 (see rsm-sim-seeds.ts): the lock service and the file
 * service it fences, replicated under random faults; callers append records while they hold a
 * lock. At the end every acknowledged append is present exactly once in every replica's files, the
 * records of one hold are contiguous, and the replicas' files are identical (tester/file-check.ts).
 * The file workload is the dearest per seed (about 0.9 s here), so its 300 seeds are three files
 * that tap can run beside others; longer soaks: `rsm_sim --workload file --seeds N`.
 */
import { runRsmSimSeeds } from './rsm-sim-seeds.js';

runRsmSimSeeds(2, 'file');
