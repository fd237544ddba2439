/**
 * Shared command-line plumbing for the programs in tester/bin: argument parsing with `--help`,
 * usage errors (exit 2), other fatal errors (exit 1), and small parsers for ports and environment
 * variables. Programs keep the classic lab's command lines (see DESIGN.md, "Programs").
 */
import { basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ViewstampError } from './errors.js';
import { normalizeAddress } from './tcp.js';

/** Exit status for a bad command line or configuration (as most Unix tools do). */
export const EXIT_USAGE = 2;
/** Exit status for a run that failed. */
export const EXIT_FAILURE = 1;

/** A mistake in the command line or environment: reported with the usage text, exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface CommandSpec {
  /** The name in error messages. Default: programName() (the script's basename). */
  readonly name?: string;
  /** Usage lines without the leading "usage: ", e.g. "lock_tester [host:]PORT [test 1-5]". */
  readonly usage: readonly string[];
  /** Further --help text (arguments, environment variables). */
  readonly help: string;
  readonly minPositionals: number;
  readonly maxPositionals: number;
  /** Extra options; --help/-h is always there. */
  readonly options?: NonNullable<ParseArgsConfig['options']>;
}

export interface CommandLine {
  readonly positionals: readonly string[];
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
}

/** The program name as the lab prints argv[0]: the script's basename without its extension. */
export function programName(argv1: string | undefined = process.argv[1]): string {
  return basename(argv1 ?? 'program').replace(/\.(js|mjs|cjs|ts)$/, '');
}

function usageText(spec: CommandSpec): string {
  return spec.usage.map((line, i) => `${i === 0 ? 'usage: ' : '       '}${line}`).join('\n');
}

/**
 * Parses `args`. `--help` prints the usage and help to stdout and exits 0; a bad command line
 * prints the problem and the usage to stderr and exits 2. Unknown options are errors.
 */
export function parseCommandLine(spec: CommandSpec, args: readonly string[] = process.argv.slice(2)): CommandLine {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: [...args],
      options: { help: { type: 'boolean', short: 'h' }, ...spec.options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    return exitUsage(spec, describeParseError(error));
  }
  if (parsed.values['help'] === true) {
    process.stdout.write(`${usageText(spec)}\n\n${spec.help.trimEnd()}\n`);
    process.exit(0);
  }
  const count = parsed.positionals.length;
  if (count < spec.minPositionals) return exitUsage(spec, 'missing arguments');
  if (count > spec.maxPositionals) return exitUsage(spec, `unexpected argument ${JSON.stringify(parsed.positionals[spec.maxPositionals])}`);
  return { positionals: parsed.positionals, values: parsed.values as CommandLine['values'] };
}

/**
 * Our own text for Node's parseArgs errors (its messages quote unevenly and talk about '--'):
 * "unknown option --bogus", "option --seed needs a value", "option --keep takes no value".
 */
export function describeParseError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  const option = /'(-{1,2}[^'\s]+)/.exec(message)?.[1] ?? 'an option';
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /argument missing/.test(message) ? `option ${option} needs a value` : `option ${option} takes no value`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return 'unexpected argument';
    default:
      return message;
  }
}

/** The one line a usage error prints: `program: USAGE: problem (usage: …; --help for more)`. */
export function usageErrorLine(spec: CommandSpec, problem: string): string {
  return `${spec.name ?? programName()}: USAGE: ${problem} (usage: ${spec.usage.join(' | ')}; --help for more)`;
}

export function exitUsage(spec: CommandSpec, problem: string): never {
  process.stderr.write(`${usageErrorLine(spec, problem)}\n`);
  process.exit(EXIT_USAGE);
}

/** "3772" → "127.0.0.1:3772"; "host:3772" → "host:3772". UsageError if malformed. */
export function parseAddressArgument(text: string, what: string): string {
  try {
    return normalizeAddress(text);
  } catch {
    throw new UsageError(`${what} must be PORT or host:PORT, got ${JSON.stringify(text)}`);
  }
}

/**
 * An integer min..max from `text` (decimal digits only), or UsageError naming `what` and the same
 * range the program's --help states.
 */
export function parseCount(text: string, what: string, max = Number.MAX_SAFE_INTEGER, min = 0): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) > max || Number(text) < min) {
    throw new UsageError(`${what} must be an integer ${min}..${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text.trim());
}

/** Environment variable `name` as a non-negative integer; `fallback` when unset or empty. */
export function countFromEnv(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return parseCount(raw, name);
}

/**
 * Runs a program's main function and exits with its status. UsageError → one usage line on stderr, exit 2;
 * a ViewstampError with code CONFIG_INVALID or ADDRESS_INVALID (bad environment or arguments) →
 * exit 2; anything else → the error on stderr (with a stack unless it is a ViewstampError), exit 1.
 */
export function runMain(spec: CommandSpec, main: () => Promise<number>): void {
  main().then(
    (status) => process.exit(status),
    (error: unknown) => {
      if (error instanceof UsageError) exitUsage(spec, error.message);
      if (error instanceof ViewstampError && (error.code === 'CONFIG_INVALID' || error.code === 'ADDRESS_INVALID')) {
        exitUsage(spec, error.message);
      }
      // Our own errors are expected failures (a port in use, …): one line, their code and message.
      const text =
        error instanceof ViewstampError
          ? `${error.code}: ${error.message}`
          : `INTERNAL: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
      process.stderr.write(`${spec.name ?? programName()}: ${text}\n`);
      process.exit(EXIT_FAILURE);
    },
  );
}
