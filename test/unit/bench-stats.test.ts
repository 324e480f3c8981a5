import { describe, expect, it } from 'vitest';
import { quantile, ratio, summarize } from '../../bench/stats.ts';
import { cpuSecondsFromStat, ppidFromStat, statusMb } from '../../bench/proc.ts';
import { layout } from '../../bench/footprint.ts';

describe('bench percentiles', () => {
  it('uses the nearest rank', () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(sorted, 0.5)).toBe(50);
    expect(quantile(sorted, 0.9)).toBe(90);
    expect(quantile(sorted, 0.99)).toBe(99);
    expect(quantile(sorted, 1)).toBe(100);
    expect(quantile([7], 0.5)).toBe(7);
    expect(quantile([], 0.5)).toBeUndefined();
  });

  it('summarizes unsorted samples, rounding to 0.1 ms', () => {
    expect(summarize([5.04, 1, 3, 2, 4])).toEqual({ n: 5, p50: 3, p90: 5, p99: 5, max: 5 });
    expect(summarize([10.26, 10.24])).toEqual({ n: 2, p50: 10.2, p90: 10.3, p99: 10.3, max: 10.3 });
  });

  it('has null percentiles without samples and ignores non-finite ones', () => {
    expect(summarize([])).toEqual({ n: 0, p50: null, p90: null, p99: null, max: null });
    expect(summarize([Number.NaN, 2])).toEqual({ n: 1, p50: 2, p90: 2, p99: 2, max: 2 });
  });

  it('gives no ratio against zero', () => {
    expect(ratio(5, 0)).toBeNull();
    expect(ratio(999, 1000)).toBe(0.999);
  });
});

describe('bench /proc parsing', () => {
  // a command with spaces and a parenthesis, as /proc prints it
  const stat = '4242 (node (agent) x) S 4000 4242 4000 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 11 0 123 0 0';

  it('reads CPU seconds and the parent from stat', () => {
    expect(cpuSecondsFromStat(stat)).toBe(3.25);
    expect(ppidFromStat(stat)).toBe(4000);
  });

  it('reads RSS and peak RSS from status in MB', () => {
    const status = 'Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n';
    expect(statusMb(status, 'VmRSS')).toBe(100);
    expect(statusMb(status, 'VmHWM')).toBe(200);
    expect(statusMb('Name:\tkthreadd\n', 'VmRSS')).toBeUndefined();
  });
});

describe('agent footprint layout', () => {
  it('spreads sessions over at most 10 pods', () => {
    expect(layout(0)).toEqual({ pods: 0, captures: 0 });
    expect(layout(5)).toEqual({ pods: 5, captures: 1 });
    expect(layout(10)).toEqual({ pods: 10, captures: 1 });
    expect(layout(100)).toEqual({ pods: 10, captures: 10 });
  });
});
