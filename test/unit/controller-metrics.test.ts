// Which targeted pods have no agent on their node (controller/metrics.ts): the derivation
// from the captures' status and the agents' presence Leases, and the gauge a scrape reads,
// which follows a Lease running out with no watch event.

import { describe, expect, it } from 'vitest';
import { ControllerMetrics, targetedPodsWithoutAgent } from '../../controller/metrics.ts';
import { REASONS, type Phase, type SessionStatus, type TargetStatus } from '../../crds/packetcapture.ts';
import { agentLease, capture, session, snapshot } from './controller-fixtures.ts';

const target = (podName: string, podUID: string, nodeName: string): TargetStatus => ({ podName, podUID, nodeName });

const targeting = (uid: string, phase: Phase, targets: TargetStatus[], sessions: SessionStatus[] = []) =>
  capture({ target: { podSelector: { matchLabels: { app: 'web' } } } }, { uid, name: uid, status: { phase, targets, sessions } });

describe('targetedPodsWithoutAgent', () => {
  it('counts the targeted pods on each node that has no live agent, and no node that has one', () => {
    const captures = [targeting('a', 'Pending', [target('web-0', 'u0', 'node-a'), target('web-1', 'u1', 'node-b'), target('web-2', 'u2', 'node-b')])];
    expect(targetedPodsWithoutAgent(captures, new Set(['node-a']))).toEqual(new Map([['node-b', 2]]));
    expect(targetedPodsWithoutAgent(captures, new Set(['node-a', 'node-b']))).toEqual(new Map());
  });

  it('counts a pod that two captures target once', () => {
    const both = [target('web-0', 'u0', 'node-b')];
    expect(targetedPodsWithoutAgent([targeting('a', 'Capturing', both), targeting('b', 'Pending', both)], new Set())).toEqual(new Map([['node-b', 1]]));
  });

  it('leaves out captures that need no agent any more (Completed, Failed) and instances that reached their limit', () => {
    const on = (uid: string) => [target(`pod-${uid}`, uid, 'node-b')];
    const limited = targeting('e', 'Capturing', on('e'), [session('pod-e', 'e', { state: 'Ended', endReason: REASONS.PacketLimit, nodeName: 'node-b' })]);
    const interrupted = targeting('f', 'Pending', on('f'), [session('pod-f', 'f', { state: 'Ended', endReason: REASONS.AgentShutdown, nodeName: 'node-b' })]);
    const captures = [targeting('c', 'Completed', on('c')), targeting('d', 'Failed', on('d')), limited, interrupted];
    expect(targetedPodsWithoutAgent(captures, new Set())).toEqual(new Map([['node-b', 1]]));
  });
});

describe('packet_capture_controller_targeted_pods_without_agent', () => {
  const scrape = async (metrics: ControllerMetrics) => {
    const metric = await metrics.registry.getSingleMetric('packet_capture_controller_targeted_pods_without_agent')!.get();
    return Object.fromEntries(metric.values.map((v) => [v.labels.target_node, v.value]));
  };

  it("is derived at each scrape, so a node appears once its agent's Lease runs out and goes once it is renewed", async () => {
    const clock = { now: Date.parse('2026-01-01T00:00:10Z') };
    const metrics = new ControllerMetrics({ now: () => clock.now });
    expect(await scrape(metrics)).toEqual({});

    const captures = snapshot(targeting('a', 'Capturing', [target('web-0', 'u0', 'node-a'), target('web-1', 'u1', 'node-b')]));
    metrics.observeWorld(captures, snapshot(agentLease('node-a', '2026-01-01T00:00:00Z'), agentLease('node-b', '2026-01-01T00:00:05Z')));
    expect(await scrape(metrics)).toEqual({});

    clock.now = Date.parse('2026-01-01T00:00:31Z');
    expect(await scrape(metrics)).toEqual({ 'node-a': 1 });

    metrics.observeWorld(captures, snapshot(agentLease('node-a', '2026-01-01T00:00:30Z'), agentLease('node-b', '2026-01-01T00:00:05Z')));
    clock.now = Date.parse('2026-01-01T00:00:40Z');
    expect(await scrape(metrics)).toEqual({ 'node-b': 1 });
  });
});

describe('captures by phase', () => {
  const byPhase = async (metrics: ControllerMetrics) => {
    const values = (await metrics.captures.get()).values;
    return Object.fromEntries(values.filter((v) => v.value > 0).map((v) => [v.labels.phase, v.value]));
  };

  it('follows the snapshots capture by capture, leaving captures included, and starts at zeros', async () => {
    const metrics = new ControllerMetrics();
    expect((await metrics.captures.get()).values.map((v) => v.value).every((n) => n === 0)).toBe(true);
    const a = targeting('a', 'Pending', []);
    const b = capture({ target: { podName: 'web-0' } }, { uid: 'b', name: 'b' });
    metrics.countPhases(snapshot(a, b));
    expect(await byPhase(metrics)).toEqual({ Pending: 1, Unknown: 1 });
    metrics.countPhases(snapshot(targeting('a', 'Capturing', []), b));
    expect(await byPhase(metrics)).toEqual({ Capturing: 1, Unknown: 1 });
    metrics.countPhases(snapshot(b));
    expect(await byPhase(metrics)).toEqual({ Unknown: 1 });
  });
});
