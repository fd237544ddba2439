/**
 * Unit tests of the rsm_tester harness: the paxos log parser and view checks (tester/paxos-log.ts),
 * port selection, the command lines, the control RPC client, and child-process cleanup
 * (tester/rsm-tester.ts). The scenarios themselves run in rsm-scenarios.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { quorum } from '../paxos/messages.js';
import { realClock } from '../lib/clock.js';
import { SeededRandom } from '../lib/random.js';
import { RpcEndpoint } from '../lib/rpc.js';
import { tcpNetwork } from '../lib/tcp.js';
import { rsmTestProtocol } from '../rsm/protocol.js';
import {
  commonHistoryProblem,
  isLegalTransition,
  judgeHistory,
  parsePaxosLog,
  viewHistory,
  type View,
  type ViewHistory,
} from '../tester/paxos-log.js';
import {
  ChildHandle,
  PORT_MAX,
  PORT_MIN,
  choosePorts,
  controlEndpoint,
  killAllChildren,
  liveChildCount,
  parseRsmCtlArgs,
  parseRsmTesterArgs,
  sendControl,
} from '../tester/rsm-tester.js';
import { scenarios } from '../tester/scenarios.js';

// Ports as ids, as in the lab's sample log.
const A = '11487';
const B = '38046';
const C = '41230';
const D = '52001';

function historyOf(text: string): ViewHistory {
  const result = viewHistory(parsePaxosLog(text));
  if (!result.ok) throw new Error(result.problem);
  return result.views;
}

function problemOf(text: string): string {
  const result = viewHistory(parsePaxosLog(text));
  return result.ok ? 'no problem' : result.problem;
}

/** The lab's check_views compared arrays in numeric context: only the sizes. */
function labSizesMatch(history: ViewHistory, expected: readonly View[]): boolean {
  return expected.every((view, i) => history[i] !== undefined && history[i]!.length === view.length);
}

t.test('parsePaxosLog reads the lab formats (§2.6)', async (t) => {
  const log = parsePaxosLog(
    [
      `done 1 ${A}`, // view 1 as the first node writes it: bare id, no trailing space
      `propseen 1 ${A}`,
      `accepted 1 ${A} ${A} ${B} `,
      `done 2 ${A} ${B} `, // later views: each member followed by a space
      `propseen 2 ${B}`,
      `accepted 2 ${B} ${A} ${B} ${C} `,
      `done 3 ${A} ${B} ${C}   `, // extra trailing spaces
      '',
      `done 4 ${A} ${C} \r`, // CRLF
      '',
    ].join('\n'),
  );
  t.same(
    log.done.map((line) => [line.instance, line.members]),
    [
      [1, [A]],
      [2, [A, B]],
      [3, [A, B, C]],
      [4, [A, C]],
    ],
  );
  t.equal(log.skipped, 4, 'propseen and accepted lines are skipped');
  t.same(log.bad, []);
  t.equal(log.incompleteTail, undefined);
});

t.test('parsePaxosLog ignores an unterminated last line (still being written)', async (t) => {
  const log = parsePaxosLog(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${A} 38`);
  t.equal(log.done.length, 2);
  t.equal(log.incompleteTail, `done 3 ${A} 38`);
  t.same(parsePaxosLog('').done, []);
  t.equal(parsePaxosLog('').incompleteTail, undefined);
});

t.test('parsePaxosLog reports garbage without throwing', async (t) => {
  const log = parsePaxosLog(
    [
      `done 1 ${A}`,
      'garbage here',
      'done',
      'done x 11487',
      'done 2 ',
      `done 2 ${A} abc `,
      `done 2 127.0.0.1:${B} `,
      `done 0 ${A}`,
      'Done 2 1 2',
      '\u0000\u00ff',
      '',
    ].join('\n'),
  );
  t.equal(log.done.length, 1);
  t.same(
    log.bad.map((line) => line.lineNumber),
    [2, 3, 4, 5, 6, 7, 8, 9, 10],
  );
  t.match(log.bad[0]!.reason, /unknown line type/);
  t.match(log.bad[3]!.reason, /no members/);
  t.match(log.bad[4]!.reason, /"abc" is not a bare port number/);
  t.match(log.bad[6]!.reason, /bad instance/);
});

t.test('viewHistory accepts a well-formed history', async (t) => {
  t.same(historyOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${A} ${B} ${C} \ndone 4 ${A} ${C} \ndone 5 ${A} ${C} ${B} \n`), [
    [A],
    [A, B],
    [A, B, C],
    [A, C],
    [A, C, B],
  ]);
  t.same(historyOf(''), []);
});

