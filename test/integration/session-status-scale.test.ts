// Agents' status writers on one capture against the real API server: every node applies
// its own session entries and record, no write may be rejected however many nodes share
// the capture (the CRD's maxItems holds every node's share, sessionShare), and each node's
// record keeps every limited instance, across a restart of its agent too.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Subscription } from 'rxjs';
import { SessionStatusWriter } from '../../agent/session-status.ts';
import { instanceFinished } from '../../crds/lifecycle.ts';
import { GROUP, MAX_SESSIONS, PLURAL, REASONS, VERSION, type PacketCapture, type SessionStatus } from '../../crds/packetcapture.ts';
import { watchSnapshots } from '../../kube/watch.ts';
import { createCapture, getCapture } from '../support/captures.ts';
import { cluster, controlPlaneAvailable, installCrds, useNamespace } from '../support/cluster.ts';
import { memoryLogger, WAIT } from './controller-support.ts';

const SESSIONS_PER_NODE = 20;
const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms).toISOString();

describe.runIf(controlPlaneAvailable)('agent status writers of many nodes on one capture', () => {
  const ns = useNamespace('status-scale');
  const subscriptions: Subscription[] = [];
  const writers: SessionStatusWriter[] = [];

  beforeAll(async () => installCrds(cluster().kubeConfig));
  afterAll(() => {
    subscriptions.forEach((s) => s.unsubscribe());
    writers.forEach((w) => w.stop());
  });

  /**
   * `nodes` agents' writers, each fed the capture watch as the agent is, each writing
   * `SESSIONS_PER_NODE` sessions that reach maxPackets, the nodes' sessions interleaved.
   */
  async function writeFromNodes(name: string, nodes: number) {
    const { kubeConfig } = cluster();
    const capture = await createCapture(kubeConfig, ns.name, name, { target: { podSelector: { matchLabels: { app: name } } }, limits: { maxPackets: 10 } });
    const { log, lines } = memoryLogger();
    const nodeNames = Array.from({ length: nodes }, (_, i) => `${name}-node-${i}`);
    const nodeWriters = nodeNames.map((node) => new SessionStatusWriter({ kubeConfig, node, log: log.child({ node }), throttleMs: 200, retryMs: 200 }));
    writers.push(...nodeWriters);
    const captures$ = watchSnapshots<PacketCapture>(kubeConfig, { path: `/apis/${GROUP}/${VERSION}/namespaces/${ns.name}/${PLURAL}`, log });
    const synced = new Promise<void>((resolve) => subscriptions.push(captures$.subscribe((snapshot) => (nodeWriters.forEach((w) => w.observe(snapshot)), resolve()))));
    await synced;

    const ref = { uid: capture.metadata.uid, namespace: ns.name, name };
    const podUID = (node: number, i: number) => `${name}-pod-${node}-${i}`;
    const sessionOf = (node: number, i: number, state: SessionStatus['state']): SessionStatus => ({
      id: `s-${node}-${i}`,
      podUID: podUID(node, i),
      podName: `${name}-${node}-${i}`,
      nodeName: nodeNames[node]!,
      generation: 1,
      state,
      startTime: at(i * 1000),
      ...(state === 'Ended' ? { endTime: at(i * 1000 + 500), endReason: REASONS.PacketLimit, packets: 10 } : {}),
    });
    const started = Date.now();
    for (let i = 0; i < SESSIONS_PER_NODE; i++) {
      nodeWriters.forEach((writer, node) => {
        writer.update({ capture: ref, session: sessionOf(node, i, 'Running') });
        writer.update({ capture: ref, session: sessionOf(node, i, 'Ended') });
      });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await Promise.all(nodeWriters.map((w) => w.flush()));
    const settled = await vi.waitFor(
      async () => {
        const c = await getCapture(kubeConfig, ns.name, name);
        expect(c.status?.nodes?.filter((r) => (r.limitedPods ?? []).length === SESSIONS_PER_NODE)).toHaveLength(nodes);
        // each node's history within its share (sessionShare) once it saw them all
        const listed = nodeNames.map((node) => c.status?.sessions?.filter((s) => s.nodeName === node).length);
        expect(new Set(listed)).toEqual(new Set([Math.min(SESSIONS_PER_NODE, Math.floor(MAX_SESSIONS / (2 * nodes)))]));
        return c;
      },
      { timeout: 270_000, interval: 500 },
    );
    const failed = lines.filter((l) => l.msg === 'cannot write session status, retrying').map((l) => String(l.err));
    // the API server's answer to a write it refuses (a 422 above all); a write that got no
    // answer in time (a loaded API server) is retried and refused nothing
    const rejected = failed.filter((err) => / 4\d\d /.test(err));
    const writes = nodeWriters.reduce((sum, w) => sum + w.writes, 0);
    console.log(
      `${nodes} nodes x ${SESSIONS_PER_NODE} sessions: ${writes} status writes in ${Date.now() - started} ms, ${rejected.length} rejected ` +
        `(${rejected.filter((err) => err.includes(': 422 ')).length} with 422), ${failed.length - rejected.length} unanswered and retried; ` +
        `status lists ${settled.status?.sessions?.length} sessions, ${settled.status?.nodes?.length} node records`,
    );
    return { capture: settled, rejected, podUID };
  }

  it("an agent that restarts takes its node's record over: nothing recorded is lost", async () => {
    const { kubeConfig } = cluster();
    const capture = await createCapture(kubeConfig, ns.name, 'restart', { target: { podSelector: { matchLabels: { app: 'restart' } } }, limits: { maxPackets: 10 } });
    const ref = { uid: capture.metadata.uid, namespace: ns.name, name: 'restart' };
    const node = 'restart-node';
    const limited = (podUID: string, startMs: number): SessionStatus => ({
      id: `s-${podUID}`,
      podUID,
      podName: podUID,
      nodeName: node,
      generation: 1,
      state: 'Ended',
      startTime: at(startMs),
      endTime: at(startMs + 500),
      endReason: REASONS.PacketLimit,
    });
    const agent = async (session: SessionStatus) => {
      const { log } = memoryLogger();
      const writer = new SessionStatusWriter({ kubeConfig, node, log, throttleMs: 200, retryMs: 200 });
      writers.push(writer);
      const captures$ = watchSnapshots<PacketCapture>(kubeConfig, { path: `/apis/${GROUP}/${VERSION}/namespaces/${ns.name}/${PLURAL}`, log });
      let subscription: Subscription | undefined;
      await new Promise<void>((resolve) => (subscription = captures$.subscribe((snapshot) => (writer.observe(snapshot), resolve()))));
      writer.update({ capture: ref, session });
      await writer.flush();
      await vi.waitFor(async () => expect((await getCapture(kubeConfig, ns.name, 'restart')).status?.sessions?.map((s) => s.id)).toContain(session.id), WAIT);
      subscription!.unsubscribe();
      writer.stop();
    };
    await agent(limited('pod-a', 0));
    await agent(limited('pod-b', 1000));
    expect((await getCapture(kubeConfig, ns.name, 'restart')).status?.nodes).toEqual([
      { nodeName: node, generation: 1, firstStartTime: at(0), limitedPods: ['pod-a', 'pod-b'], firstEnd: { podUID: 'pod-a', podName: 'pod-a', endReason: REASONS.PacketLimit } },
    ]);
  });

  it('15 nodes x 20 sessions: every write accepted, every node keeps its whole history', { timeout: 300_000 }, async () => {
    const { capture, rejected, podUID } = await writeFromNodes('fifteen', 15);
    expect(rejected).toEqual([]);
    expect(capture.status?.sessions).toHaveLength(15 * SESSIONS_PER_NODE);
    const unfinished = Array.from({ length: 15 }, (_, node) => Array.from({ length: SESSIONS_PER_NODE }, (_, i) => podUID(node, i)))
      .flat()
      .filter((uid) => !instanceFinished(capture, uid));
    expect(unfinished).toEqual([]);
  });
});
