// When a capture, a pod instance's capture or a session is finished: one rule, over durable
// fields of the PacketCapture only (spec, metadata.generation, status.nodes), so the agent
// that decides what to start and the controller that reports Completed cannot disagree.
// Pure: `now` is passed in.
//
// status.sessions is a bounded history: an entry dropped from it must not make an instance
// look unfinished or move the start the duration counts from. What a decision needs is
// folded into each node's record (recordSession), which its agent writes in the same apply
// as the entry. Entries still listed count too: an agent that wrote no records (an older
// one) is still understood.
//
// Only the current generation counts. An edit of the spec is a new intent (another filter,
// another limit): a Once capture whose instance ended captures again, and limits.duration
// counts again from the first session start of the new generation.

import { DEFAULTS, NETNS_ENDS, REASONS, type InstanceEnd, type NodeRecord, type PacketCapture, type SessionStatus } from './packetcapture.ts';
import { parseDuration } from './units.ts';

/** What an Ended session's endReason says about the pod instance it captured. */
export type SessionEnd =
  /** the instance reached a limit: it is not captured again in this generation */
  | 'limit'
  /** the instance's capture ended (it went, or is no longer targeted): Follow moves on to the next one */
  | 'instance'
  /** the session stopped, the instance's capture did not: a new session picks it up */
  | 'interruption';

const ENDS: Record<string, SessionEnd> = {
  [REASONS.PacketLimit]: 'limit',
  [REASONS.Duration]: 'limit',
  [REASONS.PodDeleted]: 'instance',
  [REASONS.PodReplaced]: 'instance',
  [REASONS.PodNotRunning]: 'instance',
  [REASONS.PodNotSelected]: 'instance',
  [REASONS.CaptureCompleted]: 'instance',
  // the agent went or restarted, the spec moved on, or the pod's sandbox was recreated
  // under it: nothing about the instance's capture is decided by these
  [REASONS.AgentShutdown]: 'interruption',
  [REASONS.AgentRestart]: 'interruption',
  [REASONS.SpecChanged]: 'interruption',
  [REASONS.CaptureDeleted]: 'interruption',
  [REASONS.Error]: 'interruption',
  ...Object.fromEntries([...NETNS_ENDS].map((reason) => [reason, 'interruption' as const])),
};

/**
 * An unknown word (a newer agent's) is an interruption: finishing a capture on a reason
 * nobody here understands could end it for good, capturing once more cannot.
 */
export const sessionEnd = (endReason: string | undefined): SessionEnd => ENDS[endReason ?? ''] ?? 'interruption';

/** The API server starts every object at generation 1; an object without one is read as that. */
export const generationOf = (capture: PacketCapture): number => capture.metadata.generation ?? 1;

/** Sessions of the capture's current generation: the only ones any decision reads. */
export const currentSessions = (capture: PacketCapture): SessionStatus[] =>
  (capture.status?.sessions ?? []).filter((s) => s.generation === generationOf(capture));

/** Node records of the capture's current generation. */
export const currentRecords = (capture: PacketCapture): NodeRecord[] =>
  (capture.status?.nodes ?? []).filter((r) => r.generation === generationOf(capture));

/** A Failed session never finishes anything: it waits for a retry or an edit. */
const endedAs = (s: SessionStatus, ...ends: SessionEnd[]): boolean => s.state === 'Ended' && ends.includes(sessionEnd(s.endReason));

const validTime = (t: string | undefined): t is string => t !== undefined && !Number.isNaN(Date.parse(t));
const earliest = (a: string | undefined, b: string | undefined): string | undefined =>
  !validTime(b) ? a : !validTime(a) || Date.parse(b) < Date.parse(a) ? b : a;

/**
 * A node's record with `session` folded in: its start, and whether its instance reached a
 * limit or its capture ended. A session of an older generation changes nothing; one of a
 * newer generation starts a new record.
 */