t.test('viewHistory rejects logs that are not one valid history', async (t) => {
  t.match(problemOf(`done 1 ${A}\ndone 3 ${A} ${B} \n`), /line 2: skips to view 3 where view 2 was due/);
  t.match(problemOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 2 ${A} ${B} \n`), /line 3: repeats view 2/);
  t.match(problemOf(`done 2 ${A} ${B} \n`), /view 2 where view 1 was due/);
  t.match(problemOf(`done 1 ${A} ${B} \n`), /view 1 .* must hold exactly the first node/);
  t.match(problemOf(`done 1 ${A}\ndone 2 ${A} ${A} \n`), /lists a member twice/);
  t.match(problemOf(`done 1 ${A}\ndone 2 ${B} ${A} \n`), /not view 1 \[11487\] with one joiner appended/, 'a joiner goes last');
  t.match(problemOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${A} ${B} ${C} \ndone 4 ${C} ${B} \n`), /view 4/, 'a removal keeps the order');
  t.match(problemOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${C} ${D} \n`), /view 3/, 'two changes at once');
  t.match(problemOf(`done 1 ${A}\nwhat is this\n`), /line 2 "what is this": unknown line type/);
});

t.test('isLegalTransition: one join appended or one member removed in place', async (t) => {
  t.ok(isLegalTransition([A], [A, B]));
  t.ok(isLegalTransition([A, B, C], [A, C]));
  t.ok(isLegalTransition([A, B, C], [B, C]));
  t.ok(isLegalTransition([A, B], [A]));
  t.notOk(isLegalTransition([A, B], [A, B]), 'no change is not a view change');
  t.notOk(isLegalTransition([A, B], [B, A]));
  t.notOk(isLegalTransition([A, B], [A, B, B]));
  t.notOk(isLegalTransition([A, B], [C, A, B]));
  t.notOk(isLegalTransition([A, B, C], [A, D]));
  t.notOk(isLegalTransition([A, B, C], [C, A]));
});

t.test('the strict view check fails where the lab only compared sizes', async (t) => {
  const expected: ViewHistory = [[A], [A, B], [A, B, C], [A, B]];
  // View 4 removed B instead of C: a legal-looking history with the same sizes.
  const wrongMembers = historyOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${A} ${B} ${C} \ndone 4 ${A} ${C} \n`);
  t.ok(labSizesMatch(wrongMembers, expected), 'the lab would pass this log');
  const verdict = judgeHistory(wrongMembers, { chains: [expected] });
  t.equal(verdict.state, 'violated');
  t.match(verdict, { reason: 'view 4 is [11487 41230], expected [11487 38046]' });

  // Same members, other join order.
  const wrongOrder: ViewHistory = [[A], [A, C], [A, C, B]];
  const expectedOrder: ViewHistory = [[A], [A, B], [A, B, C]];
  t.ok(labSizesMatch(wrongOrder, expectedOrder));
  t.equal(judgeHistory(wrongOrder, { chains: [expectedOrder] }).state, 'violated');

  t.equal(judgeHistory(historyOf(`done 1 ${A}\ndone 2 ${A} ${B} \ndone 3 ${A} ${B} ${C} \ndone 4 ${A} ${B} \n`), { chains: [expected] }).state, 'satisfied');
});

