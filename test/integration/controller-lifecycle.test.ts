// How a capture ends: completion by limits or lifecycle, and deletion held by the
// finalizer until no agent reports a running session (bounded when the agent is gone).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASONS } from '../../crds/packetcapture.ts';
import { kstatus } from '../../controller/kstatus.ts';
import { runController, type ControllerHandle } from '../../controller/main.ts';
import { cluster, controlPlaneAvailable, installCrds, useNamespace } from '../support/cluster.ts';
import { condition, Fixture, memoryLogger, runningSession } from './controller-support.ts';

describe.runIf(controlPlaneAvailable)('controller: completion and deletion', () => {
  const ns = useNamespace('controller-life');
  const nodeA = `${ns.name}-a`;
  /** a node whose agent stopped renewing its Lease long ago */
  const nodeGone = `${ns.name}-gone`;
  /** a node that never had an agent */
  const nodeBare = `${ns.name}-bare`;
  let f: Fixture;
  let ctl: ControllerHandle;
  let stopAgent = () => {};

  beforeAll(async () => {
    const { kubeConfig } = cluster();
    f = new Fixture(kubeConfig, ns.name);
    await installCrds(kubeConfig);
    for (const n of [nodeA, nodeGone, nodeBare]) await f.createNode(n);
    stopAgent = await f.keepAgentAlive(ns.name, nodeA);
    await f.agentLease(ns.name, nodeGone, Date.now() - 600_000);
    ctl = await runController({
      kubeConfig,
      namespace: ns.name,
      watchNamespace: ns.name,
      leaderElect: false,
      log: memoryLogger().log,
      resyncMs: 1_000,
      // deletionTimestamp has whole seconds, so up to 1 s of the grace is gone before it starts;
      // the rest must leave the wait long enough to be seen by a poll on a loaded machine
      finalizer: { agentGoneGraceMs: 10_000 },
    });
    await ctl.ready;
  });

  afterAll(async () => {
    stopAgent();
    await ctl?.stop();
    for (const n of [nodeA, nodeGone, nodeBare]) await f?.deleteNode(n);
  });

  it('a target on a node without an agent is NoNodeAgent', async () => {
    await f.startPod('bare-0', '10.244.3.10', { node: nodeBare });
    await f.createCapture('bare', { target: { podName: 'bare-0' } });
    const c = await f.waitCapture('bare', (c) => expect(condition(c, 'Capturing')?.reason).toBe(REASONS.NoNodeAgent));
    expect(condition(c, 'Capturing')?.message).toContain(nodeBare);
    expect(kstatus(c).status).toBe('InProgress');
    const warning = await f.waitEvent('bare', REASONS.NoNodeAgent);
    expect(warning).toMatchObject({ type: 'Warning' });
    expect(warning.message).toContain(`no agent on node ${nodeBare}`);
  });

  it('limits.duration completes the capture, counted from the first session start', async () => {
    const pod = await f.startPod('timed-0', '10.244.1.11', { node: nodeA });
    await f.createCapture('timed', { target: { podName: 'timed-0' }, limits: { duration: '3s' } });
    await f.reportSessions('timed', nodeA, [runningSession('timed-0', pod.metadata.uid, nodeA)]);
    await f.waitCapture('timed', (c) => expect(c.status?.phase).toBe('Capturing'));
    const done = await f.waitCapture('timed', (c) => expect(c.status?.phase).toBe('Completed'));
    expect(condition(done, 'Ready')).toMatchObject({ status: 'True', reason: REASONS.CaptureCompleted });
    expect(kstatus(done).status).toBe('Current');
    const event = await f.waitEvent('timed', REASONS.CaptureCompleted);
    expect(event.message).toContain('limits.duration 3s');
  });

  it('lifecycle Once completes when the first instance capture ends', async () => {
    const pod = await f.startPod('once-0', '10.244.1.12', { node: nodeA });
    await f.createCapture('once', { target: { podName: 'once-0' }, lifecycle: 'Once' });
    await f.reportSessions('once', nodeA, [runningSession('once-0', pod.metadata.uid, nodeA)]);
    await f.waitCapture('once', (c) => expect(c.status?.phase).toBe('Capturing'));
    await f.deletePod('once-0');
    await f.reportSessions('once', nodeA, [
      runningSession('once-0', pod.metadata.uid, nodeA, 1, { state: 'Ended', endReason: REASONS.PodDeleted, endTime: new Date().toISOString() }),
    ]);
    await f.waitCapture('once', (c) => expect(c.status?.phase).toBe('Completed'));
    // a new instance does not reopen a completed Once capture
    await f.startPod('once-0', '10.244.1.13', { node: nodeA });
    const after = await f.waitCapture('once', (c) => expect(c.status?.targets).toHaveLength(1));
    expect(after.status?.phase).toBe('Completed');
  });

  it('maxPackets completion is taken from the sessions the agents report', async () => {
    const pod = await f.startPod('limit-0', '10.244.1.14', { node: nodeA });
    await f.createCapture('limit', { target: { podName: 'limit-0' }, limits: { maxPackets: 5 } });
    await f.reportSessions('limit', nodeA, [
      runningSession('limit-0', pod.metadata.uid, nodeA, 1, { state: 'Ended', endReason: REASONS.PacketLimit, packets: 5 }),
    ]);
    const done = await f.waitCapture('limit', (c) => expect(c.status?.phase).toBe('Completed'));
    expect(condition(done, 'Ready')?.message).toContain('maxPackets');
  });

  it('a deleted capture is held until its agent reports the session stopped', async () => {
    const pod = await f.startPod('held-0', '10.244.1.15', { node: nodeA });
    await f.createCapture('held', { target: { podName: 'held-0' } });
    await f.reportSessions('held', nodeA, [runningSession('held-0', pod.metadata.uid, nodeA)]);
    await f.waitCapture('held', (c) => expect(condition(c, 'Ready')?.status).toBe('True'));

    await f.deleteCapture('held');
    const deleting = await f.waitCapture('held', (c) => expect(condition(c, 'Reconciling')?.reason).toBe(REASONS.CaptureDeleting));
    expect(deleting.metadata.deletionTimestamp).toBeDefined();
    expect(condition(deleting, 'Reconciling')?.message).toContain(nodeA);
    expect(kstatus(deleting).status).toBe('Terminating');

    await f.reportSessions('held', nodeA, [
      runningSession('held-0', pod.metadata.uid, nodeA, 1, { state: 'Ended', endReason: REASONS.CaptureDeleted, endTime: new Date().toISOString() }),
    ]);
    await f.waitCaptureGone('held');
  });

  it('a deleted capture whose agent is gone says so and is released after a bounded wait', async () => {
    const pod = await f.startPod('orphan-0', '10.244.4.16', { node: nodeGone });
    await f.createCapture('orphan', { target: { podName: 'orphan-0' } });
    await f.reportSessions('orphan', nodeGone, [runningSession('orphan-0', pod.metadata.uid, nodeGone)]);
    await f.waitCapture('orphan', (c) => expect(c.status?.sessions).toHaveLength(1));

    await f.deleteCapture('orphan');
    const waiting = await f.waitCapture('orphan', (c) => expect(condition(c, 'Reconciling')?.reason).toBe(REASONS.AgentGone));
    expect(condition(waiting, 'Reconciling')?.message).toContain(nodeGone);
    await f.waitCaptureGone('orphan');
    const released = await f.waitEvent('orphan', REASONS.AgentGone, (e) => /released the capture anyway/.test(e.message ?? ''));
    expect(released).toMatchObject({ type: 'Warning' });
    expect(released.message).toContain(nodeGone);
  });
});
