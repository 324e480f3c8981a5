// Agents hear only what concerns their node: the controller labels each capture with the
// nodes of its pods (controller/placement.ts), and an agent's capture watch
// (agent/capture-scope.ts, the one the agent runs) selects on those labels. Real API
// server, real controller; the tests play kubelet and the agent's status writes.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Subscription } from 'rxjs';
import { nodeCaptures } from '../../agent/capture-scope.ts';
import { runController, type ControllerHandle } from '../../controller/main.ts';
import { nodeLabelKey, PLACED_LABEL } from '../../controller/placement.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import type { Snapshot } from '../../kube/watch.ts';
import { controlPlaneAvailable, useNamespace } from '../support/cluster.ts';
import { Fixture, memoryLogger, runningSession, WAIT } from './controller-support.ts';

/** One node's view as its agent has it, and every raw event its watches received, by capture UID. */
class NodeView {
  latest: Snapshot<PacketCapture> = new Map();
  /** both watches have listed: anything made after this reaches them as an event */
  listed = false;
  readonly events = new Map<string, string[]>();
  /** UIDs that were in the view once and later missing from it */
  readonly vanished = new Set<string>();
  private readonly subscription: Subscription;

  constructor(f: Fixture, node: string) {
    const onEvent = (type: string, obj: unknown) => {
      const c = obj as PacketCapture;
      if (type === 'BOOKMARK' || c.metadata?.namespace !== f.namespace) return;
      const list = this.events.get(c.metadata.uid) ?? [];
      list.push(type);
      this.events.set(c.metadata.uid, list);
    };
    this.subscription = nodeCaptures(f.kc, { node, onEvent }).subscribe((snapshot) => {
      for (const uid of this.latest.keys()) if (!snapshot.has(uid) && this.latest.get(uid)?.metadata.namespace === f.namespace) this.vanished.add(uid);
      this.latest = snapshot;
      this.listed = true;
    });
  }

  eventsOf(uid: string): string[] {
    return this.events.get(uid) ?? [];
  }

  find(name: string): PacketCapture | undefined {
    return [...this.latest.values()].find((c) => c.metadata.name === name);
  }

  stop(): void {
    this.subscription.unsubscribe();
  }
}

