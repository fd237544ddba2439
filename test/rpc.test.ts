import fc from 'fast-check';
import t from 'tap';
import { Reader, Writer } from '../lib/codec.js';
import type { Endpoint } from '../lib/env.js';
import { BIND_PROC, ReplyTable, RpcEndpoint, RpcStatus, codecs, procedure, type RpcOptions } from '../lib/rpc.js';
import { SimNetwork, SimWorld } from '../lib/sim/index.js';
import { resolved } from './helpers/sim.js';

const echo = procedure(0x7001, 'echo', codecs.u32, codecs.u32);
const slowEcho = procedure(0x7002, 'slowEcho', codecs.u32, codecs.u32);
const concat = procedure(0x7003, 'concat', codecs.struct({ a: codecs.string, b: codecs.string }), codecs.string);

interface Harness {
  world: SimWorld;
  net: SimNetwork;
  server: RpcEndpoint;
  client: RpcEndpoint;
  /** How many times the echo handler ran for each argument. */
  executions: Map<number, number>;
}

async function harness(seed: number | string, options: Partial<RpcOptions> = {}, keepTrace = false): Promise<Harness> {
  const world = new SimWorld(seed, { keepTrace });
  const net = new SimNetwork(world);
  const server = new RpcEndpoint(
    await net.forOwner('server').listen('server:1'),
    world.clockFor('server'),
    world.random.fork(),
    options,
  );
  const client = new RpcEndpoint(net.forOwner('client').connect(), world.clockFor('client'), world.random.fork(), options);
  const executions = new Map<number, number>();
  server.handle(echo, (x) => {
    executions.set(x, (executions.get(x) ?? 0) + 1);
    return { status: 0, result: x };
  });
  server.handle(slowEcho, async (x) => {
    executions.set(x, (executions.get(x) ?? 0) + 1);
    await new Promise<void>((resolve) => world.clockFor('server').setTimer(2_000, resolve));
    return { status: 0, result: x + 1 };
  });
  server.handle(concat, ({ a, b }) => ({ status: 7, result: a + b }));
  return { world, net, server, client, executions };
}


function rawRequest(xid: number, proc: number, clientNonce: number, serverNonce: number, xidRep: number, args: (w: Writer) => void): Uint8Array {
  const w = new Writer();
  w.u8(1).u32(xid).u32(proc).u32(clientNonce).u32(serverNonce).u32(xidRep);
  args(w);
  return w.finish();
}

function parseReply(bytes: Uint8Array): { xid: number; ret: number; clientNonce: number; body: Uint8Array } {
  const r = new Reader(bytes);
  if (r.u8() !== 2) throw new Error('not a reply');
  return { xid: r.u32(), ret: r.i32(), clientNonce: r.u32(), body: bytes.subarray(13) };
}

t.test('ReplyTable classifies requests as the at-most-once contract says', async (t) => {
  const table = new ReplyTable(10, 3);
  t.equal(table.check(5, 1, 0), 'new');
  t.equal(table.check(5, 1, 0), 'inprogress', 'same xid still running');
  table.saveReply(5, 1, Uint8Array.of(9));
  t.equal(table.check(5, 1, 0), 'done');
  t.same(table.savedReply(5, 1), Uint8Array.of(9));
  t.equal(table.check(5, 2, 1), 'new', 'xid_rep 1 acknowledges xid 1');
  t.equal(table.check(5, 1, 0), 'forgotten', 'a stale retransmission of an acknowledged xid');
  t.equal(table.savedReply(5, 1), undefined, 'its reply was freed');
  t.equal(table.check(5, 2, 0), 'inprogress', 'a stale xid_rep does not move the watermark back');
  t.equal(table.check(5, 3, 1), 'new');
  t.equal(table.check(5, 4, 1), 'new');
  t.equal(table.check(5, 5, 1), 'overloaded', 'more than 3 unacknowledged');
  t.equal(table.check(5, 5, 4), 'new', 'acknowledging frees room');
  t.equal(table.check(6, 1, 0), 'new', 'clients are independent');
  t.equal(table.clientCount, 2);
  table.saveReply(5, 99, Uint8Array.of(1));
  t.equal(table.savedReply(5, 99), undefined, 'a reply for an xid not in progress is not saved');
});

