import t from 'tap';
import { checkFiles, formatRecord, parseRecords, type FileRecord } from '../tester/file-check.js';

const rec = (client: number, hold: number, seq: number, file = 'file_0'): FileRecord => ({ client, hold, seq, file });
const text = (...records: FileRecord[]): string => records.map(formatRecord).join('');
const replicas = (...copies: Array<Record<string, string>>) => new Map(copies.map((files, i) => [`p${i}`, new Map(Object.entries(files))]));

t.test('records round-trip and bad lines are reported', async (t) => {
  const parsed = parseRecords('file_0', text(rec(1, 2, 3), rec(4, 5, 6)));
  t.same(parsed, { records: [rec(1, 2, 3), rec(4, 5, 6)], problems: [] });
  t.match(parseRecords('file_0', 'r 1 2 3 file_0\ngarbage\n').problems, [/line 2 is not a record/]);
  t.match(parseRecords('file_0', 'r 1 2 3 file_0').problems, [/whole record/]);
  t.match(parseRecords('file_1', text(rec(1, 1, 1, 'file_0'))).problems, [/sent to file_0/]);
});

t.test('a correct run passes', async (t) => {
  const a = [rec(0, 1, 1), rec(0, 1, 2, 'file_1'), rec(0, 1, 3)];
  const b = [rec(1, 1, 1), rec(1, 1, 2)];
  const files = { file_0: text(a[0]!, a[2]!, ...b), file_1: text(a[1]!) };
  t.same(checkFiles({ replicas: replicas(files, files), acknowledged: [...a, ...b] }), { problems: [], records: 5 });
});

t.test('each violation is caught', async (t) => {
  const one = rec(0, 1, 1);
  t.match(checkFiles({ replicas: replicas({ file_0: '' }), acknowledged: [one] }).problems, [/missing/], 'lost ack');
  t.match(checkFiles({ replicas: replicas({ file_0: text(one, one) }), acknowledged: [one] }).problems, [/twice/], 'applied twice');
  t.match(
    checkFiles({ replicas: replicas({ file_0: text(rec(0, 1, 1), rec(1, 1, 1), rec(0, 1, 2)) }), acknowledged: [] }).problems,
    [/not contiguous/],
    'interleaved holds',
  );
  t.same(
    checkFiles({ replicas: replicas({ file_0: text(rec(0, 1, 1), rec(1, 1, 1), rec(0, 1, 2)) }), acknowledged: [], checkContiguity: false }).problems,
    [],
    'contiguity can be switched off',
  );
  t.match(
    checkFiles({ replicas: replicas({ file_0: text(one) }, { file_0: '' }), acknowledged: [] }).problems,
    [/differs between p0 .* and p1/],
    'replicas differ',
  );
  t.match(checkFiles({ replicas: new Map(), acknowledged: [] }).problems, [/no replica/]);
});
