// The PacketCapture v1alpha1 API as TypeScript types. The CRD schema (crds/crd.ts) is
// written against these types and test/unit/crd-types.test.ts checks that they agree.

export const GROUP = 'packetcapture.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'PacketCapture';
export const PLURAL = 'packetcaptures';
export const SINGULAR = 'packetcapture';
export const SHORT_NAME = 'pcap';
export const FINALIZER = `${GROUP}/cleanup`;
export const CONTROLLER_FIELD_MANAGER = 'packet-capture-controller';
export const agentFieldManager = (node: string): string => `packet-capture-agent/${node}`;

/** Where an agent keeps files: <dataDir>/<namespace>/<name>/<podUID>/<sessionId>/ */
export const DEFAULT_DATA_DIR = '/var/lib/packet-capture';

export const PROTOCOLS = ['TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const DIRECTIONS = ['Both', 'Ingress', 'Egress'] as const;
export type Direction = (typeof DIRECTIONS)[number];
export const LIFECYCLES = ['Follow', 'Once'] as const;
export type Lifecycle = (typeof LIFECYCLES)[number];
export const PHASES = ['Pending', 'Capturing', 'Completed', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];
export const SESSION_STATES = ['Pending', 'Running', 'Ended', 'Failed'] as const;
export type SessionState = (typeof SESSION_STATES)[number];

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface Target {
  podName?: string;
  podSelector?: LabelSelector;
}

export interface Filter {
  protocol?: Protocol;
  port?: number;
  srcPort?: number;
  dstPort?: number;
  peer?: string;
  direction?: Direction;
  bpf?: string;
}

export interface Limits {
  maxPackets?: number;
  /** Go-style duration: 30s, 10m, 1h30m */
  duration?: string;
  /** Kubernetes quantity of bytes: 10Mi, 500Ki, 1G */
  fileSize?: string;
  fileCount?: number;
  snapLen?: number;
}

export interface PacketCaptureSpec {
  target: Target;
  filter?: Filter;
  limits?: Limits;
  lifecycle?: Lifecycle;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

/** A pod instance the capture is bound to: identified by UID, never by name or IP. */
export interface TargetStatus {
  podName: string;
  podUID: string;
  nodeName: string;
  podIP?: string;
}

export interface SessionStatus {
  /** unique per capture; also the directory name under <podUID>/ */
  id: string;
  podUID: string;
  podName: string;
  nodeName: string;
  generation: number;
  state: SessionState;
  /** a reason word (see REASONS) while Pending/Failed, or why the session ended */
  reason?: string;
  startTime?: string;
  endTime?: string;
  endReason?: string;
  packets?: number;
  bytes?: number;
  files?: number;
  droppedByKernel?: number;
  /** directory on the node that holds this session's files */
  path?: string;
  message?: string;
}

/** The first end of an instance's capture on a node (a limit, or the instance gone): lifecycle Once completes on it. */
export interface InstanceEnd {
  podUID: string;
  podName: string;
  endReason: string;
}

/**
 * What one node's agent recorded of the capture's current generation, for the decisions
 * that must outlive the bounded session history (crds/lifecycle.ts reads it).
 */
export interface NodeRecord {
  nodeName: string;
  /** the spec generation recorded; a record of another generation decides nothing */
  generation: number;
  /** the earliest session start on this node: limits.duration counts from the earliest of all nodes */
  firstStartTime?: string;
  /** pod instances that reached a limit, in the order they did: never captured again in this generation */
  limitedPods?: string[];
  firstEnd?: InstanceEnd;
}

export interface PacketCaptureStatus {
  observedGeneration?: number;
  phase?: Phase;
  conditions?: Condition[];
  targets?: TargetStatus[];
  sessions?: SessionStatus[];
  nodes?: NodeRecord[];
}

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
}

export interface PacketCapture {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: PacketCaptureSpec;
  status?: PacketCaptureStatus;
}

/** Condition types: kstatus' three plus two of our own. */
export const CONDITIONS = {
  Ready: 'Ready',
  Reconciling: 'Reconciling',
  Stalled: 'Stalled',
  TargetResolved: 'TargetResolved',
  Capturing: 'Capturing',
} as const;

/**
 * Every reason word a user can see, defined once and used in conditions, Events, session
 * entries, logs and tests.
 */
export const REASONS = {
  // target resolution (controller)
  PodFound: 'PodFound',
  PodsFound: 'PodsFound',
  PodNotFound: 'PodNotFound',
  PodNotRunning: 'PodNotRunning',
  PodNotScheduled: 'PodNotScheduled',
  PodTerminating: 'PodTerminating',
  PodReplaced: 'PodReplaced',
  NoMatchingPods: 'NoMatchingPods',
  NoNodeAgent: 'NoNodeAgent',
  // capture progress
  SessionsRunning: 'SessionsRunning',
  SessionsStarting: 'SessionsStarting',
  CaptureCompleted: 'CaptureCompleted',
  CaptureFailed: 'CaptureFailed',
  CaptureDeleting: 'CaptureDeleting',
  AgentGone: 'AgentGone',
  // agent-side failures
  NetnsNotFound: 'NetnsNotFound',
  NetnsMismatch: 'NetnsMismatch',
  // the pod's processes are in the node's own network namespace (hostNetwork)
  HostNetwork: 'HostNetwork',
  InvalidFilter: 'InvalidFilter',
  TcpdumpMissing: 'TcpdumpMissing',
  TcpdumpExited: 'TcpdumpExited',
  DiskFull: 'DiskFull',
  // why a session ended
  PodDeleted: 'PodDeleted',
  SpecChanged: 'SpecChanged',
  CaptureDeleted: 'CaptureDeleted',
  PacketLimit: 'PacketLimit',
  Duration: 'Duration',
  Error: 'Error',
  AgentShutdown: 'AgentShutdown',
  AgentRestart: 'AgentRestart',
  // the pod's sandbox was recreated under the same UID: its processes live in another netns,
  // which a new session of the same instance captures
  NetnsChanged: 'NetnsChanged',
  // no process of the pod is left on the node: the session stops without waiting for the Pod
  // watch, and a new one waits for the pod's netns to appear again
  NetnsGone: 'NetnsGone',
  // the pod instance still runs but the capture no longer selects it (its labels changed)
  PodNotSelected: 'PodNotSelected',
  // controller: a spec the schema let through but that cannot be acted on (Stalled until edited)
  InvalidSpec: 'InvalidSpec',
  // controller Event: a pod instance became a target
  TargetResolved: 'TargetResolved',
} as const;
export type Reason = (typeof REASONS)[keyof typeof REASONS];

/**
 * Session ends that are the pod's netns changing or going under a running capture, not the
 * end of the pod instance: the agent captures the same instance on in a new session, and
 * neither they nor the gap count as the instance's capture having ended.
 */
export const NETNS_ENDS: ReadonlySet<string> = new Set([REASONS.NetnsChanged, REASONS.NetnsGone]);

/**
 * Ends under which nothing more may be recorded under the old terms (a narrowed filter, a
 * capture deleted for privacy, its time up): the session keeps every packet up to the
 * stop instant and none after it. Other ends (the pod replaced or deleted, the agent
 * stopping) keep the instance's tail, everything its netns saw.
 */
export const EXACT_STOP_ENDS: ReadonlySet<string> = new Set([REASONS.SpecChanged, REASONS.CaptureDeleted, REASONS.CaptureCompleted, REASONS.Duration]);

export const DEFAULTS = {
  lifecycle: 'Follow' as Lifecycle,
  direction: 'Both' as Direction,
  snapLen: 262144,
};

/**
 * Ended sessions each node keeps in status per capture; older ones drop off (files stay on
 * disk). Fewer when many nodes share the capture (sessionShare in agent/session-status.ts).
 */
export const SESSION_HISTORY = 20;

/** status.sessions holds at most this many entries, all nodes together (about 0.5 MB). */
export const MAX_SESSIONS = 1000;

/** status.nodes holds one record per node: Kubernetes' largest supported cluster. */
export const MAX_NODE_RECORDS = 5000;

/**
 * Limited pod instances one node record keeps. A node runs at most maxPods instances at
 * once (110 by default), so the instances still targeted always fit; past the cap the
 * record drops instances no longer targeted first (gone, so never captured again), then the
 * oldest, which would be captured once more for their limit.
 */
export const MAX_LIMITED_PER_NODE = 256;
