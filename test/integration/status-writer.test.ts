// The one status writer (kube/status.ts) against the real API server: the rate GitOps
// tools see. Non-urgent changes of one object are coalesced into at most one write per
// interval, an urgent one goes at once, and a status the cluster already shows costs no
// request. Writes are counted twice: by the writer and by the watch events they cause.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Subscription } from 'rxjs';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture } from '../../crds/packetcapture.ts';
import { StatusWriter, type StatusTarget } from '../../kube/status.ts';
import { watchSnapshots } from '../../kube/watch.ts';
import { createCapture, getCapture } from '../support/captures.ts';
import { cluster, controlPlaneAvailable, installCrds, useNamespace } from '../support/cluster.ts';
import { WAIT } from './controller-support.ts';

interface Progress {
  observedGeneration?: number;
}

const INTERVAL_MS = 3_000;

describe.runIf(controlPlaneAvailable)('status writer rate', () => {
  const ns = useNamespace('status-writer');
  const subscriptions: Subscription[] = [];
  const writers: StatusWriter<Progress>[] = [];

  beforeAll(async () => installCrds(cluster().kubeConfig));
  afterAll(() => {
    subscriptions.forEach((s) => s.unsubscribe());
    writers.forEach((w) => w.stop());
  });

  /** A capture, a writer fed its watch as the agent's is, and the times of the capture's status changes. */
  async function setup(name: string, minIntervalMs = INTERVAL_MS) {
    const { kubeConfig } = cluster();
    const capture = await createCapture(kubeConfig, ns.name, name, { target: { podSelector: { matchLabels: { app: name } } } });
    const writer = new StatusWriter<Progress>(kubeConfig, 'status-writer-test', { minIntervalMs });
    writers.push(writer);
    const target: StatusTarget = {
      path: `/apis/${GROUP}/${VERSION}/namespaces/${ns.name}/${PLURAL}/${name}`,
      apiVersion: API_VERSION,
      kind: KIND,
      name,
      namespace: ns.name,
      uid: capture.metadata.uid,
    };
    const changes: { at: number; generation?: number }[] = [];
    // null: nothing seen yet, so the first snapshot (no status) is recorded too
    let seen: number | undefined | null = null;
    const watched = new Promise<void>((resolve) =>
      subscriptions.push(
        watchSnapshots<PacketCapture>(kubeConfig, { path: `/apis/${GROUP}/${VERSION}/namespaces/${ns.name}/${PLURAL}`, fieldSelector: `metadata.name=${name}` }).subscribe((snapshot) => {
          const generation = snapshot.get(capture.metadata.uid)?.status?.observedGeneration;
          if (generation !== seen) changes.push({ at: Date.now(), generation });
          seen = generation;
          writer.observe(target, { observedGeneration: generation });
          resolve();
        }),
      ),
    );
    await watched;
    return { kubeConfig, writer, target, changes };
  }

  it('coalesces non-urgent changes into one write per interval', async () => {
    const { kubeConfig, writer, target, changes } = await setup('coalesce');
    const wrote = await writer.apply(target, { observedGeneration: 1 });
    expect(wrote).toBe(true);
    // ten changes while the interval since that write runs: one write, carrying the last
    for (let g = 2; g <= 11; g++) writer.set(target, { observedGeneration: g }, false);
    await vi.waitFor(() => expect(changes.map((c) => c.generation)).toEqual([undefined, 1, 11]), { timeout: 30_000, interval: 100 });
    expect(writer.writes).toBe(2);
    // never before the interval, however fast or slow the machine is
    expect(changes[2]!.at - changes[1]!.at).toBeGreaterThanOrEqual(INTERVAL_MS - 100);
    expect((await getCapture(kubeConfig, ns.name, 'coalesce')).status?.observedGeneration).toBe(11);
  });

  it('writes an urgent change at once, with the non-urgent one it overtakes', async () => {
    // an interval no test waits for: a held urgent write would time the test out
    const { writer, target, changes } = await setup('urgent', 3_600_000);
    await writer.apply(target, { observedGeneration: 1 });
    writer.set(target, { observedGeneration: 2 }, false);
    expect(await writer.apply(target, { observedGeneration: 3 })).toBe(true);
    await vi.waitFor(() => expect(changes.map((c) => c.generation)).toEqual([undefined, 1, 3]), WAIT);
    expect(writer.writes).toBe(2);
  });

  it('writes nothing when the cluster already shows the status', async () => {
    const { writer, target, changes } = await setup('unchanged');
    await writer.apply(target, { observedGeneration: 5 });
    await vi.waitFor(() => expect(changes.at(-1)?.generation).toBe(5), WAIT);
    const writes = writer.writes;
    expect(await writer.apply(target, { observedGeneration: 5 })).toBe(false);
    for (let i = 0; i < 5; i++) writer.set(target, { observedGeneration: 5 }, i % 2 === 0);
    await writer.flush();
    expect(writer.writes).toBe(writes);
    expect(changes.map((c) => c.generation)).toEqual([undefined, 5]);
  });
});
