import { describe, expect, it } from 'vitest';
import { faultSchedule, FREQUENT_FAULTS, mulberry32, pickIndex, RARE_FAULTS } from '../../soak/schedule.ts';

describe('soak PRNG', () => {
  it('gives the same sequence for the same seed and another for another seed', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const first = Array.from({ length: 5 }, a);
    expect(Array.from({ length: 5 }, b)).toEqual(first);
    expect(Array.from({ length: 5 }, c)).not.toEqual(first);
  });

  it('stays in [0, 1) and spreads over it', () => {
    const r = mulberry32(7);
    const values = Array.from({ length: 10_000 }, r);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    const buckets = new Array(10).fill(0);
    for (const v of values) buckets[Math.floor(v * 10)]++;
    for (const n of buckets) expect(n).toBeGreaterThan(800);
  });
});

describe('soak fault schedule', () => {
  const quick = { durationMs: 90_000, meanGapMs: 3_000, rareEveryMs: Infinity };

  it('is the same for the same seed', () => {
    expect(faultSchedule(5, quick)).toEqual(faultSchedule(5, quick));
    expect(faultSchedule(5, quick)).not.toEqual(faultSchedule(6, quick));
  });

  it('injects every rare fault at least once in a short run, and one per interval in a long one', () => {
    for (let seed = 0; seed < 50; seed++) {
      const kinds = faultSchedule(seed, quick).map((f) => f.kind);
      for (const kind of RARE_FAULTS) expect(kinds.filter((k) => k === kind)).toHaveLength(1);
    }
    const long = faultSchedule(1, { durationMs: 30 * 60_000, meanGapMs: 4_000, rareEveryMs: 5 * 60_000 }).map((f) => f.kind);
    for (const kind of RARE_FAULTS) expect(long.filter((k) => k === kind)).toHaveLength(6);
  });

  it('keeps faults in order, inside the run, at gaps around the mean', () => {
    const faults = faultSchedule(3, { durationMs: 600_000, meanGapMs: 4_000, rareEveryMs: 300_000 });
    const frequent = faults.filter((f) => (FREQUENT_FAULTS as readonly string[]).includes(f.kind));
    expect(faults.map((f) => f.at)).toEqual([...faults.map((f) => f.at)].sort((a, b) => a - b));
    for (const f of faults) {
      expect(f.at).toBeGreaterThan(0);
      expect(f.at).toBeLessThan(600_000);
    }
    expect(frequent.length).toBeGreaterThan(120);
    expect(frequent.length).toBeLessThan(180);
    for (const kind of FREQUENT_FAULTS) expect(frequent.some((f) => f.kind === kind)).toBe(true);
  });

  it('leaves time to recover after the last rare fault', () => {
    for (let seed = 0; seed < 50; seed++) {
      const rare = faultSchedule(seed, quick).filter((f) => (RARE_FAULTS as readonly string[]).includes(f.kind));
      for (const f of rare) expect(f.at).toBeLessThanOrEqual(0.85 * quick.durationMs);
    }
  });

  it('scales a pick to an index of the list', () => {
    expect(pickIndex(0, 4)).toBe(0);
    expect(pickIndex(0.999, 4)).toBe(3);
    expect(pickIndex(0.5, 4)).toBe(2);
  });
});
