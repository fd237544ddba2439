import t from 'tap';
import type { Endpoint } from '../lib/env.js';
import { SimNetwork, SimWorld, simEnv } from '../lib/sim/index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string): Uint8Array => encoder.encode(text);
const text = (message: Uint8Array): string => decoder.decode(message);

/** Records every message an endpoint receives as "from:text". */
function inbox(endpoint: Endpoint): string[] {
  const received: string[] = [];
  endpoint.onMessage((from, message) => received.push(`${from}:${text(message)}`));
  return received;
}

t.test('delivers messages and replies to the sender’s address', async (t) => {
  const world = new SimWorld(1);
  const network = new SimNetwork(world);
  const server = await network.listen('127.0.0.1:7001');
  const client = network.connect();
  t.match(client.address, /^client-\d+$/);
  server.onMessage((from, message) => server.send(from, bytes(`re ${text(message)}`)));
  const replies = inbox(client);
  client.send(server.address, bytes('ping'));
  t.equal(await world.runUntil(() => replies.length === 1, 100), true);
  t.same(replies, ['127.0.0.1:7001:re ping']);
});

t.test('a message is copied on send and the receiver gets its own copy', async (t) => {
  const world = new SimWorld(2);
  const network = new SimNetwork(world);
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const got: Uint8Array[] = [];
  b.onMessage((_from, message) => got.push(message));
  const buffer = bytes('hello');
  a.send(b.address, buffer);
  buffer.fill(0);
  await world.runFor(10);
  t.equal(text(got[0]!), 'hello');
});

t.test('addresses: taken ones are refused, port 0 allocates, closed ones are reusable', async (t) => {
  const world = new SimWorld(3);
  const network = new SimNetwork(world);
  const first = await network.listen('127.0.0.1:7001');
  await t.rejects(network.listen('127.0.0.1:7001'), { code: 'EADDRINUSE' });
  const x = await network.listen('127.0.0.1:0');
  const y = await network.listen('127.0.0.1:0');
  t.match(x.address, /^127\.0\.0\.1:\d+$/);
  t.not(x.address, y.address);
  t.not(network.connect().address, network.connect().address);
  await first.close();
  await first.close();
  const again = await network.listen('127.0.0.1:7001');
  t.equal(again.address, '127.0.0.1:7001');
});

t.test('a message arriving before a handler is set is dropped', async (t) => {
  const world = new SimWorld(4, { keepTrace: true });
  const network = new SimNetwork(world);
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  a.send(b.address, bytes('early'));
  await world.runFor(10);
  const received = inbox(b);
  await world.runFor(10);
  t.same(received, []);
  t.ok(world.traceLines!.some((line) => line.endsWith('drop #1 no-handler')));
});

t.test('loss = 1 loses everything', async (t) => {
  const world = new SimWorld(5);
  const network = new SimNetwork(world);
  network.setLinkFaults({ loss: 1 });
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const received = inbox(b);
  for (let i = 0; i < 100; i++) a.send(b.address, bytes(`${i}`));
  await world.runFor(1000);
  t.same(received, []);
});

t.test('duplicate = 1 delivers every message twice', async (t) => {
  const world = new SimWorld(6);
  const network = new SimNetwork(world);
  network.setLinkFaults({ duplicate: 1, delayMinMs: 1, delayMaxMs: 50 });
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const received = inbox(b);
  for (let i = 0; i < 50; i++) a.send(b.address, bytes(`${i}`));
  await world.runFor(1000);
  t.equal(received.length, 100);
  for (let i = 0; i < 50; i++) t.equal(received.filter((m) => m === `a:1:${i}`).length, 2);
});

t.test('random delays reorder messages, the same way for the same seed', async (t) => {
  const arrivals = async (seed: number): Promise<number[]> => {
    const world = new SimWorld(seed);
    const network = new SimNetwork(world);
    network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 100 });
    const a = await network.listen('a:1');
    const b = await network.listen('b:1');
    const order: number[] = [];
    b.onMessage((_from, message) => order.push(Number(text(message))));
    for (let i = 0; i < 200; i++) a.send(b.address, bytes(`${i}`));
    await world.runFor(1000);
    return order;
  };
  const order = await arrivals(7);
  t.equal(order.length, 200, 'nothing lost');
  t.ok(order.some((value, i) => i > 0 && value < order[i - 1]!), 'some pair arrives out of order');
  t.same(await arrivals(7), order, 'deterministic');
  t.not(JSON.stringify(await arrivals(8)), JSON.stringify(order), 'another seed, another order');
});

