// The CRD schema and the TypeScript types describe the same API. `everything` sets every
// field the types have (DeepRequired makes tsc insist on each optional one), so a field
// added to the types but not the schema (or the reverse) fails here instead of being
// pruned by the API server at run time.

import { describe, expect, it } from 'vitest';
import { packetCaptureSchema, type SchemaProps } from '../../crds/crd.ts';
import {
  API_VERSION,
  DIRECTIONS,
  KIND,
  LIFECYCLES,
  PHASES,
  PROTOCOLS,
  SESSION_STATES,
  type Condition,
  type InstanceEnd,
  type LabelSelectorRequirement,
  type NodeRecord,
  type PacketCapture,
  type PacketCaptureSpec,
  type SessionStatus,
  type TargetStatus,
} from '../../crds/packetcapture.ts';

type DeepRequired<T> = T extends (infer U)[]
  ? DeepRequired<U>[]
  : T extends object
    ? { [K in keyof T]-?: DeepRequired<T[K]> }
    : T;

const everything: DeepRequired<PacketCapture> = {
  apiVersion: API_VERSION,
  kind: KIND,
  metadata: {
    name: 'web',
    namespace: 'demo',
    uid: '0b5f6a1e-0000-4000-8000-000000000001',
    generation: 2,
    resourceVersion: '42',
    creationTimestamp: '2025-01-01T00:00:00Z',
    deletionTimestamp: '2025-01-01T01:00:00Z',
    labels: { app: 'web' },
    annotations: { note: 'x' },
    finalizers: ['packetcapture.dev/cleanup'],
  },
  spec: {
    target: {
      podName: 'web-0',
      podSelector: {
        matchLabels: { app: 'web' },
        matchExpressions: [{ key: 'tier', operator: 'In', values: ['front'] }],
      },
    },
    filter: {
      protocol: 'TCP',
      port: 80,
      srcPort: 1234,
      dstPort: 80,
      peer: '10.0.0.0/8',
      direction: 'Both',
      bpf: 'tcp[13] & 2 != 0',
    },
    limits: { maxPackets: 100, duration: '10m', fileSize: '10Mi', fileCount: 5, snapLen: 96 },
    lifecycle: 'Follow',
  },
  status: {
    observedGeneration: 2,
    phase: 'Capturing',
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'SessionsRunning',
        message: 'capturing',
        observedGeneration: 2,
        lastTransitionTime: '2025-01-01T00:00:01Z',
      },
    ],
    targets: [{ podName: 'web-0', podUID: 'u1', nodeName: 'node-a', podIP: '10.244.0.7' }],
    sessions: [
      {
        id: 's1',
        podUID: 'u1',
        podName: 'web-0',
        nodeName: 'node-a',
        generation: 2,
        state: 'Running',
        reason: 'SessionsRunning',
        startTime: '2025-01-01T00:00:02Z',
        endTime: '2025-01-01T00:10:02Z',
        endReason: 'Duration',
        packets: 10,
        bytes: 1000,
        files: 1,
        droppedByKernel: 0,
        path: '/var/lib/packet-capture/demo/web/u1/s1',
        message: 'ok',
      },
    ],
    nodes: [
      {
        nodeName: 'node-a',
        generation: 2,
        firstStartTime: '2025-01-01T00:00:02Z',
        limitedPods: ['u1'],
        firstEnd: { podUID: 'u1', podName: 'web-0', endReason: 'PacketLimit' },
      },
    ],
  },
};

/** metadata is the API server's, not ours: the CRD leaves it to the built-in ObjectMeta. */
const OPAQUE = new Set(['metadata']);

function schemaPaths(node: SchemaProps, path: string): string[] {
  if (OPAQUE.has(path)) return [path];
  if (node.items) return schemaPaths(node.items, `${path}[]`);
  if (node.additionalProperties) return [`${path}{}`];
  if (!node.properties) return [path];
  return Object.entries(node.properties).flatMap(([name, child]) => schemaPaths(child, path ? `${path}.${name}` : name));
}

/** The same notation for a value: arrays as [], and maps (where the schema has one) as {}. */
function valuePaths(value: unknown, path: string, node: SchemaProps | undefined): string[] {
  if (OPAQUE.has(path)) return [path];
  if (Array.isArray(value)) return value.flatMap((item) => valuePaths(item, `${path}[]`, node?.items));
  if (value === null || typeof value !== 'object') return [path];
  if (node?.additionalProperties) return [`${path}{}`];
  return Object.entries(value).flatMap(([name, child]) =>
    valuePaths(child, path ? `${path}.${name}` : name, node?.properties?.[name]),
  );
}

