// The PacketCapture CustomResourceDefinition, written against the types in
// crds/packetcapture.ts (test/unit/crd-types.test.ts keeps the two in step). The schema
// rejects what it can at admission; the CEL rules cover relations between fields. Every
// CEL message starts with the field it is about, because that message is all a user sees
// in `kubectl apply` output or an Argo CD sync error.

import {
  CONDITIONS,
  DEFAULTS,
  DIRECTIONS,
  GROUP,
  KIND,
  LIFECYCLES,
  MAX_LIMITED_PER_NODE,
  MAX_NODE_RECORDS,
  MAX_SESSIONS,
  PHASES,
  PLURAL,
  PROTOCOLS,
  SESSION_STATES,
  SHORT_NAME,
  SINGULAR,
  VERSION,
} from './packetcapture.ts';

export interface ValidationRule {
  rule: string;
  message: string;
  /** where the API server reports the error, relative to the node holding the rule */
  fieldPath?: string;
}

/** The subset of apiextensions.k8s.io/v1 JSONSchemaProps this CRD uses, as JSON. */
export interface SchemaProps {
  type: 'object' | 'array' | 'string' | 'integer' | 'boolean';
  description?: string;
  properties?: Record<string, SchemaProps>;
  additionalProperties?: SchemaProps;
  items?: SchemaProps;
  required?: string[];
  enum?: string[];
  default?: string;
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  maxItems?: number;
  maxProperties?: number;
  'x-kubernetes-validations'?: ValidationRule[];
  'x-kubernetes-list-type'?: 'atomic' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
}

export const CRD_NAME = `${PLURAL}.${GROUP}`;

// Same languages as parseDuration and parseQuantity in crds/units.ts, so anything admitted
// parses (crd-schema.test.ts holds them to that).
export const DURATION_PATTERN = '^(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$';
export const QUANTITY_PATTERN = '^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$';
const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const LABEL_VALUE_PATTERN = '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$';

const string = (description: string, extra: Partial<SchemaProps> = {}): SchemaProps => ({
  type: 'string',
  description,
  ...extra,
});
const integer = (description: string, extra: Partial<SchemaProps> = {}): SchemaProps => ({
  type: 'integer',
  format: 'int64',
  description,
  ...extra,
});
const port = (description: string): SchemaProps => ({
  type: 'integer',
  format: 'int32',
  description,
  minimum: 1,
  maximum: 65535,
});
const timestamp = (description: string): SchemaProps => string(description, { format: 'date-time' });

const labelSelector: SchemaProps = {
  type: 'object',
  description:
    'Every running pod in this namespace whose labels match gets its own session. An empty selector is rejected: it would capture every pod in the namespace.',
  properties: {
    matchLabels: {
      type: 'object',
      description: 'Labels a pod must carry, all of them.',
      maxProperties: 64,
      additionalProperties: string('label value', { maxLength: 63, pattern: LABEL_VALUE_PATTERN }),
    },
    matchExpressions: {
      type: 'array',
      description: 'Label requirements, all of which must hold.',
      maxItems: 32,
      items: {
        type: 'object',
        required: ['key', 'operator'],
        properties: {
          key: string('the label key', { maxLength: 317 }),
          operator: string('how the key relates to the values', { enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] }),
          values: {
            type: 'array',
            description: 'Non-empty for In and NotIn, empty for Exists and DoesNotExist.',
            maxItems: 64,
            items: string('a label value', { maxLength: 63 }),
          },
        },
        'x-kubernetes-validations': [
          {
            rule: "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
            fieldPath: '.values',
            message:
              'spec.target.podSelector.matchExpressions[].values: must be non-empty with operator In or NotIn, and empty with Exists or DoesNotExist',
          },
        ],
      },
    },
  },
  'x-kubernetes-validations': [
    {
      rule: '(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)',
      message:
        'spec.target.podSelector: needs matchLabels or matchExpressions; an empty selector would capture every pod in the namespace',
    },
  ],
};

const target: SchemaProps = {
  type: 'object',
  description: 'The pods to capture from: exactly one of podName or podSelector.',
  properties: {
    podName: string(
      'A pod in this namespace. When it is recreated under the same name, the capture follows the new instance (see lifecycle).',
      { maxLength: 253, pattern: DNS_SUBDOMAIN_PATTERN },
    ),
    podSelector: labelSelector,
  },
  'x-kubernetes-validations': [
    {
      rule: 'has(self.podName) != has(self.podSelector)',
      message: 'spec.target: exactly one of podName or podSelector must be set',
    },
  ],
};