t.test('the default link is FIFO', async (t) => {
  const world = new SimWorld(9);
  const network = new SimNetwork(world);
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const order: number[] = [];
  b.onMessage((_from, message) => order.push(Number(text(message))));
  for (let i = 0; i < 100; i++) a.send(b.address, bytes(`${i}`));
  await world.runFor(10);
  t.same(order, [...Array(100).keys()]);
});

t.test('per-link faults override the defaults in one direction only', async (t) => {
  const world = new SimWorld(10);
  const network = new SimNetwork(world);
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  network.setLinkFaults({ loss: 1 }, ['a:1', 'b:1']);
  const atA = inbox(a);
  const atB = inbox(b);
  a.send(b.address, bytes('lost'));
  b.send(a.address, bytes('kept'));
  await world.runFor(10);
  t.same(atB, []);
  t.same(atA, ['b:1:kept']);
  network.clearLinkFaults(['a:1', 'b:1']);
  a.send(b.address, bytes('now kept'));
  await world.runFor(10);
  t.same(atB, ['a:1:now kept']);
  t.throws(() => network.setLinkFaults({ loss: 2 }), RangeError);
  t.throws(() => network.setLinkFaults({ delayMinMs: 5, delayMaxMs: 4 }), RangeError);
  t.throws(() => network.setLinkFaults({ delayMaxMs: 1.5 }), RangeError);
});

t.test('partitions drop messages both ways and heal restores them', async (t) => {
  const world = new SimWorld(11);
  const network = new SimNetwork(world);
  const [a, b, c] = await Promise.all(['a:1', 'b:1', 'c:1'].map((address) => network.listen(address)));
  const atA = inbox(a!);
  const atB = inbox(b!);
  const atC = inbox(c!);
  network.partition([['a:1', 'b:1'], ['c:1']]);
  a!.send('b:1', bytes('same side'));
  a!.send('c:1', bytes('across'));
  c!.send('a:1', bytes('across back'));
  await world.runFor(10);
  t.same(atB, ['a:1:same side']);
  t.same(atC, []);
  t.same(atA, []);
  network.heal();
  a!.send('c:1', bytes('healed'));
  await world.runFor(10);
  t.same(atC, ['a:1:healed']);
});

t.test('a partition cuts messages already in flight; unlisted owners are cut off', async (t) => {
  const world = new SimWorld(12);
  const network = new SimNetwork(world);
  network.setLinkFaults({ delayMinMs: 50, delayMaxMs: 50 });
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const atB = inbox(b);
  a.send('b:1', bytes('in flight'));
  await world.runFor(10);
  network.partition([['a:1']]);
  await world.runFor(100);
  t.same(atB, [], 'dropped on arrival');
  t.equal(network.connected('b:1', 'c:1'), false, 'owners in no group are alone');
  t.equal(network.connected('b:1', 'b:1'), true, 'an owner always reaches itself');
  t.throws(() => network.partition([['a:1'], ['a:1']]), /two groups/);
});

t.test('isolate cuts one owner off from everyone else', async (t) => {
  const world = new SimWorld(13);
  const network = new SimNetwork(world);
  network.isolate('b:1');
  t.equal(network.connected('a:1', 'b:1'), false);
  t.equal(network.connected('b:1', 'c:1'), false);
  t.equal(network.connected('a:1', 'c:1'), true);
  network.heal();
  t.equal(network.connected('a:1', 'b:1'), true);
});

t.test('a crashed endpoint receives nothing, even what was already in flight', async (t) => {
  const world = new SimWorld(14);
  const network = new SimNetwork(world);
  network.setLinkFaults({ delayMinMs: 5, delayMaxMs: 5 });
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const atB = inbox(b);
  a.send('b:1', bytes('in flight'));
  network.crash('b:1');
  b.send('a:1', bytes('from the dead'));
  const atA = inbox(a);
  await world.runFor(20);
  t.same(atB, []);
  t.same(atA, []);
  t.same(network.addresses(), ['a:1']);
});

t.test('owners: partitions and crashes cover every endpoint a node opened', async (t) => {
  const world = new SimWorld(15);
  const network = new SimNetwork(world);
  const server = await network.listen('s:1');
  server.onMessage((from, message) => server.send(from, message));
  const env = simEnv(world, network, 'n1');
  const listener = await env.network.listen('n1:1');
  const client = env.network.connect();
  const atClient = inbox(client);
  network.partition([['n1'], ['s:1']]);
  client.send('s:1', bytes('cut'));
  await world.runFor(10);
  t.same(atClient, [], 'the client endpoint is on its owner’s side');
  network.heal();
  client.send('s:1', bytes('echo'));
  await world.runFor(10);
  t.same(atClient, ['s:1:echo']);

  world.crash('n1');
  t.same(network.addresses(), ['s:1'], 'both endpoints of n1 closed');
  // Code of the dead incarnation may still run; what it opens is born closed.
  const zombie = env.network.connect();
  zombie.send('s:1', bytes('zombie'));
  await world.runFor(10);
  t.same(network.addresses(), ['s:1']);
  t.equal(listener.address, 'n1:1');
  t.throws(() => simEnv(world, network, 'n1'), /crashed/);
  world.restart('n1');
  const reborn = simEnv(world, network, 'n1');
  t.equal((await reborn.network.listen('n1:1')).address, 'n1:1', 'the address is free again');
});

