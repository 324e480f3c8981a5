// Pure summaries of measured samples; no I/O, so they are unit-tested without a cluster.

export interface Summary {
  n: number;
  /** null when there are no samples */
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

/** Nearest rank: the smallest sample with at least fraction q of the samples at or below it. */
export function quantile(sorted: readonly number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

/** One decimal: the clocks read here are good to a millisecond at best. */
export const round1 = (x: number): number => Math.round(x * 10) / 10;

export function summarize(samples: readonly number[]): Summary {
  const sorted = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const at = (q: number) => {
    const v = quantile(sorted, q);
    return v === undefined ? null : round1(v);
  };
  return { n: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) };
}

/** Median, or null without samples. */
export const median = (samples: readonly number[]): number | null => summarize(samples).p50;

/** A ratio of two counts, null when the denominator is zero (nothing to compare against). */
export const ratio = (num: number, den: number): number | null => (den === 0 ? null : Math.round((num / den) * 10_000) / 10_000);
