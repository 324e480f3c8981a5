import { captureEnd, currentSessions, generationOf, instanceFinished } from '../crds/lifecycle.ts';
import {
  CONDITIONS,
  REASONS,
  type Condition,
  type PacketCapture,
  type PacketCaptureStatus,
  type Phase,
  type SessionStatus,
  type TargetStatus,
} from '../crds/packetcapture.ts';
import type { Resolution } from './targets.ts';

/** The part of status the controller owns (field manager CONTROLLER_FIELD_MANAGER). */
export interface ControllerStatus {
  observedGeneration: number;
  phase: Phase;
  conditions: Condition[];
  targets: TargetStatus[];
}

export interface StatusInput {
  capture: PacketCapture;
  resolution: Resolution;
  now: number;
  /** nodes with a live agent (liveAgentNodes) */
  agentNodes: ReadonlySet<string>;
  /** set while a deleted capture waits for its sessions to stop */
  deletion?: { reason: string; message: string };
}

export interface DerivedStatus {
  status: ControllerStatus;
  /** when the decision changes by the clock alone (limits.duration runs out) */
  nextDecisionAt?: number;
}

type DesiredCondition = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

/** Kubernetes writes condition times with second precision; so do we. */
export const conditionTime = (ms: number): string => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');

/** The controller's fields of a status as read from the cluster, in the shape we write them. */
export function observedControllerStatus(status: PacketCaptureStatus | undefined): Partial<ControllerStatus> {
  return {
    ...(status?.observedGeneration !== undefined ? { observedGeneration: status.observedGeneration } : {}),
    ...(status?.phase !== undefined ? { phase: status.phase } : {}),
    ...(status?.conditions !== undefined ? { conditions: status.conditions } : {}),
    targets: status?.targets ?? [],
  };
}

/**
 * lastTransitionTime moves only when a condition's status flips; reason and message edits
 * keep the old time, so an unchanged situation never produces a different status. A
 * condition that comes out as the snapshot has it is the snapshot's object (see asObserved).
 */
function withTransitionTimes(previous: Condition[] | undefined, desired: DesiredCondition[], generation: number, now: number): Condition[] {
  const conditions = desired.map((c) => {
    const before = previous?.find((p) => p.type === c.type);
    const lastTransitionTime = before && before.status === c.status ? before.lastTransitionTime : conditionTime(now);
    const condition = { ...c, observedGeneration: generation, lastTransitionTime };
    return before && sameFields(before, condition) ? before : condition;
  });
  return previous && sameItems(previous, conditions) ? previous : conditions;
}

/** Equal in every field, and no other: one may stand for the other in a status we apply. */
function sameFields<T extends object>(a: T, b: T): boolean {
  const keys = Object.keys(b) as (keyof T)[];
  return Object.keys(a).length === keys.length && keys.every((k) => a[k] === b[k]);
}

const sameItems = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * The snapshot's own objects wherever a derivation reproduces them, targets here and
 * conditions in withTransitionTimes: a decision is kept per capture, and one that changes
 * nothing then holds no second copy of the status (at 10,000 captures the copies' condition
 * objects and messages were some 8 MB of a 118 MB heap).
 */
function asObserved(previous: TargetStatus[] | undefined, targets: TargetStatus[]): TargetStatus[] {
  if (!previous) return targets;
  const shared = targets.map((t) => previous.find((p) => p.podUID === t.podUID && sameFields(p, t)) ?? t);
  return sameItems(previous, shared) ? previous : shared;
}

/**
 * A decision derives transition times from the status in its snapshot, which lags our own
 * last write until the watch echoes it. A condition whose status our last write already had
 * keeps that write's time, so a lagging snapshot never stamps a fresh time on a condition
 * that did not flip (at scale, each such stamp was a write that made the next snapshot lag).
 */
export function carryTransitionTimes(
  desired: ControllerStatus,
  observed: Condition[] | undefined,
  lastWritten: Condition[] | undefined,
): ControllerStatus {
  if (!lastWritten) return desired;
  const conditions = desired.conditions.map((c) => {
    if (observed?.some((o) => o.type === c.type && o.status === c.status)) return c;
    const written = lastWritten.find((w) => w.type === c.type && w.status === c.status);
    return written ? { ...c, lastTransitionTime: written.lastTransitionTime } : c;
  });
  return { ...desired, conditions };
}

