import {
  asyncScheduler,
  combineLatest,
  defer,
  EMPTY,
  map,
  merge,
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
import { changedKeys, type Snapshot } from '../kube/watch.ts';
import { liveAgentNodes, nextAgentExpiry, type Lease } from './agents.ts';
import { deriveStatus, type DerivedStatus } from './conditions.ts';
import { decideFinalizer, DEFAULT_FINALIZER_OPTIONS, type FinalizerDecision, type FinalizerOptions } from './finalizer.ts';
import { placementNodes, placementPatch } from './placement.ts';
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
  /** the merge patch of metadata.labels that places the capture on its nodes (placement.ts), if they are not right */
  labels?: Record<string, string | null>;
  /** the nodes it is to be placed on (placement.ts), unless it is being deleted */
  nodes?: ReadonlySet<string>;
}

export interface Decisions {
  /**
   * by capture UID. The decider's own map, updated in place by its next world: read it
   * when it is emitted (as perCapture does), or copy it.
   */
  byCapture: ReadonlyMap<string, Decision>;
  /**
   * the UIDs whose decision was derived anew or left, since the previous Decisions of the
   * same decider; without it, a consumer compares byCapture with what it saw before
   */
  changed?: ReadonlySet<string>;
  /** the next time a decision changes by the clock alone */
  wakeAt?: number;
}

/** A capture's earliest time-based decision (limits.duration, a bounded finalizer wait). */
function wakeOf(d: Decision): number | undefined {
  const times = [d.derived.nextDecisionAt, d.finalizer.action === 'wait' ? d.finalizer.nextDecisionAt : undefined];
  return times.reduce<number | undefined>((min, t) => (t !== undefined && (min === undefined || t < min) ? t : min), undefined);
}

/**
 * When each capture's decision is due by the clock: a binary heap of (time, UID), with an
 * entry superseded by a newer time for its capture skipped when it comes up. A decision
 * derived again with the same time (every resync does that) adds nothing.
 */
class Wakes {
  private readonly heap: { at: number; uid: string }[] = [];
  private readonly current = new Map<string, number>();

  set(uid: string, at: number | undefined): void {
    if (at === undefined) {
      this.current.delete(uid);
      return;
    }
    if (this.current.get(uid) === at) return;
    this.current.set(uid, at);
    this.heap.push({ at, uid });
    this.up(this.heap.length - 1);
  }

  /** The captures due at `now`, each once; their next decision sets their next time. */
  *due(now: number): Generator<string> {
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const { at, uid } = this.pop();
      if (this.current.get(uid) !== at) continue;
      this.current.delete(uid);
      yield uid;
    }
  }

  /** The earliest time after `now` a decision is due. */
  next(now: number): number | undefined {
    while (this.heap.length > 0 && this.current.get(this.heap[0]!.uid) !== this.heap[0]!.at) this.pop();
    const top = this.heap[0];
    if (top === undefined || top.at > now) return top?.at;
    // due already (a decision derived with a time in the past): the next world re-derives it
    let min: number | undefined;
    for (const [, at] of this.current) if (at > now && (min === undefined || at < min)) min = at;
    return min;
  }

  private pop(): { at: number; uid: string } {
    const top = this.heap[0]!;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.down(0);
    }
    return top;
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.at <= h[i]!.at) return;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < h.length && h[l]!.at < h[min]!.at) min = l;
      if (r < h.length && h[r]!.at < h[min]!.at) min = r;
      if (min === i) return;
      [h[min], h[i]] = [h[i]!, h[min]!];
      i = min;
    }
  }
}

/**
 * Values under keys, by UID. Nearly every key has one value (a pod's name in its namespace,
 * a capture's target pod name): it is kept as a pair, and a Map only for a key that has
 * more. A Map per key is ~270 bytes, 10 MB at 30,000 pods and 10,000 captures.
 */
class UidIndex<K, V> {
  private readonly one = new Map<K, { uid: string; value: V }>();
  private readonly many = new Map<K, Map<string, V>>();

  add(key: K, uid: string, value: V): void {
    const more = this.many.get(key);
    if (more) {
      more.set(uid, value);
      return;
    }
    const single = this.one.get(key);
    if (!single || single.uid === uid) {
      this.one.set(key, { uid, value });
      return;
    }
    this.one.delete(key);
    this.many.set(
      key,
      new Map([
        [single.uid, single.value],
        [uid, value],
      ]),
    );
  }

  remove(key: K, uid: string): void {
    const single = this.one.get(key);
    if (single) {
      if (single.uid === uid) this.one.delete(key);
      return;
    }
    const more = this.many.get(key);
    if (!more?.delete(uid) || more.size > 1) return;
    this.many.delete(key);
    for (const [left, value] of more) this.one.set(key, { uid: left, value });
  }

