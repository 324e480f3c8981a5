// Identity stream -> one tcpdump session per slot. The whole promise of the project lives
// in the shape of this pipeline: per slot, `distinctUntilChanged(sameIdentity)` then a
// hand-over (session-handover.ts) where a new pod UID, a new generation or a deleted
// capture tells the old session its end, and the old session's stop and last entry stay
// in the stream, so it completes only when every tcpdump has exited. A session's process
// lives no longer than its subscription: unsubscribing always stops it.

import {
  asyncScheduler,
  catchError,
  combineLatest,
  concat,
  concatMap,
  connect,
  connectable,
  defer,
  distinctUntilChanged,
  EMPTY,
  endWith,
  expand,
  filter,
  finalize,
  groupBy,
  ignoreElements,
  map,
  mergeMap,
  Observable,
  of,
  ReplaySubject,
  retry,
  scan,
  switchMap,
  take,
  takeUntil,
  throwError,
  timer,
  type ObservableInput,
  type SchedulerLike,
} from 'rxjs';
import { NETNS_ENDS, REASONS, type PacketCapture, type Reason, type SessionStatus } from '../crds/packetcapture.ts';
import type { Logger } from '../kube/log.ts';
import type { Snapshot } from '../kube/watch.ts';
import type { InstanceLabel, WriterCounts, WriterLimits } from './capture-writer.ts';
import { sessionDir } from './files.ts';
import { endReason, identities, sameIdentity, whyGone, type Identity, type Pod, type SlotKey } from './identity.ts';
import type { HeldNetns, NetnsLookup, NetnsRecheck } from './netns.ts';
import { captureUntilEnd, stopAbandoned } from './session-capture.ts';
import { firstEntry, sessionEntries, type SessionEnd, type SessionFact } from './session-entry.ts';
import { handOver } from './session-handover.ts';
import { holdPodNetns, untilFound } from './session-resolve.ts';
import { endedBefore, SessionEnded, slotEnd, stopOnce } from './session-stop.ts';
import { checkFilter, sessionPlan, startVerified } from './session-verify.ts';
import { CaptureError, type PacketSink, type StopOptions, type TcpdumpExit, type TcpdumpStats } from './tcpdump.ts';

export { writerLimits } from './session-verify.ts';

export interface CaptureRef {
  uid: string;
  namespace: string;
  name: string;
}

/** The complete, current status entry of one session: the writer upserts it by id. */
export interface SessionUpdate {
  capture: CaptureRef;
  session: SessionStatus;
}

/** A started tcpdump as the session sees it (agent/tcpdump.ts TcpdumpProcess fits). */
export interface CaptureProcess {
  pid: number;
  startedAt: Date;
  verifiedAt: Date;
  exited: ObservableInput<TcpdumpExit>;
  stop(opts: StopOptions): ObservableInput<TcpdumpExit>;
  requestStats?(): ObservableInput<TcpdumpStats | undefined>;
}

/** Where a session's packets are kept (agent/capture-writer.ts CaptureWriter fits). */
export interface SessionWriter extends PacketSink {
  readonly counts: WriterCounts;
  close(): WriterCounts;
}

export interface WriterRequest {
  dir: string;
  label: InstanceLabel;
  limits: WriterLimits;
  onLimit(): void;
  onWriteError(err: NodeJS.ErrnoException): void;
}

export interface StartRequest {
  identity: Identity;
  sessionId: string;
  dir: string;
  netns: HeldNetns;
  writer: SessionWriter;
  argv: string[];
  log: Logger;
}

