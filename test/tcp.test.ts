import net from 'node:net';
import t, { type Test } from 'tap';
import type { Clock, Endpoint, Random, Timer } from '../lib/env.js';
import { encodeFrame } from '../lib/frame.js';
import { realClock } from '../lib/clock.js';
import { osRandom } from '../lib/random.js';
import { RpcEndpoint, codecs, procedure } from '../lib/rpc.js';
import { CONNECT_TIMEOUT_MS, lossyPercentFromEnv, normalizeAddress, tcpNetwork } from '../lib/tcp.js';

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Upper bound on any wait in these tests: a hang fails the test instead of timing out tap. */
const PATIENCE_MS = 10_000;

interface Received {
  readonly from: string;
  readonly text: string;
}

/** Collects what an endpoint receives and lets a test wait for a condition on it. */
class Inbox {
  readonly received: Received[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(endpoint: Endpoint, reply?: (from: string, message: string) => string | undefined) {
    endpoint.onMessage((from, message) => {
      this.received.push({ from, text: text(message) });
      const answer = reply?.(from, text(message));
      if (answer !== undefined) endpoint.send(from, bytes(answer));
      for (const listener of this.listeners) listener();
    });
  }

  texts(): string[] {
    return this.received.map((r) => r.text);
  }

  /** Resolves with the first message satisfying `predicate` (already received or future). */
  waitFor(predicate: (r: Received) => boolean, what = 'message'): Promise<Received> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const found = this.received.find(predicate);
        if (found === undefined) return false;
        this.listeners.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`no ${what} after ${PATIENCE_MS} ms; got ${JSON.stringify(this.received)}`));
      }, PATIENCE_MS);
      if (!check()) this.listeners.add(check);
    });
  }
}

/**
 * Sends `message` repeatedly until `inbox` holds an answer matching `predicate`: for paths where
 * the first sends may be dropped (a cached connection that has just died, a connect that failed).
 */
