/**
 * The benchmark program (tester/bench): its arithmetic and printing, and one small run of
 * benchmark (a) whose request counts are exact, and a shortened run of (b) and (c) whose layout is
 * checked. Only counts and layout are checked, never times: benchmarks measure, they do not pass
 * or fail.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { DEFAULT_CACHE_WORKLOAD, parseRpcStats, runCacheWorkload } from '../tester/bench/cache-workload.js';
import { BenchReport, ratioText, significant } from '../tester/bench/framework.js';

const BENCH = fileURLToPath(new URL('../tester/bench/index.js', import.meta.url));

function run(args: string[], limitMs = 60_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

t.test('parseRpcStats reads RPC_COUNT lines', async (t) => {
  t.same([...parseRpcStats('RPC STATS: 7001:12 7002:3')], [
    [0x7001, 12],
    [0x7002, 3],
  ]);
  t.same([...parseRpcStats('RPC STATS:')], []);
  t.throws(() => parseRpcStats('RPC STATS 7001:1'));
});

t.test('ratios and significant digits', async (t) => {
  t.equal(significant(0.1), '0.100');
  t.equal(significant(10), '10.0');
  t.equal(significant(1234.5), '1235');
  t.equal(ratioText(200, 2000, ['fewer', 'more'], true), '1.00×');
  t.equal(ratioText(200, 2000, ['fewer', 'more']), '0.100× (10.0× fewer)');
  t.equal(ratioText(5000, 2000, ['fewer', 'more']), '2.50× (more)');
  t.equal(ratioText(0, 2000, ['fewer', 'more']), '0× (none)');
  t.equal(ratioText(3, 0, ['fewer', 'more']), 'n/a (baseline is 0)');
});

t.test('a comparison prints aligned rows with ratios to its one baseline', async (t) => {
  const lines: string[] = [];
  const report = new BenchReport((line) => lines.push(line));
  report.compare({
    what: 'acquires',
    unit: 'requests',
    words: ['fewer', 'more'],
    rows: [
      { label: 'basic', value: 2000, baseline: true },
      { label: 'caching', value: 200 },
      { label: 'ideal', value: 200, reference: true, note: 'one per lock' },
    ],
  });
  t.same(lines, [
    '    acquires',
    '      basic (baseline)  2,000 requests   1.00×',
    '      caching             200 requests   0.100× (10.0× fewer)',
    '      ideal               200 requests   (one per lock)',
  ]);
  t.throws(() => report.compare({ what: 'x', unit: 'u', words: ['a', 'b'], rows: [{ label: 'y', value: 1 }] }), /exactly one baseline/);
});

t.test('the workload: every basic acquire reaches the server, a caching client asks once per lock', async (t) => {
  const options = { ...DEFAULT_CACHE_WORKLOAD, clients: 2, locks: 10, rounds: 3 };
  const basic = await runCacheWorkload('basic', options);
  t.match(basic, { acquires: 60, releases: 60, releasesAtClose: 0, operations: 120 });
  const caching = await runCacheWorkload('caching', options);
  t.match(caching, { acquires: 20, releases: 0, releasesAtClose: 20, operations: 120 });
});

t.test('npm run bench --only a: figures for (a), exit 0', async (t) => {
  const { code, output } = await run(['--only', 'a', '--locks', '10', '--rounds', '3']);
  t.equal(code, 0, 'exits 0');
  t.match(output, /^viewstamp benchmarks$/m);
  t.match(output, /^\(a\) lock caching/m);
  t.match(output, /^ {6}basic client \(baseline\) +60 requests +1\.00×$/m);
  t.match(output, /^ {6}caching client +20 requests +0\.333× \(3\.00× fewer\)$/m);
  t.match(output, /^ {6}ideal +20 requests +\(one per distinct lock\)$/m);
  t.notMatch(output, /^\(b\)/m);
});

t.test('npm run bench --only b,c (shortened): the layout of the RSM benchmarks, exit 0', async (t) => {
  const { code, output } = await run(['--only', 'b,c', '--duration-ms', '300', '--trials', '1'], 180_000);
  t.equal(code, 0, 'exits 0');
  t.match(output, /^\(b\) RSM throughput/m);
  t.match(output, /Cache defeated/);
  t.match(output, /^ {4}throughput \(acquire\+release operations per second\)$/m);
  t.match(output, /^ {4}p50 latency of one acquire\+release$/m);
  t.match(output, /^ {4}p99 latency of one acquire\+release$/m);
  t.match(output, /^ {4}p50 latency of the acquire alone$/m);
  t.match(output, /^ {6}1 client \(baseline\) +[\d,.]+ ms +1\.00×/m);
  t.match(output, /^ {6}1 client \(baseline\) +[\d,.]+ ops\/s +1\.00×/m);
  t.match(output, /^ {6}8 clients +[\d,.-]+ ops\/s/m);
  t.match(output, /^ {6}32 clients +[\d,.-]+ ops\/s/m);
  t.match(output, /^ {4}server CPU per replicated request \(user \+ system of the 3 replicas, from \/proc\)$/m);
  t.match(output, /^ {6}32 clients +[\d,.-]+ µs/m);
  t.match(output, /^ {6}128 clients +[\d,.-]+ ops\/s/m);
  t.match(output, /^ {4}throughput at 32 clients: own connections against one shared RSM client$/m);
  t.match(output, /^ {6}one shared connection +[\d,.-]+ ops\/s/m);
  t.match(output, /^ {6}one shared connection +[\d,.-]+ µs/m);
  t.match(output, /^ {4}floor throughput \(operations of two echo calls per second\)$/m);
  t.match(output, /^ {4}\(b\) as a share of the floor at the same client count$/m);
  t.match(output, /^ {6}128 clients +[\d,.-]+ %/m);
  t.match(output, /^\(c\) fail-over: SIGKILL of the primary/m);
  t.match(output, /^ {4}trial 1: primary p\d: next acquire \d+ ms, view change \d+ ms; backup p\d: stall \d+ ms$/m);
  t.match(output, /^ {4}primary SIGKILL → next successful acquire$/m);
  t.match(output, /^ {4}primary SIGKILL → new view committed \(the view change alone\)$/m);
  t.match(output, /^ {4}backup SIGKILL → longest client-visible stall$/m);
  t.match(output, /^ {6}median \(baseline\) +[\d,.-]+ ms/m);
  t.match(output, /^ {6}p90 +[\d,.-]+ ms/m);
  t.notMatch(output, /skipped/);
});

t.test('bench command line: --only, --help, and errors', async (t) => {
  const only = await run(['--only', 'a', '--locks', '2', '--rounds', '1']);
  t.equal(only.code, 0);
  t.notMatch(only.output, /^\(c\)/m, '--only a runs only (a)');
  t.match(only.output, /^\(a\) /m);
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.output, /--rounds N/);
  t.match(help.output, /--duration-ms MS/);
  t.match(help.output, /--trials N/);
  t.match(help.output, /--memory-ms MS/);
  const bad = await run(['--only', 'z']);
  t.equal(bad.code, 2);
  t.match(bad.output, /^bench: USAGE: no benchmark "z"; they are a, b, c, d, e, f, g, h \(usage: /m);
  const zero = await run(['--rounds', '0']);
  t.equal(zero.code, 2);
  t.match(zero.output, /--rounds must be at least 1/);
});
