// Capture and pod objects for the agent's unit tests: the smallest shapes the API server returns.

import { API_VERSION, KIND, type PacketCapture, type PacketCaptureSpec, type SessionStatus } from '../../crds/packetcapture.ts';
import type { Pod } from '../../agent/identity.ts';

export const NODE = 'node-a';
export const NS = 'shop';

export function capture(
  overrides: {
    uid?: string;
    name?: string;
    generation?: number;
    spec?: Partial<PacketCaptureSpec>;
    deleting?: boolean;
    phase?: 'Pending' | 'Capturing' | 'Completed' | 'Failed';
    sessions?: SessionStatus[];
  } = {},
): PacketCapture {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: {
      name: overrides.name ?? 'web',
      namespace: NS,
      uid: overrides.uid ?? 'pc-1',
      generation: overrides.generation ?? 1,
      ...(overrides.deleting ? { deletionTimestamp: '2024-01-01T00:00:00Z' } : {}),
    },
    spec: { target: { podName: 'web-0' }, ...overrides.spec },
    ...(overrides.phase || overrides.sessions ? { status: { phase: overrides.phase, sessions: overrides.sessions } } : {}),
  };
}

export function pod(
  overrides: {
    uid?: string;
    name?: string;
    namespace?: string;
    ip?: string;
    node?: string;
    phase?: string;
    labels?: Record<string, string>;
    deleting?: boolean;
  } = {},
): Pod {
  return {
    metadata: {
      name: overrides.name ?? 'web-0',
      namespace: overrides.namespace ?? NS,
      uid: overrides.uid ?? 'aaaaaaaa-0000-0000-0000-000000000001',
      labels: overrides.labels ?? { app: 'web' },
      ...(overrides.deleting ? { deletionTimestamp: '2024-01-01T00:00:00Z' } : {}),
    },
    spec: { nodeName: overrides.node ?? NODE },
    status: { phase: overrides.phase ?? 'Running', ...(overrides.ip === '' ? {} : { podIP: overrides.ip ?? '10.244.1.5' }) },
  };
}

export function snapshot<T extends { metadata: { uid: string } }>(...objects: T[]): ReadonlyMap<string, T> {
  return new Map(objects.map((o) => [o.metadata.uid, o]));
}

export function session(overrides: Partial<SessionStatus> & Pick<SessionStatus, 'id'>): SessionStatus {
  return {
    podUID: 'aaaaaaaa-0000-0000-0000-000000000001',
    podName: 'web-0',
    nodeName: NODE,
    generation: 1,
    state: 'Ended',
    ...overrides,
  };
}
