// The two unit syntaxes of the API, parsed once for controller and agent: Kubernetes
// quantities (limits.fileSize) and Go durations (limits.duration).

const BINARY_SUFFIXES: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const DECIMAL_SUFFIXES: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

const QUANTITY = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$/;

/**
 * A Kubernetes quantity as a plain number: `10Mi` → 10485760, `1.5k` → 1500, `1e3` → 1000.
 * Unsigned only: every quantity in this API is a size. Throws RangeError on anything else.
 */
export function parseQuantity(text: string): number {
  const match = QUANTITY.exec(text);
  if (!match) throw new RangeError(`invalid quantity "${text}": expected a number with an optional suffix such as 10Mi or 500k`);
  const [, number, exponent, suffix = ''] = match;
  if (exponent !== undefined) return Number(`${number}${exponent}`);
  return Number(number) * (BINARY_SUFFIXES[suffix] ?? DECIMAL_SUFFIXES[suffix] ?? 1);
}

const DURATION_UNITS_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION_PART = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * A Go duration (`time.ParseDuration`) in milliseconds: `1h30m` → 5400000, `1.5s` → 1500,
 * `0` → 0. Unsigned only: every duration in this API is a length of time. Throws RangeError.
 */
export function parseDuration(text: string): number {
  if (text === '0') return 0;
  const invalid = () => new RangeError(`invalid duration "${text}": expected a Go duration such as 90s, 10m or 1h30m`);
  if (text === '') throw invalid();
  let ms = 0;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < text.length) {
    const match = DURATION_PART.exec(text);
    if (!match) throw invalid();
    const [, number, unit] = match;
    ms += Number(number) * DURATION_UNITS_MS[unit!]!;
  }
  return ms;
}