/** Everything a session does to the node, injected so the stream logic runs on fakes in virtual time. */
export interface SessionDeps {
  dataDir: string;
  log: Logger;
  scheduler?: SchedulerLike;
  findNetns(podUID: string): ObservableInput<NetnsLookup>;
  /** opens and proves the netns the lookup found (netns.ts holdNetns); throws CaptureError */
  holdNetns(podUID: string, lookup: { pid: number; inode: number }): HeldNetns;
  /** whether a process of the pod still lives in the netns a running session captures (netns.ts recheckPodNetns) */
  checkNetns(podUID: string, captured: { inode: number; pids: readonly number[] }): ObservableInput<NetnsRecheck>;
  compileFilter(expression: string, netns: HeldNetns): ObservableInput<{ ok: true } | { ok: false; message: string }>;
  writer(request: WriterRequest): SessionWriter;
  start(request: StartRequest): ObservableInput<CaptureProcess>;
  timing?: Partial<SessionTiming>;
  agentVersion?: string;
}

export interface SessionTiming {
  /** first netns retry delay; doubles up to maxRetryMs */
  retryMs: number;
  maxRetryMs: number;
  /**
   * For this long after a session is made, a netns not found yet is looked for every
   * startupRetryMs instead: a pod's sandbox appears a few hundred ms after it is scheduled,
   * and its first packets (init containers) follow at once, before a backoff would look again.
   */
  startupWindowMs: number;
  startupRetryMs: number;
  /** how often a running session's counters are reported */
  pollMs: number;
  /** how often a running session checks that its pod still lives in the netns it captures */
  netnsCheckMs: number;
  /** SIGTERM, then SIGKILL after this long */
  stopGraceMs: number;
}

export const SESSION_TIMING: SessionTiming = {
  retryMs: 500,
  maxRetryMs: 10_000,
  startupWindowMs: 5000,
  startupRetryMs: 50,
  pollMs: 1500,
  netnsCheckMs: 1000,
  stopGraceMs: 2000,
};

/** A slot's new identity, or its disappearance with the reason (see identity.ts whyGone). */
export interface SlotEvent {
  slot: SlotKey;
  identity?: Identity;
  why?: Reason;
}

/** Every slot of `next`, then each slot of `prev` that `next` lacks, as gone for `why(prev)`. */
export function slotEvents(
  prev: ReadonlyMap<SlotKey, Identity>,
  next: ReadonlyMap<SlotKey, Identity>,
  why: (gone: Identity) => Reason,
): SlotEvent[] {
  const events: SlotEvent[] = [...next].map(([slot, identity]) => ({ slot, identity }));
  for (const [slot, identity] of prev) if (!next.has(slot)) events.push({ slot, why: why(identity) });
  return events;
}

export interface Restart {
  /** how long after a failure the pipeline starts again */
  delayMs: number;
  onError?(err: unknown): void;
}

/** The slots to capture now, and why a slot that is no longer among them went. */
interface SlotView {
  identities: ReadonlyMap<SlotKey, Identity>;
  why(gone: Identity): Reason;
}

const everySlotGone = (reason: Reason): SlotView => ({ identities: new Map(), why: () => reason });

/**
 * The slot views of the capture and pod snapshots until `stop$`, then none (AgentShutdown).
 * With `restart`, a failure ends every slot (Error) and the views start again after
 * `restart.delayMs`, unless `stop$` has emitted by then.
 */
function slotViews(snapshots$: Observable<[Snapshot<PacketCapture>, Snapshot<Pod>]>, node: string, stop$: Observable<unknown>, scheduler: SchedulerLike, restart?: Restart): Observable<SlotView> {
  const views$ = snapshots$.pipe(
    takeUntil(stop$),
    map(([captures, pods]): SlotView => ({ identities: identities(captures, pods, node, scheduler.now()), why: (gone) => whyGone(gone, captures, pods) })),
  );
  const restarting$ = restart
    ? views$.pipe(
        // the sessions a failure ends stop and report their last entry while the views wait to start again
        catchError((err: unknown) => concat(of(everySlotGone(REASONS.Error)), throwError(() => err))),
        retry({
          delay: (err: unknown) => {
            restart.onError?.(err);
            return timer(restart.delayMs, scheduler).pipe(takeUntil(stop$));
          },
        }),
      )
    : views$;
  return restarting$.pipe(endWith(everySlotGone(REASONS.AgentShutdown)));
}

