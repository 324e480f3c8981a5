import type { KubeConfig } from '@kubernetes/client-node';
import { defer, distinctUntilChanged, EMPTY, ignoreElements, merge, switchMap, tap, type Observable } from 'rxjs';
import {
  API_VERSION,
  CONTROLLER_FIELD_MANAGER,
  GROUP,
  KIND,
  PLURAL,
  REASONS,
  VERSION,
  type PacketCapture,
} from '../crds/packetcapture.ts';
import type { EventRecorder, InvolvedObject } from '../kube/events.ts';
import { isConflict, isNotFound, kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import type { Logger } from '../kube/log.ts';
import { StatusWriter, type StatusTarget } from '../kube/status.ts';
import type { Snapshot } from '../kube/watch.ts';
import type { Lease } from './agents.ts';
import { carryTransitionTimes, observedControllerStatus, type ControllerStatus } from './conditions.ts';
import { phaseEvents, problemEvents, seedLineage, targetEvents, type CaptureEvent, type Lineage } from './events.ts';
import { withFinalizer, type FinalizerOptions } from './finalizer.ts';
import type { ControllerMetrics } from './metrics.ts';
import { PLACED_LABEL, placementPatchOver } from './placement.ts';
import { decisions, perCapture, type Decision } from './stream.ts';
import type { Pod } from './targets.ts';

export interface ReconcilerOptions {
  kc: KubeConfig;
  log: Logger;
  metrics: ControllerMetrics;
  events: EventRecorder;
  captures$: Observable<Snapshot<PacketCapture>>;
  pods$: Observable<Snapshot<Pod>>;
  /** agent presence Leases */
  leases$: Observable<Snapshot<Lease>>;
  /** writes happen only while this is true */
  isLeader$: Observable<boolean>;
  resyncMs: number;
  finalizer?: FinalizerOptions;
  writer?: StatusWriter<ControllerStatus>;
}

interface CaptureState {
  uid: string;
  /** the capture's logger, made for each line: kept, one per capture was ~250 bytes, and a capture logs only when it writes */
  log(): Logger;
  lineage: Lineage;
  /**
   * our last placement label patch, until the snapshot shows it. A decision made from a
   * snapshot that lags it would place the capture against labels that are gone (a status
   * written while the capture is, in truth, unplaced reaches every agent). Trusted for
   * ECHO_WAIT_MS at most, as the status writer trusts its own writes: labels someone else
   * changed since are then read from the snapshot again.
   */
  placed?: { labels: Record<string, string | null>; at: number };
}

const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 30_000;
export const retryDelay = (failures: number): number => Math.min(RETRY_BASE_MS * 2 ** (failures - 1), RETRY_MAX_MS);

export const capturePath = (c: PacketCapture): string =>
  `/apis/${GROUP}/${VERSION}/namespaces/${c.metadata.namespace}/${PLURAL}/${c.metadata.name}`;

const involved = (c: PacketCapture): InvolvedObject => ({
  apiVersion: API_VERSION,
  kind: KIND,
  name: c.metadata.name,
  namespace: c.metadata.namespace,
  uid: c.metadata.uid,
});

const statusTarget = (c: PacketCapture): StatusTarget => ({ ...involved(c), path: capturePath(c) });

export interface Reconciler {
  /** emits nothing; subscribe to run, unsubscribe to stop starting new work */
  run$: Observable<never>;
  /** settles when the requests already started have ended (an unsubscribe cannot recall them) */
  settled(): Promise<void>;
}

/**
 * The reconcile loop: decisions from the watched world, and for each capture the writes
 * that make the cluster match them (finalizer, status, events). Level-triggered and
 * idempotent; a failed request is retried with backoff on the newest decision.
 */
export function reconciler(opts: ReconcilerOptions): Reconciler {
  const { kc, log, metrics } = opts;
  const writer = opts.writer ?? new StatusWriter<ControllerStatus>(kc, CONTROLLER_FIELD_MANAGER);
  const inFlight = new Set<Promise<void>>();

  const call = async <T>(operation: string, request: () => Promise<T>): Promise<T> => {
    try {
      return await request();
    } catch (err) {
      metrics.apiErrors.inc({ operation });
      throw err;
    }
  };

  /**
   * Our finalizer and the placement labels, in one request: a new capture costs one metadata
   * write and one status write. True once applied; false when the capture is gone or changed
   * since the snapshot (the watch brings a new decision).
   */
  const patchMetadata = async (c: PacketCapture, change: { finalizer?: boolean; labels?: Record<string, string | null> }): Promise<boolean> => {
    const metadata = {
      ...(change.finalizer !== undefined ? { finalizers: withFinalizer(c.metadata.finalizers, change.finalizer) } : {}),
      ...(change.labels ? { labels: change.labels } : {}),
      // the resourceVersion makes this a compare-and-swap: a list replaced from a stale read
      // would drop others' finalizers (labels merge key by key and need none)
      ...(change.finalizer !== undefined ? { resourceVersion: c.metadata.resourceVersion } : {}),
    };
    try {
      await call('metadata', () => kubeRequest(kc, 'PATCH', capturePath(c), { contentType: MERGE_PATCH, body: { metadata } }));
      return true;
    } catch (err) {
      // gone, or changed since the snapshot: either way the watch brings the news and a new decision
      if (!isNotFound(err) && !isConflict(err)) throw err;
      return false;
    }
  };

  const record = async (c: PacketCapture, state: CaptureState, events: CaptureEvent[]) => {
    for (const e of events) {
      state.log()[e.type === 'Warning' ? 'warn' : 'info']({ podUID: e.podUID, reason: e.reason }, e.message);
      if (e.reason === REASONS.PodReplaced) metrics.podReplacements.inc();
      await opts.events.record(involved(c), e.type, e.reason, e.message);
    }
  };

  const writeStatus = async (d: Decision, state: CaptureState): Promise<void> => {
    const c = d.capture;
    const target = statusTarget(c);
    const observed = observedControllerStatus(c.status);
    writer.observe(target, observed);
    // our last write, until the snapshot shows it: the snapshot lags it
    const pending = writer.pending(target.uid);
    const desired = carryTransitionTimes(d.derived.status, c.status?.conditions, pending?.conditions);
    const before = pending ?? observed;
    if (!(await call('status', () => writer.apply(target, desired)))) return;
    metrics.statusWrites.inc();
    const ready = desired.conditions.find((x) => x.type === 'Ready');
    state.log().info(
      { phase: desired.phase, reason: ready?.reason, podUIDs: desired.targets.map((t) => t.podUID), generation: desired.observedGeneration },
      'status updated',
    );
    const everTargeted = state.lineage.length > 0 || desired.targets.length > 0;
    const fromTargets = targetEvents(state.lineage, desired.targets);
    state.lineage = fromTargets.lineage;
    await record(c, state, [...fromTargets.events, ...phaseEvents(before, desired), ...problemEvents(before, desired, everTargeted)]);
  };

  /** The decision's label patch, made against the labels as our own last patch left them. */
  const placementNow = (d: Decision, state: CaptureState): Record<string, string | null> | undefined => {
    const seen = d.capture.metadata.labels ?? {};
    const shown = (placed: Record<string, string | null>) => Object.entries(placed).every(([k, v]) => (v === null ? seen[k] === undefined : seen[k] === v));
    if (state.placed && (shown(state.placed.labels) || Date.now() - state.placed.at > StatusWriter.ECHO_WAIT_MS)) state.placed = undefined;
    return state.placed && d.nodes ? placementPatchOver(d.capture, d.nodes, state.placed.labels) : d.labels;
  };

  const reconcileOne = async (d: Decision, state: CaptureState, current: () => boolean): Promise<void> => {
    const stopTimer = metrics.reconcileDuration.startTimer();
    try {
      if (d.finalizer.action === 'release') {
        // the object is about to go: a last status would only be one more write nobody reads
        await patchMetadata(d.capture, { finalizer: false });
        state.log().info({ reason: d.finalizer.reason }, `finalizer released: ${d.finalizer.message}`);
        // released unconfirmed: a tcpdump may still run on that node until its agent is back
        // (its reaper stops it), and the Event outlives the object, so whoever deleted it can tell
        if (d.finalizer.reason === REASONS.AgentGone) await record(d.capture, state, [{ type: 'Warning', reason: REASONS.AgentGone, message: d.finalizer.message }]);
      } else {
        const finalizer = d.finalizer.action === 'add' ? true : undefined;
        const labels = placementNow(d, state);
        // An unplaced capture is heard by every agent: the status it is unplaced with (its
        // pod gone) is written first, while only the nodes it was placed on hear it, and the
        // others get it once, with the capture. Placing goes first, so that its nodes alone
        // hear the status.
        // A newer decision that came while a request was out makes the rest of this one
        // stale, and the next run has it: a pod that is back spares the unplacing, one
        // already Running the status that says it is Pending.
        const unplacing = labels?.[PLACED_LABEL] === null;
        if (unplacing) await writeStatus(d, state);
        if ((finalizer || labels) && current() && (await patchMetadata(d.capture, { finalizer, labels })) && labels) {
          state.placed = { labels: { ...state.placed?.labels, ...labels }, at: Date.now() };
        }
        if (!unplacing && current()) await writeStatus(d, state);
      }
      metrics.reconciles.inc({ result: 'success' });
    } catch (err) {
      metrics.reconciles.inc({ result: 'error' });
      state.log().warn({ err: String(err) }, 'reconcile failed; retrying');
      throw err;
    } finally {
      stopTimer();
    }
  };

  const work$ = decisions(opts.captures$, opts.pods$, opts.leases$, { resyncMs: opts.resyncMs, finalizer: opts.finalizer }).pipe(
    perCapture<CaptureState>({
      init: ({ capture: c }) => {
        const { namespace, name, uid } = c.metadata;
        return { uid, log: () => log.child({ namespace, name, captureUID: uid }), lineage: seedLineage(c.status) };
      },
      work: (d, state, current) =>
        defer(() => {
          const run = reconcileOne(d, state, current);
          inFlight.add(run);
          return run.finally(() => inFlight.delete(run));
        }),
      dispose: (state) => writer.forget(state.uid),
      retryDelay,
    }),
  );

  const run$ = merge(
    opts.captures$.pipe(
      tap((captures) => metrics.countPhases(captures)),
      ignoreElements(),
    ),
    opts.isLeader$.pipe(
      distinctUntilChanged(),
      tap((leader) => metrics.leader.set(leader ? 1 : 0)),
      switchMap((leader) => (leader ? work$ : EMPTY)),
    ),
  );
  return { run$, settled: async () => void (await Promise.allSettled([...inFlight])) };
}
