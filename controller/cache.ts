// What the controller keeps of each kind it watches (kube/watch.ts `transform`), the way
// controller-runtime's cache transforms strip objects: at 30,000 pods the cache is most of
// the controller's memory, and a pod as the API server sends it (managedFields, container
// specs and statuses, conditions) is ten times what a decision reads of it.

import type { PacketCapture, PacketCaptureStatus } from '../crds/packetcapture.ts';
import type { Lease } from './agents.ts';
import type { Pod } from './targets.ts';

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/**
 * JSON.parse makes a string of every occurrence: 30,000 pods carried 30,000 copies of a
 * few hundred node names, and each capture's status its reasons, condition types and a
 * message three times over. Values of few distinct kinds (namespaces, nodes, phases,
 * reasons, label keys and values) are kept once; the pool starts over when it is full, so
 * churn cannot grow it.
 */
const POOL_LIMIT = 50_000;
const pool = new Map<string, string>();
function once<S extends string | undefined>(s: S): S {
  if (s === undefined) return s;
  const kept = pool.get(s);
  if (kept !== undefined) return kept as S;
  if (pool.size >= POOL_LIMIT) pool.clear();
  pool.set(s, s);
  return s;
}

const labelsOnce = (labels: Record<string, string> | undefined) =>
  labels && Object.fromEntries(Object.entries(labels).map(([k, v]) => [once(k), once(v)]));

/** The Pod fields resolveTargets and ineligibility read; nothing else. */
export function cachedPod(pod: Pod): Pod {
  const { name, namespace, uid, labels, creationTimestamp, deletionTimestamp } = pod.metadata;
  const nodeName = once(pod.spec?.nodeName);
  const { phase, podIP } = pod.status ?? {};
  return {
    metadata: defined({ name, namespace: once(namespace), uid, labels: labelsOnce(labels), creationTimestamp, deletionTimestamp }),
    spec: defined({ nodeName }),
    status: defined({ phase: once(phase), podIP }),
  };
}

/** The agent presence Lease fields liveAgentNodes and nextAgentExpiry read. */
export function cachedLease(lease: Lease): Lease {
  const { name, namespace, uid, labels } = lease.metadata;
  const { holderIdentity, renewTime, leaseDurationSeconds } = lease.spec ?? {};
  return { metadata: defined({ name, namespace, uid, labels }), spec: defined({ holderIdentity, renewTime, leaseDurationSeconds }) };
}

/** A status with its repeated strings kept once: within it (a message, a time) and across captures (reasons, nodes). */
function statusOnce(status: PacketCaptureStatus): PacketCaptureStatus {
  // Ready, Capturing and Reconciling usually say the same thing at the same time
  const mine = new Map<string, string>();
  const local = (s: string | undefined) => (s === undefined ? s : (mine.get(s) ?? (mine.set(s, s), s)));
  const conditions = status.conditions?.map((c) => ({
    ...c,
    type: once(c.type),
    status: once(c.status),
    reason: once(c.reason),
    message: local(c.message)!,
    lastTransitionTime: local(c.lastTransitionTime)!,
  }));
  const targets = status.targets?.map((t) => ({ ...t, nodeName: once(t.nodeName) }));
  const sessions = status.sessions?.map((x) => ({ ...x, nodeName: once(x.nodeName), state: once(x.state), ...(x.reason !== undefined ? { reason: once(x.reason) } : {}) }));
  return {
    ...status,
    ...(status.phase !== undefined ? { phase: once(status.phase) } : {}),
    ...(conditions ? { conditions } : {}),
    ...(targets ? { targets } : {}),
    ...(sessions ? { sessions } : {}),
  };
}

/**
 * A PacketCapture without its managedFields and annotations (kubectl's last-applied copy
 * of the spec among them): every decision reads spec and status, and the finalizer patch
 * needs finalizers and resourceVersion, so those stay whole.
 */
export function cachedCapture(capture: PacketCapture): PacketCapture {
  const { name, namespace, uid, generation, resourceVersion, creationTimestamp, deletionTimestamp, labels, finalizers } = capture.metadata;
  return {
    apiVersion: once(capture.apiVersion),
    kind: once(capture.kind),
    metadata: defined({
      name,
      namespace: once(namespace),
      uid,
      generation,
      resourceVersion,
      creationTimestamp,
      deletionTimestamp,
      labels: labelsOnce(labels),
      finalizers: finalizers?.map(once),
    }),
    spec: capture.spec,
    ...(capture.status !== undefined ? { status: statusOnce(capture.status) } : {}),
  };
}