describe.runIf(controlPlaneAvailable)('placement: agents see only the captures of their node', () => {
  const ns = useNamespace('placement');
  const nodeA = `${ns.name}-a`;
  const nodeB = `${ns.name}-b`;
  let f: Fixture;
  let ctl: ControllerHandle;
  const views: NodeView[] = [];
  const stopAgents: (() => void)[] = [];

  beforeAll(async () => {
    f = await Fixture.withNodes(ns.name, [nodeA, nodeB]);
    stopAgents.push(await f.keepAgentAlive(ns.name, nodeA), await f.keepAgentAlive(ns.name, nodeB));
    ctl = await runController({ kubeConfig: f.kc, namespace: ns.name, watchNamespace: ns.name, leaderElect: false, log: memoryLogger().log, resyncMs: 1_000, metricsPort: 0 });
    await ctl.ready;
  });

  afterAll(async () => {
    views.forEach((v) => v.stop());
    stopAgents.forEach((stop) => stop());
    await ctl?.stop();
    await f?.deleteNode(nodeA);
    await f?.deleteNode(nodeB);
  });

  const view = (node: string) => {
    const v = new NodeView(f, node);
    views.push(v);
    return v;
  };

  it("a capture's status writes reach the agent of its pod's node and not the other one", async () => {
    const pod = await f.startPod('web-0', '10.244.7.10', { node: nodeA });
    const created = await f.createCapture('web', { target: { podName: 'web-0' } });
    const uid = created.metadata.uid;
    const a = view(nodeA);
    await f.waitCapture('web', (c) => {
      expect(c.metadata.labels).toMatchObject({ [PLACED_LABEL]: 'true', [nodeLabelKey(nodeA)]: 'true' });
      expect(c.metadata.labels?.[nodeLabelKey(nodeB)]).toBeUndefined();
    });
    // opened once the capture is placed: everything it hears of it would come from the writes below
    const b = view(nodeB);
    await vi.waitFor(() => expect(a.find('web')).toBeDefined(), WAIT);

    const writes = 5;
    for (let i = 1; i <= writes; i++) {
      await f.reportSessions('web', nodeA, [runningSession('web-0', pod.metadata.uid, nodeA, 1, { packets: i * 100 })]);
    }
    await vi.waitFor(() => expect(a.find('web')?.status?.sessions?.[0]?.packets).toBe(writes * 100), WAIT);

    // b's watches are caught up past those writes once they deliver a later capture placed on b
    await f.startPod('db-0', '10.244.7.11', { node: nodeB });
    const later = await f.createCapture('db', { target: { podName: 'db-0' } });
    await vi.waitFor(() => expect(b.find('db')?.metadata.labels?.[nodeLabelKey(nodeB)]).toBe('true'), WAIT);
    expect(b.eventsOf(later.metadata.uid)).toContain('ADDED');

    expect(a.eventsOf(uid).filter((t) => t === 'MODIFIED').length).toBeGreaterThanOrEqual(writes);
    expect(b.eventsOf(uid)).toEqual([]);
    // a list served from the API server's watch cache may still show it unplaced, for a moment
    await vi.waitFor(() => expect(b.find('web')).toBeUndefined(), WAIT);
  });

  it('a new capture is never missing from its node between unplaced and placed', async () => {
    await f.startPod('api-0', '10.244.7.12', { node: nodeA });
    const a = view(nodeA);
    const b = view(nodeB);
    // the views are listed (empty of it) before the capture exists, so they see it unplaced first
    await vi.waitFor(() => expect([a.listed, b.listed]).toEqual([true, true]), WAIT);
    const created = await f.createCapture('api', { target: { podName: 'api-0' } });
    const uid = created.metadata.uid;
    await vi.waitFor(() => expect(a.find('api')?.metadata.labels?.[PLACED_LABEL]).toBe('true'), WAIT);
    // the unplaced watch delivered it and then let it go: the hand-over was exercised
    await vi.waitFor(() => expect(a.eventsOf(uid)).toEqual(expect.arrayContaining(['ADDED', 'DELETED'])), WAIT);
    expect(a.vanished.has(uid)).toBe(false);
    // b saw it unplaced, and dropped it once placed elsewhere
    await vi.waitFor(() => expect(b.find('api')).toBeUndefined(), WAIT);
  });

  it("a pod on another node brings the capture to that node's agent; a node that never reported loses it with the pod", async () => {
    await f.startPod('shop-0', '10.244.7.13', { node: nodeA, labels: { app: 'shop' } });
    await f.createCapture('shop', { target: { podSelector: { matchLabels: { app: 'shop' } } } });
    const b = view(nodeB);
    await f.waitCapture('shop', (c) => expect(c.metadata.labels?.[nodeLabelKey(nodeA)]).toBe('true'));
    expect(b.find('shop')).toBeUndefined();

    await f.createPod('shop-1', { node: nodeB, labels: { app: 'shop' } });
    // Pending is enough: the agent is there before the sandbox's first packet
    await vi.waitFor(() => expect(b.find('shop')?.metadata.labels?.[nodeLabelKey(nodeB)]).toBe('true'), WAIT);

    await f.deletePod('shop-1');
    await vi.waitFor(() => expect(b.find('shop')).toBeUndefined(), WAIT);
    const after = await f.getCapture('shop');
    expect(after.metadata.labels?.[nodeLabelKey(nodeB)]).toBeUndefined();
    expect(after.metadata.labels?.[nodeLabelKey(nodeA)]).toBe('true');
  });

  it('a capture whose pod is gone writes that where it was placed, and then the other node hears it once, unplaced', async () => {
    await f.startPod('mail-0', '10.244.7.15', { node: nodeA });
    const created = await f.createCapture('mail', { target: { podName: 'mail-0' } });
    const uid = created.metadata.uid;
    await f.waitCapture('mail', (c) => expect(c.metadata.labels?.[nodeLabelKey(nodeA)]).toBe('true'));
    const b = view(nodeB);
    await vi.waitFor(() => expect(b.listed).toBe(true), WAIT);
    await f.deletePod('mail-0');
    // unplaced, every agent hears it (a new pod may start anywhere); the write that says the
    // target is gone came before, so b learns it with the capture rather than as a write
    await vi.waitFor(() => expect(b.find('mail')?.status?.targets).toEqual([]), WAIT);
    expect(b.find('mail')?.metadata.labels?.[PLACED_LABEL]).toBeUndefined();
    expect(b.eventsOf(uid)).toEqual(['ADDED']);
  });

  it('a node with session entries keeps seeing the capture after its pod is gone', async () => {
    const pod = await f.startPod('cart-0', '10.244.7.14', { node: nodeB });
    await f.createCapture('cart', { target: { podName: 'cart-0' } });
    const b = view(nodeB);
    await vi.waitFor(() => expect(b.find('cart')).toBeDefined(), WAIT);
    await f.reportSessions('cart', nodeB, [runningSession('cart-0', pod.metadata.uid, nodeB, 1, { state: 'Ended', endReason: 'PodDeleted', endTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') })]);
    await f.deletePod('cart-0');
    await f.waitCapture('cart', (c) => expect(c.status?.targets ?? []).toEqual([]));
    // the reconcile that wrote the empty targets placed the capture first: b is still on it
    expect((await f.getCapture('cart')).metadata.labels?.[nodeLabelKey(nodeB)]).toBe('true');
    expect(b.find('cart')).toBeDefined();
  });
});
