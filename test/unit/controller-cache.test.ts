// What the controller keeps of each watched kind (controller/cache.ts): only what its
// decisions read, and every one of those fields.

import { describe, expect, it } from 'vitest';
import { cachedCapture, cachedLease, cachedPod } from '../../controller/cache.ts';
import { resolveTargets, type Pod } from '../../controller/targets.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import type { Lease } from '../../controller/agents.ts';
import { capture, pod, session } from './controller-fixtures.ts';

const managedFields = [{ manager: 'kubectl', operation: 'Apply', fieldsV1: { 'f:spec': {} } }];

/** A pod as the API server sends it: much more than a decision reads. */
const fullPod = (): Pod =>
  ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web-0',
      namespace: 'shop',
      uid: 'u1',
      resourceVersion: '42',
      labels: { app: 'web' },
      creationTimestamp: '2026-01-01T00:00:00Z',
      deletionTimestamp: '2026-01-01T01:00:00Z',
      managedFields,
      ownerReferences: [{ kind: 'ReplicaSet', name: 'web-abc', uid: 'rs' }],
    },
    spec: { nodeName: 'node-a', containers: [{ name: 'app', image: 'nginx', env: [{ name: 'A', value: 'x'.repeat(1000) }] }] },
    status: { phase: 'Running', podIP: '10.244.0.5', conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'app' }] },
  }) as Pod;

describe('controller cache transforms', () => {
  it('keeps of a pod only what target resolution reads', () => {
    expect(cachedPod(fullPod())).toEqual({
      metadata: { name: 'web-0', namespace: 'shop', uid: 'u1', labels: { app: 'web' }, creationTimestamp: '2026-01-01T00:00:00Z', deletionTimestamp: '2026-01-01T01:00:00Z' },
      spec: { nodeName: 'node-a' },
      status: { phase: 'Running', podIP: '10.244.0.5' },
    });
  });

  it('resolves the same targets from a cached pod as from the full one', () => {
    const byName = capture({ target: { podName: 'web-0' } });
    const bySelector = capture({ target: { podSelector: { matchLabels: { app: 'web' } } } });
    for (const p of [fullPod(), pod('web-0', 'u2', { node: null, phase: 'Pending', labels: { app: 'web' } }), pod('web-0', 'u3', { ip: '10.0.0.1', labels: { app: 'web' } })]) {
      for (const c of [byName, bySelector]) expect(resolveTargets(c, [cachedPod(p)])).toEqual(resolveTargets(c, [p]));
    }
  });

  it('keeps of an agent Lease its holder and renewal', () => {
    const lease = {
      metadata: { name: 'agent-node-a', namespace: 'sys', uid: 'l1', labels: { 'packetcapture.dev/agent': 'true' }, managedFields },
      spec: { holderIdentity: 'node-a', renewTime: '2026-01-01T00:00:00.000000Z', leaseDurationSeconds: 30, acquireTime: '2026-01-01T00:00:00.000000Z', leaseTransitions: 3 },
    } as Lease;
    expect(cachedLease(lease)).toEqual({
      metadata: { name: 'agent-node-a', namespace: 'sys', uid: 'l1', labels: { 'packetcapture.dev/agent': 'true' } },
      spec: { holderIdentity: 'node-a', renewTime: '2026-01-01T00:00:00.000000Z', leaseDurationSeconds: 30 },
    });
  });

  it('drops managedFields and annotations of a capture, and keeps spec, status, finalizers and resourceVersion', () => {
    const c = capture({ target: { podName: 'web-0' } }, { finalizers: ['packetcapture.dev/finalizer'], status: { phase: 'Pending' } });
    const full = {
      ...c,
      metadata: { ...c.metadata, managedFields, annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' } },
    } as PacketCapture;
    expect(cachedCapture(full)).toEqual(c);
  });

  it('keeps a whole status, every condition, target and session, as it came', () => {
    const message = '0 of 1 target(s) capturing; web-0 (UID u1): waiting for the agent on node-a';
    const at = '2026-01-01T00:00:00Z';
    const status: PacketCapture['status'] = {
      phase: 'Pending',
      observedGeneration: 1,
      conditions: ['Ready', 'Capturing', 'Reconciling'].map((type) => ({ type, status: 'False' as const, reason: 'SessionsStarting', message, lastTransitionTime: at, observedGeneration: 1 })),
      targets: [{ podName: 'web-0', podUID: 'u1', nodeName: 'node-a', podIP: '10.244.0.5' }],
      sessions: [session('web-0', 'u1', { state: 'Failed', reason: 'NetnsNotFound' })],
    };
    const base = capture({ target: { podName: 'web-0' } }, { status, finalizers: ['packetcapture.dev/cleanup'] });
    const c = { ...base, metadata: { ...base.metadata, labels: { 'packetcapture.dev/placed': 'true', 'node.packetcapture.dev/node-a': 'true' } } };
    expect(cachedCapture(structuredClone(c))).toEqual(c);
  });
});
