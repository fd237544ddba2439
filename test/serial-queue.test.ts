import t from 'tap';
import { SerialQueue } from '../lib/serial-queue.js';

t.test('tasks run one at a time, in order, each to completion', async (t) => {
  const queue = new SerialQueue();
  const log: string[] = [];
  let running = 0;
  const task = (name: string, ticks: number) => async (): Promise<string> => {
    running++;
    t.equal(running, 1, `${name} runs alone`);
    log.push(`${name} start`);
    for (let i = 0; i < ticks; i++) await Promise.resolve();
    log.push(`${name} end`);
    running--;
    return name;
  };
  const results = await Promise.all([queue.run(task('a', 5)), queue.run(task('b', 1)), queue.run(task('c', 3))]);
  t.same(results, ['a', 'b', 'c']);
  t.same(log, ['a start', 'a end', 'b start', 'b end', 'c start', 'c end']);
  t.equal(queue.length, 0);
});

t.test('a failing task rejects only its own promise', async (t) => {
  const queue = new SerialQueue();
  const failed = queue.run(async () => {
    throw new Error('boom');
  });
  const next = queue.run(() => 42);
  await t.rejects(failed, /boom/);
  t.equal(await next, 42);
});

t.test('drain waits for every task queued before it, not for later ones', async (t) => {
  const queue = new SerialQueue();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let firstDone = false;
  void queue.run(async () => {
    await gate;
    firstDone = true;
  });
  const drained = queue.drain().then(() => firstDone);
  t.equal(queue.length, 2);
  release();
  t.equal(await drained, true);
});