/**
 * Session entries of this node, from the capture and pod snapshots: per slot, the latest
 * identity picks the session, and every change of identity ends the old one. When `stop$`
 * emits, every slot goes away with AgentShutdown, and the stream completes once every
 * session's tcpdump has exited and its last entry is out.
 *
 * With `restart`, the part that makes sessions starts again `restart.delayMs` after it
 * fails; the sessions the failure ended (Error) stop and report their last entry during
 * the wait. `stop$` should then replay its stop (a ReplaySubject): a pipeline that starts
 * again after it must start nothing.
 */
export function sessionUpdates(
  captures$: Observable<Snapshot<PacketCapture>>,
  pods$: Observable<Snapshot<Pod>>,
  node: string,
  stop$: Observable<unknown>,
  deps: SessionDeps,
  restart?: Restart,
): Observable<SessionUpdate> {
  return slotViews(combineLatest([captures$, pods$]), node, stop$, deps.scheduler ?? asyncScheduler, restart).pipe(
    scan(
      (acc: { current: ReadonlyMap<SlotKey, Identity>; events: SlotEvent[] }, view) => ({ current: view.identities, events: slotEvents(acc.current, view.identities, view.why) }),
      { current: new Map<SlotKey, Identity>(), events: [] },
    ),
    mergeMap(({ events }) => events),
    // a slot's group ends with its disappearance, so slots of deleted captures and pods are forgotten
    groupBy((event) => event.slot, { duration: (group) => group.pipe(filter((event) => !event.identity)) }),
    mergeMap((group) => slotSessions(group, deps)),
  );
}

const sameSlotIdentity = (a: SlotEvent, b: SlotEvent): boolean => (a.identity && b.identity ? sameIdentity(a.identity, b.identity) : a.identity === b.identity);

/**
 * One slot: a session per distinct identity, ended with the reason of the change that
 * follows it, while its successor starts; a successor in the same pod instance starts
 * tcpdump only once the old one has exited, so one slot never has two in one netns. A
 * session that ends because its pod's netns changed or went is followed by a new one for
 * the same identity, built from the slot's latest view of it (the pod's IPs and the
 * capture's first start may have arrived since).
 */
function slotSessions(events$: Observable<SlotEvent>, deps: SessionDeps): Observable<SessionUpdate> {
  return events$.pipe(
    connect(
      (slot$) => {
        // the slot's latest view of the identity, while it is still this one
        const latest = (identity: Identity): Observable<Identity> =>
          slot$.pipe(
            take(1),
            concatMap((event) => (event.identity && sameIdentity(event.identity, identity) ? of(event.identity) : EMPTY)),
          );
        return slot$.pipe(
          distinctUntilChanged(sameSlotIdentity),
          handOver((event, turn) => {
            const identity = event.identity;
            if (!identity) return EMPTY;
            const end$ = turn.next$.pipe(map((next) => endReason(identity, next.identity, next.why)));
            const after$ = turn.previous?.value.identity?.podUID === identity.podUID ? turn.previous.done$ : EMPTY;
            const session = (current: Identity) => captureSession(current, deps, end$, after$);
            return session(identity).pipe(expand((update) => (NETNS_ENDS.has(update.session.endReason ?? '') ? latest(identity).pipe(concatMap(session)) : EMPTY)));
          }),
        );
      },
      { connector: () => new ReplaySubject<SlotEvent>(1) },
    ),
  );
}

let lastIdTime = 0;

/** New for every subscription and never reused, so a session's directory holds only its own files. */
export function newSessionId(identity: Identity, nowMs: number): string {
  lastIdTime = Math.max(nowMs, lastIdTime + 1);
  return `g${identity.generation}-${identity.podUID.slice(0, 8)}-${lastIdTime.toString(36)}`;
}