t.test('judgeHistory: pending until the views arrive; later views are allowed', async (t) => {
  const chain: ViewHistory = [[A], [A, B], [A, B, C]];
  t.match(judgeHistory([], { chains: [chain] }), { state: 'pending', reason: /no views yet; waiting for view 1 \[11487\]/ });
  t.match(judgeHistory([[A], [A, B]], { chains: [chain] }), { state: 'pending', reason: /views up to 2.*waiting for view 3 \[11487 38046 41230\]/ });
  t.equal(judgeHistory([[A], [A, B], [A, B, C], [A, C]], { chains: [chain] }).state, 'satisfied');
  t.equal(judgeHistory([[A], [B]], { chains: [chain] }).state, 'violated', 'a wrong early view fails at once');
});

t.test('judgeHistory: alternatives accept exactly the listed histories', async (t) => {
  const prefix: ViewHistory = [[A], [A, B], [A, B, C], [A, B]];
  const chains = [
    [...prefix, [A, B, C]],
    [...prefix, [A], [A, B], [A, B, C]],
    [...prefix, [A], [A, C], [A, C, B]],
  ];
  for (const chain of chains) t.equal(judgeHistory(chain, { chains }).state, 'satisfied');
  t.equal(judgeHistory([...prefix, [A], [A, C]], { chains }).state, 'pending', 'on the way to an alternative');
  t.match(judgeHistory([...prefix, [B]], { chains }), { state: 'violated', reason: /view 5 is \[38046\], expected \[11487 38046 41230\] or \[11487\]/ });
  t.equal(judgeHistory([...prefix, [A], [A, D]], { chains }).state, 'violated');
});

t.test('judgeHistory: longerThan and last', async (t) => {
  const prefix: ViewHistory = [[A], [A, B], [A, B, C], [A, B]];
  const chains = [
    [...prefix, [A, B, C]],
    [...prefix, [A, B, C], [A, B], [A, B, C]],
  ];
  const last = [[A, B, C]];
  // At the snapshot the log already had view 5; it must gain a view beyond it.
  t.equal(judgeHistory([...prefix, [A, B, C]], { chains, longerThan: 5, last }).state, 'pending');
  t.equal(judgeHistory([...prefix, [A, B, C], [A, B]], { chains, longerThan: 5, last }).state, 'pending', 'latest view not yet a 3-member one');
  t.equal(judgeHistory([...prefix, [A, B, C], [A, B], [A, B, C]], { chains, longerThan: 5, last }).state, 'satisfied');
  t.equal(judgeHistory([...prefix, [A, B, C]], { chains, longerThan: 4, last }).state, 'satisfied');
  t.match(judgeHistory([...prefix, [A, B, C], [A, B]], { chains, last }), { state: 'pending', reason: /latest view 6 is \[11487 38046\]/ });
});

t.test('commonHistoryProblem: all logs must agree on every view they share', async (t) => {
  const histories = new Map<string, ViewHistory>([
    ['p0', [[A], [A, B], [A, B, C], [A, B]]],
    ['p1', [[A], [A, B], [A, B, C]]],
    ['p2', [[A], [A, B], [A, B, C], [A, B], [A, B, C]]],
  ]);
  t.equal(commonHistoryProblem(histories), undefined, 'prefixes of one history agree');
  histories.set('p3', [[A], [A, B], [A, B, C], [A, C]]);
  t.equal(commonHistoryProblem(histories), 'p0 and p3 disagree on view 4: [11487 38046] vs [11487 41230]');
});

