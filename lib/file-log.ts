import { appendFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * A line log in a text file (host code). Used for the Paxos log `<logDir>/paxos-<ME>.log` that
 * testers read: `append` writes one line, `replace` rewrites the whole file (through a temporary
 * file and a rename, so a reader never sees it half written). Lines are given without their
 * trailing newline. Writes are synchronous and unsynced, as in the lab: the file is a mirror of
 * state kept durably elsewhere, not the durable state itself.
 */
export interface FileLineLog {
  readonly path: string;
  append(line: string): void;
  replace(lines: readonly string[]): void;
}

export function openFileLineLog(path: string): FileLineLog {
  mkdirSync(dirname(path), { recursive: true });
  return {
    path,
    append(line: string): void {
      appendFileSync(path, `${line}\n`);
    },
    replace(lines: readonly string[]): void {
      const temporary = `${path}.tmp`;
      writeFileSync(temporary, lines.map((line) => `${line}\n`).join(''));
      renameSync(temporary, path);
    },
  };
}

/** The Paxos log of node `me` in `logDir`: `<logDir>/paxos-<me>.log`. */
export function paxosLogPath(logDir: string, me: string): string {
  return join(logDir, `paxos-${me}.log`);
}
