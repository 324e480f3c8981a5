import { REASONS, type PacketCaptureStatus, type TargetStatus } from '../crds/packetcapture.ts';
import type { ControllerStatus } from './conditions.ts';

export interface CaptureEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** the pod instance the event is about, for the log line */
  podUID?: string;
}

/**
 * The last instance the capture targeted under each pod name, least recently targeted
 * first, kept after the instance goes so that its replacement is recognised even when the
 * two are never targets at once. An array, not a Map: one is kept per capture and most
 * have a single name, and a Map of one entry took ~870 bytes (9 MB at 10,000 captures).
 */
export type Lineage = readonly TargetStatus[];

/** Bound on remembered pod names; a selector over a churning Deployment would otherwise grow it forever. */
export const LINEAGE_LIMIT = 1000;

/**
 * What the capture knew before this controller saw it: its current targets, and for names
 * without one the newest session an agent reported, so a restart in the middle of a
 * recreation still reports the replacement.
 */
export function seedLineage(status: PacketCaptureStatus | undefined): Lineage {
  const lineage = new Map<string, TargetStatus>();
  const sessions = [...(status?.sessions ?? [])].sort((a, b) => (a.startTime ?? '').localeCompare(b.startTime ?? ''));
  for (const s of sessions) lineage.set(s.podName, { podName: s.podName, podUID: s.podUID, nodeName: s.nodeName });
  for (const t of status?.targets ?? []) lineage.set(t.podName, t);
  return [...lineage.values()];
}

const where = (t: TargetStatus) => `node ${t.nodeName}` + (t.podIP ? `, IP ${t.podIP}` : '');

/**
 * Events for targets that are new: a first instance under a name is TargetResolved, a
 * different UID under a known name is PodReplaced (naming both UIDs). Returns the lineage
 * to diff the next targets against.
 */
export function targetEvents(lineage: Lineage, next: TargetStatus[]): { events: CaptureEvent[]; lineage: Lineage } {
  const events: CaptureEvent[] = [];
  const known = new Map(lineage.map((t) => [t.podName, t]));
  const updated = new Map(known);
  for (const t of next) {
    const before = known.get(t.podName);
    if (!before) {
      events.push({
        type: 'Normal',
        reason: REASONS.TargetResolved,
        message: `pod ${t.podName} (UID ${t.podUID}) on ${where(t)} is a target`,
        podUID: t.podUID,
      });
    } else if (before.podUID !== t.podUID) {
      events.push({
        type: 'Normal',
        reason: REASONS.PodReplaced,
        message:
          `pod ${t.podName} replaced: old UID ${before.podUID} → new UID ${t.podUID}` +
          (before.nodeName !== t.nodeName ? ` (moved from node ${before.nodeName} to ${t.nodeName})` : ` (node ${t.nodeName})`),
        podUID: t.podUID,
      });
    }
    // re-inserted so the least recently targeted names are the first to be forgotten
    updated.delete(t.podName);
    updated.set(t.podName, t);
  }
  return { events, lineage: [...updated.values()].slice(-LINEAGE_LIMIT) };
}

/** Runtime problems an agent or the controller meets: each is a Warning Event when it becomes why the capture is not Ready. */
const PROBLEMS = new Set<string>([
  REASONS.NetnsNotFound,
  REASONS.NetnsMismatch,
  REASONS.HostNetwork,
  REASONS.TcpdumpMissing,
  REASONS.TcpdumpExited,
  REASONS.DiskFull,
  REASONS.NoNodeAgent,
  REASONS.Error,
]);
/** Not a problem while a pod is being recreated; a problem (a typo, most likely) when nothing was ever found. */
const NEVER_FOUND = new Set<string>([REASONS.PodNotFound, REASONS.NoMatchingPods]);

/**
 * A Warning when the reason the capture is not Ready becomes a runtime problem, once per
 * change of reason (a status written again for another cause repeats nothing). Failures
 * that fail the capture are CaptureFailed (phaseEvents).
 */
export function problemEvents(previous: Partial<ControllerStatus> | undefined, next: ControllerStatus, everTargeted: boolean): CaptureEvent[] {
  const ready = next.conditions.find((c) => c.type === 'Ready');
  if (!ready || ready.status !== 'False' || next.phase === 'Failed') return [];
  const before = previous?.conditions?.find((c) => c.type === 'Ready');
  if (before?.status === 'False' && before.reason === ready.reason) return [];
  if (PROBLEMS.has(ready.reason) || (!everTargeted && NEVER_FOUND.has(ready.reason))) {
    return [{ type: 'Warning', reason: ready.reason, message: ready.message }];
  }
  return [];
}

/** CaptureCompleted / CaptureFailed when the phase enters Completed / Failed. */
export function phaseEvents(previous: Partial<ControllerStatus> | undefined, next: ControllerStatus): CaptureEvent[] {
  if (previous?.phase === next.phase) return [];
  const ready = next.conditions.find((c) => c.type === 'Ready');
  if (next.phase === 'Completed') return [{ type: 'Normal', reason: REASONS.CaptureCompleted, message: ready?.message ?? 'capture completed' }];
  if (next.phase === 'Failed') return [{ type: 'Warning', reason: REASONS.CaptureFailed, message: ready?.message ?? 'capture failed' }];
  return [];
}
