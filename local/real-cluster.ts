// The product deployed for real: a real node (kubelet + containerd) on a local control
// plane, and the controller and agent running as pods from the synthesized manifests in
// dist/, exactly as a user applies them. The project's image is imported under the name
// the manifests already carry, so not one field of dist/ differs from what ships.

import { fileURLToPath } from 'node:url';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { DEFAULT_IMAGE, NAMESPACE } from '../cdk8s/settings.ts';
import { CRD_NAME } from '../crds/crd.ts';
import { applyObjects, readManifests } from '../kube/apply.ts';
import { APISERVICE_NAME } from '../apiserver/api.ts';
import { API_TLS_SECRET } from '../cdk8s/api-server.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { scriptOutputDir, type ControlPlaneInfo } from './control-plane.ts';
import { issueServingCert, readBase64 } from './pki.ts';
import { NODE_IMAGES_SCRIPT, RealNode, type NodeImages } from './real-node.ts';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const DIST = join(REPO_ROOT, 'dist');
const IMAGE_SCRIPT = join(REPO_ROOT, 'scripts', 'image');
const ROLLOUT_TIMEOUT_MS = 180_000;

/** The workload image: busybox httpd answering every path with its pod UID (POD_UID env). */
export const WORKLOAD_IMAGE = 'localhost/packet-capture-workload:local';
export const PAUSE_IMAGE = 'localhost/packet-capture-pause:local';

/**
 * The archives a real node imports: pause and workload from scripts/node-images, the
 * project's own image from scripts/image (`npm run image`), each built once and cached.
 */
export async function nodeImages(): Promise<NodeImages> {
  const [nodeDir, projectDir] = await Promise.all([
    scriptOutputDir(NODE_IMAGES_SCRIPT, ['pause.oci.tar', 'workload.oci.tar']),
    scriptOutputDir(IMAGE_SCRIPT, ['packet-capture.oci.tar']),
  ]);
  return {
    pause: PAUSE_IMAGE,
    archives: [
      { ref: PAUSE_IMAGE, path: join(nodeDir, 'pause.oci.tar') },
      { ref: WORKLOAD_IMAGE, path: join(nodeDir, 'workload.oci.tar') },
      { ref: DEFAULT_IMAGE, path: join(projectDir, 'packet-capture.oci.tar') },
    ],
  };
}

/** A container of the workload image that knows its pod UID (the downward API), never pulled. */
export const workloadContainer = (name: string, command?: string[]) => ({
  name,
  image: WORKLOAD_IMAGE,
  imagePullPolicy: 'Never',
  ...(command ? { command } : {}),
  env: [{ name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } }],
});

/**
 * The demo's StatefulSet on the workload image: deleting web-0 brings back a pod of the
 * same name, a new instance. busybox httpd ignores SIGTERM, so a grace period would only
 * delay each recreation.
 */
export const webStatefulSet = (namespace: string): KubernetesObject =>
  ({
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'web', namespace },
    spec: {
      serviceName: 'web',
      replicas: 1,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: { terminationGracePeriodSeconds: 0, containers: [{ ...workloadContainer('web'), ports: [{ name: 'http', containerPort: 80 }] }] },
      },
    },
  }) as KubernetesObject;

/** A pod that only waits, to send traffic from with kubectl exec. */
export const clientPod = (namespace: string): KubernetesObject =>
  ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'client', namespace },
    spec: { terminationGracePeriodSeconds: 0, containers: [workloadContainer('client', ['/bin/busybox', 'sleep', '1000000'])] },
  }) as KubernetesObject;

export interface Deployed {
  controller: { name: string; namespace: string };
  agent: { name: string; namespace: string };
  /** the packet-capture API (apiserver/), behind its APIService */
  api: { name: string; namespace: string };
}

interface Workload {
  metadata: { generation?: number };
  spec?: { replicas?: number };
  status?: {
    observedGeneration?: number;
    availableReplicas?: number;
    updatedReplicas?: number;
    numberReady?: number;
    desiredNumberScheduled?: number;
    updatedNumberScheduled?: number;
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** dist/ as shipped: the CRD (Established), then the rest; resolves when both components are Ready. */
export async function deployDist(kc: KubeConfig, controlPlane: ControlPlaneInfo, stateDir: string): Promise<Deployed> {
  await provideApiCertificate(kc, controlPlane, stateDir);
  const crds = await readManifests(join(DIST, 'packet-capture-crds.k8s.yaml'));
  await applyObjects(kc, crds, { fieldManager: 'packet-capture-local' });
  await until('the PacketCapture CRD Established', async () => {
    const crd = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(kc, 'GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${CRD_NAME}`);
    return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ?? false;
  });
  const objects = await readManifests(join(DIST, 'packet-capture.k8s.yaml'));
  await applyObjects(kc, objects as KubernetesObject[], { fieldManager: 'packet-capture-local' });
  await trustApiService(kc, controlPlane);
  const component = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata?.labels?.['app.kubernetes.io/component'] === name)!.metadata!;
  const ref = (meta: { name?: string; namespace?: string }) => ({ name: meta.name!, namespace: meta.namespace ?? NAMESPACE });
  const deployed = { controller: ref(component('Deployment', 'controller')), agent: ref(component('DaemonSet', 'agent')), api: ref(component('Deployment', 'api')) };
  await rolledOut(kc, deployed);
  return deployed;
}

/**
 * What cert-manager does in a cluster (cdk8s/api-server.ts): the packet-capture API's serving
 * certificate in its Secret, signed by the cluster CA, and that CA in the APIService's
 * caBundle, so the aggregator trusts the API as the pod that dist/ runs.
 */
async function provideApiCertificate(kc: KubeConfig, controlPlane: ControlPlaneInfo, stateDir: string): Promise<void> {
  const service = `packet-capture-api.${NAMESPACE}.svc`;
  const pki = { ca: { cert: join(controlPlane.pkiDir, 'ca.crt'), key: join(controlPlane.pkiDir, 'ca.key') }, dir: stateDir };
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const cert = await issueServingCert(pki, 'packet-capture-api', [`DNS:${service}`, `DNS:packet-capture-api.${NAMESPACE}`]);
  await applyObjects(kc, [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE } },
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: API_TLS_SECRET, namespace: NAMESPACE }, type: 'kubernetes.io/tls', data: { 'tls.crt': await readBase64(cert.cert), 'tls.key': await readBase64(cert.key) } },
  ] as KubernetesObject[], { fieldManager: 'packet-capture-local' });
}

