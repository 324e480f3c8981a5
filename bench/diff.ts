// What a write to a PacketCapture changed, for telling a needed write from churn (pure).

import type { PacketCapture } from '../crds/packetcapture.ts';

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * The parts of `next` that differ from `prev`: `finalizers`, `spec`, `status.phase`,
 * `status.observedGeneration`, `status.targets`, `status.sessions`, and per condition type
 * `conditions.<Type>` (status/reason) or `conditions.<Type>.message` / `.lastTransitionTime`
 * when only those moved; `other` when none of these changed (e.g. managedFields only).
 */
export function changedParts(prev: PacketCapture, next: PacketCapture): string[] {
  const parts: string[] = [];
  if (!same(prev.metadata.finalizers, next.metadata.finalizers)) parts.push('finalizers');
  if (!same(prev.spec, next.spec)) parts.push('spec');
  const a = prev.status ?? {};
  const b = next.status ?? {};
  if (a.phase !== b.phase) parts.push('status.phase');
  if (a.observedGeneration !== b.observedGeneration) parts.push('status.observedGeneration');
  if (!same(a.targets, b.targets)) parts.push('status.targets');
  if (!same(a.sessions, b.sessions)) parts.push('status.sessions');
  const types = new Set([...(a.conditions ?? []), ...(b.conditions ?? [])].map((c) => c.type));
  for (const type of [...types].sort()) {
    const x = a.conditions?.find((c) => c.type === type);
    const y = b.conditions?.find((c) => c.type === type);
    if (!x || !y || x.status !== y.status || x.reason !== y.reason) parts.push(`conditions.${type}`);
    else if (x.message !== y.message) parts.push(`conditions.${type}.message`);
    else if (x.lastTransitionTime !== y.lastTransitionTime) parts.push(`conditions.${type}.lastTransitionTime`);
    else if (!same(x, y)) parts.push(`conditions.${type}.other`);
  }
  return parts.length > 0 ? parts : ['other'];
}

/** Adds one to each part's count. */
export function tally(counts: Record<string, number>, parts: readonly string[]): void {
  for (const p of parts) counts[p] = (counts[p] ?? 0) + 1;
}
