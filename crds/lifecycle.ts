// When a capture, a pod instance's capture or a session is finished: one rule, over durable
// fields of the PacketCapture only (spec, metadata.generation, status.sessions), so the
// agent that decides what to start and the controller that reports Completed cannot
// disagree. Pure: `now` is passed in.
//
// Only the current generation counts. An edit of the spec is a new intent (another filter,
// another limit): a Once capture whose instance ended captures again, and limits.duration
// counts again from the first session start of the new generation.

import { DEFAULTS, NETNS_ENDS, REASONS, type PacketCapture, type SessionStatus } from './packetcapture.ts';
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

/** A Failed session never finishes anything: it waits for a retry or an edit. */
const endedAs = (s: SessionStatus, ...ends: SessionEnd[]): boolean => s.state === 'Ended' && ends.includes(sessionEnd(s.endReason));

/** Whether the pod instance reached a limit in the current generation (the agent does not capture it again). */
export const instanceFinished = (capture: PacketCapture, podUID: string): boolean =>
  currentSessions(capture).some((s) => s.podUID === podUID && endedAs(s, 'limit'));

/** The earliest session start of the current generation, on any node: limits.duration counts from it. */
export function firstStartTime(capture: PacketCapture): string | undefined {
  const starts = currentSessions(capture).flatMap((s) => (s.startTime && !Number.isNaN(Date.parse(s.startTime)) ? [s.startTime] : []));
  return starts.length === 0 ? undefined : starts.reduce((a, b) => (Date.parse(a) <= Date.parse(b) ? a : b));
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
    const ended = currentSessions(capture).find((s) => endedAs(s, 'limit', 'instance'));
    if (ended) {
      return {
        finished: true,
        reason: 'Once',
        message: `lifecycle Once: the capture of pod ${ended.podName} (UID ${ended.podUID}) ended (${ended.endReason ?? 'Ended'})`,
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
