// The controller across the failures it must survive: its own restart, an expired watch
// (410 Gone after an etcd compaction) and the loss of the leader replica.

import { KubeConfig } from '@kubernetes/client-node';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { REASONS } from '../../crds/packetcapture.ts';
import { CONTROLLER_LEASE, runController, type ControllerHandle, type ControllerOptions } from '../../controller/main.ts';
import { kubeRequest } from '../../kube/http.ts';
import { cluster, controlPlaneAvailable, useNamespace } from '../support/cluster.ts';
import { Fixture, memoryLogger, WAIT } from './controller-support.ts';

/**
 * A TCP pass-through to the API server that can be cut: the controller behind it loses its
 * watches and cannot reconnect while the cluster changes, as across a network partition.
 */
class CuttableProxy {
  private readonly sockets = new Set<Socket>();
  private cut = false;
  private server?: Server;
  port = 0;

  async start(target: URL): Promise<void> {
    this.server = createServer((client) => {
      if (this.cut) return void client.destroy();
      const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  sever(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.cut = false;
  }

  async stop(): Promise<void> {
    this.sever();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** The same credentials, reaching the API server through this proxy. */
  kubeConfig(kc: KubeConfig): KubeConfig {
    const proxied = new KubeConfig();
    proxied.loadFromOptions({
      clusters: kc.clusters.map((c) => ({ ...c, server: `https://127.0.0.1:${this.port}` })),
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
    });
    return proxied;
  }
}

describe.runIf(controlPlaneAvailable)('controller: restarts, expired watches and leader failover', () => {
  const ns = useNamespace('controller-ha');
  const nodeA = `${ns.name}-a`;
  const nodeB = `${ns.name}-b`;
  let f: Fixture;
  const running = new Set<ControllerHandle>();

  const start = async (opts: Partial<ControllerOptions> = {}) => {
    const ctl = await runController({
      kubeConfig: cluster().kubeConfig,
      namespace: ns.name,
      watchNamespace: ns.name,
      leaderElect: false,
      log: memoryLogger().log,
      resyncMs: 1_000,
      ...opts,
    });
    running.add(ctl);
    await ctl.ready;
    return ctl;
  };
  const stop = async (ctl: ControllerHandle, opts?: { releaseLease?: boolean }) => {
    running.delete(ctl);
    await ctl.stop(opts);
  };

  const getLease = () =>
    kubeRequest<{ spec: { holderIdentity: string; leaseTransitions: number } }>(
      f.kc,
      'GET',
      `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${CONTROLLER_LEASE}`,
    );

  /** Deletes pod `name` and starts a new instance of it on `node`; returns the new UID. */
  const recreate = async (name: string, ip: string, node: string) => {
    await f.deletePod(name, 0);
    await f.waitPodGone(name);
    return (await f.startPod(name, ip, { node })).metadata.uid;
  };

  beforeAll(async () => {
    f = await Fixture.withNodes(ns.name, [nodeA, nodeB]);
  });

  afterAll(async () => {
    for (const ctl of running) await ctl.stop();
    await f?.deleteNode(nodeA);
    await f?.deleteNode(nodeB);
  });

  it('a controller restarted after a pod was recreated converges on the new UID and reports the replacement', async () => {
    const first = await f.startPod('rs-0', '10.244.1.70', { node: nodeA });
    const ctl = await start();
    await f.createCapture('restart', { target: { podName: 'rs-0' } });
    await f.waitCapture('restart', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(first.metadata.uid));
    await stop(ctl);

    const second = await recreate('rs-0', '10.244.2.70', nodeB);
    await start();
    await f.waitCapture('restart', (c) => expect(c.status?.targets).toEqual([{ podName: 'rs-0', podUID: second, nodeName: nodeB, podIP: '10.244.2.70' }]));
    const event = await f.waitEvent('restart', REASONS.PodReplaced);
    expect(event.message).toContain(first.metadata.uid);
    expect(event.message).toContain(second);
    for (const ctl of running) await stop(ctl);
  });

  it('relists after its watch expired (410 Gone) and does not miss a recreation made meanwhile', async () => {
    const proxy = new CuttableProxy();
    await proxy.start(new URL(cluster().info.server));
    try {
      const { log, lines } = memoryLogger();
      const first = await f.startPod('exp-0', '10.244.1.80', { node: nodeA });
      await start({ kubeConfig: proxy.kubeConfig(cluster().kubeConfig), log });
      await f.createCapture('expiry', { target: { podName: 'exp-0' } });
      await f.waitCapture('expiry', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(first.metadata.uid));

      proxy.sever();
      const second = await recreate('exp-0', '10.244.1.80', nodeA);
      // history before now is gone from etcd, and a restarted API server has an empty watch
      // cache: resuming the controller's watches from their old resourceVersion answers 410
      await cluster().compactEtcd();
      await cluster().restartApiServer();
      proxy.restore();

      await vi.waitFor(
        async () => expect((await f.getCapture('expiry')).status?.targets?.[0]?.podUID).toBe(second),
        { ...WAIT, timeout: 90_000 },
      );
      expect(lines.some((l) => l.msg === 'watch expired, relisting')).toBe(true);
      await f.waitEvent('expiry', REASONS.PodReplaced, (e) => e.message.includes(second));
    } finally {
      for (const ctl of running) await stop(ctl);
      await proxy.stop();
    }
  }, 150_000);

  it('two replicas: one leader writes; when it dies the other takes over', async () => {
    const election = { leaderElect: true, leaseDurationSeconds: 4, leaseRetryPeriodMs: 500 };
    const a = await start({ ...election, identity: 'replica-a' });
    await vi.waitFor(() => expect(a.isLeader()).toBe(true), WAIT);
    const b = await start({ ...election, identity: 'replica-b' });

    const pod = await f.startPod('ha-0', '10.244.1.90', { node: nodeA });
    await f.createCapture('ha', { target: { podName: 'ha-0' } });
    await f.waitCapture('ha', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(pod.metadata.uid));
    expect(b.isLeader()).toBe(false);
    expect(b.statusWrites()).toBe(0);
    expect(a.statusWrites()).toBeGreaterThan(0);

    // a crash: the lease is not handed back, so b must see it expire
    await stop(a, { releaseLease: false });
    await vi.waitFor(() => expect(b.isLeader()).toBe(true), WAIT);
    const lease = await getLease();
    expect(lease.spec.holderIdentity).toBe('replica-b');
    expect(lease.spec.leaseTransitions).toBeGreaterThanOrEqual(1);

    const second = await recreate('ha-0', '10.244.2.90', nodeB);
    await f.waitCapture('ha', (c) => expect(c.status?.targets?.[0]?.podUID).toBe(second));
    expect(b.statusWrites()).toBeGreaterThan(0);

    // a graceful stop hands the lease back instead of letting it run out
    const c = await start({ ...election, identity: 'replica-c' });
    await stop(b);
    const released = await getLease();
    expect(['', 'replica-c']).toContain(released.spec.holderIdentity);
    await vi.waitFor(() => expect(c.isLeader()).toBe(true), WAIT);
  });
});
