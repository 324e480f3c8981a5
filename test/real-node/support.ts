// What the real-node tests share: the node (started once per file), kubectl against the
// shared control plane, the processes of a pod instance as the host sees them, and pods
// of the workload image.

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import { vi } from 'vitest';
import { kubeRequest } from '../../kube/http.ts';
import type { ControlPlane } from '../../local/control-plane.ts';
import { missingRootOrTools, requireOrSkip } from '../support/require.ts';

const exec = promisify(execFile);

/** Root, the tools the node needs, and its build script; under CI a gap fails the run. */
export const realNodeAvailable = requireOrSkip('a real node (root, runc, iptables, tshark; Go builds its binaries)', () =>
  missingRootOrTools(['runc', 'iptables', 'tshark', 'tcpdump', 'ip', 'umoci', 'mmdebstrap'], 'runc iptables tshark tcpdump iproute2 umoci mmdebstrap'),
);

export const WAIT = { timeout: 90_000, interval: 100 };

/** kubectl of the control plane's build, as its admin. */
export async function kubectl(cp: ControlPlane, args: readonly string[]): Promise<string> {
  return (await exec(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfigPath, ...args], { maxBuffer: 64 * 1024 * 1024 })).stdout;
}

/** A namespace of its own, once its default ServiceAccount exists (pods need it). */
export async function createNamespace(kc: KubeConfig, name: string): Promise<void> {
  await kubeRequest(kc, 'POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } });
  await vi.waitFor(() => kubeRequest(kc, 'GET', `/api/v1/namespaces/${name}/serviceaccounts/default`), WAIT);
}

export interface PodView {
  metadata: { name: string; uid: string; namespace: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec: { nodeName?: string; containers: { name: string; securityContext?: Record<string, unknown> }[]; hostPID?: boolean };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; ready: boolean; restartCount: number; containerID?: string; state?: Record<string, unknown> }[];
  };
}

export const getPod = (kc: KubeConfig, ns: string, name: string): Promise<PodView> => kubeRequest<PodView>(kc, 'GET', `/api/v1/namespaces/${ns}/pods/${name}`);

export async function listPods(kc: KubeConfig, ns: string, selector?: string): Promise<PodView[]> {
  const q = selector ? `?labelSelector=${encodeURIComponent(selector)}` : '';
  return (await kubeRequest<{ items: PodView[] }>(kc, 'GET', `/api/v1/namespaces/${ns}/pods${q}`)).items;
}

/** The pod `name` Ready, optionally a newer instance than `notUID`; returns it. */
export async function waitReady(kc: KubeConfig, ns: string, name: string, notUID?: string, timeout = WAIT.timeout): Promise<PodView> {
  return vi.waitFor(
    async () => {
      const pod = await getPod(kc, ns, name);
      if (pod.metadata.uid === notUID) throw new Error(`${name} is still the old instance`);
      if (!pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) throw new Error(`${name} not Ready: ${JSON.stringify(pod.status)}`);
      return pod;
    },
    { ...WAIT, timeout },
  );
}
