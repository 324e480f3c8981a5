// `npx tsx bench/check-results.ts FILE`: fails (exit 1) unless FILE is a bench results
// document of the expected shape. It checks shape only, never the numbers' size.

import { readFile } from 'node:fs/promises';
import { validateResults } from './shape.ts';

const file = process.argv[2];
if (!file) {
  console.error('usage: tsx bench/check-results.ts FILE');
  process.exit(2);
}
let value: unknown;
try {
  value = JSON.parse(await readFile(file, 'utf8'));
} catch (err) {
  console.error(`${file}: not readable JSON: ${(err as Error).message}`);
  process.exit(1);
}
const problems = validateResults(value);
if (problems.length > 0) {
  console.error(`${file}: ${problems.length} problem(s):\n${problems.map((p) => `  ${p}`).join('\n')}`);
  process.exit(1);
}
const errors = (value as { errors: string[] }).errors;
if (errors.length > 0) {
  console.error(`${file}: the run recorded failed phases:\n${errors.map((e) => `  ${e}`).join('\n')}`);
  process.exit(1);
}
console.log(`${file}: shape ok`);
