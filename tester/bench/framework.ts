/**
 * A small benchmark framework for `npm run bench`: a header describing the machine, then each
 * benchmark's title and its figures, grouped in comparisons. Every comparison has one baseline row
 * measured in the same run, and the other rows print their ratio to it, so the figures are read
 * against each other rather than against numbers from another machine or another day.
 *
 * Benchmarks never pass or fail: they measure and print. A benchmark that cannot run yet says why
 * (one line) and prints no figures.
 */
import os from 'node:os';

export interface Benchmark<Options> {
  /** Short id used by --only: "a", "b", … */
  readonly id: string;
  readonly title: string;
  /** Why this benchmark cannot run in this build, or undefined if it can. */
  readonly unavailable?: string;
  run(report: BenchReport, options: Options): Promise<void>;
}

/** One row of a comparison. */
export interface Row {
  readonly label: string;
  /** The measured value; undefined prints "-" (and no ratio). */
  readonly value: number | undefined;
  /** The comparison's baseline: exactly one row per comparison has it. */
  readonly baseline?: boolean;
  /** A reference value (an ideal, a bound), printed without a ratio. */
  readonly reference?: boolean;
  /** Printed after the figure and ratio. */
  readonly note?: string;
}

export interface Comparison {
  /** What is measured, e.g. "acquire requests reaching the server". */
  readonly what: string;
  /** Unit printed after each value, e.g. "requests", "ms". */
  readonly unit: string;
  /** Decimal places of the values. Default 0. */
  readonly decimals?: number;
  /** Words for a value below / above the baseline, e.g. ["fewer", "more"], ["faster", "slower"]. */
  readonly words: readonly [below: string, above: string];
  readonly rows: readonly Row[];
}

/** Where a benchmark prints. All output goes through `line` (stdout by default). */
export class BenchReport {
  constructor(private readonly line: (text: string) => void = (text) => process.stdout.write(`${text}\n`)) {}

  /** The run's header: what ran where. */
  header(title: string, extra: readonly string[] = []): void {
    const cpus = os.cpus();
    const model = cpus[0]?.model.trim().replace(/\s+/g, ' ') ?? 'unknown CPU';
    const load = os
      .loadavg()
      .map((n) => n.toFixed(2))
      .join(' ');
    this.line(title);
    this.line(`  node ${process.version} · ${os.platform()} ${os.arch()} · ${cpus.length} CPUs (${model}) · load average ${load}`);
    this.line(`  ${new Date().toISOString()}`);
    for (const text of extra) this.line(`  ${text}`);
    this.line('  Ratios compare with a baseline measured in this same run. Nothing here passes or fails.');
  }

  /** A benchmark's title line, "(a) …". */
  title(id: string, title: string): void {
    this.line('');
    this.line(`(${id}) ${title}`);
  }

  /** A benchmark that cannot run in this build. */
  skipped(id: string, title: string, why: string): void {
    this.line('');
    this.line(`(${id}) ${title}`);
    this.line(`    skipped: ${why}`);
  }

  /** An indented line of context under the current benchmark. */
  note(text: string): void {
    this.line(`    ${text}`);
  }

  /** Prints a comparison: a heading, then one aligned row per figure with its ratio to the baseline. */
  compare(comparison: Comparison): void {
    const baselines = comparison.rows.filter((row) => row.baseline === true);
    if (baselines.length !== 1) throw new Error(`comparison "${comparison.what}" needs exactly one baseline row`);
    const base = baselines[0]!.value;
    const decimals = comparison.decimals ?? 0;
    const labels = comparison.rows.map((row) => (row.baseline === true ? `${row.label} (baseline)` : row.label));
    const values = comparison.rows.map((row) => (row.value === undefined ? '-' : formatNumber(row.value, decimals)));
    const labelWidth = Math.max(...labels.map((label) => label.length));
    const valueWidth = Math.max(...values.map((value) => value.length));
    this.line(`    ${comparison.what}`);
    comparison.rows.forEach((row, i) => {
      const parts = [`      ${labels[i]!.padEnd(labelWidth)}  ${values[i]!.padStart(valueWidth)} ${comparison.unit}`];
      if (!row.reference && row.value !== undefined && base !== undefined) parts.push(ratioText(row.value, base, comparison.words, row.baseline === true));
      if (row.note !== undefined) parts.push(`(${row.note})`);
      this.line(parts.join('   '));
    });
  }
}

/** "1.00×" for the baseline; "0.100× (10.0× fewer)" below it; "2.50× (more)" above it. */
export function ratioText(value: number, base: number, [below, above]: readonly [string, string], isBaseline = false): string {
  if (isBaseline) return '1.00×';
  if (base === 0) return value === 0 ? '1.00×' : 'n/a (baseline is 0)';
  const ratio = value / base;
  if (ratio === 1) return '1.00× (same)';
  if (ratio < 1) return value === 0 ? '0× (none)' : `${significant(ratio)}× (${significant(1 / ratio)}× ${below})`;
  return `${significant(ratio)}× (${above})`;
}

/** Three significant digits, without exponent notation: 0.100, 1.23, 12.3, 123, 1234. */
export function significant(n: number): string {
  if (n === 0) return '0';
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(n))));
  return n.toFixed(Math.min(digits, 6));
}

function formatNumber(n: number, decimals: number): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}