async function sendUntil(
  sender: Endpoint,
  to: string,
  message: string,
  inbox: Inbox,
  predicate: (r: Received) => boolean,
): Promise<Received> {
  const deadline = Date.now() + PATIENCE_MS;
  for (;;) {
    sender.send(to, bytes(message));
    await pause(20);
    const found = inbox.received.find(predicate);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no answer to ${message}`);
  }
}

/** Opens a raw TCP connection to `address`; resolves when it is connected. */
function rawConnect(address: string): Promise<net.Socket> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: host!, port: Number(port) }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when the peer has closed `socket` (reading and discarding whatever it sent). */
function closedEvent(socket: net.Socket): Promise<void> {
  socket.on('error', () => {}); // ECONNRESET is as good as a clean close here
  socket.resume(); // a paused socket never sees the peer's EOF
  return new Promise((resolve) => (socket.closed ? resolve() : socket.once('close', () => resolve())));
}

/** A clock whose timers fire only when the test says so. */
class ManualClock implements Clock {
  readonly timers: Array<{ delayMs: number; fn: () => void; cancelled: boolean }> = [];
  now(): number {
    return 0;
  }
  setTimer(delayMs: number, fn: () => void): Timer {
    const entry = { delayMs, fn, cancelled: false };
    this.timers.push(entry);
    return { cancel: () => void (entry.cancelled = true) };
  }
}

/** Hands out scripted values from int(); anything else is unused by the transport. */
class ScriptedRandom implements Random {
  constructor(private readonly script: number[]) {}
  int(n: number): number {
    const value = this.script.shift();
    if (value === undefined || value >= n) throw new Error(`script exhausted or out of range for int(${n})`);
    return value;
  }
  float(): number {
    throw new Error('unused');
  }
  u32(): number {
    throw new Error('unused');
  }
  fork(): Random {
    throw new Error('unused');
  }
}

t.test('normalizeAddress', async (t) => {
  t.equal(normalizeAddress('3772'), '127.0.0.1:3772');
  t.equal(normalizeAddress('localhost:0080'), 'localhost:80');
  t.equal(normalizeAddress('[::1]:5'), '[::1]:5');
  for (const bad of ['', 'host:', ':80', 'a:b', '70000', '::1:80', 'h st:1', '12.5']) {
    t.throws(() => normalizeAddress(bad), { code: 'ADDRESS_INVALID' }, JSON.stringify(bad));
  }
});

t.test('lossyPercentFromEnv', async (t) => {
  t.equal(lossyPercentFromEnv({}), 0);
  t.equal(lossyPercentFromEnv({ RPC_LOSSY: '' }), 0);
  t.equal(lossyPercentFromEnv({ RPC_LOSSY: '5' }), 5);
  t.equal(lossyPercentFromEnv({ RPC_LOSSY: ' 100 ' }), 100);
  for (const bad of ['x', '-1', '101', '5.5', '5%', '1e1']) {
    t.throws(() => lossyPercentFromEnv({ RPC_LOSSY: bad }), { code: 'CONFIG_INVALID' }, bad);
  }
});

/** Two listening endpoints and a client-only one on one network, all closed at the test's end. */
async function twoServersAndAClient(t: Test): Promise<{ network: ReturnType<typeof tcpNetwork>; a: Endpoint; b: Endpoint; client: Endpoint }> {
  const network = tcpNetwork();
  const a = await network.listen('127.0.0.1:0');
  const b = await network.listen('127.0.0.1:0');
  const client = network.connect();
  t.teardown(() => Promise.all([a.close(), b.close(), client.close()]));
  return { network, a, b, client };
}

t.test('messages flow both ways and replies route back over accepted connections', async (t) => {
  const { network, a, b, client } = await twoServersAndAClient(t);
  t.match(a.address, /^127\.0\.0\.1:[1-9]\d*$/);

  const inboxA = new Inbox(a);
  const inboxB = new Inbox(b, (_from, message) => `re:${message}`);
  const inboxClient = new Inbox(client);

  a.send(b.address, bytes('from a'));
  const atB = await inboxB.waitFor((r) => r.text === 'from a');
  t.match(atB.from, /^conn:/, 'the server sees an opaque reply address');
  const reply = await inboxA.waitFor((r) => r.text === 're:from a');
  t.equal(reply.from, b.address, 'a reply over an outgoing connection comes from its destination');

  // A client-only endpoint, addressing the server by bare port.
  const port = b.address.split(':')[1]!;
  client.send(port, bytes('from client'));
  const clientReply = await inboxClient.waitFor((r) => r.text === 're:from client');
  t.equal(clientReply.from, `127.0.0.1:${port}`, 'from is the normalized destination');

  // Several messages queued while connecting all arrive, in order (one connection).
  const c = network.connect();
  t.teardown(() => c.close());
  const inboxC = new Inbox(c);
  for (let i = 0; i < 20; i++) c.send(b.address, bytes(`m${i}`));
  await inboxC.waitFor((r) => r.text === 're:m19');
  t.same(
    inboxC.texts(),
    Array.from({ length: 20 }, (_, i) => `re:m${i}`),
  );
});

t.test('frames sent in one turn to two connected peers arrive whole and in order at each', async (t) => {
  const { a, b, client } = await twoServersAndAClient(t);
  const inboxA = new Inbox(a);
  const inboxB = new Inbox(b);
  // Connect first, so that the burst below goes out on established connections.
  client.send(a.address, bytes('hello'));
  client.send(b.address, bytes('hello'));
  await Promise.all([inboxA.waitFor((r) => r.text === 'hello'), inboxB.waitFor((r) => r.text === 'hello')]);
  // One synchronous burst, interleaved between the two destinations, of frames large and small.
  const sent: Record<'a' | 'b', string[]> = { a: [], b: [] };
  for (let i = 0; i < 200; i++) {
    const which = i % 3 === 0 ? 'b' : 'a';
    const message = `${which}${i}:${'x'.repeat(i % 7 === 0 ? 20_000 : i)}`;
    sent[which].push(message);
    client.send(which === 'a' ? a.address : b.address, bytes(message));
  }
  await inboxA.waitFor((r) => r.text === sent.a.at(-1));
  await inboxB.waitFor((r) => r.text === sent.b.at(-1));
  t.same(inboxA.texts().slice(1), sent.a, 'every frame to a, in order');
  t.same(inboxB.texts().slice(1), sent.b, 'every frame to b, in order');
});

t.test('garbage on a connection destroys only that connection', async (t) => {
  const network = tcpNetwork({ maxFrameBytes: 1024 });
  const server = await network.listen('127.0.0.1:0');
  const client = network.connect();
  t.teardown(() => Promise.all([server.close(), client.close()]));
  const inbox = new Inbox(server, (_from, message) => `re:${message}`);
  const clientInbox = new Inbox(client);

  // A healthy connection opened before the attacks must survive them.
  client.send(server.address, bytes('before'));
  await clientInbox.waitFor((r) => r.text === 're:before');

  const attacks: Array<[string, Uint8Array]> = [
    ['length below 4', Uint8Array.of(0, 0, 0, 2, 9, 9, 9)],
    ['4 GB announcement', Uint8Array.of(0xff, 0xff, 0xff, 0xff, 1, 2, 3)],
    ['over the frame limit', Uint8Array.of(0, 0, 4, 1)],
    ['random garbage', Uint8Array.from({ length: 4096 }, (_, i) => (i * 131 + 17) & 0xff)],
  ];
  for (const [name, garbage] of attacks) {
    const raw = await rawConnect(server.address);
    const closed = closedEvent(raw);
    // A valid frame first: it is delivered, then the garbage kills the connection.
    raw.write(encodeFrame(bytes(`valid before ${name}`)));
    raw.write(garbage);
    await closed;
    await inbox.waitFor((r) => r.text === `valid before ${name}`);
    t.pass(`${name}: connection closed by the server`);
  }
  t.same(
    inbox.texts().filter((m) => !m.startsWith('valid before')),
    ['before'],
    'no garbage was delivered',
  );

  client.send(server.address, bytes('after'));
  await clientInbox.waitFor((r) => r.text === 're:after');
  const fresh = network.connect();
  t.teardown(() => fresh.close());
  const freshInbox = new Inbox(fresh);
  fresh.send(server.address, bytes('fresh'));
  await freshInbox.waitFor((r) => r.text === 're:fresh');
  t.pass('the server still serves old and new clients');
});

t.test('sending to a closed port does not throw, and a later send reconnects', async (t) => {
  const network = tcpNetwork();
  const first = await network.listen('127.0.0.1:0');
  const address = first.address;
  await first.close();

  const client = network.connect();
  t.teardown(() => client.close());
  const inbox = new Inbox(client);
  t.doesNotThrow(() => {
    for (let i = 0; i < 5; i++) client.send(address, bytes('into the void'));
  });
  client.send('not an address', bytes('x'));
  client.send('conn:999@nowhere', bytes('x'));

  const again = await network.listen(address);
  t.teardown(() => again.close());
  t.equal(again.address, address);
  new Inbox(again, (_from, message) => `re:${message}`);
  const reply = await sendUntil(client, address, 'hello again', inbox, (r) => r.text === 're:hello again');
  t.equal(reply.from, address);
});

t.test('close releases the port, drops connections, and is idempotent', async (t) => {
  const network = tcpNetwork();
  const server = await network.listen('127.0.0.1:0');
  const address = server.address;
  const client = network.connect();
  t.teardown(() => client.close());
  const inbox = new Inbox(client);
  new Inbox(server, (_from, message) => `re:${message}`);
  client.send(address, bytes('one'));
  await inbox.waitFor((r) => r.text === 're:one');

  const closing = server.close();
  t.equal(server.close(), closing, 'a second close returns the same promise');
  await closing;
  server.send(address, bytes('after close')); // no throw, nothing sent

  const reopened = await network.listen(address);
  t.teardown(() => reopened.close());
  t.equal(reopened.address, address);
  new Inbox(reopened, (_from, message) => `re2:${message}`);
  // The client's cached connection died with the old server; sending again reconnects.
  await sendUntil(client, address, 'two', inbox, (r) => r.text === 're2:two');
  t.pass('the reopened server on the same port answers');

  await client.close();
  await client.close();
});

t.test('listening on a port in use fails with LISTEN_FAILED', async (t) => {
  const network = tcpNetwork();
  const server = await network.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  await t.rejects(network.listen(server.address), { code: 'LISTEN_FAILED' });
  await t.rejects(network.listen('nonsense'), { code: 'ADDRESS_INVALID' });
});

t.test('lossy 100 loses everything', async (t) => {
  const lossy = tcpNetwork({ lossyPercent: 100 });
  const clean = tcpNetwork();
  const server = await clean.listen('127.0.0.1:0');
  const lossyClient = lossy.connect();
  const cleanClient = clean.connect();
  t.teardown(() => Promise.all([server.close(), lossyClient.close(), cleanClient.close()]));
  const inbox = new Inbox(server);

  for (let i = 0; i < 50; i++) lossyClient.send(server.address, bytes(`lost ${i}`));
  cleanClient.send(server.address, bytes('marker'));
  await inbox.waitFor((r) => r.text === 'marker');
  // Lost messages never leave the process; give a broken implementation (delays ≤ 200 ms) the
  // chance to deliver anyway before checking that nothing came.
  await pause(400);
  t.same(inbox.texts(), ['marker']);
});

t.test('lossy draws: lose, duplicate, delay, pass, in that order of precedence', async (t) => {
  const clock = new ManualClock();
  // Per message: int(100) draws for lose / duplicate / delay, then int(200) for the delay.
  const random = new ScriptedRandom([
    ...[49], // "lost": 49 < 50 → lost
    ...[50, 10], // "twice": duplicated
    ...[50, 50, 0, 41], // "late": delayed by 42 ms
    ...[99, 99, 99], // "plain": sent normally
  ]);
  const lossy = tcpNetwork({ lossyPercent: 50, clock, random });
  const server = await tcpNetwork().listen('127.0.0.1:0');
  const client = lossy.connect();
  t.teardown(() => Promise.all([server.close(), client.close()]));
  const inbox = new Inbox(server);

  for (const message of ['lost', 'twice', 'late', 'plain']) client.send(server.address, bytes(message));
  await inbox.waitFor((r) => r.text === 'plain');
  // One connection, so order is preserved: anything sent before 'plain' has arrived by now.
  t.same(inbox.texts(), ['twice', 'twice', 'plain']);

  const delays = clock.timers.filter((timer) => timer.delayMs !== CONNECT_TIMEOUT_MS);
  t.same(
    delays.map((timer) => timer.delayMs),
    [42],
  );
  delays[0]!.fn();
  await inbox.waitFor((r) => r.text === 'late');
  t.same(inbox.texts(), ['twice', 'twice', 'plain', 'late']);
});

t.test('close cancels delayed lossy sends', async (t) => {
  const clock = new ManualClock();
  const random = new ScriptedRandom([50, 50, 0, 9]);
  const client = tcpNetwork({ lossyPercent: 50, clock, random }).connect();
  client.send('127.0.0.1:9', bytes('late'));
  t.equal(clock.timers.length, 1);
  await client.close();
  t.equal(clock.timers[0]!.cancelled, true);
});

t.test('bounded queue while connecting and oversized messages are dropped, not fatal', async (t) => {
  const network = tcpNetwork({ maxQueuedBytes: 100, maxFrameBytes: 1000 });
  const server = await network.listen('127.0.0.1:0');
  const client = network.connect();
  t.teardown(() => Promise.all([server.close(), client.close()]));
  const inbox = new Inbox(server);

  // Each frame is 4 + 50 bytes; queued before the connect completes, only the first fits in 100.
  for (let i = 0; i < 5; i++) client.send(server.address, bytes(`${i}`.padEnd(50, '.')));
  await inbox.waitFor((r) => r.text.startsWith('0'));
  // Connected now. A frame of 1001 bytes exceeds the limit: dropped by the sender, which keeps
  // the connection alive (the receiver would have killed it, losing the marker).
  client.send(server.address, new Uint8Array(997));
  client.send(server.address, bytes('marker'));
  await inbox.waitFor((r) => r.text === 'marker');
  t.same(
    inbox.texts().map((m) => m.slice(0, 1)),
    ['0', 'm'],
  );
});

/** Resolves with the first peer-down report of `endpoint` (bounded by PATIENCE_MS). */
function nextPeerDown(endpoint: Endpoint): Promise<{ to: string; reason: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no peer-down report after ${PATIENCE_MS} ms`)), PATIENCE_MS);
    endpoint.onPeerDown!((to, reason) => {
      clearTimeout(timer);
      resolve({ to, reason });
    });
  });
}