t.test('choosePorts: five sorted, spaced, free port pairs, reproducible from the seed', async (t) => {
  const allFree = async (): Promise<boolean> => true;
  const ports = await choosePorts(new SeededRandom(42), allFree);
  t.equal(ports.length, 5);
  t.same(ports, [...ports].sort((a, b) => a - b));
  for (const port of ports) t.ok(port >= PORT_MIN && port + 1 < PORT_MAX, `${port} and ${port + 1} in range`);
  for (let i = 1; i < ports.length; i++) t.ok(ports[i]! - ports[i - 1]! >= 2, 'p and p+1 never overlap another node');
  t.same(await choosePorts(new SeededRandom(42), allFree), ports, 'same seed, same ports');
  t.not((await choosePorts(new SeededRandom(43), allFree)).join(), ports.join());

  // A busy port (or a busy port + 1) is redrawn.
  const busy = new Set([ports[0]!, ports[1]! + 1]);
  const probed: number[] = [];
  const redrawn = await choosePorts(new SeededRandom(42), async (port) => {
    probed.push(port);
    return !busy.has(port);
  });
  t.equal(redrawn.length, 5);
  t.notOk(redrawn.includes(ports[0]!) || redrawn.includes(ports[1]!));
  t.ok(probed.includes(ports[0]!) && probed.includes(ports[1]! + 1), 'both ports of a pair are probed');

  await t.rejects(choosePorts(new SeededRandom(1), async () => false), /could not find 5 free port pairs/);
});

t.test('parseRsmCtlArgs', async (t) => {
  t.same(parseRsmCtlArgs(['12346', 'breakpoint', '3']), {
    ok: true,
    address: '127.0.0.1:12346',
    command: { kind: 'breakpoint', breakpoint: 3 },
  });
  t.same(parseRsmCtlArgs(['example.org:12346', 'partition', '0']), {
    ok: true,
    address: 'example.org:12346',
    command: { kind: 'partition', heal: 0 },
  });
  t.match(parseRsmCtlArgs(['12346', 'partition', '1']), { ok: true, command: { heal: 1 } });
  t.same(parseRsmCtlArgs(['12346', 'status']), { ok: true, address: '127.0.0.1:12346', command: { kind: 'status' } });
  t.match(parseRsmCtlArgs(['12346', 'status', '1']), { ok: false, message: 'status takes no value' });
  t.match(parseRsmCtlArgs(['12346', 'breakpoint']), { ok: false });
  for (const bad of [['12346', 'partition', '2'], ['12346', 'breakpoint', 'x'], ['12346', 'breakpoint', '99999999999'], ['port', 'breakpoint', '1'], ['0', 'breakpoint', '1'], ['12346', 'explode', '1'], ['12346']]) {
    t.match(parseRsmCtlArgs(bad), { ok: false, message: String }, bad.join(' '));
  }
});

t.test('parseRsmTesterArgs', async (t) => {
  const available = [0, 1, 2, 3, 4, 5, 6, 7];
  t.same(parseRsmTesterArgs(undefined, [], available), { ok: true, seed: undefined, tests: available });
  t.same(parseRsmTesterArgs('0042', ['7', '3', '3'], available), { ok: true, seed: '42', tests: [3, 7] });
  t.match(parseRsmTesterArgs(undefined, ['9'], available), { ok: false, message: 'there is no test 9; the tests are 0-7' });
  t.match(parseRsmTesterArgs('x', [], available), { ok: false });
  t.match(parseRsmTesterArgs(undefined, ['-1'], available), { ok: false });
});

t.test('the scenario table: tests 0-16, each once', async (t) => {
  t.same(
    scenarios.map((scenario) => scenario.id),
    Array.from({ length: 17 }, (_, i) => i),
  );
  for (const scenario of scenarios) t.ok(scenario.title.length > 0);
});

