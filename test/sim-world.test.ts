import t from 'tap';
import { SimWorld } from '../lib/sim/index.js';

t.test('events run in time order, ties in insertion order', async (t) => {
  const world = new SimWorld(1);
  const order: string[] = [];
  world.schedule(20, () => order.push('c@20'));
  world.schedule(10, () => order.push('a@10'));
  world.schedule(10, () => order.push('b@10'));
  world.schedule(0, () => {
    order.push('z@0');
    // Scheduled later for the same time as a@10 and b@10: runs after them.
    world.schedule(10, () => order.push('d@10'));
  });
  await world.runFor(100);
  t.same(order, ['z@0', 'a@10', 'b@10', 'd@10', 'c@20']);
  t.equal(world.now(), 100);
  t.equal(world.pendingEvents, 0);
});

t.test('the heap keeps order under many random timers and cancellations', async (t) => {
  const world = new SimWorld('heap');
  const clock = world.clockFor('n1');
  const fired: Array<[number, number]> = [];
  const expected: Array<[number, number]> = [];
  const timers = [];
  for (let i = 0; i < 5000; i++) {
    const at = world.random.int(1000);
    timers.push(clock.setTimer(at, () => fired.push([world.now(), i])));
    expected.push([at, i]);
  }
  // Cancel 4000 of them: enough to trigger compaction of the heap.
  const cancelled = new Set<number>();
  while (cancelled.size < 4000) cancelled.add(world.random.int(5000));
  for (const i of cancelled) timers[i]!.cancel();
  t.equal(world.pendingEvents, 1000);
  await world.runFor(1000);
  const want = expected.filter(([, i]) => !cancelled.has(i)).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  t.same(fired, want);
});

t.test('a cancelled timer never fires; cancelling twice or after firing is harmless', async (t) => {
  const world = new SimWorld(2);
  const clock = world.clockFor('n1');
  let fired = 0;
  const cancelled = clock.setTimer(5, () => fired++);
  const kept = clock.setTimer(5, () => fired++);
  cancelled.cancel();
  cancelled.cancel();
  await world.runFor(10);
  t.equal(fired, 1);
  kept.cancel();
  t.equal(world.pendingEvents, 0);
  t.equal(clock.now(), 10);
});

t.test('cancelTimers(owner) cancels only that owner’s timers', async (t) => {
  const world = new SimWorld(3);
  const a = world.clockFor('a');
  const b = world.clockFor('b');
  const fired: string[] = [];
  a.setTimer(1, () => fired.push('a1'));
  a.setTimer(2, () => fired.push('a2'));
  b.setTimer(1, () => fired.push('b1'));
  world.schedule(0, () => fired.push('untagged'));
  t.equal(world.cancelTimers('a'), 2);
  t.equal(world.cancelTimers('a'), 0);
  await world.runFor(5);
  t.same(fired, ['untagged', 'b1']);
});

t.test('a crash kills the owner’s timers and clocks until restart', async (t) => {
  const world = new SimWorld(4, { keepTrace: true });
  const clock = world.clockFor('n1');
  const fired: string[] = [];
  clock.setTimer(10, () => fired.push('before-crash'));
  world.schedule(5, () => world.crash('n1'));
  await world.runFor(20);
  // Code of the dead incarnation still holds its clock; nothing it schedules may run.
  clock.setTimer(1, () => fired.push('zombie'));
  t.throws(() => world.clockFor('n1'), /crashed/);
  t.throws(() => world.crash('n1'), /already crashed/);
  world.restart('n1');
  t.throws(() => world.restart('n1'), /not crashed/);
  world.clockFor('n1').setTimer(1, () => fired.push('reborn'));
  await world.runFor(20);
  t.same(fired, ['reborn']);
  t.equal(world.incarnationOf('n1'), 1);
  t.same(world.traceLines, ['5 crash n1', '20 restart n1']);
});

t.test('runUntil stops when the predicate holds, or at the virtual time limit', async (t) => {
  const world = new SimWorld(5);
  const clock = world.clockFor('n1');
  let ticks = 0;
  const tick = (): void => {
    ticks++;
    clock.setTimer(10, tick);
  };
  clock.setTimer(10, tick);
  t.equal(await world.runUntil(() => ticks === 3, 1000), true);
  t.equal(world.now(), 30);
  t.equal(await world.runUntil(() => ticks === 1000, 100), false);
  t.equal(world.now(), 130, 'the clock ends at the limit');
  t.equal(ticks, 13);
  t.equal(await world.runUntil(() => true, 0), true, 'the predicate is checked before any event');
  await t.rejects(world.runUntil(() => false, -1), RangeError);
});

t.test('an idle world advances to the limit', async (t) => {
  const world = new SimWorld(6);
  t.equal(await world.runUntil(() => false, 50), false);
  t.equal(world.now(), 50);
});

t.test('the event bound catches a zero-delay livelock', async (t) => {
  const world = new SimWorld(7, { maxEventsPerRun: 1000 });
  const clock = world.clockFor('n1');
  const spin = (): void => void clock.setTimer(0, spin);
  spin();
  await t.rejects(world.runFor(1), /more than 1000 events/);
  t.equal(world.now(), 0);
});

t.test('microtasks, including chained ones, drain before the next event', async (t) => {
  const world = new SimWorld(8);
  const order: string[] = [];
  const chain = async (depth: number): Promise<void> => {
    for (let i = 0; i < depth; i++) await Promise.resolve();
    order.push('chain done');
  };
  world.schedule(1, () => void chain(100));
  world.schedule(1, () => order.push('next event'));
  await world.runFor(1);
  t.same(order, ['chain done', 'next event']);
});

t.test('a throwing event propagates out of the run', async (t) => {
  const world = new SimWorld(9);
  world.schedule(1, () => {
    throw new Error('bug in handler');
  });
  await t.rejects(world.runFor(5), /bug in handler/);
});

t.test('runUntil is not reentrant', async (t) => {
  const world = new SimWorld(10);
  let error: unknown;
  world.schedule(1, () => {
    world.runUntil(() => true, 1).catch((e: unknown) => (error = e));
  });
  await world.runFor(2);
  t.match(String(error), /already running/);
});

t.test('the trace hash depends on every line and on virtual time', async (t) => {
  const run = async (lines: string[], at: number): Promise<string> => {
    const world = new SimWorld(11);
    await world.runFor(at);
    for (const line of lines) world.trace(line);
    return world.traceHash();
  };
  const base = await run(['a', 'b'], 1);
  t.equal(await run(['a', 'b'], 1), base);
  t.not(await run(['b', 'a'], 1), base);
  t.not(await run(['a', 'b'], 2), base);
  const world = new SimWorld(11);
  t.equal(world.traceLines, undefined, 'lines are kept only on request');
  t.match(world.traceHash(), /^[0-9a-f]{64}$/);
  world.trace('x');
  t.not(world.traceHash(), new SimWorld(11).traceHash(), 'reading the hash does not end it');
});

t.test('bad delays are rejected', async (t) => {
  const world = new SimWorld(12);
  t.throws(() => world.schedule(Number.NaN, () => {}), RangeError);
  t.throws(() => world.schedule(Infinity, () => {}), RangeError);
  let ran = false;
  world.schedule(-5, () => (ran = true));
  await world.runFor(0);
  t.ok(ran, 'a negative delay means now');
});