t.test('ReplyTable keeps at most maxClients windows, evicting the least recently active', async (t) => {
  const table = new ReplyTable(3, 10);
  for (const nonce of [1, 2, 3]) table.check(nonce, 1, 0);
  table.check(1, 2, 0); // client 1 becomes the most recent
  table.check(4, 1, 0); // evicts client 2
  t.equal(table.clientCount, 3);
  t.equal(table.check(1, 1, 0), 'inprogress', 'client 1 was kept');
  t.equal(table.check(2, 1, 0), 'new', 'client 2 was evicted');
});

t.test('a call returns the handler status and result', async (t) => {
  const h = await harness(1);
  const reply = await resolved(h.world, h.client.call('server:1', concat, { a: 'foo', b: 'bar' }));
  t.same(reply, { ok: true, status: 7, result: 'foobar' });
});

t.test('a request duplicated by the network executes once', async (t) => {
  const h = await harness(2);
  h.net.setLinkFaults({ duplicate: 1, delayMinMs: 1, delayMaxMs: 50 });
  for (let i = 1; i <= 50; i++) {
    const reply = await resolved(h.world, h.client.call('server:1', echo, i));
    t.ok(reply.ok && reply.result === i, `call ${i} answered`);
  }
  t.equal(h.executions.size, 50);
  t.ok([...h.executions.values()].every((n) => n === 1), 'every request ran exactly once');
});

t.test('a retransmission of a request still running is not re-executed, and is answered once it finishes', async (t) => {
  const h = await harness(3, { retransmitMsMin: 100, retransmitMsMax: 100 });
  const reply = await resolved(h.world, h.client.call('server:1', slowEcho, 41));
  t.same(reply, { ok: true, status: 0, result: 42 });
  t.equal(h.executions.get(41), 1, 'ran once although retransmitted about 20 times');
});

t.test('1,000 calls over a lossy, duplicating, reordering network each execute exactly once with their own reply', async (t) => {
  const h = await harness(4, { retransmitMsMin: 50, retransmitMsMax: 400, callTimeoutMs: 600_000 });
  h.net.setLinkFaults({ loss: 0.2, duplicate: 0.2, delayMinMs: 1, delayMaxMs: 80 });
  const calls: Array<Promise<unknown>> = [];
  const mismatches: string[] = [];
  for (let i = 1; i <= 1000; i++) {
    // 20 concurrent callers, each issuing 50 calls one after another.
    if (i <= 20) {
      calls.push(
        (async () => {
          for (let x = i; x <= 1000; x += 20) {
            const reply = await h.client.call('server:1', echo, x);
            if (!reply.ok || reply.result !== x) mismatches.push(`call ${x}: ${JSON.stringify(reply)}`);
          }
        })(),
      );
    }
  }
  await resolved(h.world, Promise.all(calls), 10_000_000);
  t.same(mismatches, [], 'every call got its own reply');
  t.equal(h.executions.size, 1000, 'every call executed');
  t.same([...h.executions.entries()].filter(([, n]) => n !== 1), [], 'none executed twice');
  t.ok(h.server.stats().savedReplies <= 21, `acknowledged replies are freed (${h.server.stats().savedReplies} kept)`);
});

t.test('an acknowledged request replayed later is answered FORGOTTEN and not re-executed', async (t) => {
  const h = await harness(5);
  const raw: Endpoint = h.net.forOwner('raw').connect();
  const replies: Array<ReturnType<typeof parseReply>> = [];
  raw.onMessage((_from, bytes) => replies.push(parseReply(bytes)));
  const nonce = 777;
  raw.send('server:1', rawRequest(1, BIND_PROC, nonce, 0, 0, (w) => w.u32(0)));
  await h.world.runFor(100);
  const serverNonce = new Reader(replies[0]!.body).u32();
  t.equal(serverNonce, h.server.nonce, 'bind reports the server nonce');

  const first = rawRequest(1, echo.id, nonce, serverNonce, 0, (w) => w.u32(10));
  raw.send('server:1', first);
  raw.send('server:1', rawRequest(2, echo.id, nonce, serverNonce, 1, (w) => w.u32(20)));
  await h.world.runFor(100);
  raw.send('server:1', first); // the stale copy, after xid_rep=1 acknowledged it
  await h.world.runFor(100);
  t.same(
    replies.slice(1).map((r) => [r.xid, r.ret]),
    [
      [1, 0],
      [2, 0],
      [1, RpcStatus.FORGOTTEN],
    ],
  );
  t.equal(h.executions.get(10), 1, 'the replay did not run again');
});

