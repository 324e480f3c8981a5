import { describe, expect, it } from 'vitest';
import { FINALIZER, REASONS } from '../../crds/packetcapture.ts';
import { liveAgentNodes, nextAgentExpiry } from '../../controller/agents.ts';
import { phaseEvents, problemEvents, seedLineage, targetEvents, LINEAGE_LIMIT } from '../../controller/events.ts';
import { decideFinalizer, withFinalizer } from '../../controller/finalizer.ts';
import type { ControllerStatus } from '../../controller/conditions.ts';
import { agentLease, capture, session } from './controller-fixtures.ts';

const t = (podName: string, podUID: string, nodeName = 'node-a', podIP?: string) => ({ podName, podUID, nodeName, ...(podIP ? { podIP } : {}) });

describe('targetEvents', () => {
  it('announces a first instance as TargetResolved', () => {
    const { events } = targetEvents([], [t('web-0', 'u1', 'node-a', '10.0.0.5')]);
    expect(events).toEqual([
      expect.objectContaining({ type: 'Normal', reason: REASONS.TargetResolved, podUID: 'u1', message: expect.stringContaining('10.0.0.5') }),
    ]);
  });

  it('names both UIDs when a pod name moves to a new instance, and the node it moved to', () => {
    const first = targetEvents([], [t('web-0', 'old', 'node-a')]);
    const { events } = targetEvents(first.lineage, [t('web-0', 'new', 'node-b')]);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ reason: REASONS.PodReplaced, podUID: 'new' });
    expect(events[0]!.message).toBe('pod web-0 replaced: old UID old → new UID new (moved from node node-a to node-b)');
  });

  it('recognises a replacement across a gap without targets', () => {
    const first = targetEvents([], [t('web-0', 'old')]);
    const gap = targetEvents(first.lineage, []);
    expect(gap.events).toEqual([]);
    expect(targetEvents(gap.lineage, [t('web-0', 'new')]).events.map((e) => e.reason)).toEqual([REASONS.PodReplaced]);
  });

  it('says nothing when the same instances are targets again', () => {
    const first = targetEvents([], [t('web-0', 'u1'), t('web-1', 'u2')]);
    expect(targetEvents(first.lineage, [t('web-1', 'u2'), t('web-0', 'u1')]).events).toEqual([]);
  });

  it('forgets the least recently targeted names beyond its bound', () => {
    let lineage = targetEvents([], [t('keep', 'k1')]).lineage;
    for (let i = 0; i < LINEAGE_LIMIT; i++) lineage = targetEvents(lineage, [t(`churn-${i}`, `c${i}`)]).lineage;
    expect(lineage.length).toBe(LINEAGE_LIMIT);
    expect(lineage.some((t) => t.podName === 'keep')).toBe(false);
    expect(lineage.at(-1)?.podName).toBe(`churn-${LINEAGE_LIMIT - 1}`);
  });

  it('is seeded from the current targets, else the newest session per name', () => {
    const lineage = seedLineage({
      targets: [t('web-0', 'current')],
      sessions: [
        session('web-0', 'older', { startTime: '2026-01-01T00:00:00Z' }),
        session('web-1', 'a', { startTime: '2026-01-01T00:00:00Z' }),
        session('web-1', 'b', { startTime: '2026-01-01T00:01:00Z' }),
      ],
    });
    expect(lineage.find((t) => t.podName === 'web-0')?.podUID).toBe('current');
    expect(lineage.find((t) => t.podName === 'web-1')?.podUID).toBe('b');
  });
});

describe('phaseEvents', () => {
  const status = (phase: ControllerStatus['phase'], message = 'm'): ControllerStatus => ({
    observedGeneration: 1,
    phase,
    targets: [],
    conditions: [{ type: 'Ready', status: 'True', reason: 'x', message, lastTransitionTime: '2026-01-01T00:00:00Z' }],
  });
  it.each([
    ['Capturing', 'Completed', [REASONS.CaptureCompleted]],
    ['Capturing', 'Failed', [REASONS.CaptureFailed]],
    ['Completed', 'Completed', []],
    ['Pending', 'Capturing', []],
  ] as const)('%s → %s', (from, to, reasons) => {
    expect(phaseEvents(status(from), status(to)).map((e) => e.reason)).toEqual(reasons);
  });
});

