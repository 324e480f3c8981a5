import { describe, expect, it } from 'vitest';
import { CONDITIONS, REASONS, type PacketCapture, type PacketCaptureStatus, type SessionStatus } from '../../crds/packetcapture.ts';
import { carryTransitionTimes, deriveStatus, type ControllerStatus } from '../../controller/conditions.ts';
import { kstatus } from '../../controller/kstatus.ts';
import { resolveTargets } from '../../controller/targets.ts';
import { canonical } from '../../kube/status.ts';
import { capture, pod, session } from './controller-fixtures.ts';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const AGENTS = new Set(['node-a', 'node-b']);
const byName = (o: { generation?: number; status?: PacketCaptureStatus } & Partial<PacketCapture['spec']> = {}) => {
  const { generation, status, ...spec } = o;
  return capture({ target: { podName: 'web-0' }, ...spec }, { generation, status });
};

function derive(c: PacketCapture, pods = [pod('web-0', 'u1')], now = T0 + 60_000, agentNodes: ReadonlySet<string> = AGENTS) {
  return deriveStatus({ capture: c, resolution: resolveTargets(c, pods), now, agentNodes });
}

/** The object as the API server would show it after the controller wrote `status`. */
const written = (c: PacketCapture, status: ControllerStatus): PacketCapture => ({ ...c, status: { ...c.status, ...status } });

const cond = (s: ControllerStatus, type: string) => s.conditions.find((c) => c.type === type);
const summary = (s: ControllerStatus) => Object.fromEntries(s.conditions.map((c) => [c.type, `${c.status}/${c.reason}`]));

interface Case {
  name: string;
  capture: PacketCapture;
  pods?: ReturnType<typeof pod>[];
  agents?: ReadonlySet<string>;
  phase: string;
  conditions: Record<string, string>;
  kstatus: string;
}

const running = (s: Partial<SessionStatus> = {}) => session('web-0', 'u1', s);

