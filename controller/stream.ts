import {
  asyncScheduler,
  BehaviorSubject,
  combineLatest,
  defer,
  EMPTY,
  filter,
  finalize,
  groupBy,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  Subject,
  switchMap,
  tap,
  timer,
  type OperatorFunction,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';
import type { PacketCapture } from '../crds/packetcapture.ts';
import type { Snapshot } from '../kube/watch.ts';
import { liveAgentNodes, nextAgentExpiry, type Lease } from './agents.ts';
import { deriveStatus, type DerivedStatus } from './conditions.ts';
import { decideFinalizer, DEFAULT_FINALIZER_OPTIONS, type FinalizerDecision, type FinalizerOptions } from './finalizer.ts';
import { resolveTargets, type Pod, type Resolution } from './targets.ts';

/** Everything a decision may depend on: the three watched kinds and the clock. */
export interface World {
  captures: Snapshot<PacketCapture>;
  pods: Snapshot<Pod>;
  leases: Snapshot<Lease>;
  now: number;
}

/** What should be true of one capture, derived from the world alone (level-triggered). */
export interface Decision {
  capture: PacketCapture;
  resolution: Resolution;
  derived: DerivedStatus;
  finalizer: FinalizerDecision;
}

export interface Decisions {
  /** by capture UID */
  byCapture: ReadonlyMap<string, Decision>;
  /** the next time a decision changes by the clock alone */
  wakeAt?: number;
}

function podsByNamespace(pods: Snapshot<Pod>): Map<string, Pod[]> {
  const index = new Map<string, Pod[]>();
  for (const pod of pods.values()) {
    const ns = pod.metadata.namespace ?? '';
    const list = index.get(ns);
    if (list) list.push(pod);
    else index.set(ns, [pod]);
  }
  return index;
}

const earliest = (times: (number | undefined)[], after: number): number | undefined =>
  times.reduce<number | undefined>((min, t) => (t !== undefined && t > after && (min === undefined || t < min) ? t : min), undefined);

/** One decision per capture in the world. Pure. */
export function decide(world: World, finalizerOptions: FinalizerOptions = DEFAULT_FINALIZER_OPTIONS): Decisions {
  const { now } = world;
  const agentNodes = liveAgentNodes(world.leases.values(), now);
  const pods = podsByNamespace(world.pods);
  const byCapture = new Map<string, Decision>();
  const wakes: (number | undefined)[] = [nextAgentExpiry(world.leases.values(), now)];
  for (const [uid, capture] of world.captures) {
    const resolution = resolveTargets(capture, pods.get(capture.metadata.namespace) ?? []);
    const finalizer = decideFinalizer(capture, agentNodes, now, finalizerOptions);
    const deletion = finalizer.action === 'wait' || finalizer.action === 'release' ? finalizer : undefined;
    const derived = deriveStatus({ capture, resolution, now, agentNodes, deletion });
    wakes.push(derived.nextDecisionAt, finalizer.action === 'wait' ? finalizer.nextDecisionAt : undefined);
    byCapture.set(uid, { capture, resolution, derived, finalizer });
  }
  return { byCapture, wakeAt: earliest(wakes, now) };
}

export interface DecisionStreamOptions {
  /** re-derive everything this often even if nothing was observed to change */
  resyncMs: number;
  finalizer?: FinalizerOptions;
  scheduler?: SchedulerLike;
}

/**
 * Watched snapshots in, decisions out: a new set whenever any kind changes, a periodic
 * resync, and a wake-up exactly when a time-based decision (limits.duration, an agent
 * lease running out, a bounded finalizer wait) is due.
 */
export function decisions(
  captures$: Observable<Snapshot<PacketCapture>>,
  pods$: Observable<Snapshot<Pod>>,
  leases$: Observable<Snapshot<Lease>>,
  opts: DecisionStreamOptions,
): Observable<Decisions> {
  const scheduler = opts.scheduler ?? asyncScheduler;
  return defer(() => {
    const wakeAt$ = new BehaviorSubject<number | undefined>(undefined);
    const clock$ = merge(
      of(0),
      timer(opts.resyncMs, opts.resyncMs, scheduler),
      wakeAt$.pipe(switchMap((at) => (at === undefined ? EMPTY : timer(Math.max(0, at - scheduler.now()), scheduler)))),
    );
    return combineLatest([captures$, pods$, leases$, clock$]).pipe(
      map(([captures, pods, leases]) => decide({ captures, pods, leases, now: scheduler.now() }, opts.finalizer)),
      tap((d) => wakeAt$.next(d.wakeAt)),
    );
  });
}

/**
 * Runs `work` for the values of a stream one at a time, always on the newest: values that
 * arrive while work is running replace each other, and only the last is worked on next.
 * A failed run is retried after `retryDelay(failures)` with the newest value by then.
 * Level-triggered work needs nothing else: a skipped value was already out of date.
 */
export function latestSerially<T>(
  work: (value: T) => Observable<unknown>,
  retryDelay: (failures: number) => number,
  scheduler: SchedulerLike = asyncScheduler,
): OperatorFunction<T, never> {
  return (source) =>
    new Observable<never>((subscriber) => {
      let pending: { value: T } | undefined;
      let busy = false;
      let sourceDone = false;
      let failures = 0;
      const running = new Set<Subscription>();

      const next = (): void => {
        if (busy) return;
        if (!pending) {
          if (sourceDone) subscriber.complete();
          return;
        }
        const { value } = pending;
        pending = undefined;
        busy = true;
        // work may finish synchronously, before subscribe() returns its subscription
        const holder: { sub?: Subscription; finished?: boolean } = {};
        const finish = () => {
          holder.finished = true;
          if (holder.sub) running.delete(holder.sub);
        };
        const sub = work(value).subscribe({
          error: () => {
            finish();
            failures++;
            pending ??= { value };
            const wait = scheduler.schedule(() => {
              running.delete(wait);
              busy = false;
              // the capture left the world while we waited: nothing is left to retry for
              if (sourceDone && pending?.value === value) pending = undefined;
              next();
            }, retryDelay(failures));
            running.add(wait);
          },
          complete: () => {
            finish();
            failures = 0;
            busy = false;
            next();
          },
        });
        if (!holder.finished) {
          holder.sub = sub;
          running.add(sub);
        }
      };

      const upstream = source.subscribe({
        next: (value) => {
          pending = { value };
          next();
        },
        error: (err) => subscriber.error(err),
        complete: () => {
          sourceDone = true;
          next();
        },
      });
      return () => {
        upstream.unsubscribe();
        for (const s of running) s.unsubscribe();
      };
    });
}

export interface PerCaptureOptions<S> {
  /** state for one capture, made on its first decision; it lives until the capture leaves the world */
  init: (first: Decision) => S;
  work: (decision: Decision, state: S) => Observable<unknown>;
  /** called once the capture left the world and its last run ended */
  dispose?: (state: S) => void;
  retryDelay: (failures: number) => number;
  scheduler?: SchedulerLike;
}

/**
 * Per capture UID: its decisions, one run at a time on the newest (latestSerially), so two
 * writes for one capture never race while different captures proceed independently.
 */
export function perCapture<S>(opts: PerCaptureOptions<S>): OperatorFunction<Decisions, never> {
  type Item = { uid: string; decision?: Decision };
  return (decisions$) =>
    defer(() => {
      let present = new Set<string>();
      // a capture missing from the newest world gets a closing item
      const items = (d: Decisions): Item[] => {
        const out: Item[] = [...d.byCapture].map(([uid, decision]) => ({ uid, decision }));
        for (const uid of present) if (!d.byCapture.has(uid)) out.push({ uid });
        present = new Set(d.byCapture.keys());
        return out;
      };
      // Closing groups from a subject of our own rather than from the group itself: a
      // duration selector subscribed to its group counts as a subscriber of that group, and
      // groupBy then never lets go of its source after the outside unsubscribes.
      const left$ = new Subject<string>();
      return decisions$.pipe(
        mergeMap(items),
        tap((item) => {
          if (!item.decision) left$.next(item.uid);
        }),
        filter((item): item is Required<Item> => !!item.decision),
        groupBy((item) => item.uid, { duration: (group) => left$.pipe(filter((uid) => uid === group.key)) }),
        mergeMap((group) => {
          let state: S | undefined;
          return group.pipe(
            map((item) => item.decision),
            latestSerially((decision) => opts.work(decision, (state ??= opts.init(decision))), opts.retryDelay, opts.scheduler),
            finalize(() => {
              if (state !== undefined) opts.dispose?.(state);
            }),
          );
        }),
      );
    });
}