/** Failures no retry fixes: only editing the spec does. */
const SPEC_FAILURES = new Set<string>([REASONS.InvalidFilter, REASONS.InvalidSpec]);

const instance = (t: { podName: string; podUID: string }) => `${t.podName} (UID ${t.podUID})`;

const MAX_LISTED = 5;
function listed(items: string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} and ${items.length - MAX_LISTED} more` : shown;
}

interface Completion {
  completed?: string;
  nextDecisionAt?: number;
  invalid?: string;
}

/** The capture's end as the agent sees it too (crds/lifecycle.ts), with the targets only the controller knows. */
function completion(capture: PacketCapture, targets: TargetStatus[], now: number): Completion {
  const end = captureEnd(capture, now, targets);
  if (end.finished) return { completed: end.message };
  if ('invalid' in end) return { invalid: end.invalid };
  return end.deadline !== undefined ? { nextDecisionAt: end.deadline } : {};
}

type TargetProgress =
  | { state: 'running' }
  | { state: 'finished' }
  | { state: 'waiting'; reason: string; detail: string };

const STATE_ORDER: Record<string, number> = { Running: 0, Pending: 1, Failed: 2, Ended: 3 };

/** The session that best describes a target: a running one if any. */
function sessionOf(t: TargetStatus, sessions: SessionStatus[]): SessionStatus | undefined {
  return sessions
    .filter((s) => s.podUID === t.podUID)
    .sort((a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || (b.startTime ?? '').localeCompare(a.startTime ?? ''))[0];
}

function progressOf(
  capture: PacketCapture,
  t: TargetStatus,
  sessions: SessionStatus[],
  allSessions: SessionStatus[],
  agentNodes: ReadonlySet<string>,
): TargetProgress {
  const s = sessionOf(t, sessions);
  if (s?.state === 'Running') return { state: 'running' };
  if (instanceFinished(capture, t.podUID)) return { state: 'finished' };
  if (!agentNodes.has(t.nodeName)) {
    return { state: 'waiting', reason: REASONS.NoNodeAgent, detail: `${instance(t)}: no agent on node ${t.nodeName}` };
  }
  if (s?.state === 'Failed' || (s?.state === 'Pending' && s.reason)) {
    const reason = s.reason ?? REASONS.Error;
    return { state: 'waiting', reason, detail: `${instance(t)}: ${s.message ?? reason}` };
  }
  // an earlier instance of the same pod name had a session: the pod was recreated
  const predecessor = allSessions.find((o) => o.podName === t.podName && o.podUID !== t.podUID);
  if (!s && predecessor) {
    return {
      state: 'waiting',
      reason: REASONS.PodReplaced,
      detail: `${t.podName} was replaced (old UID ${predecessor.podUID}, new UID ${t.podUID}); waiting for the agent on ${t.nodeName}`,
    };
  }
  return { state: 'waiting', reason: REASONS.SessionsStarting, detail: `${instance(t)}: waiting for the agent on ${t.nodeName}` };
}

/** The reason shown when several targets wait for different things: the one a user must act on first. */
const WAIT_PRIORITY = [REASONS.NoNodeAgent, REASONS.PodReplaced, REASONS.SessionsStarting];
const waitRank = (reason: string) => {
  const i = WAIT_PRIORITY.indexOf(reason as (typeof WAIT_PRIORITY)[number]);
  // agent-reported failures (NetnsNotFound, DiskFull, ...) come first: they say what is wrong
  return i === -1 ? -1 : i;
};

/**
 * The controller's status for a capture, kstatus-style: Ready=True when every target has
 * a running session or the capture completed; Reconciling=True (present only while true)
 * while work is in progress; Stalled=True (likewise) only for what needs a spec change.
 * observedGeneration is always the generation decided on. Pure: `now` is passed in.
 */
export function deriveStatus({ capture, resolution, now, agentNodes, deletion }: StatusInput): DerivedStatus {
  const generation = generationOf(capture);
  const previous = capture.status;
  const allSessions = previous?.sessions ?? [];
  const sessions = currentSessions(capture);
  const targets = asObserved(previous?.targets, resolution.targets);

  const targetResolved: DesiredCondition =
    targets.length > 0
      ? { type: CONDITIONS.TargetResolved, status: 'True', reason: resolution.reason, message: resolution.message }
      : { type: CONDITIONS.TargetResolved, status: 'False', reason: resolution.reason, message: resolution.message };

  let phase: Phase;
  let ready: DesiredCondition;
  let capturing: DesiredCondition;
  let reconciling: DesiredCondition | undefined;
  let stalled: DesiredCondition | undefined;
  let nextDecisionAt: number | undefined;

  const previousReady = previous?.conditions?.find((c) => c.type === CONDITIONS.Ready);
  const stillCompleted =
    previous?.phase === 'Completed' && previous.observedGeneration === generation && previousReady?.reason === REASONS.CaptureCompleted;
  const done: Completion = stillCompleted ? { completed: previousReady.message } : completion(capture, targets, now);
  const specFailure =
    resolution.reason === REASONS.InvalidSpec
      ? { reason: REASONS.InvalidSpec, message: resolution.message }
      : done.invalid
        ? { reason: REASONS.InvalidSpec, message: done.invalid }
        : sessions
            .filter((s) => s.state === 'Failed' && SPEC_FAILURES.has(s.reason ?? ''))
            .map((s) => ({ reason: s.reason!, message: `the agent on ${s.nodeName} refused the spec: ${s.message ?? s.reason}` }))[0];

  if (specFailure) {
    phase = 'Failed';
    const message = `${specFailure.message}; edit the PacketCapture to fix it`;
    ready = { type: CONDITIONS.Ready, status: 'False', reason: specFailure.reason, message };
    stalled = { type: CONDITIONS.Stalled, status: 'True', reason: specFailure.reason, message };
    capturing = { type: CONDITIONS.Capturing, status: 'False', reason: specFailure.reason, message };
  } else if (done.completed) {
    phase = 'Completed';
    ready = { type: CONDITIONS.Ready, status: 'True', reason: REASONS.CaptureCompleted, message: done.completed };
    capturing = { type: CONDITIONS.Capturing, status: 'False', reason: REASONS.CaptureCompleted, message: done.completed };
  } else {
    nextDecisionAt = done.nextDecisionAt;
    const progress = targets.map((t) => ({ t, p: progressOf(capture, t, sessions, allSessions, agentNodes) }));
    const running = progress.filter(({ p }) => p.state === 'running').map(({ t }) => t);
    const waiting = progress.flatMap(({ p }) => (p.state === 'waiting' ? [p] : []));
    phase = running.length > 0 ? 'Capturing' : 'Pending';
    if (targets.length === 0) {
      const message = `no pod instance to capture: ${resolution.message}`;
      capturing = { type: CONDITIONS.Capturing, status: 'False', reason: resolution.reason, message };
      ready = { type: CONDITIONS.Ready, status: 'False', reason: resolution.reason, message };
      reconciling = { type: CONDITIONS.Reconciling, status: 'True', reason: resolution.reason, message };
    } else if (waiting.length === 0) {
      const message =
        running.length > 0
          ? `capturing on ${running.length} pod instance(s): ${listed(running.map(instance))}`
          : 'every target reached its limit';
      capturing = { type: CONDITIONS.Capturing, status: running.length > 0 ? 'True' : 'False', reason: REASONS.SessionsRunning, message };
      ready = { type: CONDITIONS.Ready, status: 'True', reason: REASONS.SessionsRunning, message };
    } else {
      const reason = [...waiting].sort((a, b) => waitRank(a.reason) - waitRank(b.reason))[0]!.reason;
      const message =
        `${running.length} of ${targets.length} target(s) capturing; ` + listed(waiting.map((w) => w.detail));
      capturing = { type: CONDITIONS.Capturing, status: 'False', reason, message };
      ready = { type: CONDITIONS.Ready, status: 'False', reason, message };
      reconciling = { type: CONDITIONS.Reconciling, status: 'True', reason, message };
    }
  }

  if (deletion) {
    // kstatus reports a deleted object as Terminating whatever its conditions; these say why it lingers
    ready = { type: CONDITIONS.Ready, status: 'False', reason: deletion.reason, message: deletion.message };
    reconciling = { type: CONDITIONS.Reconciling, status: 'True', reason: deletion.reason, message: deletion.message };
    stalled = undefined;
    nextDecisionAt = undefined;
  }

  const desired = [ready, reconciling, stalled, targetResolved, capturing].filter((c): c is DesiredCondition => !!c);
  return {
    status: {
      observedGeneration: generation,
      phase,
      conditions: withTransitionTimes(previous?.conditions, desired, generation, now),
      targets,
    },
    nextDecisionAt,
  };
}
