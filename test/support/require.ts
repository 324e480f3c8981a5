// Prerequisites of a suite (control-plane binaries, root, tcpdump, ...). On a developer's
// machine a missing one skips the suite and says why; under CI=true nothing may be
// skipped, so the same gap fails the run instead.

import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export const inCI = (): boolean => process.env.CI === 'true';

/**
 * `check` returns undefined when `what` is available, or the reason it is not.
 * Returns whether the suite can run: use it as `describe.runIf(requireOrSkip(...))`.
 */
export function requireOrSkip(what: string, check: () => string | undefined): boolean {
  let reason: string | undefined;
  try {
    reason = check();
  } catch (err) {
    reason = (err as Error).message;
  }
  if (reason === undefined) return true;
  if (inCI()) throw new Error(`${what} is required under CI=true: ${reason}`);
  console.warn(`skipping: ${what} is not available: ${reason}`);
  return false;
}

/** Whether `path` is a file we may execute. */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Why this process cannot run suites that need root and `tools` on PATH, with the apt
 * packages that bring them (`install`), or undefined when it can.
 */
export function missingRootOrTools(tools: readonly string[], install: string): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  const path = (process.env.PATH ?? '').split(delimiter);
  const missing = tools.filter((tool) => !path.some((dir) => dir && isExecutable(join(dir, tool))));
  return missing.length > 0 ? `missing ${missing.join(', ')} (apt-get install -y ${install})` : undefined;
}
