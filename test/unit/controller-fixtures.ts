// Builders for the controller's unit tests: pods and captures as the API server returns
// them, with only the fields that matter to each test spelled out.

import type { PacketCapture, PacketCaptureSpec, PacketCaptureStatus, SessionStatus } from '../../crds/packetcapture.ts';
import type { Lease } from '../../controller/agents.ts';
import type { Pod } from '../../controller/targets.ts';

export const NS = 'shop';

export interface PodOptions {
  namespace?: string;
  node?: string | null;
  phase?: string;
  ip?: string;
  labels?: Record<string, string>;
  deleting?: boolean;
  created?: string;
}

export function pod(name: string, uid: string, o: PodOptions = {}): Pod {
  return {
    metadata: {
      name,
      namespace: o.namespace ?? NS,
      uid,
      labels: o.labels,
      creationTimestamp: o.created ?? '2026-01-01T00:00:00Z',
      ...(o.deleting ? { deletionTimestamp: '2026-01-01T01:00:00Z' } : {}),
    },
    spec: o.node === null ? {} : { nodeName: o.node ?? 'node-a' },
    status: { phase: o.phase ?? 'Running', ...(o.ip ? { podIP: o.ip } : {}) },
  };
}

export interface CaptureOptions {
  uid?: string;
  name?: string;
  generation?: number;
  status?: PacketCaptureStatus;
  finalizers?: string[];
  deletionTimestamp?: string;
}

export function capture(spec: Partial<PacketCaptureSpec> & Pick<PacketCaptureSpec, 'target'>, o: CaptureOptions = {}): PacketCapture {
  return {
    apiVersion: 'packetcapture.dev/v1alpha1',
    kind: 'PacketCapture',
    metadata: {
      name: o.name ?? 'cap',
      namespace: NS,
      uid: o.uid ?? 'cap-uid',
      generation: o.generation ?? 1,
      resourceVersion: '1',
      ...(o.finalizers ? { finalizers: o.finalizers } : {}),
      ...(o.deletionTimestamp ? { deletionTimestamp: o.deletionTimestamp } : {}),
    },
    spec: { lifecycle: 'Follow', ...spec },
    ...(o.status ? { status: o.status } : {}),
  };
}

export function session(podName: string, podUID: string, s: Partial<SessionStatus> = {}): SessionStatus {
  return {
    id: `${podUID}-s`,
    podName,
    podUID,
    nodeName: 'node-a',
    generation: 1,
    state: 'Running',
    startTime: '2026-01-01T00:00:00Z',
    ...s,
  };
}

export function agentLease(node: string, renewTime: string, leaseDurationSeconds = 30): Lease {
  return {
    metadata: { name: `agent-${node}`, namespace: 'packet-capture-system', uid: `lease-${node}`, labels: { 'packetcapture.dev/agent': 'true' } },
    spec: { holderIdentity: node, renewTime, leaseDurationSeconds },
  };
}

export const snapshot = <T extends { metadata: { uid: string } }>(...items: T[]): ReadonlyMap<string, T> =>
  new Map(items.map((i) => [i.metadata.uid, i]));
