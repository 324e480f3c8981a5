import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { PHASES } from '../crds/packetcapture.ts';

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

  /** Captures by phase from the newest snapshot; every phase is present so dashboards see zeros. */
  setCapturesByPhase(phases: Iterable<string | undefined>): void {
    const counts = new Map<string, number>([...PHASES, 'Unknown'].map((p) => [p, 0]));
    for (const phase of phases) counts.set(phase ?? 'Unknown', (counts.get(phase ?? 'Unknown') ?? 0) + 1);
    for (const [phase, n] of counts) this.captures.set({ phase }, n);
  }
}
