/**
 * The file tester's records and its checker.
 *
 * Every append the tester makes is one self-describing record, one line:
 *
 *   r <client> <hold> <seq> <file>\n
 *
 * (client number, the client's hold number — its n-th acquire of the lock — and the append's
 * sequence number within the client, all decimal; the file it was sent to). The checker reads
 * the files back (from each replica's mirror) and checks:
 * 1. every file parses as whole records, each naming the file it is in;
 * 2. every append a client saw acknowledged is present exactly once (in its file);
 * 3. no append is present twice, acknowledged or not;
 * 4. the records of one hold are contiguous in each file: no other hold's record lies between two
 *    records of a hold (mutual exclusion held, when every file is protected by the hold's lock);
 * 5. every replica's copy of every file is identical.
 */

export interface FileRecord {
  readonly client: number;
  readonly hold: number;
  readonly seq: number;
  readonly file: string;
}

export function formatRecord(record: FileRecord): string {
  return `r ${record.client} ${record.hold} ${record.seq} ${record.file}\n`;
}

const RECORD = /^r (\d+) (\d+) (\d+) (file_\d+)$/;

/** Parses a file's contents into records, or says what is wrong with it. */
export function parseRecords(file: string, contents: string): { records: FileRecord[]; problems: string[] } {
  const records: FileRecord[] = [];
  const problems: string[] = [];
  if (contents.length === 0) return { records, problems };
  if (!contents.endsWith('\n')) problems.push(`${file}: does not end with a whole record`);
  const lines = contents.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, index) => {
    const match = RECORD.exec(line);
    if (match === null) {
      problems.push(`${file}: line ${index + 1} is not a record: ${JSON.stringify(line.slice(0, 80))}`);
      return;
    }
    const record = { client: Number(match[1]), hold: Number(match[2]), seq: Number(match[3]), file: match[4]! };
    if (record.file !== file) problems.push(`${file}: line ${index + 1} was sent to ${record.file}`);
    records.push(record);
  });
  return { records, problems };
}

export interface CheckInput {
  /** Replica name → file name → contents. */
  readonly replicas: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /** The appends clients saw acknowledged. */
  readonly acknowledged: readonly FileRecord[];
  /** Check contiguity of holds (4); default true. Off only for runs where writers do not lock. */
  readonly checkContiguity?: boolean;
}

export interface CheckResult {
  readonly problems: string[];
  readonly records: number;
}

const key = (r: FileRecord): string => `${r.client}/${r.seq}`;

export function checkFiles(input: CheckInput): CheckResult {
  const problems: string[] = [];
  const names = [...input.replicas.keys()];
  if (names.length === 0) return { problems: ['no replica files to check'], records: 0 };
  const reference = input.replicas.get(names[0]!)!;

  // 5. identical copies.
  const fileNames = new Set<string>();
  for (const files of input.replicas.values()) for (const file of files.keys()) fileNames.add(file);
  for (const file of fileNames) {
    const first = reference.get(file) ?? '';
    for (const name of names.slice(1)) {
      const other = input.replicas.get(name)!.get(file) ?? '';
      if (other !== first) problems.push(`${file} differs between ${names[0]} (${first.length} bytes) and ${name} (${other.length} bytes)`);
    }
  }

  // 1, 3, 4 on the first replica (5 makes the others the same).
  const seen = new Map<string, FileRecord>();
  let total = 0;
  for (const file of [...fileNames].sort()) {
    const { records, problems: parse } = parseRecords(file, reference.get(file) ?? '');
    problems.push(...parse);
    total += records.length;
    const finished = new Set<string>();
    let currentHold: string | undefined;
    for (const record of records) {
      const id = key(record);
      if (seen.has(id)) problems.push(`append ${id} (client ${record.client}, seq ${record.seq}) is present twice`);
      seen.set(id, record);
      const hold = `${record.client}.${record.hold}`;
      if (hold !== currentHold) {
        if (input.checkContiguity !== false && finished.has(hold)) {
          problems.push(`${file}: records of hold ${hold} are not contiguous (another hold wrote between them)`);
        }
        if (currentHold !== undefined) finished.add(currentHold);
        currentHold = hold;
      }
    }
  }

  // 2. every acknowledged append present (and where it was sent).
  for (const ack of input.acknowledged) {
    const found = seen.get(key(ack));
    if (found === undefined) problems.push(`acknowledged append ${key(ack)} to ${ack.file} is missing`);
    else if (found.file !== ack.file || found.hold !== ack.hold) problems.push(`append ${key(ack)} is in ${found.file} hold ${found.hold}, acknowledged for ${ack.file} hold ${ack.hold}`);
  }
  return { problems, records: total };
}
