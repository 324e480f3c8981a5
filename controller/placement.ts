// Capture -> the nodes whose agent has business with it, as labels on the capture (pure).
//
// Why labels: an agent that watched every PacketCapture received every status write in the
// cluster, each capture's progress delivered to every node. A label selector is the only
// filter the API server applies to a watch of a custom resource before it sends an event,
// so each agent watches the captures labelled for its node and hears nothing of the others
// (agent/capture-scope.ts). Why not a per-node object listing captures: an agent cannot
// watch a set of names, it would still need the captures themselves. The labels live in
// metadata, which users' manifests do not set for these keys: Argo CD's diff (client-side
// three-way or server-side) and Flux's server-side apply compare only the fields the
// manifest names, so a label another manager owns is not drift, and nothing touches spec.
//
// A capture nobody has placed yet (just created, no controller running, or no pod to place
// it by) carries no PLACED_LABEL, and every agent watches those too: capturing never waits
// for the controller, and once placed a capture is heard only where it concerns a node.

import { createHash } from 'node:crypto';
import { GROUP, type PacketCapture } from '../crds/packetcapture.ts';
import { isTarget, type Pod } from './targets.ts';

/** Set while the controller has labelled the capture's nodes (at least one). */
export const PLACED_LABEL = `${GROUP}/placed`;
export const NODE_LABEL_PREFIX = `node.${GROUP}/`;

const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/**
 * The label that places a capture on `node`: the node's name where it is a valid label name
 * (every name of up to 63 characters is), else a hash of it with an underscore, which no
 * node name (a DNS subdomain) contains.
 */
export function nodeLabelKey(node: string): string {
  const name = LABEL_NAME.test(node) ? node : `sha256_${createHash('sha256').update(node).digest('hex').slice(0, 56)}`;
  return NODE_LABEL_PREFIX + name;
}

const FINISHED_PHASES: ReadonlySet<string> = new Set(['Succeeded', 'Failed']);

/**
 * Where the capture must be seen: the node of every pod it targets that is scheduled and
 * not finished (Pending included, so the agent is there from the sandbox's first packet),
 * and every node with session entries or a record of it, so that agent keeps seeing what
 * it reports on (its files, its finalizer confirmation, a restart's adoption).
 */
export function placementNodes(capture: PacketCapture, pods: Iterable<Pod>): Set<string> {
  const nodes = new Set<string>();
  for (const pod of pods) {
    const node = pod.spec?.nodeName;
    if (node && !FINISHED_PHASES.has(pod.status?.phase ?? 'Pending') && isTarget(capture, pod)) nodes.add(node);
  }
  for (const s of capture.status?.sessions ?? []) nodes.add(s.nodeName);
  for (const r of capture.status?.nodes ?? []) nodes.add(r.nodeName);
  return nodes;
}

/**
 * The merge patch of metadata.labels that places the capture on exactly `nodes` (null
 * removes a label), or undefined when the labels are right. Labels of other owners are
 * left alone.
 */
export function placementPatch(capture: PacketCapture, nodes: ReadonlySet<string>): Record<string, string | null> | undefined {
  const current = capture.metadata.labels ?? {};
  const want = new Set([...nodes].map(nodeLabelKey));
  const patch: Record<string, string | null> = {};
  for (const key of Object.keys(current)) if (key.startsWith(NODE_LABEL_PREFIX) && !want.has(key)) patch[key] = null;
  for (const key of want) if (current[key] === undefined) patch[key] = 'true';
  // placed nowhere is left unplaced, heard by every agent: a pod it targets may start on any
  // node, and that node's agent must already have the capture when the sandbox's first
  // packets flow (an init container's), not only once the controller has labelled it
  if (nodes.size === 0 && current[PLACED_LABEL] !== undefined) patch[PLACED_LABEL] = null;
  if (nodes.size > 0 && current[PLACED_LABEL] === undefined) patch[PLACED_LABEL] = 'true';
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/**
 * placementPatch against the labels as `written`, our own last label patch, left them: a
 * snapshot that does not show that patch yet would otherwise be taken for the truth.
 */
export function placementPatchOver(capture: PacketCapture, nodes: ReadonlySet<string>, written: Record<string, string | null>): Record<string, string | null> | undefined {
  const merged = { ...capture.metadata.labels, ...written };
  const labels = Object.fromEntries(Object.entries(merged).filter((e): e is [string, string] => e[1] !== null));
  return placementPatch({ ...capture, metadata: { ...capture.metadata, labels } }, nodes);
}