/** The APIService of dist/ trusting the cluster CA (the field cert-manager's injector fills). */
async function trustApiService(kc: KubeConfig, controlPlane: ControlPlaneInfo): Promise<void> {
  const caBundle = await readBase64(join(controlPlane.pkiDir, 'ca.crt'));
  await kubeRequest(kc, 'PATCH', `/apis/apiregistration.k8s.io/v1/apiservices/${APISERVICE_NAME}`, { contentType: MERGE_PATCH, body: { spec: { caBundle } } });
}

/** Both workloads at their current generation with every replica ready. */
export async function rolledOut(kc: KubeConfig, d: Deployed): Promise<void> {
  await until('the controller and API Deployments available and the agent DaemonSet ready', async () => {
    const [dep, ds, api] = await Promise.all([
      kubeRequest<Workload>(kc, 'GET', `/apis/apps/v1/namespaces/${d.controller.namespace}/deployments/${d.controller.name}`),
      kubeRequest<Workload>(kc, 'GET', `/apis/apps/v1/namespaces/${d.agent.namespace}/daemonsets/${d.agent.name}`),
      kubeRequest<Workload>(kc, 'GET', `/apis/apps/v1/namespaces/${d.api.namespace}/deployments/${d.api.name}`),
    ]);
    const available = (w: Workload) => w.status?.observedGeneration === w.metadata.generation && (w.status?.availableReplicas ?? 0) >= (w.spec?.replicas ?? 1) && w.status?.updatedReplicas === w.spec?.replicas;
    const depReady = available(dep) && available(api);
    const want = ds.status?.desiredNumberScheduled ?? 0;
    const dsReady = ds.status?.observedGeneration === ds.metadata.generation && want > 0 && ds.status?.numberReady === want && ds.status?.updatedNumberScheduled === want;
    return depReady && dsReady;
  }).catch(async (err: Error) => {
    throw new Error(`${err.message}; pods: ${await podSummary(kc, d.agent.namespace)}`);
  });
}

/** Each pod's phase and why its containers are not ready, for an error message. */
async function podSummary(kc: KubeConfig, namespace: string): Promise<string> {
  interface PodStatus {
    metadata: { name: string };
    status?: { phase?: string; containerStatuses?: { name: string; ready: boolean; restartCount: number; state?: Record<string, { reason?: string; message?: string }>; lastState?: Record<string, { reason?: string; message?: string; exitCode?: number }> }[] };
  }
  const pods = await kubeRequest<{ items: PodStatus[] }>(kc, 'GET', `/api/v1/namespaces/${namespace}/pods`).catch(() => ({ items: [] }));
  return (
    pods.items
      .map((p) => {
        const containers = (p.status?.containerStatuses ?? []).map((c) => `${c.name} ready=${c.ready} restarts=${c.restartCount} ${JSON.stringify(c.state)} last=${JSON.stringify(c.lastState)}`);
        return `${p.metadata.name} ${p.status?.phase} [${containers.join('; ')}]`;
      })
      .join(', ') || 'none'
  );
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = ROLLOUT_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      if (await probe()) return;
    } catch (err) {
      last = `: ${(err as Error).message}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${last}`);
    await sleep(250);
  }
}

export interface RealCluster {
  node: RealNode;
  deployed: Deployed;
  stop(): Promise<void>;
}

/** A real node on `controlPlane` with dist/ deployed on it; stop() removes the node and all it made. */
export async function startRealCluster(controlPlane: ControlPlaneInfo, kc: KubeConfig, progress?: (message: string) => void): Promise<RealCluster> {
  progress?.('building or reusing the node images (pause, workload, packet-capture)');
  const images = await nodeImages();
  const node = await RealNode.start({ controlPlane, images, progress });
  try {
    progress?.('applying dist/ as shipped: CRD, RBAC, controller Deployment, agent DaemonSet');
    const deployed = await deployDist(kc, controlPlane, join(node.stateDir, 'api-pki'));
    return { node, deployed, stop: () => node.stop() };
  } catch (err) {
    await node.stop().catch(() => undefined);
    throw err;
  }
}