  *uids(key: K): Generator<string> {
    const single = this.one.get(key);
    if (single) yield single.uid;
    else yield* this.many.get(key)?.keys() ?? [];
  }

  *values(key: K): Generator<V> {
    const single = this.one.get(key);
    if (single) yield single.value;
    else yield* this.many.get(key)?.values() ?? [];
  }
}

const nameKey = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;

/**
 * Which pods a capture's target can be resolved from, and which captures a pod can
 * concern: a podName target only the pods of that name in its namespace, a podSelector
 * target any pod of its namespace. Kept up to date event by event.
 */
class TargetIndex {
  private readonly podsByName = new UidIndex<string, Pod>();
  private readonly podsByNamespace = new UidIndex<string, Pod>();
  private readonly byPodName = new UidIndex<string, true>();
  private readonly bySelector = new UidIndex<string, true>();

  private static target(c: PacketCapture): { podName: string } | { selector: true } | undefined {
    const { podName, podSelector } = c.spec?.target ?? {};
    // exactly one of them, or the spec is invalid whatever the pods
    if ((podName === undefined) === (podSelector === undefined)) return undefined;
    return podName !== undefined ? { podName } : { selector: true };
  }

  capture(before: PacketCapture | undefined, after: PacketCapture | undefined): void {
    for (const [c, present] of [[before, false], [after, true]] as const) {
      if (!c) continue;
      const t = TargetIndex.target(c);
      const { namespace, uid } = c.metadata;
      if (!t) continue;
      const [index, key] = 'podName' in t ? [this.byPodName, nameKey(namespace, t.podName)] : [this.bySelector, namespace];
      if (present) index.add(key, uid, true);
      else index.remove(key, uid);
    }
  }

  pod(before: Pod | undefined, after: Pod | undefined): void {
    if (before) {
      this.podsByName.remove(nameKey(before.metadata.namespace, before.metadata.name), before.metadata.uid);
      this.podsByNamespace.remove(before.metadata.namespace ?? '', before.metadata.uid);
    }
    if (after) {
      this.podsByName.add(nameKey(after.metadata.namespace, after.metadata.name), after.metadata.uid, after);
      this.podsByNamespace.add(after.metadata.namespace ?? '', after.metadata.uid, after);
    }
  }

  /** UIDs of the captures whose resolution may depend on this pod. */
  *capturesOf(pod: Pod): Generator<string> {
    yield* this.byPodName.uids(nameKey(pod.metadata.namespace, pod.metadata.name));
    yield* this.bySelector.uids(pod.metadata.namespace ?? '');
  }

  podsFor(c: PacketCapture): Iterable<Pod> {
    const t = TargetIndex.target(c);
    if (!t) return [];
    return 'podName' in t ? this.podsByName.values(nameKey(c.metadata.namespace, t.podName)) : this.podsByNamespace.values(c.metadata.namespace);
  }
}

function decideOne(capture: PacketCapture, candidates: Iterable<Pod>, agentNodes: Set<string>, now: number, finalizerOptions: FinalizerOptions): Decision {
  const pods = [...candidates];
  const resolution = resolveTargets(capture, pods);
  const finalizer = decideFinalizer(capture, agentNodes, now, finalizerOptions);
  const deletion = finalizer.action === 'wait' || finalizer.action === 'release' ? finalizer : undefined;
  const derived = deriveStatus({ capture, resolution, now, agentNodes, deletion });
  // a capture being deleted is seen where it was placed until it goes: nothing to move
  const nodes = capture.metadata.deletionTimestamp ? undefined : placementNodes(capture, pods);
  const labels = nodes && placementPatch(capture, nodes);
  return { capture, resolution, derived, finalizer, ...(labels ? { labels } : {}), ...(nodes ? { nodes } : {}) };
}

/** Derives the decisions of a sequence of worlds; `everything` re-derives every capture. */
export type Decider = (world: World, everything?: boolean) => Decisions;

/**
 * One decision per capture in the world, for a sequence of worlds. Each world re-derives
 * only the captures it can affect: those whose object changed, those a changed pod may be
 * (or have been) a target of, those due by the clock, and all of them when the set of live
 * agents changes. The changes come from changedKeys, so a watch event costs what it changed,
 * not the size of the cluster; an unchanged decision stays the same object.
 */