export function recordSession(record: NodeRecord | undefined, session: SessionStatus): NodeRecord {
  const base = !record || record.generation < session.generation ? { nodeName: session.nodeName, generation: session.generation } : record;
  if (base.generation !== session.generation) return base;
  const next: NodeRecord = { ...base };
  const firstStartTime = earliest(base.firstStartTime, session.startTime);
  if (firstStartTime) next.firstStartTime = firstStartTime;
  const limited = base.limitedPods ?? [];
  if (endedAs(session, 'limit') && !limited.includes(session.podUID)) next.limitedPods = [...limited, session.podUID];
  if (!base.firstEnd && endedAs(session, 'limit', 'instance')) {
    next.firstEnd = { podUID: session.podUID, podName: session.podName, endReason: session.endReason! };
  }
  return next;
}

/** Whether the pod instance reached a limit in the current generation (the agent does not capture it again). */
export const instanceFinished = (capture: PacketCapture, podUID: string): boolean =>
  currentRecords(capture).some((r) => r.limitedPods?.includes(podUID)) ||
  currentSessions(capture).some((s) => s.podUID === podUID && endedAs(s, 'limit'));

/** The earliest session start of the current generation, on any node: limits.duration counts from it. */
export const firstStartTime = (capture: PacketCapture): string | undefined =>
  [...currentRecords(capture).map((r) => r.firstStartTime), ...currentSessions(capture).map((s) => s.startTime)].reduce(earliest, undefined);

/** The first instance whose capture ended in the current generation, on some node: lifecycle Once completes on it. */
function firstEnd(capture: PacketCapture): InstanceEnd | undefined {
  const recorded = currentRecords(capture).find((r) => r.firstEnd)?.firstEnd;
  if (recorded) return recorded;
  const ended = currentSessions(capture).find((s) => endedAs(s, 'limit', 'instance'));
  return ended && { podUID: ended.podUID, podName: ended.podName, endReason: ended.endReason! };
}

export type CaptureEnd =
  | { finished: true; reason: 'Duration' | 'Once' | 'EveryTargetLimited'; message: string }
  /** `deadline`: when limits.duration finishes it by the clock alone */
  | { finished: false; deadline?: number }
  /** limits.duration is not a duration: nothing can be decided from it until the spec is edited */
  | { finished: false; invalid: string };

/**
 * Whether the whole capture is finished at `now`: its duration ran out since its first
 * session started, or (Once) the capture of its first instance ended, or every one of
 * `targets` reached a limit. Only the controller knows every target; the agent passes
 * none and skips each finished instance by itself (instanceFinished).
 */
export function captureEnd(capture: PacketCapture, now: number, targets: readonly { podName: string; podUID: string }[] = []): CaptureEnd {
  const { limits } = capture.spec;
  const lifecycle = capture.spec.lifecycle ?? DEFAULTS.lifecycle;
  let deadline: number | undefined;
  if (limits?.duration !== undefined) {
    let ms: number;
    try {
      ms = parseDuration(limits.duration);
    } catch (err) {
      return { finished: false, invalid: `spec.limits.duration: ${(err as Error).message}` };
    }
    const first = firstStartTime(capture);
    if (first !== undefined) {
      deadline = Date.parse(first) + ms;
      if (now >= deadline) {
        return { finished: true, reason: 'Duration', message: `limits.duration ${limits.duration} elapsed since the first session started at ${first}` };
      }
    }
  }
  if (lifecycle === 'Once') {
    const ended = firstEnd(capture);
    if (ended) {
      return {
        finished: true,
        reason: 'Once',
        message: `lifecycle Once: the capture of pod ${ended.podName} (UID ${ended.podUID}) ended (${ended.endReason})`,
      };
    }
  }
  if (targets.length > 0 && targets.every((t) => instanceFinished(capture, t.podUID))) {
    return { finished: true, reason: 'EveryTargetLimited', message: `every target reached its limit (${limitsText(capture)})` };
  }
  return { finished: false, ...(deadline !== undefined ? { deadline } : {}) };
}

function limitsText(capture: PacketCapture): string {
  const { maxPackets, duration } = capture.spec.limits ?? {};
  const parts = [...(maxPackets !== undefined ? [`maxPackets ${maxPackets}`] : []), ...(duration !== undefined ? [`duration ${duration}`] : [])];
  return parts.length > 0 ? parts.join(', ') : 'no limit set';
}
