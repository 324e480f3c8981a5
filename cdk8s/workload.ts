// What the controller Deployment and the agent DaemonSet have in common, including the
// cdk8s-plus defaults both override.

import { ApiObject, JsonPatch } from 'cdk8s';
import { Capability, ImagePullPolicy, k8s, LabelSelector, Pod, Probe, SeccompProfileType, type Workload } from 'cdk8s-plus-28';
import { Construct } from 'constructs';

/** Selects the workload's pods by `labels` alone. */
export function selectByLabels(workload: Workload, labels: Record<string, string>): void {
  workload.select(LabelSelector.of({ labels }));
  // cdk8s-plus also labels the pods with its construct address; nothing selects on it here
  ApiObject.of(workload).addJsonPatch(
    JsonPatch.remove(`/spec/template/metadata/labels/${Pod.ADDRESS_LABEL.replaceAll('/', '~1')}`),
  );
}

/** A container at the Pod Security "restricted" level, running as `user`. */
export const restrictedContainer = (user: number) => ({
  ensureNonRoot: true,
  user,
  group: user,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: [Capability.ALL] },
  seccompProfile: { type: SeccompProfileType.RUNTIME_DEFAULT },
});

/** The container settings of both components, for an image and the ops port. */
export const containerBasics = (image: string, port: number) => ({
  image,
  // tagged releases: pull once per node (and images side-loaded into kind or k3d work)
  imagePullPolicy: ImagePullPolicy.IF_NOT_PRESENT,
  ports: [{ name: 'http', number: port }],
  liveness: Probe.fromHttpGet('/healthz', { port }),
  readiness: Probe.fromHttpGet('/readyz', { port }),
});

/** A Service for /metrics (and the agent's files) on the pods with these labels. */
export function opsService(
  scope: Construct,
  opts: { name: string; namespace: string; labels: Record<string, string>; port: number; headless?: boolean },
): void {
  new k8s.KubeService(scope, 'service', {
    metadata: { name: opts.name, namespace: opts.namespace, labels: opts.labels },
    spec: {
      clusterIp: opts.headless ? 'None' : undefined,
      selector: opts.labels,
      ports: [{ name: 'http', port: opts.port, targetPort: k8s.IntOrString.fromString('http') }],
    },
  });
}
