// The soak's counts and its verdict (pure): faults injected, checks made, violations found.

import { FAULT_KINDS, type FaultKind } from './schedule.ts';

export const INVARIANTS = {
  foreignPackets: 'no packet of another instance in any file (tshark)',
  staleTcpdumps: 'no tcpdump left for a dead instance, generation or capture',
  instancesCaptured: 'every instance targeted >= 2 s has a session with packets',
  captureStates: 'every capture reaches the state its spec implies',
  rejectedWrites: 'no PacketCapture write rejected',
  memoryFlat: 'memory of each component flat',
} as const;

export type Invariant = keyof typeof INVARIANTS;

export interface Violation {
  invariant: Invariant;
  /** epoch ms it was found */
  at: number;
  detail: string;
}

export class Tally {
  readonly faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  readonly checks = Object.fromEntries(Object.keys(INVARIANTS).map((k) => [k, 0])) as Record<Invariant, number>;
  readonly violations: Violation[] = [];
  /** what the checks covered: instances, files, packets, ... */
  readonly facts = new Map<string, number>();

  fault(kind: FaultKind): void {
    this.faults[kind]++;
  }

  /** `n` checks of `invariant` made, with what they found wrong. */
  checked(invariant: Invariant, n: number, found: readonly string[] = [], at = Date.now()): void {
    this.checks[invariant] += n;
    for (const detail of found) this.violations.push({ invariant, at, detail });
  }

  count(fact: string, n = 1): void {
    this.facts.set(fact, (this.facts.get(fact) ?? 0) + n);
  }
}

export interface RunInfo {
  seed: number;
  durationMs: number;
  elapsedMs: number;
}

export function renderReport(t: Tally, run: RunInfo): string {
  const s = (ms: number) => `${Math.round(ms / 1000)} s`;
  const width = Math.max(...Object.values(INVARIANTS).map((d) => d.length));
  const lines = [
    `soak: seed ${run.seed}, faults for ${s(run.durationMs)}, ${s(run.elapsedMs)} in all`,
    `faults injected (${Object.values(t.faults).reduce((a, b) => a + b, 0)}):`,
    ...FAULT_KINDS.map((k) => `  ${k.padEnd(20)} ${t.faults[k]}`),
    'covered:',
    ...[...t.facts].map(([fact, n]) => `  ${fact.padEnd(32)} ${n}`),
    'invariants (checks, violations):',
    ...(Object.keys(INVARIANTS) as Invariant[]).map(
      (k) => `  ${INVARIANTS[k].padEnd(width)}  ${String(t.checks[k]).padStart(7)}  ${t.violations.filter((v) => v.invariant === k).length}`,
    ),
    `violations: ${t.violations.length}`,
    ...t.violations.map((v) => `  ${new Date(v.at).toISOString()} ${v.invariant}: ${v.detail}`),
  ];
  return lines.join('\n');
}
