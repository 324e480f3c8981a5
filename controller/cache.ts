// What the controller keeps of each kind it watches (kube/watch.ts `transform`), the way
// controller-runtime's cache transforms strip objects: at 30,000 pods the cache is most of
// the controller's memory, and a pod as the API server sends it (managedFields, container
// specs and statuses, conditions) is ten times what a decision reads of it.

import type { PacketCapture } from '../crds/packetcapture.ts';
import type { Lease } from './agents.ts';
import type { Pod } from './targets.ts';

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** The Pod fields resolveTargets and ineligibility read; nothing else. */
export function cachedPod(pod: Pod): Pod {
  const { name, namespace, uid, labels, creationTimestamp, deletionTimestamp } = pod.metadata;
  const nodeName = pod.spec?.nodeName;
  const { phase, podIP } = pod.status ?? {};
  return {
    metadata: defined({ name, namespace, uid, labels, creationTimestamp, deletionTimestamp }),
    spec: defined({ nodeName }),
    status: defined({ phase, podIP }),
  };
}

/** The agent presence Lease fields liveAgentNodes and nextAgentExpiry read. */
export function cachedLease(lease: Lease): Lease {
  const { name, namespace, uid, labels } = lease.metadata;
  const { holderIdentity, renewTime, leaseDurationSeconds } = lease.spec ?? {};
  return { metadata: defined({ name, namespace, uid, labels }), spec: defined({ holderIdentity, renewTime, leaseDurationSeconds }) };
}

/**
 * A PacketCapture without its managedFields and annotations (kubectl's last-applied copy
 * of the spec among them): every decision reads spec and status, and the finalizer patch
 * needs finalizers and resourceVersion, so those stay whole.
 */
export function cachedCapture(capture: PacketCapture): PacketCapture {
  const { name, namespace, uid, generation, resourceVersion, creationTimestamp, deletionTimestamp, labels, finalizers } = capture.metadata;
  return {
    apiVersion: capture.apiVersion,
    kind: capture.kind,
    metadata: defined({ name, namespace, uid, generation, resourceVersion, creationTimestamp, deletionTimestamp, labels, finalizers }),
    spec: capture.spec,
    ...(capture.status !== undefined ? { status: capture.status } : {}),
  };
}