const filter: SchemaProps = {
  type: 'object',
  description: 'Which packets to keep, compiled into one BPF expression. All given parts must match.',
  properties: {
    protocol: string('The IP protocol. Ports need TCP, UDP, SCTP or no protocol.', { enum: [...PROTOCOLS] }),
    port: port('A port on either side of the conversation. Excludes srcPort and dstPort.'),
    srcPort: port('The source port.'),
    dstPort: port('The destination port.'),
    peer: string('The IP address or CIDR of the other side of the conversation.', {
      maxLength: 64,
      'x-kubernetes-validations': [
        {
          rule: 'isIP(self) || isCIDR(self)',
          message: 'spec.filter.peer: must be an IP address or a CIDR, such as 10.0.0.7 or 10.0.0.0/8',
        },
      ],
    }),
    direction: string('Which traffic, relative to the pod: Both, Ingress (to the pod) or Egress (from the pod).', {
      enum: [...DIRECTIONS],
      default: DEFAULTS.direction,
    }),
    bpf: string(
      'An extra BPF expression (pcap-filter syntax), ANDed with the rest. It is compiled before the capture starts; an invalid one fails the session with reason InvalidFilter.',
      { maxLength: 1024 },
    ),
  },
  'x-kubernetes-validations': [
    {
      rule: '!has(self.port) || (!has(self.srcPort) && !has(self.dstPort))',
      fieldPath: '.port',
      message: 'spec.filter.port: cannot be combined with srcPort or dstPort; use port for either side, or srcPort/dstPort',
    },
    {
      rule: "!has(self.protocol) || self.protocol in ['TCP', 'UDP', 'SCTP'] || !(has(self.port) || has(self.srcPort) || has(self.dstPort))",
      fieldPath: '.protocol',
      message:
        'spec.filter.protocol: port, srcPort and dstPort need protocol TCP, UDP or SCTP (or no protocol); ICMP and ICMPv6 have no ports',
    },
  ],
};

const limits: SchemaProps = {
  type: 'object',
  description: 'When to stop and how to store files. Without limits a capture runs until it is deleted.',
  properties: {
    maxPackets: integer('Packets to capture per pod instance; its session then ends with reason PacketLimit.', {
      minimum: 1,
    }),
    duration: string(
      'How long the whole capture runs after the first session of its current spec started (an edit restarts the clock), as a Go duration: 30s, 10m, 1h30m, 500ms.',
      { maxLength: 64, pattern: DURATION_PATTERN },
    ),
    fileSize: string('Rotate to a new file at this size, as a quantity of bytes: 10Mi, 500k, 1G, 500000.', {
      maxLength: 64,
      pattern: QUANTITY_PATTERN,
    }),
    fileCount: {
      type: 'integer',
      format: 'int32',
      description: 'Keep a ring of this many files, overwriting the oldest. Needs fileSize.',
      minimum: 1,
      maximum: 1000,
    },
    snapLen: {
      type: 'integer',
      format: 'int32',
      description: `Bytes kept of each packet; 0 means ${DEFAULTS.snapLen}.`,
      minimum: 0,
      maximum: 262144,
    },
  },
  'x-kubernetes-validations': [
    {
      rule: '!has(self.fileCount) || has(self.fileSize)',
      fieldPath: '.fileCount',
      message: 'spec.limits.fileCount: needs spec.limits.fileSize, the size at which files rotate',
    },
  ],
};

const spec: SchemaProps = {
  type: 'object',
  description: 'What to capture. Editing it ends the running sessions and starts new ones.',
  required: ['target'],
  properties: {
    target,
    filter,
    limits,
    lifecycle: string(
      'Follow: capture each new instance of the target pods until the capture ends. Once: the capture completes when the capture of its first pod instance ends (pod deleted, replaced or stopped, or a limit reached); agent restarts, netns changes and spec edits do not end it.',
      { enum: [...LIFECYCLES], default: DEFAULTS.lifecycle },
    ),
  },
};

const condition: SchemaProps = {
  type: 'object',
  required: ['type', 'status', 'reason', 'message', 'lastTransitionTime'],
  properties: {
    type: string(`One of ${Object.values(CONDITIONS).join(', ')}.`, { maxLength: 316 }),
    status: string('True, False or Unknown.', { enum: ['True', 'False', 'Unknown'] }),
    reason: string('A reason word, such as PodNotFound.', { maxLength: 1024 }),
    message: string('What happened, and what to do about it.', { maxLength: 32768 }),
    observedGeneration: integer('The spec generation this condition was computed from.', { minimum: 0 }),
    lastTransitionTime: timestamp('When status last changed.'),
  },
};

const targetStatus: SchemaProps = {
  type: 'object',
  description: 'A pod instance the capture is bound to: identified by its UID, never by name or IP.',
  required: ['podName', 'podUID', 'nodeName'],
  properties: {
    podName: string('The pod name.'),
    podUID: string('The pod instance.'),
    nodeName: string('The node the instance runs on.'),
    podIP: string('The IP of the instance, for reading captures; the capture never filters by it.'),
  },
};

