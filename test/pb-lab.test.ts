/**
 * The twelve tests of the classic primary/backup lock service lab, ported to tap: same scripts,
 * same assertions, same fault timing (the dying server's 2 s), over real TCP on 127.0.0.1 in one
 * process. T/F in the comments: the expected answer.
 */
import t, { type Test } from 'tap';
import { dying, kill } from '../lockserver/pb/testing.js';
import type { PrimaryBackupLockClerk } from '../lockserver/pb/index.js';
import { delay, startPair, type PbPair } from './helpers/pb.js';

type Step = readonly [op: 'L' | 'U', name: string, expected: boolean];

async function run(t: Test, clerk: PrimaryBackupLockClerk, steps: readonly Step[], who = 'ck'): Promise<void> {
  for (const [op, name, expected] of steps) {
    const got = op === 'L' ? await clerk.lock(name) : await clerk.unlock(name);
    t.equal(got, expected, `${who}: ${op === 'L' ? 'Lock' : 'Unlock'}(${name}) → ${expected}`);
  }
}

async function withPair(t: Test, body: (pair: PbPair) => Promise<void>): Promise<void> {
  const pair = await startPair();
  t.teardown(() => pair.close());
  await body(pair);
  t.equal(pair.backup.mismatches, 0, 'the backup computed the same answers as the primary');
}

const failScriptBefore: Step[] = [
  ['L', 'a', true],
  ['L', 'b', true],
  ['U', 'b', true],
  ['L', 'c', true],
  ['L', 'c', false],
  ['L', 'd', true],
  ['U', 'd', true],
  ['L', 'd', true],
];
const failScriptAfter: Step[] = [
  ['L', 'a', false],
  ['U', 'a', true],
  ['U', 'b', false],
  ['L', 'b', true],
  ['U', 'c', true],
  ['U', 'd', true],
];

t.test('TestBasic', (t) =>
  withPair(t, async (pair) => {
    const ck = pair.clerk();
    await run(t, ck, [
      ['L', 'a', true],
      ['U', 'a', true],
      ['L', 'a', true],
      ['L', 'b', true],
      ['U', 'a', true],
      ['U', 'b', true],
      ['L', 'a', true],
      ['L', 'a', false],
      ['U', 'a', true],
      ['U', 'a', false],
    ]);
    t.equal(ck.usingBackup, false, 'no failure: the clerk stayed with the primary');
  }),
);

t.test('TestPrimaryFail1', (t) =>
  withPair(t, async (pair) => {
    const ck = pair.clerk();
    await run(t, ck, failScriptBefore);
    kill(pair.primary);
    await run(t, ck, failScriptAfter);
    t.equal(ck.usingBackup, true, 'the clerk switched to the backup');
  }),
);

t.test('TestPrimaryFail2: just before reply #1', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['L', 'b', true]], 'ck1');
    dying(pair.primary);
    await run(t, ck2, [['L', 'c', true]], 'ck2');
    await run(t, ck1, [['L', 'c', false]], 'ck1');
    await run(t, ck2, [['U', 'c', true]], 'ck2');
    await run(t, ck1, [['L', 'c', true]], 'ck1');
  }),
);

t.test('TestPrimaryFail3: just before reply #2', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['L', 'b', true]], 'ck1');
    dying(pair.primary);
    await run(t, ck1, [['L', 'b', false]], 'ck1');
  }),
);

t.test('TestPrimaryFail4: just before reply #3', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['L', 'b', true]], 'ck1');
    dying(pair.primary);
    await run(t, ck2, [['L', 'b', false]], 'ck2');
  }),
);

t.test('TestPrimaryFail5: just before reply #4', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['L', 'b', true], ['U', 'b', true]], 'ck1');
    dying(pair.primary);
    await run(t, ck1, [['U', 'b', false]], 'ck1');
    await run(t, ck2, [['L', 'b', true]], 'ck2');
  }),
);

t.test('TestPrimaryFail6: just before reply #5', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['U', 'a', true]], 'ck1');
    await run(t, ck2, [['U', 'a', false]], 'ck2');
    await run(t, ck1, [['L', 'b', true]], 'ck1');
    dying(pair.primary);
    await run(t, ck2, [['U', 'b', true]], 'ck2');
    await run(t, ck1, [['L', 'b', true]], 'ck1');
  }),
);

