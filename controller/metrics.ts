import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { instanceFinished } from '../crds/lifecycle.ts';
import { PHASES, type PacketCapture, type Phase } from '../crds/packetcapture.ts';
import { changedKeys, type Snapshot } from '../kube/watch.ts';
import { liveAgentNodes, type Lease } from './agents.ts';

/** Phases in which a capture's targets need their node's agent: to start a session, or to stop one. */
const NEEDS_AGENT: ReadonlySet<Phase | undefined> = new Set<Phase>(['Pending', 'Capturing']);

/**
 * Pods that captures target, counted by the node they run on, for the nodes without a live
 * agent: no session starts or stops there (NoNodeAgent). Read from the targets in status, so
 * every replica derives the same, leader or not; a pod two captures target counts once, and
 * an instance that reached its limit needs no agent any more.
 */
export function targetedPodsWithoutAgent(captures: Iterable<PacketCapture>, agentNodes: ReadonlySet<string>): Map<string, number> {
  const pods = new Map<string, Set<string>>();
  for (const capture of captures) {
    if (!NEEDS_AGENT.has(capture.status?.phase)) continue;
    for (const t of capture.status?.targets ?? []) {
      if (agentNodes.has(t.nodeName) || instanceFinished(capture, t.podUID)) continue;
      pods.set(t.nodeName, (pods.get(t.nodeName) ?? new Set<string>()).add(t.podUID));
    }
  }
  return new Map([...pods].map(([node, uids]) => [node, uids.size]));
}

/** The controller's metrics, on a registry of its own so two controllers in one process (tests) do not collide. */
export class ControllerMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: 'packet_capture_controller_reconciles_total',
    help: 'Reconciles of one PacketCapture, by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: 'packet_capture_controller_reconcile_duration_seconds',
    help: 'Time to reconcile one PacketCapture (finalizer, status, events)',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly captures = new Gauge({
    name: 'packet_capture_controller_captures',
    help: 'PacketCaptures by status.phase (Unknown: not reconciled yet)',
    labelNames: ['phase'] as const,
    registers: [this.registry],
  });
  readonly podReplacements = new Counter({
    name: 'packet_capture_controller_pod_replacements_total',
    help: 'Pod names whose target moved to a new pod instance (UID)',
    registers: [this.registry],
  });
  readonly statusWrites = new Counter({
    name: 'packet_capture_controller_status_writes_total',
    help: 'Server-side applies of PacketCapture status by the controller',
    registers: [this.registry],
  });
  readonly apiErrors = new Counter({
    name: 'packet_capture_controller_api_errors_total',
    help: 'Failed API requests of the reconciler, by operation',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'packet_capture_controller_leader',
    help: '1 while this replica holds the leader lease and may write',
    registers: [this.registry],
  });
  // `target_node`, not `node`: the scrape's relabeling gives every series the controller pod's own node as `node`
  private readonly withoutAgent = new Gauge({
    name: 'packet_capture_controller_targeted_pods_without_agent',
    help: 'Pods PacketCaptures target on a node with no live agent (NoNodeAgent), by that node',
    labelNames: ['target_node'] as const,
    registers: [this.registry],
    collect: () => this.collectWithoutAgent(),
  });

  /** the newest captures and agent Leases, for the gauge derived at scrape time */
  private world?: { captures: Snapshot<PacketCapture>; leases: Snapshot<Lease> };
  private readonly now: () => number;

  constructor({ now = Date.now }: { now?: () => number } = {}) {
    this.now = now;
    for (const [phase, n] of this.phases.counts) this.captures.set({ phase }, n);
  }

  /** the snapshot the phase gauge was counted from, and its counts */
  private phases: { captures: Snapshot<PacketCapture>; counts: Map<string, number> } = {
    captures: new Map(),
    counts: new Map([...PHASES, 'Unknown'].map((p) => [p, 0])),
  };

  /**
   * Captures by phase from the newest snapshot, counted from what changed since the last
   * one (a watch event costs one capture, not all of them); every phase is present so
   * dashboards see zeros.
   */
  countPhases(captures: Snapshot<PacketCapture>): void {
    const { counts, captures: before } = this.phases;
    const phaseOf = (c: PacketCapture | undefined) => (c ? (c.status?.phase ?? 'Unknown') : undefined);
    const touched = new Set<string>();
    for (const uid of changedKeys(before, captures)) {
      for (const [phase, delta] of [[phaseOf(before.get(uid)), -1], [phaseOf(captures.get(uid)), 1]] as const) {
        if (phase === undefined) continue;
        counts.set(phase, (counts.get(phase) ?? 0) + delta);
        touched.add(phase);
      }
    }
    this.phases = { captures, counts };
    for (const phase of touched) this.captures.set({ phase }, counts.get(phase)!);
  }

  /** Keeps the newest snapshots; a Lease runs out by the clock alone, so the gauge reads them at each scrape. */
  observeWorld(captures: Snapshot<PacketCapture>, leases: Snapshot<Lease>): void {
    this.world = { captures, leases };
  }

  private collectWithoutAgent(): void {
    this.withoutAgent.reset();
    if (!this.world) return;
    const agentNodes = liveAgentNodes(this.world.leases.values(), this.now());
    for (const [node, pods] of targetedPodsWithoutAgent(this.world.captures.values(), agentNodes)) {
      this.withoutAgent.set({ target_node: node }, pods);
    }
  }
}