const sessionStatus: SchemaProps = {
  type: 'object',
  description: 'One tcpdump run: one pod instance and one spec generation.',
  required: ['id', 'podUID', 'podName', 'nodeName', 'generation', 'state'],
  properties: {
    id: string('Unique within the capture; also the directory of its files under the pod UID.'),
    podUID: string('The pod instance captured.'),
    podName: string('Its name when the session started.'),
    nodeName: string('The node whose agent runs the session.'),
    generation: integer('The spec generation the session was started for.', { minimum: 0 }),
    state: string('Pending, Running, Ended or Failed.', { enum: [...SESSION_STATES] }),
    reason: string('A reason word while Pending or Failed, such as NetnsNotFound.'),
    startTime: timestamp('When tcpdump started.'),
    endTime: timestamp('When tcpdump stopped.'),
    endReason: string('Why it stopped, such as PodDeleted, SpecChanged or PacketLimit.'),
    packets: integer('Packets written so far.', { minimum: 0 }),
    bytes: integer('Bytes written so far.', { minimum: 0 }),
    files: integer('Files written so far.', { minimum: 0 }),
    droppedByKernel: integer('Packets the kernel dropped before tcpdump could read them.', { minimum: 0 }),
    path: string('The directory on the node holding the files.'),
    message: string('Details, for a human.'),
  },
};

const nodeRecord: SchemaProps = {
  type: 'object',
  description:
    "What one node's agent recorded of the current spec generation, for the decisions the bounded session history cannot carry.",
  required: ['nodeName', 'generation'],
  properties: {
    nodeName: string('The node whose agent writes this record.'),
    generation: integer('The spec generation recorded; a record of another generation decides nothing.', { minimum: 0 }),
    firstStartTime: timestamp('The earliest session start on this node: limits.duration counts from the earliest of all nodes.'),
    limitedPods: {
      type: 'array',
      description: `UIDs of the pod instances that reached a limit, oldest first; they are not captured again. At most ${MAX_LIMITED_PER_NODE}: past that, instances no longer targeted drop first.`,
      maxItems: MAX_LIMITED_PER_NODE,
      items: string('A pod UID.', { maxLength: 64 }),
    },
    firstEnd: {
      type: 'object',
      description: 'The first end of an instance capture on this node (a limit, or the instance gone): lifecycle Once completes on it.',
      required: ['podUID', 'podName', 'endReason'],
      properties: {
        podUID: string('The pod instance.'),
        podName: string('Its name.'),
        endReason: string('Why its capture ended, such as PodDeleted or PacketLimit.'),
      },
    },
  },
};

const status: SchemaProps = {
  type: 'object',
  description: 'Written by the controller (phase, conditions, targets) and the node agents (sessions).',
  properties: {
    observedGeneration: integer('The spec generation the controller last acted on.', { minimum: 0 }),
    phase: string('Pending, Capturing, Completed or Failed.', { enum: [...PHASES] }),
    conditions: {
      type: 'array',
      description: 'Ready, Reconciling and Stalled (kstatus), TargetResolved and Capturing.',
      items: condition,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
    targets: {
      type: 'array',
      description: 'The pod instances captured now.',
      items: targetStatus,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['podUID'],
    },
    sessions: {
      type: 'array',
      description: `Capture sessions, running and recent: a history, which decides nothing (see nodes). Each agent writes its own entries, its share of at most ${MAX_SESSIONS}.`,
      maxItems: MAX_SESSIONS,
      items: sessionStatus,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['id'],
    },
    nodes: {
      type: 'array',
      description: `One record per node with sessions of the current generation, written by that node's agent. At most ${MAX_NODE_RECORDS}.`,
      maxItems: MAX_NODE_RECORDS,
      items: nodeRecord,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['nodeName'],
    },
  },
};

export const packetCaptureSchema: SchemaProps = {
  type: 'object',
  description: 'Captures packets from the instances of a pod, each bound to its UID.',
  required: ['spec'],
  properties: {
    apiVersion: string('The versioned schema of this representation of an object.'),
    kind: string('The REST resource this object represents.'),
    metadata: { type: 'object' },
    spec,
    status,
  },
};

const column = (name: string, type: 'string' | 'integer' | 'date', jsonPath: string, description: string) => ({
  name,
  type,
  jsonPath,
  description,
});

export const packetCaptureCrd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: CRD_NAME },
  spec: {
    group: GROUP,
    scope: 'Namespaced',
    names: {
      kind: KIND,
      listKind: `${KIND}List`,
      plural: PLURAL,
      singular: SINGULAR,
      shortNames: [SHORT_NAME],
      categories: ['captures'],
    },
    versions: [
      {
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          column('Phase', 'string', '.status.phase', 'Pending, Capturing, Completed or Failed'),
          column('Pod', 'string', '.status.targets[0].podName', 'the first pod captured now'),
          column('Node', 'string', '.status.targets[0].nodeName', 'its node'),
          column('Packets', 'integer', '.status.sessions[-1:].packets', 'packets of the latest session'),
          column('Ready', 'string', '.status.conditions[?(@.type=="Ready")].status', 'kstatus Ready'),
          column('Age', 'date', '.metadata.creationTimestamp', 'since creation'),
          { ...column('Pod UID', 'string', '.status.targets[0].podUID', 'the pod instance captured now'), priority: 1 },
        ],
        schema: { openAPIV3Schema: packetCaptureSchema },
      },
    ],
  },
};
