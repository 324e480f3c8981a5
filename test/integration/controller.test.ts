// The controller in-process against the real API server: targets follow pod instances by
// UID, status follows kstatus, and nothing is written when nothing changes. The tests play
// kubelet and agents (test/integration/controller-support.ts).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTROLLER_FIELD_MANAGER, FINALIZER, REASONS, type PacketCapture, type TargetStatus } from '../../crds/packetcapture.ts';
import { kstatus } from '../../controller/kstatus.ts';
import { runController, type ControllerHandle } from '../../controller/main.ts';
import { watchSnapshots } from '../../kube/watch.ts';
import { controlPlaneAvailable, useNamespace } from '../support/cluster.ts';
import { condition, Fixture, memoryLogger, runningSession, WAIT } from './controller-support.ts';

describe.runIf(controlPlaneAvailable)('controller: targets, status and events', () => {
  const ns = useNamespace('controller');
  const nodeA = `${ns.name}-a`;
  const nodeB = `${ns.name}-b`;
  let f: Fixture;
  let ctl: ControllerHandle;
  const logged = memoryLogger();
  const stopAgents: (() => void)[] = [];

  beforeAll(async () => {
    f = await Fixture.withNodes(ns.name, [nodeA, nodeB]);
    // the test namespace doubles as the system namespace: agent Leases live here
    stopAgents.push(await f.keepAgentAlive(ns.name, nodeA), await f.keepAgentAlive(ns.name, nodeB));
    ctl = await runController({
      kubeConfig: f.kc,
      namespace: ns.name,
      watchNamespace: ns.name,
      leaderElect: false,
      log: logged.log,
      resyncMs: 1_000,
      metricsPort: 0,
    });
    await ctl.ready;
  });

  afterAll(async () => {
    for (const stopAgent of stopAgents) stopAgent();
    await ctl?.stop();
    await f?.deleteNode(nodeA);
    await f?.deleteNode(nodeB);
  });

  it('a capture created before its pod is Pending/PodNotFound, then resolves when the pod appears', async () => {
    await f.createCapture('early', { target: { podName: 'late-0' } });
    const pending = await f.waitCapture('early', (c) => {
      expect(c.status?.observedGeneration).toBe(1);
      expect(c.status?.phase).toBe('Pending');
      expect(condition(c, 'TargetResolved')).toMatchObject({ status: 'False', reason: REASONS.PodNotFound });
      expect(c.metadata.finalizers).toContain(FINALIZER);
    });
    expect(kstatus(pending).status).toBe('InProgress');
    // no pod of that name was ever seen: likely a typo, worth a Warning in `kubectl describe`
    const warning = await f.waitEvent('early', REASONS.PodNotFound);
    expect(warning).toMatchObject({ type: 'Warning' });
    expect(warning.message).toContain('pod late-0 not found');

    const pod = await f.startPod('late-0', '10.244.1.10', { node: nodeA });
    await f.waitCapture('early', (c) => {
      expect(c.status?.targets).toEqual([{ podName: 'late-0', podUID: pod.metadata.uid, nodeName: nodeA, podIP: '10.244.1.10' }]);
      expect(condition(c, 'TargetResolved')).toMatchObject({ status: 'True', reason: REASONS.PodFound });
    });
    const event = await f.waitEvent('early', REASONS.TargetResolved);
    expect(event.message).toContain(pod.metadata.uid);
  });

  it('a pod recreated with the same name moves the target to the new UID, never holding both', async () => {
    const seen: TargetStatus[][] = [];
    const watching = watchSnapshots<PacketCapture>(f.kc, { path: `/apis/packetcapture.dev/v1alpha1/namespaces/${ns.name}/packetcaptures`, fieldSelector: 'metadata.name=follow' }).subscribe(
      (snap) => {
        for (const c of snap.values()) seen.push(c.status?.targets ?? []);
      },
    );
    try {
      const first = await f.startPod('web-0', '10.244.1.20', { node: nodeA });
      await f.createCapture('follow', { target: { podName: 'web-0' } });
      await f.waitCapture('follow', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(first.metadata.uid));

      // terminating: no kubelet finishes it, so the old instance lingers with a deletionTimestamp
      await f.deletePod('web-0', 30);
      await f.waitCapture('follow', (c) => {
        // an empty list-map is not stored: no targets reads back as an absent field
        expect(c.status?.targets ?? []).toEqual([]);
        expect(condition(c, 'TargetResolved')?.reason).toBe(REASONS.PodTerminating);
      });
      await f.deletePod('web-0', 0);
      await f.waitPodGone('web-0');

      const second = await f.startPod('web-0', '10.244.2.20', { node: nodeB });
      const moved = await f.waitCapture('follow', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(second.metadata.uid));
      expect(moved.status?.targets).toEqual([{ podName: 'web-0', podUID: second.metadata.uid, nodeName: nodeB, podIP: '10.244.2.20' }]);

      const replaced = await f.waitEvent('follow', REASONS.PodReplaced);
      expect(replaced.message).toContain(first.metadata.uid);
      expect(replaced.message).toContain(second.metadata.uid);
      expect(seen.every((targets) => targets.length <= 1)).toBe(true);
      expect(seen.flat().map((t) => t.podUID)).toContain(first.metadata.uid);
    } finally {
      watching.unsubscribe();
    }
  });

  it('the IP of a deleted pod handed to a different pod never makes that pod a target', async () => {
    const ip = '10.244.1.30';
    const original = await f.startPod('db-0', ip, { node: nodeA });
    await f.createCapture('by-name', { target: { podName: 'db-0' } });
    await f.waitCapture('by-name', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(original.metadata.uid));

    await f.deletePod('db-0', 0);
    await f.waitCapture('by-name', (c) => expect(condition(c, 'TargetResolved')?.reason).toBe(REASONS.PodNotFound));
    const intruder = await f.startPod('intruder', ip, { node: nodeA, labels: { role: 'intruder' } });
    // a second capture proves the controller has seen the intruder running with the old IP
    await f.createCapture('witness', { target: { podSelector: { matchLabels: { role: 'intruder' } } } });
    await f.waitCapture('witness', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(intruder.metadata.uid));

    const byName = await f.getCapture('by-name');
    expect(byName.status?.targets ?? []).toEqual([]);
    expect(condition(byName, 'TargetResolved')?.reason).toBe(REASONS.PodNotFound);
    // a pod that was a target and is gone is no typo: no Warning for it
    expect((await f.events('by-name')).map((e) => e.reason)).not.toContain(REASONS.PodNotFound);
  });

  it('selector targets follow pods joining and leaving the selector', async () => {
    const uids = (c: PacketCapture) => (c.status?.targets ?? []).map((t) => t.podName);
    await f.createCapture('shop', { target: { podSelector: { matchLabels: { app: 'shop' } } } });
    await f.waitCapture('shop', (c) => expect(condition(c, 'TargetResolved')?.reason).toBe(REASONS.NoMatchingPods));

    await f.startPod('shop-a', '10.244.1.40', { node: nodeA, labels: { app: 'shop' } });
    await f.startPod('shop-b', '10.244.2.41', { node: nodeB, labels: { app: 'shop' } });
    await f.waitCapture('shop', (c) => expect(uids(c)).toEqual(['shop-a', 'shop-b']));

    await f.createPod('shop-c', { node: nodeA, labels: { app: 'shop' } });
    await f.waitCapture('shop', (c) => expect(condition(c, 'TargetResolved')?.message).toContain('shop-c (PodNotRunning)'));

    await f.labelPod('shop-b', { app: 'elsewhere' });
    await f.waitCapture('shop', (c) => expect(uids(c)).toEqual(['shop-a']));

    await f.labelPod('shop-b', { app: 'shop' });
    await f.deletePod('shop-a');
    await f.waitCapture('shop', (c) => expect(uids(c)).toEqual(['shop-b']));
  });

  it('a spec edit bumps the generation, observedGeneration follows, and kstatus follows the rules', async () => {
    const pod = await f.startPod('api-0', '10.244.1.50', { node: nodeA });
    await f.createCapture('gen', { target: { podName: 'api-0' }, filter: { port: 80 } });
    const starting = await f.waitCapture('gen', (c) => expect(condition(c, 'Capturing')?.reason).toBe(REASONS.SessionsStarting));
    expect(kstatus(starting).status).toBe('InProgress');

    await f.reportSessions('gen', nodeA, [runningSession('api-0', pod.metadata.uid, nodeA, 1)]);
    const current = await f.waitCapture('gen', (c) => expect(condition(c, 'Ready')?.status).toBe('True'));
    expect(kstatus(current).status).toBe('Current');
    expect(current.status?.phase).toBe('Capturing');
    expect(condition(current, 'Reconciling')).toBeUndefined();

    const edited = await f.patchSpec('gen', { filter: { port: 443 } });
    expect(edited.metadata.generation).toBe(2);
    const regen = await f.waitCapture('gen', (c) => expect(c.status?.observedGeneration).toBe(2));
    // the running session belongs to generation 1: the agent has to restart it
    expect(kstatus(regen).status).toBe('InProgress');
    expect(condition(regen, 'Ready')).toMatchObject({ status: 'False', observedGeneration: 2 });

    await f.reportSessions('gen', nodeA, [runningSession('api-0', pod.metadata.uid, nodeA, 2)]);
    expect(kstatus(await f.waitCapture('gen', (c) => expect(condition(c, 'Ready')?.status).toBe('True'))).status).toBe('Current');

    await f.patchSpec('gen', { filter: { bpf: 'tcp[[[' } });
    await f.reportSessions('gen', nodeA, [
      runningSession('api-0', pod.metadata.uid, nodeA, 3, { state: 'Failed', reason: REASONS.InvalidFilter, message: 'syntax error' }),
    ]);
    const failed = await f.waitCapture('gen', (c) => expect(c.status?.phase).toBe('Failed'));
    expect(kstatus(failed).status).toBe('Failed');
    expect(condition(failed, 'Stalled')).toMatchObject({ status: 'True', reason: REASONS.InvalidFilter });
    await f.waitEvent('gen', REASONS.CaptureFailed);
  });

  it('writes no status while nothing changes, even as unrelated pods change', async () => {
    const pod = await f.startPod('quiet-0', '10.244.1.60', { node: nodeA });
    await f.createCapture('quiet', { target: { podName: 'quiet-0' } });
    await f.reportSessions('quiet', nodeA, [runningSession('quiet-0', pod.metadata.uid, nodeA)]);
    const settled = await f.waitCapture('quiet', (c) => expect(condition(c, 'Ready')?.status).toBe('True'));
    type ManagedFields = { manager: string; subresource?: string; time?: string }[];
    const controllerFields = (c: PacketCapture) =>
      (c.metadata as { managedFields?: ManagedFields }).managedFields?.find(
        (m) => m.manager === CONTROLLER_FIELD_MANAGER && m.subresource === 'status',
      );
    const writesBefore = ctl.statusWrites();

    // several resyncs (1s) and pod events, while this capture's world stays the same
    const other = await f.startPod('noise-0', '10.244.2.61', { node: nodeB });
    for (let i = 0; i < 5; i++) {
      await f.labelPod('noise-0', { round: String(i) });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    await f.deletePod(other.metadata.name);

    const after = await f.getCapture('quiet');
    expect(after.metadata.resourceVersion).toBe(settled.metadata.resourceVersion);
    expect(controllerFields(after)).toEqual(controllerFields(settled));
    expect(ctl.statusWrites()).toBe(writesBefore);
  }, WAIT.timeout * 2);
  it('serves /healthz, /readyz and /metrics, and logs decisions with namespace, name and podUID', async () => {
    const get = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${ctl.port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    expect(await get('/healthz')).toEqual({ status: 200, body: 'ok' });
    expect(await get('/readyz')).toEqual({ status: 200, body: 'ok' });
    const metrics = (await get('/metrics')).body;
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
    // the recreation test above replaced web-0 once
    expect(value('packet_capture_controller_pod_replacements_total')).toBeGreaterThanOrEqual(1);
    expect(value('packet_capture_controller_reconciles_total\\{result="success"\\}')).toBeGreaterThan(0);
    expect(value('packet_capture_controller_status_writes_total')).toBe(ctl.statusWrites());
    expect(metrics).toMatch(/^packet_capture_controller_captures\{phase="Failed"\} 1$/m);
    expect(metrics).toContain('packet_capture_controller_reconcile_duration_seconds_bucket');

    const replaced = logged.lines.find((l) => l.reason === REASONS.PodReplaced);
    expect(replaced).toMatchObject({ namespace: ns.name, name: 'follow', podUID: expect.any(String) });
  });
});