const nodeAt = (path: string): SchemaProps | undefined =>
  path
    .split('.')
    .reduce<SchemaProps | undefined>(
      (node, name) => (name.endsWith('[]') ? node?.properties?.[name.slice(0, -2)]?.items : node?.properties?.[name]),
      packetCaptureSchema,
    );

/** Its arguments, sorted; compiles only when they are every member of the union U. */
const every =
  <U extends string>() =>
  <const V extends readonly U[]>(...values: [U] extends [V[number]] ? V : never): string[] =>
    [...values].sort();
type RequiredKeys<T> = { [K in keyof T]-?: undefined extends T[K] ? never : K }[keyof T] & string;
const requiredKeys = <T>() => every<RequiredKeys<T>>();

describe('CRD schema and TypeScript types', () => {
  it('have the same fields, in both directions', () => {
    const fromSchema = [...new Set(schemaPaths(packetCaptureSchema, ''))].sort();
    const fromTypes = [...new Set(valuePaths(everything, '', packetCaptureSchema))].sort();
    expect(fromSchema).toEqual(fromTypes);
    expect(fromSchema).toContain('spec.target.podSelector.matchExpressions[].values[]');
  });

  it('give every field the same kind of value', () => {
    const expectedType = (v: unknown) =>
      Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v === 'object' ? 'object' : typeof v;
    const check = (value: unknown, node: SchemaProps, path: string): void => {
      expect(node.type, path).toBe(expectedType(value));
      if (Array.isArray(value)) value.forEach((item) => check(item, node.items!, `${path}[]`));
      else if (node.properties && value && typeof value === 'object' && !OPAQUE.has(path))
        for (const [name, child] of Object.entries(value)) check(child, node.properties[name]!, `${path}.${name}`);
    };
    check(everything, packetCaptureSchema, '');
  });

  it.each([
    ['', requiredKeys<PacketCapture>()('apiVersion', 'kind', 'metadata', 'spec')],
    ['spec', requiredKeys<PacketCaptureSpec>()('target')],
    ['spec.target.podSelector.matchExpressions[]', requiredKeys<LabelSelectorRequirement>()('key', 'operator')],
    ['status.conditions[]', requiredKeys<Condition>()('type', 'status', 'reason', 'message', 'lastTransitionTime')],
    ['status.targets[]', requiredKeys<TargetStatus>()('podName', 'podUID', 'nodeName')],
    [
      'status.sessions[]',
      requiredKeys<SessionStatus>()('id', 'podUID', 'podName', 'nodeName', 'generation', 'state'),
    ],
    ['status.nodes[]', requiredKeys<NodeRecord>()('nodeName', 'generation')],
    ['status.nodes[].firstEnd', requiredKeys<InstanceEnd>()('podUID', 'podName', 'endReason')],
  ])('require at %s what the types require', (path, keys) => {
    const node = path ? nodeAt(path) : packetCaptureSchema;
    // apiVersion, kind and metadata are filled in by every client and the API server
    const optionalOnTheWire = path === '' ? ['apiVersion', 'kind', 'metadata'] : [];
    expect([...(node?.required ?? []), ...optionalOnTheWire].sort()).toEqual(keys);
  });

  it('objects without required fields in the types require none in the schema', () => {
    for (const path of ['spec.target', 'spec.target.podSelector', 'spec.filter', 'spec.limits', 'status'])
      expect(nodeAt(path)?.required, path).toBeUndefined();
  });

  it.each([
    ['spec.filter.protocol', PROTOCOLS],
    ['spec.filter.direction', DIRECTIONS],
    ['spec.lifecycle', LIFECYCLES],
    ['status.phase', PHASES],
    ['status.sessions[].state', SESSION_STATES],
    ['spec.target.podSelector.matchExpressions[].operator', every<LabelSelectorRequirement['operator']>()('In', 'NotIn', 'Exists', 'DoesNotExist')],
    ['status.conditions[].status', every<Condition['status']>()('True', 'False', 'Unknown')],
  ] as const)('enumerate at %s the values of the types', (path, values) => {
    expect([...(nodeAt(path)?.enum ?? [])].sort()).toEqual([...values].sort());
  });
});