export function decider(finalizerOptions: FinalizerOptions = DEFAULT_FINALIZER_OPTIONS): Decider {
  const byCapture = new Map<string, Decision>();
  const index = new TargetIndex();
  const wakes = new Wakes();
  let seen: Pick<World, 'captures' | 'pods'> = { captures: new Map(), pods: new Map() };
  let agents: { leases?: Snapshot<Lease>; nodes: Set<string>; word: string; expiry?: number } = { nodes: new Set(), word: '' };

  return (world, everything = false) => {
    const { now } = world;
    if (agents.leases !== world.leases || (agents.expiry !== undefined && agents.expiry <= now)) {
      const nodes = liveAgentNodes(world.leases.values(), now);
      const word = [...nodes].sort().join(' ');
      if (word !== agents.word) everything = true;
      agents = { leases: world.leases, nodes, word, expiry: nextAgentExpiry(world.leases.values(), now) };
    }
    const changed = new Set<string>();
    for (const uid of changedKeys(seen.captures, world.captures)) {
      index.capture(seen.captures.get(uid), world.captures.get(uid));
      changed.add(uid);
    }
    for (const uid of changedKeys(seen.pods, world.pods)) {
      const before = seen.pods.get(uid);
      const after = world.pods.get(uid);
      for (const pod of [before, after]) if (pod) for (const c of index.capturesOf(pod)) changed.add(c);
      index.pod(before, after);
    }
    seen = { captures: world.captures, pods: world.pods };
    for (const uid of wakes.due(now)) changed.add(uid);
    if (everything) for (const uid of world.captures.keys()) changed.add(uid);

    for (const uid of changed) {
      const capture = world.captures.get(uid);
      if (!capture) {
        byCapture.delete(uid);
        wakes.set(uid, undefined);
        continue;
      }
      const decision = decideOne(capture, index.podsFor(capture), agents.nodes, now, finalizerOptions);
      byCapture.set(uid, decision);
      wakes.set(uid, wakeOf(decision));
    }
    const times = [agents.expiry, wakes.next(now)].filter((t): t is number => t !== undefined && t > now);
    return { byCapture, changed, wakeAt: times.length > 0 ? Math.min(...times) : undefined };
  };
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
    const wakeAt$ = new Subject<number | undefined>();
    // the time the pending timer is for: a world that leaves the time where it was keeps
    // the timer (most do), and one after the timer fired always sets the next
    let armed: number | undefined;
    const wake$ = merge(
      of(0),
      wakeAt$.pipe(
        switchMap((at) =>
          at === undefined
            ? EMPTY
            : timer(Math.max(0, at - scheduler.now()), scheduler).pipe(
                tap(() => {
                  armed = undefined;
                }),
              ),
        ),
      ),
    );
    // a resync number: when it moves on, every capture is derived afresh
    const resync$ = merge(of(0), timer(opts.resyncMs, opts.resyncMs, scheduler).pipe(map((i) => i + 1)));
    const decide = decider(opts.finalizer);
    let lastResync: number | undefined;
    return combineLatest([captures$, pods$, leases$, resync$, wake$]).pipe(
      map(([captures, pods, leases, resync]) => {
        const decisions = decide({ captures, pods, leases, now: scheduler.now() }, resync !== lastResync);
        lastResync = resync;
        return decisions;
      }),
      tap((d) => {
        if (d.wakeAt === armed) return;
        armed = d.wakeAt;
        wakeAt$.next(d.wakeAt);
      }),
    );
  });
}

/**
 * Work on the values of one stream, one run at a time, always on the newest: values that
 * arrive while work is running replace each other, and only the last is worked on next.
 * A failed run is retried after `retryDelay(failures)` with the newest value by then.
 * Level-triggered work needs nothing else: a skipped value was already out of date.
 * A plain object rather than an operator chain, so perCapture can keep one per capture
 * for a few hundred bytes.
 */
class Serial<T> {
  private pending: { value: T } | undefined;
  private busy = false;
  private ended = false;
  private failures = 0;
  private run?: Subscription;
  private wait?: Subscription;

  constructor(
    private readonly work: (value: T) => Observable<unknown>,
    private readonly retryDelay: (failures: number) => number,
    private readonly scheduler: SchedulerLike,
    /** called once the source ended and the last run is over */
    private readonly done: () => void,
  ) {}

  push(value: T): void {
    this.pending = { value };
    this.next();
  }

  /** no more values: the pending one (if any) is still worked on, then done() */
  end(): void {
    this.ended = true;
    this.next();
  }

  /** stops a running work and a retry wait; done() is not called */
  stop(): void {
    this.run?.unsubscribe();
    this.wait?.unsubscribe();
  }