describe('problemEvents', () => {
  const status = (ready: { status: 'True' | 'False'; reason: string }, phase: ControllerStatus['phase'] = 'Pending'): ControllerStatus => ({
    observedGeneration: 1,
    phase,
    targets: [],
    conditions: [{ type: 'Ready', ...ready, message: `because ${ready.reason}`, lastTransitionTime: '2026-01-01T00:00:00Z' }],
  });
  const notReady = (reason: string) => status({ status: 'False', reason });

  it.each([
    ['a netns that cannot be found', notReady(REASONS.SessionsStarting), notReady(REASONS.NetnsNotFound), true, [REASONS.NetnsNotFound]],
    ['a hostNetwork pod', status({ status: 'True', reason: REASONS.SessionsRunning }, 'Capturing'), notReady(REASONS.HostNetwork), true, [REASONS.HostNetwork]],
    ['tcpdump missing, first status', undefined, notReady(REASONS.TcpdumpMissing), false, [REASONS.TcpdumpMissing]],
    ['a full disk', notReady(REASONS.NetnsNotFound), notReady(REASONS.DiskFull), true, [REASONS.DiskFull]],
    ['no agent on the node', notReady(REASONS.SessionsStarting), notReady(REASONS.NoNodeAgent), true, [REASONS.NoNodeAgent]],
    ['the same problem written again', notReady(REASONS.NetnsNotFound), notReady(REASONS.NetnsNotFound), true, []],
    ['a pod that never existed', undefined, notReady(REASONS.PodNotFound), false, [REASONS.PodNotFound]],
    ['a pod gone while it is recreated', notReady(REASONS.PodTerminating), notReady(REASONS.PodNotFound), true, []],
    ['waiting for a pod to run', notReady(REASONS.PodNotFound), notReady(REASONS.PodNotRunning), false, []],
    ['a failed capture (CaptureFailed says it)', notReady(REASONS.SessionsStarting), status({ status: 'False', reason: REASONS.InvalidFilter }, 'Failed'), true, []],
    ['recovery', notReady(REASONS.NetnsNotFound), status({ status: 'True', reason: REASONS.SessionsRunning }, 'Capturing'), true, []],
  ] as const)('%s', (_case, from, to, everTargeted, reasons) => {
    const events = problemEvents(from, to, everTargeted);
    expect(events.map((e) => e.reason)).toEqual(reasons);
    for (const e of events) expect(e).toMatchObject({ type: 'Warning', message: `because ${e.reason}` });
  });
});

describe('liveAgentNodes', () => {
  const now = Date.parse('2026-01-01T00:01:00Z');
  it('counts an agent whose lease was renewed within its duration', () => {
    const leases = [agentLease('fresh', '2026-01-01T00:00:45Z'), agentLease('stale', '2026-01-01T00:00:20Z')];
    expect([...liveAgentNodes(leases, now)]).toEqual(['fresh']);
    expect(nextAgentExpiry(leases, now)).toBe(Date.parse('2026-01-01T00:01:15Z'));
  });
});

describe('decideFinalizer', () => {
  const deletedAt = '2026-01-01T00:00:00Z';
  const T = Date.parse(deletedAt);
  const opts = { agentGoneGraceMs: 30_000, maxWaitMs: 300_000 };
  const deleted = (sessions = [session('web-0', 'u1', { nodeName: 'node-a' })]) =>
    capture({ target: { podName: 'web-0' } }, { finalizers: ['other', FINALIZER], deletionTimestamp: deletedAt, status: { sessions } });

  it('adds the finalizer to a live capture that lacks it, and leaves one that has it', () => {
    expect(decideFinalizer(capture({ target: { podName: 'web-0' } }), new Set(), T, opts)).toEqual({ action: 'add' });
    expect(decideFinalizer(capture({ target: { podName: 'w' } }, { finalizers: [FINALIZER] }), new Set(), T, opts)).toEqual({ action: 'none' });
  });

  it('releases a deleted capture once no session runs', () => {
    const c = deleted([session('web-0', 'u1', { state: 'Ended', endReason: 'CaptureDeleted' })]);
    expect(decideFinalizer(c, new Set(['node-a']), T + 1000, opts)).toMatchObject({ action: 'release' });
  });

  it('waits for a live agent to stop its session', () => {
    expect(decideFinalizer(deleted(), new Set(['node-a']), T + 60_000, opts)).toMatchObject({
      action: 'wait',
      reason: REASONS.CaptureDeleting,
      nextDecisionAt: T + 300_000,
    });
  });

  it('waits a bounded time for a gone agent, saying so, then releases', () => {
    expect(decideFinalizer(deleted(), new Set(), T + 10_000, opts)).toMatchObject({
      action: 'wait',
      reason: REASONS.AgentGone,
      nextDecisionAt: T + 30_000,
    });
    expect(decideFinalizer(deleted(), new Set(), T + 30_000, opts)).toMatchObject({ action: 'release', reason: REASONS.AgentGone });
  });

  it('gives up on a live agent that never confirms, so namespace deletion cannot hang', () => {
    expect(decideFinalizer(deleted(), new Set(['node-a']), T + 300_000, opts)).toMatchObject({ action: 'release' });
  });

  it('does nothing for a deleted capture without our finalizer', () => {
    const c = capture({ target: { podName: 'web-0' } }, { deletionTimestamp: deletedAt });
    expect(decideFinalizer(c, new Set(), T, opts)).toEqual({ action: 'none' });
  });

  it('edits only its own entry of metadata.finalizers', () => {
    expect(withFinalizer(['a', FINALIZER, 'b'], false)).toEqual(['a', 'b']);
    expect(withFinalizer(['a'], true)).toEqual(['a', FINALIZER]);
    expect(withFinalizer([FINALIZER], true)).toEqual([FINALIZER]);
    expect(withFinalizer(undefined, true)).toEqual([FINALIZER]);
  });
});
