import { REASONS, type PacketCapture, type TargetStatus } from '../crds/packetcapture.ts';
import type { KubeObject } from '../kube/watch.ts';
import { describeSelector, selectorMatches } from './selector.ts';

/** The parts of a core/v1 Pod the controller reads. */
export interface Pod extends KubeObject {
  metadata: KubeObject['metadata'] & { creationTimestamp?: string };
  spec?: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
}

/** What a capture's target resolves to right now, with the words conditions and events use. */
export interface Resolution {
  targets: TargetStatus[];
  reason: string;
  message: string;
}

interface Ineligible {
  reason: string;
  /** completes "pod web-0 (UID ...) ..." */
  why: string;
}

/** Why a pod instance cannot be captured yet, or undefined when it can. */
export function ineligibility(pod: Pod): Ineligible | undefined {
  if (pod.metadata.deletionTimestamp) return { reason: REASONS.PodTerminating, why: 'is terminating' };
  if (!pod.spec?.nodeName) return { reason: REASONS.PodNotScheduled, why: 'is not scheduled to a node yet' };
  const phase = pod.status?.phase ?? 'Pending';
  if (phase !== 'Running') return { reason: REASONS.PodNotRunning, why: `is ${phase}, not Running` };
  return undefined;
}

export const toTarget = (pod: Pod): TargetStatus => ({
  podName: pod.metadata.name,
  podUID: pod.metadata.uid,
  nodeName: pod.spec!.nodeName!,
  ...(pod.status?.podIP ? { podIP: pod.status.podIP } : {}),
});

const byNameThenUID = (a: TargetStatus, b: TargetStatus) =>
  a.podName.localeCompare(b.podName) || a.podUID.localeCompare(b.podUID);

/**
 * Newest first. The API server never holds two pods of one name at once, but a snapshot
 * may briefly carry a deleted instance next to its replacement; the newer one wins so a
 * podName target never yields two UIDs.
 */
const newestFirst = (a: Pod, b: Pod) =>
  (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? '') ||
  b.metadata.uid.localeCompare(a.metadata.uid);

const MAX_LISTED = 5;

function listed(items: string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} and ${items.length - MAX_LISTED} more` : shown;
}

function resolveByName(podName: string, namespace: string, pods: Pod[]): Resolution {
  const candidates = pods.filter((p) => p.metadata.name === podName).sort(newestFirst);
  if (candidates.length === 0) {
    return {
      targets: [],
      reason: REASONS.PodNotFound,
      message: `pod ${podName} not found in namespace ${namespace}; the capture starts when it exists`,
    };
  }
  const running = candidates.find((p) => !ineligibility(p));
  if (running) {
    const t = toTarget(running);
    return {
      targets: [t],
      reason: REASONS.PodFound,
      message: `pod ${podName} (UID ${t.podUID}) is running on node ${t.nodeName}`,
    };
  }
  const newest = candidates[0]!;
  const { reason, why } = ineligibility(newest)!;
  return {
    targets: [],
    reason,
    message: `pod ${podName} (UID ${newest.metadata.uid}) ${why}; the capture starts when an instance runs`,
  };
}

function resolveBySelector(selector: NonNullable<PacketCapture['spec']['target']['podSelector']>, namespace: string, pods: Pod[]): Resolution {
  const described = describeSelector(selector);
  const matching = pods.filter((p) => selectorMatches(selector, p.metadata.labels)).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name) || newestFirst(a, b));
  if (matching.length === 0) {
    return {
      targets: [],
      reason: REASONS.NoMatchingPods,
      message: `no pod in namespace ${namespace} matches ${described}`,
    };
  }
  const targets = matching.filter((p) => !ineligibility(p)).map(toTarget).sort(byNameThenUID);
  const waiting = matching.flatMap((p) => {
    const why = ineligibility(p);
    return why ? [{ name: p.metadata.name, ...why }] : [];
  });
  const notYet = listed(waiting.map((w) => `${w.name} (${w.reason})`));
  if (targets.length === 0) {
    return {
      targets,
      reason: waiting[0]!.reason,
      message: `${matching.length} pod(s) match ${described} but none is running: ${notYet}`,
    };
  }
  return {
    targets,
    reason: REASONS.PodsFound,
    message:
      `${targets.length} running pod(s) match ${described}` + (waiting.length > 0 ? `; not targets yet: ${notYet}` : ''),
  };
}

/** Whether the capture's target names the pod (by name or labels, in its own namespace), whatever the pod's state. */
export function isTarget(capture: PacketCapture, pod: KubeObject): boolean {
  if (pod.metadata.namespace !== capture.metadata.namespace) return false;
  const { podName, podSelector } = capture.spec?.target ?? {};
  if (podName !== undefined) return pod.metadata.name === podName;
  if (podSelector !== undefined) return selectorMatches(podSelector, pod.metadata.labels);
  return false;
}

/**
 * A capture's target as pod instances: the running pod named by `target.podName`, or
 * every running pod matching `target.podSelector`, in the capture's own namespace only.
 * Pods are matched by name or labels and identified by UID; an IP is never used to find one.
 */
export function resolveTargets(capture: PacketCapture, pods: Iterable<Pod>): Resolution {
  const { namespace } = capture.metadata;
  const inNamespace = [...pods].filter((p) => p.metadata.namespace === namespace);
  const { podName, podSelector } = capture.spec?.target ?? {};
  if ((podName === undefined) === (podSelector === undefined)) {
    return {
      targets: [],
      reason: REASONS.InvalidSpec,
      message: 'spec.target needs exactly one of podName or podSelector',
    };
  }
  return podName !== undefined
    ? resolveByName(podName, namespace, inNamespace)
    : resolveBySelector(podSelector!, namespace, inNamespace);
}
