/** The README's marked blocks, for the tests that run them as they are. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const README_PATH = path.join(fileURLToPath(new URL('../../../', import.meta.url)), 'README.md');

/** The body of the fenced block after `<!-- try-it:NAME -->` in the README, as it is written. */
export function readmeBlock(name: string): string {
  const readme = fs.readFileSync(README_PATH, 'utf8');
  const start = readme.indexOf(`<!-- try-it:${name} -->`);
  if (start < 0) throw new Error(`README has no try-it:${name} block`);
  const fence = readme.indexOf('```', start);
  return readme.slice(readme.indexOf('\n', fence) + 1, readme.indexOf('```', fence + 3));
}
