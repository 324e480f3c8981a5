// The lifecycle rule (crds/lifecycle.ts) as both sides apply it: the agent's identities()
// decides what it captures, the controller's deriveStatus() whether the capture is
// Completed. For every way a session can end, either lifecycle, and a spec left alone or
// edited since, they must give the same answer.

import { describe, expect, it } from 'vitest';
import { identities } from '../../agent/identity.ts';
import { deriveStatus } from '../../controller/conditions.ts';
import { resolveTargets } from '../../controller/targets.ts';
import { recordSession, sessionEnd, type SessionEnd } from '../../crds/lifecycle.ts';
import { LIFECYCLES, REASONS, type Lifecycle, type NodeRecord, type PacketCapture, type SessionStatus } from '../../crds/packetcapture.ts';
import { capture, NODE, pod, session, snapshot } from './agent-fixtures.ts';

const OLD = '00000000-0000-0000-0000-0000000000aa';
const CURRENT = '11111111-0000-0000-0000-0000000000bb';
const NOW = Date.parse('2026-01-01T01:00:00Z');
const at = (minutesAgo: number) => new Date(NOW - minutesAgo * 60_000).toISOString();

/** Every reason an agent writes as an Ended session's endReason, and what it says about the instance. */
const ENDS: [string, SessionEnd][] = [
  [REASONS.PacketLimit, 'limit'],
  [REASONS.Duration, 'limit'],
  [REASONS.PodDeleted, 'instance'],
  [REASONS.PodReplaced, 'instance'],
  [REASONS.PodNotRunning, 'instance'],
  [REASONS.PodNotSelected, 'instance'],
  [REASONS.CaptureCompleted, 'instance'],
  [REASONS.AgentShutdown, 'interruption'],
  [REASONS.AgentRestart, 'interruption'],
  [REASONS.SpecChanged, 'interruption'],
  [REASONS.CaptureDeleted, 'interruption'],
  [REASONS.NetnsChanged, 'interruption'],
  [REASONS.NetnsGone, 'interruption'],
  [REASONS.Error, 'interruption'],
];
/** Reasons of a Failed session: it never finishes anything. */
const FAILURES = [REASONS.TcpdumpExited, REASONS.DiskFull, REASONS.Error, REASONS.NetnsMismatch, REASONS.InvalidFilter];

/** What the agent does and what the controller reports, for one capture and the pod instance it targets now. */
function decisions(pc: PacketCapture) {
  const current = pod({ uid: CURRENT });
  const agentCaptures = identities(snapshot(pc), snapshot(current), NODE, NOW).size > 0;
  const { status, nextDecisionAt } = deriveStatus({ capture: pc, resolution: resolveTargets(pc, [current]), now: NOW, agentNodes: new Set([NODE]) });
  return { agentCaptures, completed: status.phase === 'Completed', nextDecisionAt };
}

const ofGeneration = (lifecycle: Lifecycle, edited: boolean, sessions: SessionStatus[], limits?: PacketCapture['spec']['limits']) =>
  capture({ generation: edited ? 2 : 1, spec: { lifecycle, ...(limits ? { limits } : {}) }, sessions });

/** The same capture after its sessions dropped out of the bounded history: only the node record the agent folded them into is left. */
function historyGone(pc: PacketCapture): PacketCapture {
  const nodes = (pc.status?.sessions ?? []).reduce<NodeRecord | undefined>(recordSession, undefined);
  return { ...pc, status: { nodes: nodes ? [nodes] : [] } };
}

