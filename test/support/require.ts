// Prerequisites of a suite (control-plane binaries, root, tcpdump, ...). On a developer's
// machine a missing one skips the suite and says why; under CI=true nothing may be
// skipped, so the same gap fails the run instead.

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
