// What the soak does and when, from a seed (pure): the same seed and duration give the
// same faults at the same offsets, so a run that found something can be replayed.

/** mulberry32: a 32-bit seeded PRNG, uniform in [0, 1); plenty for picking faults. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Faults that touch one pod or capture: many of them, every few seconds. */
export const FREQUENT_FAULTS = [
  // the slot's pod deleted and created again under its name: it takes the lowest free IP, often the old one
  'podRecreate',
  // the same, but another (untargeted) pod is created first and takes the old IP
  'podRecreateSquatted',
  // the pod's sandbox replaced under the same UID (new netns, same IP)
  'sandboxRecreate',
  'specEdit',
  'captureRecreate',
] as const;

/** Faults of a whole component: a few per run, each at least once. */
export const RARE_FAULTS = ['agentKill', 'leaderKill', 'apiServerRestart', 'etcdCompaction'] as const;

export type FaultKind = (typeof FREQUENT_FAULTS)[number] | (typeof RARE_FAULTS)[number];
export const FAULT_KINDS: readonly FaultKind[] = [...FREQUENT_FAULTS, ...RARE_FAULTS];

export interface Fault {
  /** ms from the start of the fault phase */
  at: number;
  kind: FaultKind;
  /** which pod slot or capture the fault picks, as a fraction in [0, 1) the executor scales */
  pick: number;
}

export interface ScheduleOptions {
  durationMs: number;
  /** mean gap between two frequent faults */
  meanGapMs: number;
  /** one of each rare fault per this much time (and at least one of each) */
  rareEveryMs: number;
}

/**
 * Frequent faults at gaps uniform in [0.5, 1.5] x meanGapMs; each rare fault `n` times, the
 * i-th somewhere in the middle 70% of the i-th n-th of the run, so they spread over it and
 * the last one still leaves time to recover before the end.
 */
export function faultSchedule(seed: number, { durationMs, meanGapMs, rareEveryMs }: ScheduleOptions): Fault[] {
  const random = mulberry32(seed);
  const faults: Fault[] = [];
  for (let at = meanGapMs * (0.5 + random()); at < durationMs; at += meanGapMs * (0.5 + random())) {
    faults.push({ at, kind: FREQUENT_FAULTS[Math.floor(random() * FREQUENT_FAULTS.length)]!, pick: random() });
  }
  const perKind = Math.max(1, Math.round(durationMs / rareEveryMs));
  for (const kind of RARE_FAULTS) {
    for (let i = 0; i < perKind; i++) faults.push({ at: ((i + 0.15 + 0.7 * random()) / perKind) * durationMs, kind, pick: random() });
  }
  return faults.sort((a, b) => a.at - b.at);
}

/** `pick` scaled to an index of a list of `n`. */
export const pickIndex = (pick: number, n: number): number => Math.min(n - 1, Math.floor(pick * n));
