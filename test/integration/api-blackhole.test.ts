// When the API server stops answering: a connection that is open and silent, not one that
// fails. The leader behind such a path must stop acting as leader by lastRenew +
// renewDeadline, whatever its requests are doing, and a watch must notice it hears nothing.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CONTROLLER_LEASE, runController, type ControllerHandle, type ControllerOptions } from '../../controller/main.ts';
import { kubeRequest } from '../../kube/http.ts';
import { watchSnapshots, type KubeObject, type Snapshot } from '../../kube/watch.ts';
import { BlackholeProxy } from '../support/blackhole-proxy.ts';
import { cluster, controlPlaneAvailable, installCrds, useNamespace } from '../support/cluster.ts';
import { Fixture, memoryLogger, WAIT } from './controller-support.ts';

interface LeaseView {
  spec: { holderIdentity?: string; renewTime?: string };
}

describe.runIf(controlPlaneAvailable)('an API server that accepts connections and never answers', () => {
  const ns = useNamespace('blackhole');
  const node = `${ns.name}-a`;
  let f: Fixture;
  let proxy: BlackholeProxy;
  const running = new Set<ControllerHandle>();

  beforeAll(async () => {
    const { kubeConfig } = cluster();
    f = new Fixture(kubeConfig, ns.name);
    await installCrds(kubeConfig);
    await f.createNode(node);
    proxy = new BlackholeProxy();
    await proxy.start(new URL(cluster().info.server));
  });

  afterAll(async () => {
    proxy?.heal();
    for (const ctl of running) await ctl.stop();
    await proxy?.stop();
    await f?.deleteNode(node);
  });

  const start = async (opts: Partial<ControllerOptions>) => {
    const ctl = await runController({
      kubeConfig: cluster().kubeConfig,
      namespace: ns.name,
      watchNamespace: ns.name,
      leaderElect: true,
      log: memoryLogger().log,
      resyncMs: 1_000,
      ...opts,
    });
    running.add(ctl);
    await ctl.ready;
    return ctl;
  };

  it('a leader whose API path black-holes steps down by lastRenew + renewDeadline and a healthy standby takes over', async () => {
    // renew deadline: two thirds of the lease, 4 s
    const election = { leaseDurationSeconds: 6, leaseRetryPeriodMs: 500 };
    const renewDeadlineMs = 4_000;
    const hung = await start({ ...election, identity: 'hung', kubeConfig: proxy.kubeConfig(cluster().kubeConfig) });
    await vi.waitFor(() => expect(hung.isLeader()).toBe(true), WAIT);
    const standby = await start({ ...election, identity: 'standby' });

    const pod = await f.startPod('bh-0', '10.244.1.110', { node });
    await f.createCapture('bh', { target: { podName: 'bh-0' } });
    await f.waitCapture('bh', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(pod.metadata.uid));
    expect(standby.statusWrites()).toBe(0);

    // when each replica last said it led, sampled far finer than the deadline
    let hungLastLed = 0;
    let standbyFirstLed = 0;
    const sampler = setInterval(() => {
      if (hung.isLeader()) hungLastLed = Date.now();
      if (!standbyFirstLed && standby.isLeader()) standbyFirstLed = Date.now();
    }, 10);
    // the lease's last renewal by the hung leader, read on the healthy path
    let lastRenew = 0;
    const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${CONTROLLER_LEASE}`;
    const readLease = async () => {
      const lease = await kubeRequest<LeaseView>(f.kc, 'GET', leasePath);
      if (lease.spec.holderIdentity === 'hung' && lease.spec.renewTime) lastRenew = Math.max(lastRenew, Date.parse(lease.spec.renewTime));
      return lease;
    };
    try {
      await readLease();
      proxy.blackhole();
      const writesBefore = hung.statusWrites();
      await vi.waitFor(async () => expect((await readLease()).spec.holderIdentity).toBe('standby'), { timeout: 30_000, interval: 50 });
      await vi.waitFor(() => expect(standby.isLeader()).toBe(true), WAIT);
      // the sampler, not the wait above, says when the standby first led: let it see it
      await vi.waitFor(() => expect(standbyFirstLed).toBeGreaterThan(0), WAIT);

      expect(hung.isLeader()).toBe(false);
      // the deadline timer fires at lastRenew + renewDeadline; the margin covers the sampling
      expect(hungLastLed - lastRenew).toBeLessThanOrEqual(renewDeadlineMs + 500);
      expect(hungLastLed).toBeLessThan(standbyFirstLed);

      // the standby writes what changed; the hung replica wrote nothing since the black hole
      const second = await f.deletePod('bh-0', 0).then(() => f.waitPodGone('bh-0')).then(() => f.startPod('bh-0', '10.244.1.111', { node }));
      await f.waitCapture('bh', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(second.metadata.uid));
      expect(standby.statusWrites()).toBeGreaterThan(0);

      // once its path heals the old leader reads the lease, sees the standby, and stays out
      proxy.heal();
      await new Promise((resolve) => setTimeout(resolve, 6 * election.leaseRetryPeriodMs));
      expect(hung.isLeader()).toBe(false);
      expect(hung.statusWrites()).toBe(writesBefore);
      expect(standby.isLeader()).toBe(true);
    } finally {
      clearInterval(sampler);
      proxy.heal();
    }
  });

  it('a watch silent past its threshold relists, and sees what changed while it was stuck', async () => {
    interface ConfigMap extends KubeObject {
      data?: Record<string, string>;
    }
    const { log, lines } = memoryLogger();
    const silentMs = 5_000;
    const path = `/api/v1/namespaces/${ns.name}/configmaps`;
    let latest: Snapshot<ConfigMap> | undefined;
    const sub = watchSnapshots<ConfigMap>(proxy.kubeConfig(cluster().kubeConfig), { path, silentMs, log }).subscribe((s) => (latest = s));
    try {
      await vi.waitFor(() => expect(latest).toBeDefined(), WAIT);
      const names = () => [...latest!.values()].map((c) => c.metadata.name);

      proxy.blackhole();
      const stuckAt = Date.now();
      await kubeRequest(f.kc, 'POST', path, { body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'made-while-stuck' } } });
      // the watch's own connection stays dead; only a new one reaches the API server
      proxy.heal();
      const healedAt = Date.now();
      await vi.waitFor(() => expect(names()).toContain('made-while-stuck'), { timeout: 60_000, interval: 50 });
      const seenAt = Date.now();

      const detected = lines.find((l) => l.msg === 'watch heard nothing, not even a bookmark; relisting');
      expect(detected).toBeDefined();
      const detectedAt = detected!.time as number;
      console.log(
        `stuck watch: silentMs ${silentMs}; detected ${detectedAt - stuckAt} ms after the black hole; change seen ${seenAt - healedAt} ms after healing`,
      );
      expect(detectedAt).toBeGreaterThanOrEqual(stuckAt);
    } finally {
      sub.unsubscribe();
    }
  });
});
