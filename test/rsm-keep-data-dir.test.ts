/**
 * `rsm_tester --keep-data-dir`: process scenarios in one go with one RSM_DATA_DIR kept between
 * them, while each scenario starts without paxos logs. Every node of a later scenario finds
 * storage from an earlier one; it must move it aside and start fresh (cluster identity,
 * rsm/replica-process.ts), or the scenario's views are polluted by the last one's.
 *
 * All seventeen scenarios already run in rsm-scenarios.test.ts; what this file adds is the
 * stale storage at each scenario's start, so it runs ten that cover every kind (membership, a
 * Paxos breakpoint, acceptor restarts, lock_tester beside a dead primary, a breakpoint, a
 * partition) in well under half the time. `rsm_tester --keep-data-dir` with no test runs all of
 * them (they pass).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const RSM_TESTER = fileURLToPath(new URL('../tester/bin/rsm_tester.js', import.meta.url));
const SCENARIOS = [0, 1, 2, 3, 5, 6, 8, 11, 14, 16];

t.test(`rsm_tester --keep-data-dir passes scenarios ${SCENARIOS.join(' ')}`, async (t) => {
  const run = spawnSync(process.execPath, [RSM_TESTER, '--keep-data-dir', ...SCENARIOS.map(String)], {
    encoding: 'utf8',
    env: { ...process.env, RPC_LOSSY: '' },
    timeout: 30 * 60_000,
    killSignal: 'SIGKILL',
  });
  const output = `${run.stdout}${run.stderr}`;
  t.equal(run.status, 0, `exit 0 (last lines:\n${output.split('\n').slice(-15).join('\n')})`);
  t.match(output, /--keep-data-dir: every scenario's nodes use RSM_DATA_DIR=/);
  for (const test of SCENARIOS) t.match(output, new RegExp(`^test ${test}: OK`, 'm'), `test ${test} passed`);
  t.match(output, /^tests done OK$/m);
});
