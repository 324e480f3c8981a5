import { describe, expect, it } from 'vitest';
import { parseDuration, parseQuantity } from '../../crds/units.ts';

describe('parseQuantity', () => {
  it.each([
    ['0', 0],
    ['1000', 1000],
    ['10Mi', 10 * 1024 * 1024],
    ['500Ki', 500 * 1024],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['2Ti', 2 * 2 ** 40],
    ['1k', 1000],
    ['1G', 1e9],
    ['3M', 3e6],
    ['1e3', 1000],
    ['2E6', 2e6],
    ['.5k', 500],
    ['1500m', 1.5],
  ])('%s is %d', (text, value) => {
    expect(parseQuantity(text)).toBe(value);
  });

  it.each(['', 'Mi', '10MB', '10 Mi', '-1Mi', '10mi', '1e', '1.2.3', '10Ki5'])('"%s" is not a quantity', (text) => {
    expect(() => parseQuantity(text)).toThrow(/invalid quantity/);
  });
});

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['30s', 30_000],
    ['10m', 600_000],
    ['1h30m', 5_400_000],
    ['2h45m30.5s', (2 * 3600 + 45 * 60 + 30.5) * 1000],
    ['1.5h', 5_400_000],
    ['300ms', 300],
    ['1m30s', 90_000],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['2000000ns', 2],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', '10', '1d', '-5s', '+5s', 'm', '1h 30m', '1.s.', '5sec'])('"%s" is not a duration', (text) => {
    expect(() => parseDuration(text)).toThrow(/invalid duration/);
  });
});
