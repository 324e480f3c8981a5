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
  /** what the decisions were derived from, so the next world re-derives only what changed */
  basis?: Basis;
}

interface Basis {
  /** live agent nodes, as one word */
  agents: string;
  /** by namespace; a list that did not change is the same array from one world to the next */
  pods: ReadonlyMap<string, readonly Pod[]>;
}

const NO_PODS: readonly Pod[] = [];

/**
 * Pods by namespace. A namespace whose pods are the same objects as in `prior` keeps
 * prior's list, so "nothing changed here" is one reference comparison per capture.
 */
function podsByNamespace(pods: Snapshot<Pod>, prior?: ReadonlyMap<string, readonly Pod[]>): Map<string, readonly Pod[]> {
  const index = new Map<string, Pod[]>();
  for (const pod of pods.values()) {
    const ns = pod.metadata.namespace ?? '';
    const list = index.get(ns);
    if (list) list.push(pod);
    else index.set(ns, [pod]);
  }
  const sameAs = (list: readonly Pod[], before: readonly Pod[] | undefined) =>
    before !== undefined && before.length === list.length && list.every((pod, i) => pod === before[i]);
  return new Map([...index].map(([ns, list]) => [ns, sameAs(list, prior?.get(ns)) ? prior!.get(ns)! : list]));
}

const earliest = (times: (number | undefined)[], after: number): number | undefined =>
  times.reduce<number | undefined>((min, t) => (t !== undefined && t > after && (min === undefined || t < min) ? t : min), undefined);

const wakesOf = (d: Decision): (number | undefined)[] => [
  d.derived.nextDecisionAt,
  d.finalizer.action === 'wait' ? d.finalizer.nextDecisionAt : undefined,
];

function decideOne(capture: PacketCapture, pods: readonly Pod[], agentNodes: Set<string>, now: number, finalizerOptions: FinalizerOptions): Decision {
  const resolution = resolveTargets(capture, pods);
  const finalizer = decideFinalizer(capture, agentNodes, now, finalizerOptions);
  const deletion = finalizer.action === 'wait' || finalizer.action === 'release' ? finalizer : undefined;
  const derived = deriveStatus({ capture, resolution, now, agentNodes, deletion });
  return { capture, resolution, derived, finalizer };
}

/**
 * One decision per capture in the world. Pure. With `prior` (the decisions for the previous
 * world), a capture whose object, namespace pods and live agents are unchanged, and whose
 * decision is not due by the clock, keeps its prior Decision object: a world event costs
 * work only for the captures it can affect, and unchanged decisions are recognisable by
 * reference downstream.
 */
export function decide(world: World, finalizerOptions: FinalizerOptions = DEFAULT_FINALIZER_OPTIONS, prior?: Decisions): Decisions {
  const { now } = world;
  const agentNodes = liveAgentNodes(world.leases.values(), now);
  const agents = [...agentNodes].sort().join(' ');
  const reusable = prior?.basis?.agents === agents ? prior : undefined;
  const pods = podsByNamespace(world.pods, prior?.basis?.pods);
  const byCapture = new Map<string, Decision>();
  const wakes: (number | undefined)[] = [nextAgentExpiry(world.leases.values(), now)];
  for (const [uid, capture] of world.captures) {
    const ns = capture.metadata.namespace;
    const nsPods = pods.get(ns) ?? NO_PODS;
    const before = reusable?.byCapture.get(uid);
    const kept =
      before?.capture === capture &&
      (reusable!.basis!.pods.get(ns) ?? NO_PODS) === nsPods &&
      !wakesOf(before).some((t) => t !== undefined && t <= now);
    const decision = kept ? before : decideOne(capture, nsPods, agentNodes, now, finalizerOptions);
    wakes.push(...wakesOf(decision));
    byCapture.set(uid, decision);
  }
  return { byCapture, wakeAt: earliest(wakes, now), basis: { agents, pods } };
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
    const wake$ = merge(
      of(0),
      wakeAt$.pipe(switchMap((at) => (at === undefined ? EMPTY : timer(Math.max(0, at - scheduler.now()), scheduler)))),
    );
    // a resync number: when it moves on, every capture is derived afresh
    const resync$ = merge(of(0), timer(opts.resyncMs, opts.resyncMs, scheduler).pipe(map((i) => i + 1)));
    let prior: { resync: number; decisions: Decisions } | undefined;
    return combineLatest([captures$, pods$, leases$, resync$, wake$]).pipe(
      map(([captures, pods, leases, resync]) => {
        const decisions = decide({ captures, pods, leases, now: scheduler.now() }, opts.finalizer, prior?.resync === resync ? prior.decisions : undefined);
        prior = { resync, decisions };
        return decisions;
      }),
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
      let last: ReadonlyMap<string, Decision> = new Map();
      // only decisions that are new objects are worked on (decide keeps an unchanged one);
      // a capture missing from the newest world gets a closing item
      const items = (d: Decisions): Item[] => {
        const out: Item[] = [];
        for (const [uid, decision] of d.byCapture) if (last.get(uid) !== decision) out.push({ uid, decision });
        for (const uid of last.keys()) if (!d.byCapture.has(uid)) out.push({ uid });
        last = d.byCapture;
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