t.test('sendControl: the lab lines, statuses, and a node that does not answer', async (t) => {
  const server = new RpcEndpoint(await tcpNetwork().listen('127.0.0.1:0'), realClock, new SeededRandom(1));
  const seen: string[] = [];
  server.handle(rsmTestProtocol.breakpoint, ({ b }) => {
    seen.push(`breakpoint ${b}`);
    return { status: b >= 1 && b <= 4 ? 0 : 1, result: 0 };
  });
  server.handle(rsmTestProtocol.net_repair, ({ heal }) => {
    seen.push(`net_repair ${heal}`);
    return { status: 0, result: 0 };
  });
  const rpc = controlEndpoint();
  t.teardown(async () => {
    await rpc.close();
    await server.close();
  });
  t.same(await sendControl(rpc, server.address, { kind: 'breakpoint', breakpoint: 3 }), { answered: true, status: 0, line: 'breakpoint 3 returned 0' });
  t.same(await sendControl(rpc, server.address, { kind: 'breakpoint', breakpoint: 7 }), { answered: true, status: 1, line: 'breakpoint 7 returned 1' });
  t.same(await sendControl(rpc, server.address, { kind: 'partition', heal: 0 }), { answered: true, status: 0, line: 'net_repair returned 0' });
  t.same(seen, ['breakpoint 3', 'breakpoint 7', 'net_repair 0']);

  // A port nobody listens on: the server's own port, closed.
  const closed = new RpcEndpoint(await tcpNetwork().listen('127.0.0.1:0'), realClock, new SeededRandom(2));
  const address = closed.address;
  await closed.close();
  const silent = await sendControl(rpc, address, { kind: 'partition', heal: 1 }, 300);
  // Refused at once (issue 10): no longer an RPC_TIMEOUT after the deadline.
  t.match(silent, { answered: false, message: /^RPC_UNREACHABLE: .* did not answer/ });

  // status: the status call plus the host's quorum verdict, in one line.
  server.handle(rsmTestProtocol.status, () => ({
    status: 0,
    result: { vid: 4, members: ['3772', '3776'], primary: '3772', inViewChange: true, phase: 'syncing view 4 as backup, pulling', last: { vid: 4, seqno: 2 }, batches: 0 },
  }));
  server.handle(quorum, () => ({
    status: 0,
    result: { vid: 4, members: ['3772', '3776'], reachable: ['3776'], unreachableSince: [`3772@${Date.UTC(2026, 0, 1, 12, 1, 7)}`], quorum: false },
  }));
  t.same(await sendControl(rpc, server.address, { kind: 'status' }), {
    answered: true,
    status: 0,
    line: 'view 4 {3772,3776} primary 3772 last 4.2; in view change (syncing view 4 as backup, pulling); no quorum: view 4 {3772,3776}; 3772 unreachable since 12:01:07',
  });

  // A main port (no control procedures): the hint to use port + 1.
  const main = new RpcEndpoint(await tcpNetwork().listen('127.0.0.1:0'), realClock, new SeededRandom(3));
  t.teardown(() => main.close());
  const port = Number(main.address.split(':')[1]);
  const wrong = await sendControl(rpc, main.address, { kind: 'status' }, 2000);
  t.match(wrong, { answered: false, message: `RPC_NO_SUCH_PROC: ${main.address} serves no control procedures; it looks like a replica's main port: use its control port, port + 1 (${port + 1})` });
});

t.test('killAllChildren kills every tracked child', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rsm-tester-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'sleeper.mjs');
  fs.writeFileSync(script, 'setInterval(() => {}, 1000);\n');
  const before = liveChildCount();
  const children = [0, 1, 2].map((i) => ChildHandle.spawn(script, [String(i)], path.join(dir, `sleeper-${i}.log`), process.env));
  t.equal(liveChildCount(), before + 3);
  t.equal(killAllChildren(), before + 3);
  for (const child of children) t.match(await child.waitForExit(5_000), { signal: 'SIGKILL' });
  t.equal(liveChildCount(), before);
  t.match(fs.readFileSync(path.join(dir, 'sleeper-1.log'), 'utf8'), new RegExp(`^node ${script.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} 1\n`), 'the first line is the command');
});