t.test('a refused connection is reported as unreachable, with the destination as it was given', async (t) => {
  const network = tcpNetwork();
  const first = await network.listen('127.0.0.1:0');
  const port = first.address.split(':')[1]!;
  await first.close();
  const client = network.connect();
  t.teardown(() => client.close());
  const report = nextPeerDown(client);
  client.send(port, bytes('anyone there?'));
  t.same(await report, { to: port, reason: 'unreachable' });
});

t.test('a connection closed by the peer after connecting is reported as lost; close reports nothing', async (t) => {
  const network = tcpNetwork();
  const server = await network.listen('127.0.0.1:0');
  new Inbox(server, (_from, message) => `re:${message}`);
  const client = network.connect();
  t.teardown(() => client.close());
  const inbox = new Inbox(client);
  client.send(server.address, bytes('hello'));
  await inbox.waitFor((r) => r.text === 're:hello');
  const report = nextPeerDown(client);
  await server.close();
  t.same(await report, { to: server.address, reason: 'lost' });

  // The closing side itself gets no report about its own connections.
  const other = await network.listen('127.0.0.1:0');
  t.teardown(() => other.close());
  const closing = network.connect();
  let reports = 0;
  closing.onPeerDown!(() => reports++);
  const closingInbox = new Inbox(closing);
  new Inbox(other, (_from, message) => `re:${message}`);
  closing.send(other.address, bytes('x'));
  await closingInbox.waitFor((r) => r.text === 're:x');
  await closing.close();
  await pause(50);
  t.equal(reports, 0);
});