t.test('in-flight messages per link are bounded', async (t) => {
  const world = new SimWorld(16);
  const network = new SimNetwork(world, { inFlightMaxPerLink: 5 });
  network.setLinkFaults({ delayMinMs: 10, delayMaxMs: 10 });
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  const atB = inbox(b);
  for (let i = 0; i < 10; i++) a.send('b:1', bytes(`${i}`));
  await world.runFor(20);
  t.same(atB, ['a:1:0', 'a:1:1', 'a:1:2', 'a:1:3', 'a:1:4']);
  a.send('b:1', bytes('after'));
  await world.runFor(20);
  t.same(atB.at(-1), 'a:1:after', 'deliveries free their slots');
});

t.test('a throwing handler stops the run', async (t) => {
  const world = new SimWorld(17);
  const network = new SimNetwork(world);
  const a = await network.listen('a:1');
  const b = await network.listen('b:1');
  b.onMessage(() => {
    throw new Error('handler bug');
  });
  a.send('b:1', bytes('x'));
  await t.rejects(world.runFor(10), /handler bug/);
});

/**
 * Three nodes ping each other over a faulty network and retransmit on timers until each has seen
 * enough pongs; one of them crashes and restarts midway. Returns the trace hash.
 */
async function pingPong(seed: number): Promise<{ hash: string; events: number }> {
  const world = new SimWorld(seed);
  const network = new SimNetwork(world);
  network.setLinkFaults({ delayMinMs: 1, delayMaxMs: 30, loss: 0.2, duplicate: 0.1 });
  const names = ['n1', 'n2', 'n3'];
  const pongs = new Map<string, number>();
  const start = async (name: string): Promise<void> => {
    const env = simEnv(world, network, name);
    const endpoint = await env.network.listen(`${name}:1`);
    pongs.set(name, 0);
    endpoint.onMessage((from, message) => {
      if (text(message).startsWith('ping')) endpoint.send(from, bytes(`pong ${env.random.u32()}`));
      else pongs.set(name, pongs.get(name)! + 1);
    });
    const tick = (): void => {
      const peer = names[env.random.int(names.length)]!;
      endpoint.send(`${peer}:1`, bytes(`ping ${name}`));
      env.clock.setTimer(5 + env.random.int(20), tick);
    };
    tick();
  };
  for (const name of names) await start(name);
  await world.runUntil(() => world.now() >= 200, 1000);
  world.crash('n2');
  await world.runFor(100);
  world.restart('n2');
  await start('n2');
  const done = await world.runUntil(() => names.every((name) => pongs.get(name)! >= 20), 10_000);
  if (!done) throw new Error('ping-pong made no progress');
  return { hash: world.traceHash(), events: world.eventsRun };
}

t.test('the same seed gives the same trace; another seed another', async (t) => {
  const first = await pingPong(42);
  t.ok(first.events > 100, 'the workload did something');
  t.same(await pingPong(42), first);
  t.not((await pingPong(43)).hash, first.hash);
});

t.test('peer-down: a message to an address where nothing listens is reported unreachable; a partition reports nothing', async (t) => {
  const world = new SimWorld(31);
  const network = new SimNetwork(world);
  const client = network.forOwner('c').connect();
  const reports: string[] = [];
  client.onPeerDown!((to, reason) => reports.push(`${to} ${reason}`));
  client.send('nobody:1', bytes('x'));
  await world.runFor(10);
  t.same(reports, ['nobody:1 unreachable'], 'refused, one round trip later');

  const server = await network.forOwner('s').listen('s:1');
  server.onMessage(() => {});
  client.send('s:1', bytes('y'));
  network.partition([['c'], ['s']]);
  client.send('s:1', bytes('z'));
  await world.runFor(10);
  t.same(reports, ['nobody:1 unreachable'], 'delivered or cut: no report');

  network.heal();
  world.crash('s');
  client.send('s:1', bytes('w'));
  await world.runFor(10);
  t.same(reports, ['nobody:1 unreachable', 's:1 unreachable'], 'a crashed node refuses');
});