t.test('TestPrimaryFail7: just before reply #6', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['U', 'a', true]], 'ck1');
    await run(t, ck2, [['U', 'a', false]], 'ck2');
    await run(t, ck1, [['L', 'b', true]], 'ck1');
    dying(pair.primary);
    // ck2's Unlock reaches the dying primary, which frees b and forwards it; the reply is lost and
    // ck2 re-sends it to the backup about 2 s later.
    const resent = ck2.unlock('b');
    await delay(1_000);
    // Meanwhile ck1 finds the primary gone, goes to the backup, and takes b there.
    await run(t, ck1, [['L', 'b', true]], 'ck1');
    t.equal(await resent, true, 're-sent Unlock did not return true');
    // Had the backup executed the re-sent Unlock again, it would have freed ck1's lock.
    await run(t, ck1, [['U', 'b', true]], 'ck1');
  }),
);

t.test('TestPrimaryFail8: just before reply #7', (t) =>
  withPair(t, async (pair) => {
    const ck1 = pair.clerk();
    const ck2 = pair.clerk();
    await run(t, ck1, [['L', 'a', true], ['U', 'a', true]], 'ck1');
    dying(pair.primary);
    const resent = ck2.unlock('a');
    await delay(1_000);
    await run(t, ck1, [['L', 'a', true]], 'ck1');
    t.equal(await resent, false, 're-sent Unlock did not return false');
    await run(t, ck1, [['U', 'a', true]], 'ck1');
  }),
);

t.test('TestBackupFail', (t) =>
  withPair(t, async (pair) => {
    const ck = pair.clerk();
    await run(t, ck, failScriptBefore);
    kill(pair.backup);
    await run(t, ck, failScriptAfter);
    t.equal(ck.usingBackup, false, 'the clerk stayed with the primary');
    t.equal(pair.primary.mode, 'primary-alone', 'the primary serves alone once the backup is gone');
  }),
);

/** Each client loops random Lock/Unlock on its own names until `stop`; primary killed midway. */
t.test('TestMany', (t) =>
  withPair(t, async (pair) => {
    const clients = 2;
    const names = 10;
    let stop = false;
    const loops = Array.from({ length: clients }, async (_, i) => {
      const ck = pair.clerk();
      const state = new Map<string, boolean>();
      let ops = 0;
      while (!stop) {
        const name = String(i * 1000 + Math.floor(Math.random() * names));
        if (Math.random() < 0.5) {
          await ck.lock(name);
          state.set(name, true);
        } else {
          await ck.unlock(name);
          state.set(name, false);
        }
        ops++;
      }
      return { state, ops };
    });
    let finished = 0;
    loops.forEach((loop) => void loop.then(() => finished++));
    await delay(2_000);
    kill(pair.primary);
    await delay(2_000);
    stop = true;
    await delay(1_000);
    t.equal(finished, clients, 'one client didn\'t complete');
    const results = await Promise.all(loops);
    for (const { ops } of results) t.ok(ops > 0, 'each client made progress');
    const checker = pair.clerk();
    let bad = 0;
    for (const { state } of results) {
      for (const [name, held] of state) if ((await checker.lock(name)) === held) bad++;
    }
    t.equal(bad, 0, 'bad final state');
  }),
);

t.test('TestConcurrentCounts', (t) =>
  withPair(t, async (pair) => {
    const clients = 2;
    let stop = false;
    let nl = 0;
    let nu = 0;
    const loops = Array.from({ length: clients }, async () => {
      const ck = pair.clerk();
      while (!stop) {
        if (Math.random() < 0.5) {
          if (await ck.lock('0')) nl++;
        } else if (await ck.unlock('0')) nu++;
      }
    });
    let finished = 0;
    loops.forEach((loop) => void loop.then(() => finished++));
    await delay(2_000);
    kill(pair.primary);
    await delay(2_000);
    stop = true;
    await delay(1_000);
    t.equal(finished, clients, 'one client didn\'t complete');
    t.ok(nl > 0 && nu > 0, `both Lock and Unlock succeeded (nl=${nl}, nu=${nu})`);
    t.ok(nu <= nl && nl <= nu + 1, `lock race 1 (nl=${nl}, nu=${nu})`);
    const final = await pair.clerk().unlock('0');
    if (nl === nu) t.equal(final, false, 'lock race 2');
    else t.equal(final, true, 'lock race 3');
  }),
);