  private next(): void {
    if (this.busy) return;
    if (!this.pending) {
      if (this.ended) this.done();
      return;
    }
    const { value } = this.pending;
    this.pending = undefined;
    this.busy = true;
    // work may finish synchronously, before subscribe() returns its subscription
    let finished = false;
    const sub = this.work(value).subscribe({
      error: () => {
        finished = true;
        this.run = undefined;
        this.failures++;
        this.pending ??= { value };
        this.wait = this.scheduler.schedule(() => {
          this.wait = undefined;
          this.busy = false;
          // the source ended while we waited: nothing is left to retry for
          if (this.ended && this.pending?.value === value) this.pending = undefined;
          this.next();
        }, this.retryDelay(this.failures));
      },
      complete: () => {
        finished = true;
        this.run = undefined;
        this.failures = 0;
        this.busy = false;
        this.next();
      },
    });
    if (!finished) this.run = sub;
  }
}

/** Serial's policy as an operator over one stream; completes when the source did and the last run ended. */
export function latestSerially<T>(
  work: (value: T) => Observable<unknown>,
  retryDelay: (failures: number) => number,
  scheduler: SchedulerLike = asyncScheduler,
): OperatorFunction<T, never> {
  return (source) =>
    new Observable<never>((subscriber) => {
      const serial = new Serial(work, retryDelay, scheduler, () => subscriber.complete());
      const upstream = source.subscribe({
        next: (value) => serial.push(value),
        error: (err) => subscriber.error(err),
        complete: () => serial.end(),
      });
      return () => {
        upstream.unsubscribe();
        serial.stop();
      };
    });
}

export interface PerCaptureOptions<S> {
  /** state for one capture, made on its first decision; it lives until the capture leaves the world */
  init: (first: Decision) => S;
  /**
   * `current()` turns false once a newer decision for the capture (or its leaving) has come:
   * work made of several requests ends early then, the next run having the newer decision.
   */
  work: (decision: Decision, state: S, current: () => boolean) => Observable<unknown>;
  /** called once the capture left the world and its last run ended */
  dispose?: (state: S) => void;
  retryDelay: (failures: number) => number;
  scheduler?: SchedulerLike;
}

/**
 * Per capture UID: its decisions, one run at a time on the newest (Serial), so two writes
 * for one capture never race while different captures proceed independently. Only
 * decisions that are new objects are worked on (the decider keeps an unchanged one); with
 * Decisions.changed only those UIDs are looked at, so a world costs what it changed.
 */
export function perCapture<S>(opts: PerCaptureOptions<S>): OperatorFunction<Decisions, never> {
  const scheduler = opts.scheduler ?? asyncScheduler;
  interface Slot {
    decision: Decision;
    serial: Serial<Decision>;
    state?: S;
  }
  return (decisions$) =>
    new Observable<never>((subscriber) => {
      const slots = new Map<string, Slot>();
      let sourceDone = false;
      // a capture that left, whose last run has not ended yet
      const leaving = new Set<Slot>();

      const open = (uid: string, decision: Decision): Slot => {
        const slot: Slot = {
          decision,
          serial: new Serial(
            (d) => opts.work(d, (slot.state ??= opts.init(d)), () => slot.decision === d && slots.get(uid) === slot),
            opts.retryDelay,
            scheduler,
            () => {
              leaving.delete(slot);
              if (slot.state !== undefined) opts.dispose?.(slot.state);
              if (sourceDone && leaving.size === 0) subscriber.complete();
            },
          ),
        };
        slots.set(uid, slot);
        return slot;
      };

      const see = (uid: string, decision: Decision | undefined) => {
        const slot = slots.get(uid);
        if (decision === undefined) {
          if (!slot) return;
          slots.delete(uid);
          leaving.add(slot);
          slot.serial.end();
        } else if (!slot) {
          open(uid, decision).serial.push(decision);
        } else if (slot.decision !== decision) {
          slot.decision = decision;
          slot.serial.push(decision);
        }
      };

      const upstream = decisions$.subscribe({
        next: (d) => {
          if (d.changed) for (const uid of d.changed) see(uid, d.byCapture.get(uid));
          else {
            for (const [uid, decision] of d.byCapture) see(uid, decision);
            for (const uid of [...slots.keys()]) if (!d.byCapture.has(uid)) see(uid, undefined);
          }
        },
        error: (err) => subscriber.error(err),
        // every capture's last decision is still worked on; then this completes
        complete: () => {
          sourceDone = true;
          for (const uid of [...slots.keys()]) see(uid, undefined);
          if (leaving.size === 0) subscriber.complete();
        },
      });
      return () => {
        upstream.unsubscribe();
        for (const slot of [...slots.values(), ...leaving]) {
          slot.serial.stop();
          if (slot.state !== undefined) opts.dispose?.(slot.state);
        }
        slots.clear();
        leaving.clear();
      };
    });
}
