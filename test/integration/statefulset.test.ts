// The pod-recreation behaviour the whole project is about, produced by the real
// StatefulSet controller and scheduler: same pod name, new UID. No kubelet runs here, so
// the test plays its two parts: reporting the pod Running, and finishing a deletion.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isNotFound, kubeRequest, MERGE_PATCH } from '../../kube/http.ts';
import { cluster, controlPlaneAvailable, useNamespace } from '../support/cluster.ts';

interface Pod {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: { phase?: string };
}

const WAIT = { timeout: 60_000, interval: 200 };

describe.runIf(controlPlaneAvailable)('StatefulSet pods on a simulated node', () => {
  const ns = useNamespace('statefulset');
  const nodeName = `${ns.name}-node`;
  const podPath = () => `/api/v1/namespaces/${ns.name}/pods/web-0`;

  const getPod = () => kubeRequest<Pod>(cluster().kubeConfig, 'GET', podPath());

  /** The pod web-0 once it is a different instance than `notUid` and bound to a node. */
  const scheduledPod = (notUid?: string) =>
    vi.waitFor(async () => {
      const pod = await getPod();
      if (pod.metadata.uid === notUid) throw new Error(`web-0 is still ${notUid}`);
      if (!pod.spec.nodeName) throw new Error('web-0 is not scheduled yet');
      return pod;
    }, WAIT);

  // What the kubelet reports once the containers run; the StatefulSet waits for it.
  const reportRunning = (pod: Pod) =>
    kubeRequest(cluster().kubeConfig, 'PATCH', `${podPath()}/status`, {
      contentType: MERGE_PATCH,
      body: {
        status: {
          phase: 'Running',
          conditions: [{ type: 'Ready', status: 'True' }],
          hostIP: '192.0.2.10',
          podIP: '10.244.7.7',
          podIPs: [{ ip: '10.244.7.7' }],
        },
        // as the kubelet's status manager does: fails if web-0 is already another instance
        metadata: { uid: pod.metadata.uid },
      },
    });

  beforeAll(async () => {
    const { kubeConfig } = cluster();
    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName } },
    };
    await kubeRequest(kubeConfig, 'POST', '/api/v1/nodes', { body: node });
    // what a kubelet registers; the scheduler filters on allocatable and readiness
    await kubeRequest(kubeConfig, 'PATCH', `/api/v1/nodes/${nodeName}/status`, {
      contentType: MERGE_PATCH,
      body: {
        status: {
          capacity: { cpu: '4', memory: '8Gi', pods: '110' },
          allocatable: { cpu: '4', memory: '8Gi', pods: '110' },
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'KubeletReady',
              message: 'simulated by the test',
              lastHeartbeatTime: new Date().toISOString(),
              lastTransitionTime: new Date().toISOString(),
            },
          ],
        },
      },
    });
    // Admission taints every new node not-ready; node lifecycle, which would lift the
    // taint once the node reports Ready, is off in this control plane (no heartbeats).
    await kubeRequest(kubeConfig, 'PATCH', `/api/v1/nodes/${nodeName}`, {
      contentType: MERGE_PATCH,
      body: { spec: { taints: null } },
    });
  });

  afterAll(async () => {
    const { kubeConfig } = cluster();
    const ignoreNotFound = (err: unknown) => {
      if (!isNotFound(err)) throw err;
    };
    await kubeRequest(kubeConfig, 'DELETE', `/apis/apps/v1/namespaces/${ns.name}/statefulsets/web`).catch(ignoreNotFound);
    // no kubelet will ever finish a graceful deletion; without this the namespace stays Terminating
    await kubeRequest(kubeConfig, 'DELETE', `/api/v1/namespaces/${ns.name}/pods`, { query: { gracePeriodSeconds: 0 } });
    await kubeRequest(kubeConfig, 'DELETE', `/api/v1/nodes/${nodeName}`).catch(ignoreNotFound);
  });

  it('a deleted pod comes back with the same name, a new UID, on the node', async () => {
    const { kubeConfig } = cluster();
    await kubeRequest(kubeConfig, 'POST', `/apis/apps/v1/namespaces/${ns.name}/statefulsets`, {
      body: {
        apiVersion: 'apps/v1',
        kind: 'StatefulSet',
        metadata: { name: 'web' },
        spec: {
          serviceName: 'web',
          replicas: 1,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: {
              // other files' simulated nodes may exist at the same time
              nodeSelector: { 'kubernetes.io/hostname': nodeName },
              containers: [{ name: 'web', image: 'nginx:1.27' }],
            },
          },
        },
      },
    });

    const first = await scheduledPod();
    expect(first.spec.nodeName).toBe(nodeName);
    await reportRunning(first);

    await kubeRequest(kubeConfig, 'DELETE', podPath());
    const terminating = await getPod();
    expect(terminating.metadata.uid).toBe(first.metadata.uid);
    expect(terminating.metadata.deletionTimestamp).toBeDefined();

    // the kubelet's last word on a pod whose containers have stopped
    await kubeRequest(kubeConfig, 'DELETE', podPath(), {
      body: { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid: first.metadata.uid } },
    });

    const second = await scheduledPod(first.metadata.uid);
    expect(second.metadata.name).toBe('web-0');
    expect(second.metadata.uid).not.toBe(first.metadata.uid);
    expect(second.spec.nodeName).toBe(nodeName);
    expect(second.metadata.deletionTimestamp).toBeUndefined();
  });
});