t.test('a finished request retransmitted before acknowledgement gets the saved reply', async (t) => {
  const h = await harness(6);
  const raw = h.net.forOwner('raw').connect();
  const replies: Array<ReturnType<typeof parseReply>> = [];
  raw.onMessage((_from, bytes) => replies.push(parseReply(bytes)));
  raw.send('server:1', rawRequest(1, BIND_PROC, 5, 0, 0, (w) => w.u32(0)));
  await h.world.runFor(10);
  const request = rawRequest(1, echo.id, 5, h.server.nonce, 0, (w) => w.u32(33));
  raw.send('server:1', request);
  await h.world.runFor(10);
  raw.send('server:1', request);
  await h.world.runFor(10);
  t.equal(replies.length, 3);
  t.same(replies[2], replies[1], 'the same reply bytes again');
  t.equal(h.executions.get(33), 1);
});

t.test('a call to a restarted server fails with RPC_OLDSRV; the next call binds to the new instance', async (t) => {
  const h = await harness(7);
  t.ok((await resolved(h.world, h.client.call('server:1', echo, 1))).ok);
  const oldNonce = h.server.nonce;
  await h.server.close();
  const restarted = new RpcEndpoint(await h.net.forOwner('server').listen('server:1'), h.world.clockFor('server'), h.world.random.fork());
  restarted.handle(echo, (x) => ({ status: 0, result: x * 2 }));
  t.not(restarted.nonce, oldNonce, 'a new instance draws a new nonce');
  const stale = await resolved(h.world, h.client.call('server:1', echo, 2));
  t.equal(stale.ok ? 'ok' : stale.error.code, 'RPC_OLDSRV');
  const fresh = await resolved(h.world, h.client.call('server:1', echo, 3));
  t.same(fresh, { ok: true, status: 0, result: 6 });
});

t.test('calls time out, abort, and fail after close with stable codes', async (t) => {
  const h = await harness(8);
  h.net.isolate('server');
  const timedOut = await resolved(h.world, h.client.call('server:1', echo, 1, { timeoutMs: 3_000 }));
  t.equal(timedOut.ok ? 'ok' : timedOut.error.code, 'RPC_TIMEOUT');
  t.equal(h.world.now(), 3_000, 'gave up at the deadline, not before');

  const controller = new AbortController();
  const pending = h.client.call('server:1', echo, 2, { signal: controller.signal, timeoutMs: 60_000 });
  h.world.schedule(500, () => controller.abort());
  const aborted = await resolved(h.world, pending);
  t.equal(aborted.ok ? 'ok' : aborted.error.code, 'RPC_ABORTED');

  const closing = h.client.call('server:1', echo, 3, { timeoutMs: 60_000 });
  await h.world.runFor(10);
  await h.client.close();
  const closed = await resolved(h.world, closing);
  t.equal(closed.ok ? 'ok' : closed.error.code, 'RPC_CLOSED');
});

t.test('unknown procedures and undecodable arguments are answered with errors, not crashes', async (t) => {
  const h = await harness(9);
  const unknown = procedure(0x7999, 'unknown', codecs.u32, codecs.u32);
  const reply = await resolved(h.world, h.client.call('server:1', unknown, 1));
  t.equal(reply.ok ? 'ok' : reply.error.code, 'RPC_NO_SUCH_PROC');
  const wrongShape = procedure(0x7001, 'echo-as-string', codecs.string, codecs.u32);
  const bad = await resolved(h.world, h.client.call('server:1', wrongShape, 'not a u32'));
  t.equal(bad.ok ? 'ok' : bad.error.code, 'RPC_BAD_ARGS');
  t.equal(h.executions.size, 0, 'no handler ran');
});