describe('one lifecycle rule for agent and controller', () => {
  it('classifies every end reason', () => {
    for (const [reason, end] of ENDS) expect([reason, sessionEnd(reason)]).toEqual([reason, end]);
    expect(sessionEnd('SomeReasonOfANewerAgent')).toBe('interruption');
  });

  const rows = ENDS.flatMap(([reason, end]) =>
    LIFECYCLES.flatMap((lifecycle) =>
      [false, true].map((edited) => ({
        reason,
        end,
        lifecycle,
        edited,
        // a limit finishes the instance (the only target) and so the capture; the first
        // instance's end finishes a Once capture; an edit starts everything over
        finished: !edited && (end === 'limit' || (end === 'instance' && lifecycle === 'Once')),
      })),
    ),
  );

  it.each(rows)('$lifecycle, a generation-1 session Ended $reason ($end), spec edited: $edited -> finished: $finished', ({ reason, end, lifecycle, edited, finished }) => {
    // an instance end is of an instance that went; the pod targeted now is its successor
    const ended = session({ id: 's1', podUID: end === 'instance' ? OLD : CURRENT, generation: 1, startTime: at(5), endTime: at(1), endReason: reason });
    const { agentCaptures, completed } = decisions(ofGeneration(lifecycle, edited, [ended]));
    expect({ agentCaptures, completed }).toEqual({ agentCaptures: !finished, completed: finished });
  });

  it.each(rows)('the node record alone decides the same: $lifecycle, $reason, spec edited: $edited -> finished: $finished', ({ reason, end, lifecycle, edited, finished }) => {
    const ended = session({ id: 's1', podUID: end === 'instance' ? OLD : CURRENT, generation: 1, startTime: at(5), endTime: at(1), endReason: reason });
    const { agentCaptures, completed } = decisions(historyGone(ofGeneration(lifecycle, edited, [ended])));
    expect({ agentCaptures, completed }).toEqual({ agentCaptures: !finished, completed: finished });
  });

  it.each(FAILURES.flatMap((reason) => LIFECYCLES.map((lifecycle) => ({ reason, lifecycle }))))(
    '$lifecycle, a session Failed $reason finishes nothing',
    ({ reason, lifecycle }) => {
      const failed = session({ id: 's1', podUID: CURRENT, state: 'Failed', reason, startTime: at(5), endTime: at(1) });
      expect(decisions(ofGeneration(lifecycle, false, [failed]))).toMatchObject({ agentCaptures: true, completed: false });
    },
  );

  describe('limits.duration counts from the first session start of the current generation', () => {
    const limits = { duration: '10m' };

    it.each(LIFECYCLES)('%s: ran out for the generation it started in', (lifecycle) => {
      const first = session({ id: 's1', podUID: CURRENT, state: 'Running', startTime: at(11) });
      expect(decisions(ofGeneration(lifecycle, false, [first], limits))).toMatchObject({ agentCaptures: false, completed: true });
    });

    it.each(LIFECYCLES)('%s: an edit restarts the clock, at the new generation\'s first session', (lifecycle) => {
      const before = session({ id: 's1', podUID: CURRENT, generation: 1, startTime: at(30), endTime: at(3), endReason: REASONS.SpecChanged });
      expect(decisions(ofGeneration(lifecycle, true, [before], limits))).toEqual({ agentCaptures: true, completed: false, nextDecisionAt: undefined });

      const after = session({ id: 's2', podUID: CURRENT, generation: 2, state: 'Running', startTime: at(2) });
      const pc = ofGeneration(lifecycle, true, [before, after], limits);
      const { nextDecisionAt, ...decided } = decisions(pc);
      expect(decided).toEqual({ agentCaptures: true, completed: false });
      // the agent's own timer ends its session when the controller expects the capture to end
      const [identity] = identities(snapshot(pc), snapshot(pod({ uid: CURRENT })), NODE, NOW).values();
      expect(Date.parse(identity!.firstStartTime!) + 10 * 60_000).toBe(nextDecisionAt);
      expect(nextDecisionAt).toBe(NOW + 8 * 60_000);
      expect(decisions(historyGone(pc)).nextDecisionAt).toBe(NOW + 8 * 60_000);
    });

    it.each(LIFECYCLES)('%s: the clock keeps its start when the first session drops out of the history', (lifecycle) => {
      const first = session({ id: 's1', podUID: OLD, startTime: at(11), endTime: at(9), endReason: REASONS.PodReplaced });
      const later = session({ id: 's2', podUID: CURRENT, state: 'Running', startTime: at(9) });
      const record = [first, later].reduce<NodeRecord | undefined>(recordSession, undefined)!;
      const pc = ofGeneration(lifecycle, false, [later], limits);
      const trimmed = { ...pc, status: { ...pc.status, nodes: [record] } };
      // under Once the replaced pod ended it anyway; under Follow only the recorded start does
      expect(decisions(trimmed)).toMatchObject({ agentCaptures: false, completed: true });
    });
  });
});

describe('recordSession', () => {
  const limited = session({ id: 's1', podUID: CURRENT, startTime: at(5), endTime: at(4), endReason: REASONS.PacketLimit });

  it('keeps the earliest start, each limited instance once, and the first instance end', () => {
    const replaced = session({ id: 's0', podUID: OLD, startTime: at(9), endTime: at(6), endReason: REASONS.PodReplaced });
    const record = [replaced, limited, { ...limited, id: 's2', startTime: at(3) }].reduce<NodeRecord | undefined>(recordSession, undefined);
    expect(record).toEqual({
      nodeName: NODE,
      generation: 1,
      firstStartTime: at(9),
      limitedPods: [CURRENT],
      firstEnd: { podUID: OLD, podName: 'web-0', endReason: REASONS.PodReplaced },
    });
  });

  it('records nothing of an interruption but its start', () => {
    const restarted = session({ id: 's1', podUID: CURRENT, startTime: at(5), endTime: at(4), endReason: REASONS.AgentRestart });
    expect(recordSession(undefined, restarted)).toEqual({ nodeName: NODE, generation: 1, firstStartTime: at(5) });
  });

  it('starts over for a newer generation and ignores an older one', () => {
    const old = recordSession(undefined, limited);
    const newer = session({ id: 's3', podUID: CURRENT, generation: 2, state: 'Running', startTime: at(1) });
    const record = recordSession(old, newer);
    expect(record).toEqual({ nodeName: NODE, generation: 2, firstStartTime: at(1) });
    expect(recordSession(record, limited)).toBe(record);
  });
});