/** The last entry of a session that ended before its tcpdump ran, or failed. */
function endedEarly(err: unknown, atMs: number, log: Logger): SessionFact {
  if (err instanceof SessionEnded) {
    log.info({ endReason: err.end.reason }, 'session ended');
    return { kind: 'ended', end: err.end, atMs };
  }
  const end: SessionEnd =
    err instanceof CaptureError
      ? { reason: err.reason, message: err.message, failed: true }
      : // parseQuantity and parseDuration: a spec value the schema should have refused
        err instanceof RangeError
        ? { reason: REASONS.InvalidSpec, message: err.message, failed: true }
        : { reason: REASONS.Error, message: err instanceof Error ? err.message : String(err), failed: true };
  log.warn({ reason: end.reason, message: end.message }, 'session failed');
  return { kind: 'ended', end, atMs };
}

/**
 * One tcpdump for one identity, as stages: resolve (find the pod's netns and hold it;
 * Pending with the reason while it cannot be found), verify (the filter compiles there, a
 * predecessor in the same netns has exited, tcpdump is started in the held netns and
 * proven to run in it before the writer keeps a byte), capture (progress, until the slot's
 * end `end$`, a limit, the duration, a write error, the pod leaving the netns, or tcpdump
 * exiting), stop (the end's cut, then the exit). Emits the session's entry at every change
 * and completes after the last one. Unsubscribed before that, its tcpdump is stopped all
 * the same, without a last entry.
 */
export function captureSession(identity: Identity, deps: SessionDeps, end$: Observable<Reason>, after$: Observable<unknown> = EMPTY): Observable<SessionUpdate> {
  return defer(() => {
    const scheduler = deps.scheduler ?? asyncScheduler;
    const timing = { ...SESSION_TIMING, ...deps.timing };
    const id = newSessionId(identity, scheduler.now());
    const dir = sessionDir(deps.dataDir, identity.namespace, identity.name, identity.podUID, id);
    const log = deps.log.child({
      namespace: identity.namespace,
      name: identity.name,
      podUID: identity.podUID,
      ...('node' in deps.log.bindings() ? {} : { node: identity.node }),
      session: id,
    });
    const capture: CaptureRef = { uid: identity.pcUID, namespace: identity.namespace, name: identity.name };
    // the stop instant is the moment the slot ends the session, however late a stage looks
    const slotEnd$ = connectable(end$.pipe(take(1), map((reason) => slotEnd(reason, scheduler.now()))), { connector: () => new ReplaySubject<SessionEnd>(1), resetOnDisconnect: false });
    const ending = slotEnd$.connect();
    const abandoned = (proc: CaptureProcess) => stopAbandoned(stopOnce(proc, timing.stopGraceMs), proc, log);

    const facts$ = defer(() => {
      const plan = sessionPlan(identity);
      const request = { identity, sessionId: id, dir, plan, log, agentVersion: deps.agentVersion ?? 'dev' };
      const attempt$ = holdPodNetns(identity.podUID, deps).pipe(
        switchMap((held) => concat(checkFilter(plan.filter, held.netns, deps.compileFilter), after$.pipe(ignoreElements()), of(held))),
        endedBefore(slotEnd$),
        switchMap((held) => startVerified(request, held, deps, abandoned)),
        take(1),
      );
      const wait$ = (ms: number) => timer(ms, scheduler).pipe(endedBefore(slotEnd$));
      return untilFound(attempt$, { timing, scheduler, log, wait$ }).pipe(
        mergeMap((step) => (step.kind === 'started' ? captureUntilEnd(step, slotEnd$, { identity, dir, durationMs: plan.durationMs, timing, scheduler, log, checkNetns: deps.checkNetns }) : of(step))),
      );
    }).pipe(catchError((err: unknown) => of(endedEarly(err, scheduler.now(), log))));

    return facts$.pipe(
      sessionEntries(firstEntry(identity, id)),
      map((session) => ({ capture, session })),
      finalize(() => ending.unsubscribe()),
    );
  });
}