t.test('random bytes sent to a server never throw, and it keeps serving', async (t) => {
  const h = await harness(10);
  const raw = h.net.forOwner('raw').connect();
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), fc.boolean(), async (bytes, asRequest) => {
      // Half the cases start with a valid kind byte so that header parsing is exercised too.
      const message = asRequest && bytes.length > 0 ? Uint8Array.of(1, ...bytes.subarray(1)) : bytes;
      raw.send('server:1', message);
      await h.world.runFor(5);
    }),
    { numRuns: 500 },
  );
  const reply = await resolved(h.world, h.client.call('server:1', echo, 5));
  t.same(reply, { ok: true, status: 0, result: 5 });
});

t.test('RPC_COUNT prints RPC STATS every N new requests', async (t) => {
  const lines: string[] = [];
  const h = await harness(11, { statsEvery: 3, printStats: (line) => lines.push(line) });
  for (let i = 0; i < 6; i++) {
    const call: Promise<unknown> = i % 3 === 0 ? h.client.call('server:1', concat, { a: '', b: '' }) : h.client.call('server:1', echo, i);
    await resolved(h.world, call);
  }
  t.same(lines, ['RPC STATS: 7001:2 7003:1', 'RPC STATS: 7001:4 7003:2']);
});

t.test('the same seed gives the same trace; a different seed a different one', async (t) => {
  async function run(seed: number): Promise<string> {
    const h = await harness(seed, { retransmitMsMin: 30 }, true);
    h.net.setLinkFaults({ loss: 0.3, duplicate: 0.3, delayMinMs: 1, delayMaxMs: 60 });
    const calls = Array.from({ length: 30 }, (_, i) => h.client.call('server:1', echo, i + 1, { timeoutMs: 100_000 }));
    await resolved(h.world, Promise.all(calls), 1_000_000);
    return h.world.traceHash();
  }
  const a = await run(1234);
  t.equal(await run(1234), a, 'same seed, same hash');
  t.not(await run(4321), a, 'different seed, different hash');
});

t.test('a call to an address where nobody listens fails at once with RPC_UNREACHABLE, not at its deadline', async (t) => {
  const h = await harness(21);
  await h.server.close();
  const started = h.world.now();
  const refused = await resolved(h.world, h.client.call('server:1', echo, 1, { timeoutMs: 60_000 }));
  t.equal(refused.ok ? 'ok' : refused.error.code, 'RPC_UNREACHABLE');
  t.ok(h.world.now() - started < 1_000, `failed after ${h.world.now() - started} virtual ms, long before the 60 s deadline`);
  // A partition is not a refusal: the call still runs to its deadline (TCP cannot tell either).
  const again = new RpcEndpoint(await h.net.forOwner('server').listen('server:1'), h.world.clockFor('server'), h.world.random.fork());
  again.handle(echo, (x) => ({ status: 0, result: x }));
  h.net.isolate('server');
  const cut = await resolved(h.world, h.client.call('server:1', echo, 2, { timeoutMs: 2_000 }));
  t.equal(cut.ok ? 'ok' : cut.error.code, 'RPC_TIMEOUT');
});

t.test('a server that crashes with a call in flight fails the call with RPC_UNREACHABLE at the next retransmission', async (t) => {
  const h = await harness(22);
  t.ok((await resolved(h.world, h.client.call('server:1', echo, 1))).ok, 'bound');
  const inFlight = h.client.call('server:1', slowEcho, 2, { timeoutMs: 60_000 });
  await h.world.runFor(10);
  h.world.crash('server');
  const reply = await resolved(h.world, inFlight);
  t.equal(reply.ok ? 'ok' : reply.error.code, 'RPC_UNREACHABLE');
  t.ok(h.world.now() < 2_000, `failed at ${h.world.now()} virtual ms`);
});

t.test('resendOnOldServer: a call to a restarted server rebinds and is answered by the new instance', async (t) => {
  const h = await harness(23);
  t.ok((await resolved(h.world, h.client.call('server:1', echo, 1))).ok);
  await h.server.close();
  const restarted = new RpcEndpoint(await h.net.forOwner('server').listen('server:1'), h.world.clockFor('server'), h.world.random.fork());
  let ran = 0;
  restarted.handle(echo, (x) => {
    ran++;
    return { status: 0, result: x * 2 };
  });
  const reply = await resolved(h.world, h.client.call('server:1', echo, 5, { resendOnOldServer: true }));
  t.same(reply, { ok: true, status: 0, result: 10 });
  t.equal(ran, 1, 'ran once, on the new instance');
});