describe('deriveStatus: phase, conditions and the kstatus verdict they give', () => {
  const cases: Case[] = [
    {
      name: 'a capture whose pod does not exist yet waits for it (InProgress)',
      capture: byName(),
      pods: [],
      phase: 'Pending',
      conditions: {
        Ready: 'False/PodNotFound',
        Reconciling: 'True/PodNotFound',
        TargetResolved: 'False/PodNotFound',
        Capturing: 'False/PodNotFound',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'a target on a node without an agent is NoNodeAgent (InProgress)',
      capture: byName(),
      agents: new Set(['node-b']),
      phase: 'Pending',
      conditions: {
        Ready: 'False/NoNodeAgent',
        Reconciling: 'True/NoNodeAgent',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/NoNodeAgent',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'a target without a session yet is SessionsStarting (InProgress)',
      capture: byName(),
      phase: 'Pending',
      conditions: {
        Ready: 'False/SessionsStarting',
        Reconciling: 'True/SessionsStarting',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/SessionsStarting',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'every target with a running session is Ready (Current)',
      capture: byName({ status: { sessions: [running()] } }),
      phase: 'Capturing',
      conditions: { Ready: 'True/SessionsRunning', TargetResolved: 'True/PodFound', Capturing: 'True/SessionsRunning' },
      kstatus: 'Current',
    },
    {
      name: 'a session of the previous generation does not count',
      capture: byName({ generation: 2, status: { sessions: [running({ generation: 1 })] } }),
      phase: 'Pending',
      conditions: {
        Ready: 'False/SessionsStarting',
        Reconciling: 'True/SessionsStarting',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/SessionsStarting',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'a recreated pod whose new instance has no session yet is PodReplaced',
      capture: byName({ status: { sessions: [session('web-0', 'u0', { state: 'Ended', endReason: 'PodReplaced' })] } }),
      phase: 'Pending',
      conditions: {
        Ready: 'False/PodReplaced',
        Reconciling: 'True/PodReplaced',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/PodReplaced',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'an agent failure that can recover keeps Reconciling, not Stalled',
      capture: byName({ status: { sessions: [running({ state: 'Failed', reason: 'NetnsNotFound', message: 'no netns' })] } }),
      phase: 'Pending',
      conditions: {
        Ready: 'False/NetnsNotFound',
        Reconciling: 'True/NetnsNotFound',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/NetnsNotFound',
      },
      kstatus: 'InProgress',
    },
    {
      name: 'a filter the agent rejects is Stalled until the spec changes (Failed)',
      capture: byName({ status: { sessions: [running({ state: 'Failed', reason: 'InvalidFilter', message: 'syntax error' })] } }),
      phase: 'Failed',
      conditions: {
        Ready: 'False/InvalidFilter',
        Stalled: 'True/InvalidFilter',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/InvalidFilter',
      },
      kstatus: 'Failed',
    },
    {
      name: 'an InvalidFilter of an older generation no longer counts',
      capture: byName({
        generation: 2,
        status: { sessions: [running({ generation: 1, state: 'Failed', reason: 'InvalidFilter' }), running({ generation: 2 })] },
      }),
      phase: 'Capturing',
      conditions: { Ready: 'True/SessionsRunning', TargetResolved: 'True/PodFound', Capturing: 'True/SessionsRunning' },
      kstatus: 'Current',
    },
    {
      name: 'a target with neither podName nor podSelector is Stalled',
      capture: capture({ target: {} }),
      phase: 'Failed',
      conditions: {
        Ready: 'False/InvalidSpec',
        Stalled: 'True/InvalidSpec',
        TargetResolved: 'False/InvalidSpec',
        Capturing: 'False/InvalidSpec',
      },
      kstatus: 'Failed',
    },
    {
      name: 'an unparsable duration is Stalled',
      capture: byName({ limits: { duration: 'ten minutes' } }),
      phase: 'Failed',
      conditions: {
        Ready: 'False/InvalidSpec',
        Stalled: 'True/InvalidSpec',
        TargetResolved: 'True/PodFound',
        Capturing: 'False/InvalidSpec',
      },
      kstatus: 'Failed',
    },
    {
      name: 'limits.duration elapsed since the first session started completes the capture (Current)',
      capture: byName({ limits: { duration: '30s' }, status: { sessions: [running({ startTime: '2026-01-01T00:00:10Z' })] } }),
      phase: 'Completed',
      conditions: { Ready: 'True/CaptureCompleted', TargetResolved: 'True/PodFound', Capturing: 'False/CaptureCompleted' },
      kstatus: 'Current',
    },
    {
      name: 'lifecycle Once completes when the first instance capture ends',
      capture: byName({ lifecycle: 'Once', status: { sessions: [session('web-0', 'u0', { state: 'Ended', endReason: 'PodDeleted' })] } }),
      pods: [],
      phase: 'Completed',
      conditions: { Ready: 'True/CaptureCompleted', TargetResolved: 'False/PodNotFound', Capturing: 'False/CaptureCompleted' },
      kstatus: 'Current',
    },
    {
      name: 'lifecycle Once is not completed by an agent restart',
      capture: byName({
        lifecycle: 'Once',
        status: { sessions: [running({ id: 'a', state: 'Ended', endReason: 'AgentRestart' }), running({ id: 'b' })] },
      }),
      phase: 'Capturing',
      conditions: { Ready: 'True/SessionsRunning', TargetResolved: 'True/PodFound', Capturing: 'True/SessionsRunning' },
      kstatus: 'Current',
    },
    {
      name: 'lifecycle Once is not completed by a session its pod\'s recreated sandbox ended (NetnsChanged)',
      capture: byName({
        lifecycle: 'Once',
        status: { sessions: [running({ id: 'a', state: 'Ended', endReason: 'NetnsChanged' }), running({ id: 'b', state: 'Pending', reason: 'NetnsNotFound' })] },
      }),
      phase: 'Pending',
      conditions: { Ready: 'False/NetnsNotFound', Reconciling: 'True/NetnsNotFound', TargetResolved: 'True/PodFound', Capturing: 'False/NetnsNotFound' },
      kstatus: 'InProgress',
    },
    {
      name: 'every target having reached maxPackets completes the capture',
      capture: byName({ limits: { maxPackets: 10 }, status: { sessions: [running({ state: 'Ended', endReason: 'PacketLimit' })] } }),
      phase: 'Completed',
      conditions: { Ready: 'True/CaptureCompleted', TargetResolved: 'True/PodFound', Capturing: 'False/CaptureCompleted' },
      kstatus: 'Current',
    },
  ];

  it.each(cases)('$name', (c) => {
    const { status } = derive(c.capture, c.pods, undefined, c.agents);
    expect(status.phase).toBe(c.phase);
    expect(summary(status)).toEqual(c.conditions);
    expect(status.observedGeneration).toBe(c.capture.metadata.generation);
    expect(kstatus(written(c.capture, status)).status).toBe(c.kstatus);
  });
});

describe('deriveStatus over time', () => {
  it('writes observedGeneration on first sight, before anything else is known', () => {
    const c = byName({ generation: 7 });
    const { status } = derive(c, []);
    expect(status.observedGeneration).toBe(7);
    expect(status.conditions.every((x) => x.observedGeneration === 7)).toBe(true);
  });

  it('an unobserved generation is InProgress whatever the conditions say', () => {
    const c = byName({ status: { sessions: [running()] } });
    const { status } = derive(c);
    const edited = { ...written(c, status), metadata: { ...c.metadata, generation: 2 } };
    expect(kstatus(edited)).toMatchObject({ status: 'InProgress', message: expect.stringContaining('generation is 2') });
  });

  it('re-deriving from its own output later changes nothing (no churn)', () => {
    const c = byName({ status: { sessions: [running()] } });
    const first = derive(c, undefined, T0 + 60_000).status;
    const again = derive(written(c, first), undefined, T0 + 3_600_000).status;
    expect(canonical(again)).toBe(canonical(first));
  });

  it('a derivation that reproduces the status is made of the status own objects, and one that changes a condition shares the rest', () => {
    const c = byName({ status: { sessions: [running()] } });
    const seen = written(c, derive(c).status);
    const again = derive(seen, undefined, T0 + 3_600_000).status;
    expect(again.conditions).toBe(seen.status!.conditions);
    expect(again.targets).toBe(seen.status!.targets);

    const stopped = { ...seen, status: { ...seen.status, sessions: [running({ state: 'Ended' })] } };
    const changed = derive(stopped, undefined, T0 + 3_600_000).status;
    expect(cond(changed, 'Ready')).not.toBe(cond(seen.status as ControllerStatus, 'Ready'));
    expect(cond(changed, 'TargetResolved')).toBe(cond(seen.status as ControllerStatus, 'TargetResolved'));
    expect(changed.targets).toBe(seen.status!.targets);
  });

  it('keeps lastTransitionTime when only the reason changes, and moves it when the status flips', () => {
    const c = byName();
    const waiting = derive(c, [], T0).status; // Ready False / PodNotFound
    const pending = derive(written(c, waiting), [pod('web-0', 'u1')], T0 + 10_000).status; // Ready False / SessionsStarting
    expect(cond(pending, 'Ready')).toMatchObject({ reason: REASONS.SessionsStarting, lastTransitionTime: '2026-01-01T00:00:00Z' });
    const withSession = { ...written(c, pending), status: { ...pending, sessions: [running()] } };
    const ready = derive(withSession, [pod('web-0', 'u1')], T0 + 20_000).status;
    expect(cond(ready, 'Ready')).toMatchObject({ status: 'True', lastTransitionTime: '2026-01-01T00:00:20Z' });
    expect(cond(ready, 'TargetResolved')?.lastTransitionTime).toBe('2026-01-01T00:00:10Z');
  });

  it('Reconciling is absent, not False, once the capture is Ready', () => {
    const c = byName({ status: { sessions: [running()] } });
    expect(cond(derive(c).status, CONDITIONS.Reconciling)).toBeUndefined();
    expect(cond(derive(c).status, CONDITIONS.Stalled)).toBeUndefined();
  });

  it('asks to be woken when limits.duration runs out', () => {
    const c = byName({ limits: { duration: '10m' }, status: { sessions: [running({ startTime: '2026-01-01T00:00:30Z' })] } });
    const d = derive(c, undefined, T0 + 60_000);
    expect(d.status.phase).toBe('Capturing');
    expect(d.nextDecisionAt).toBe(T0 + 30_000 + 600_000);
  });

  it('measures limits.duration from the first session, not from a later instance', () => {
    const c = byName({
      limits: { duration: '1m' },
      status: {
        sessions: [
          session('web-0', 'u0', { state: 'Ended', endReason: 'PodReplaced', startTime: '2026-01-01T00:00:00Z' }),
          running({ startTime: '2026-01-01T00:00:50Z' }),
        ],
      },
    });
    expect(derive(c, undefined, T0 + 61_000).status.phase).toBe('Completed');
  });

  it('stays Completed for its generation after the sessions that completed it drop out of history', () => {
    const c = byName({ limits: { duration: '30s' }, status: { sessions: [running()] } });
    const completed = derive(c, undefined, T0 + 60_000).status;
    expect(completed.phase).toBe('Completed');
    const later = { ...written(c, completed), status: { ...completed, sessions: [] } };
    expect(derive(later, undefined, T0 + 120_000).status.phase).toBe('Completed');
  });

  it('starts over when the spec changes after completion', () => {
    const c = byName({ limits: { duration: '30s' }, status: { sessions: [running()] } });
    const completed = derive(c, undefined, T0 + 60_000).status;
    const edited = { ...written(c, completed), metadata: { ...c.metadata, generation: 2 } };
    expect(derive(edited, undefined, T0 + 120_000).status).toMatchObject({ phase: 'Pending', observedGeneration: 2 });
  });

  it('a selector capture with one of two targets running is Capturing but not Ready', () => {
    const c = capture(
      { target: { podSelector: { matchLabels: { app: 'web' } } } },
      { status: { sessions: [session('web-a', 'u1')] } },
    );
    const pods = [pod('web-a', 'u1', { labels: { app: 'web' } }), pod('web-b', 'u2', { labels: { app: 'web' } })];
    const { status } = derive(c, pods);
    expect(status.phase).toBe('Capturing');
    expect(summary(status)).toMatchObject({ Ready: 'False/SessionsStarting', Reconciling: 'True/SessionsStarting' });
    expect(cond(status, 'Capturing')?.message).toContain('1 of 2');
  });

  it('a deleted capture says what it waits for, and kstatus reports Terminating', () => {
    const c = capture({ target: { podName: 'web-0' } }, { deletionTimestamp: '2026-01-01T00:00:30Z', status: { sessions: [running()] } });
    const { status } = deriveStatus({
      capture: c,
      resolution: resolveTargets(c, [pod('web-0', 'u1')]),
      now: T0 + 60_000,
      agentNodes: AGENTS,
      deletion: { reason: REASONS.CaptureDeleting, message: 'waiting for the agent on node-a' },
    });
    expect(summary(status)).toMatchObject({ Ready: 'False/CaptureDeleting', Reconciling: 'True/CaptureDeleting' });
    expect(kstatus(written(c, status)).status).toBe('Terminating');
  });
});

describe('carryTransitionTimes', () => {
  const cond = (type: string, status: 'True' | 'False', at: string) => ({ type, status, reason: 'R', message: 'm', lastTransitionTime: at });
  const desired = (conditions: ReturnType<typeof cond>[]) => ({ observedGeneration: 1, phase: 'Pending' as const, conditions, targets: [] });

  it('keeps the time of our last write while the snapshot has not caught up with it', () => {
    const out = carryTransitionTimes(desired([cond('Ready', 'False', 'T-now')]), undefined, [cond('Ready', 'False', 'T-written')]);
    expect(out.conditions[0]!.lastTransitionTime).toBe('T-written');
  });

  it('keeps the snapshot time when the snapshot already has the condition in that status', () => {
    const out = carryTransitionTimes(desired([cond('Ready', 'True', 'T-observed')]), [cond('Ready', 'True', 'T-observed')], [cond('Ready', 'True', 'T-older')]);
    expect(out.conditions[0]!.lastTransitionTime).toBe('T-observed');
  });

  it('stamps the new time when the condition flipped since our last write', () => {
    const out = carryTransitionTimes(desired([cond('Ready', 'True', 'T-now')]), [cond('Ready', 'False', 'T-a')], [cond('Ready', 'False', 'T-b')]);
    expect(out.conditions[0]!.lastTransitionTime).toBe('T-now');
  });
});
