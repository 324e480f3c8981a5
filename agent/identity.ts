// Capture + this node's pods -> the pod instances to capture right now (pure). An identity
// is what a tcpdump process is bound to: the capture instance, its spec generation and the
// pod instance. The agent reads pod UIDs from its own Pod watch; it never trusts
// status.targets, which is the controller's view and may lag behind the node.

import { isTarget } from '../controller/targets.ts';
import { captureEnd, firstStartTime as firstStartOf, generationOf, instanceFinished } from '../crds/lifecycle.ts';
import { REASONS, type PacketCapture, type PacketCaptureSpec, type Reason } from '../crds/packetcapture.ts';
import type { KubeObject, Snapshot } from '../kube/watch.ts';
import { filterNeedsPodIPs } from './tcpdump.ts';

/** The parts of a Pod the agent reads. */
export interface Pod extends KubeObject {
  metadata: KubeObject['metadata'] & { namespace?: string; labels?: Record<string, string>; creationTimestamp?: string };
  spec?: { nodeName?: string };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}

export interface Identity {
  pcUID: string;
  namespace: string;
  name: string;
  generation: number;
  podUID: string;
  podName: string;
  /** unset while the pod has no IP yet (Pending, its sandbox starting) */
  podIP?: string;
  /** every IP of the pod, podIP first: a dual-stack pod has one of each family */
  podIPs: string[];
  node: string;
  spec: PacketCaptureSpec;
  /** earliest startTime among the sessions of this generation (all nodes): limits.duration counts from it */
  firstStartTime?: string;
}

/** One capture slot per (capture instance, pod name): a pod recreated with its name stays in its slot. */
export type SlotKey = string;
export const slotKey = (pcUID: string, podName: string): SlotKey => `${pcUID}/${podName}`;

/**
 * Every pod instance on `node` that a live capture targets, by slot. Excluded: captures
 * being deleted or Completed, or finished at `now` by the lifecycle rule (crds/lifecycle.ts,
 * the controller's too); pods that are finished or terminating; pods without an IP yet
 * for a filter relative to the pod's IPs; and instances that reached a limit in this
 * generation.
 */
export function identities(captures: Snapshot<PacketCapture>, pods: Snapshot<Pod>, node: string, now = Date.now()): Map<SlotKey, Identity> {
  const result = new Map<SlotKey, Identity>();
  const local = [...pods.values()].filter((pod) => isCapturable(pod, node));
  // unplaced captures (capture-scope.ts) may be about pods elsewhere
  const localNamespaces = new Set(local.map((pod) => pod.metadata.namespace));
  for (const capture of captures.values()) {
    if (!localNamespaces.has(capture.metadata.namespace)) continue;
    if (capture.metadata.deletionTimestamp || capture.status?.phase === 'Completed') continue;
    // an invalid duration is not finished: its sessions fail with InvalidSpec and say so
    if (captureEnd(capture, now).finished) continue;
    const generation = generationOf(capture);
    const firstStartTime = firstStartOf(capture);
    for (const pod of local) {
      if (!isTarget(capture, pod)) continue;
      const podIPs = podIPsOf(pod);
      // the filter names the pod's IPs: it cannot be built before the pod has them
      if (podIPs.length === 0 && filterNeedsPodIPs(capture.spec.filter)) continue;
      if (instanceFinished(capture, pod.metadata.uid)) continue;
      const slot = slotKey(capture.metadata.uid, pod.metadata.name);
      const other = result.get(slot);
      if (other && pods.get(other.podUID) && newer(pods.get(other.podUID)!, pod)) continue;
      result.set(slot, {
        pcUID: capture.metadata.uid,
        namespace: capture.metadata.namespace,
        name: capture.metadata.name,
        generation,
        podUID: pod.metadata.uid,
        podName: pod.metadata.name,
        ...(podIPs[0] ? { podIP: podIPs[0] } : {}),
        podIPs,
        node,
        spec: capture.spec,
        ...(firstStartTime ? { firstStartTime } : {}),
      });
    }
  }
  return result;
}

/**
 * Two instances of one name cannot exist at once, but a relist may briefly show a replaced
 * one next to its successor: the newer instance takes the slot, whatever the map order.
 */
const newer = (a: Pod, b: Pod): boolean =>
  ((a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '') || a.metadata.uid.localeCompare(b.metadata.uid)) > 0;

/** status.podIPs lists podIP first when it is set; older API servers leave it out. */
export function podIPsOf(pod: Pod): string[] {
  const primary = pod.status?.podIP;
  const all = (pod.status?.podIPs ?? []).map((p) => p.ip);
  return [...new Set([...(primary ? [primary] : []), ...all])];
}

/** Phases in which a pod's sandbox may exist and its containers run, init containers included. */
const LIVE_PHASES: ReadonlySet<string> = new Set(['Pending', 'Running']);

/**
 * On this node, not terminating, and Pending or Running: a pod instance there is something
 * to capture in from its first packet. Whether its sandbox exists yet is for the netns
 * lookup to find out (the session is Pending, NetnsNotFound, until a process of the UID
 * does), so start-up and init-container traffic is captured too.
 */
export function isCapturable(pod: Pod, node: string): boolean {
  return pod.spec?.nodeName === node && !pod.metadata.deletionTimestamp && LIVE_PHASES.has(pod.status?.phase ?? 'Pending');
}

/** The same capture instance, spec generation and pod instance: the same tcpdump may keep running. */
export function sameIdentity(a: Identity, b: Identity): boolean {
  return a.pcUID === b.pcUID && a.generation === b.generation && a.podUID === b.podUID;
}

/**
 * Why `prev`'s slot is no longer in the snapshot, from the snapshot itself (level-triggered:
 * nothing depends on which watch event came first).
 */
export function whyGone(prev: Identity, captures: Snapshot<PacketCapture>, pods: Snapshot<Pod>): Reason {
  const capture = captures.get(prev.pcUID);
  if (!capture || capture.metadata.deletionTimestamp) return REASONS.CaptureDeleted;
  if (capture.status?.phase === 'Completed') return REASONS.CaptureCompleted;
  if (generationOf(capture) !== prev.generation) return REASONS.SpecChanged;
  const pod = pods.get(prev.podUID);
  if (!pod || pod.metadata.deletionTimestamp) return REASONS.PodDeleted;
  if (!isCapturable(pod, prev.node)) return REASONS.PodNotRunning;
  return REASONS.PodNotSelected;
}

/**
 * Why the session of `prev` ends when its slot now holds `next` (undefined: the slot is
 * gone, for the reason `why` — see whyGone — or AgentShutdown when the agent stops).
 */
export function endReason(prev: Identity, next: Identity | undefined, why?: Reason): Reason {
  if (next) {
    if (next.pcUID !== prev.pcUID) return REASONS.CaptureDeleted;
    if (next.podUID !== prev.podUID) return REASONS.PodReplaced;
    if (next.generation !== prev.generation) return REASONS.SpecChanged;
  }
  return why ?? REASONS.PodDeleted;
}