t.test('RPC over TCP: a refused call fails with RPC_UNREACHABLE and a reset one with RPC_CONNECTION_LOST', async (t) => {
  const network = tcpNetwork();
  const slow = procedure(0x7101, 'slow', codecs.u32, codecs.u32);
  const client = new RpcEndpoint(network.connect(), realClock, osRandom());
  t.teardown(() => client.close());

  const gone = await network.listen('127.0.0.1:0');
  const goneAddress = gone.address;
  await gone.close();
  const refused = await client.call(goneAddress, slow, 1, { timeoutMs: 30_000 });
  t.equal(refused.ok ? 'ok' : refused.error.code, 'RPC_UNREACHABLE', 'not RPC_TIMEOUT after the 30 s deadline');

  const server = new RpcEndpoint(await network.listen('127.0.0.1:0'), realClock, osRandom());
  let started!: () => void;
  const handlerStarted = new Promise<void>((resolve) => (started = resolve));
  server.handle(slow, async (x) => {
    started();
    await pause(2_000);
    return { status: 0, result: x };
  });
  const pending = client.call(server.address, slow, 2, { timeoutMs: 30_000 });
  await handlerStarted;
  await server.close(); // the server process goes away with the call running
  const lost = await pending;
  t.equal(lost.ok ? 'ok' : lost.error.code, 'RPC_CONNECTION_LOST');
});
