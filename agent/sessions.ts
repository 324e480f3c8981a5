// Identity stream -> one tcpdump session per slot. The whole promise of the project lives
// in the shape of this pipeline: per slot, `distinctUntilChanged(sameIdentity)` then
// `switchMap(captureSession)`, and a session's process lives exactly as long as its
// subscription. A new pod UID, a new generation or a deleted capture can only end the old
// tcpdump by unsubscribing it, and unsubscribing always stops it.

import {
  asyncScheduler,
  combineLatest,
  defer,
  distinctUntilChanged,
  EMPTY,
  endWith,
  exhaustMap,
  filter,
  finalize,
  firstValueFrom,
  from,
  groupBy,
  ignoreElements,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  catchError,
  repeat,
  retry,
  scan,
  shareReplay,
  Subject,
  Subscription,
  switchMap,
  takeUntil,
  tap,
  timer,
  type ObservableInput,
  type SchedulerLike,
} from 'rxjs';
import { DEFAULTS, EXACT_STOP_ENDS, NETNS_ENDS, REASONS, type PacketCapture, type Reason, type SessionStatus } from '../crds/packetcapture.ts';
import { parseDuration, parseQuantity } from '../crds/units.ts';
import type { Logger } from '../kube/log.ts';
import type { Snapshot } from '../kube/watch.ts';
import type { InstanceLabel, WriterCounts, WriterLimits } from './capture-writer.ts';
import { sessionDir } from './files.ts';
import { endReason, identities, sameIdentity, whyGone, type Identity, type Pod, type SlotKey } from './identity.ts';
import type { HeldNetns, NetnsLookup, NetnsRecheck } from './netns.ts';
import { buildFilter, CaptureError, tcpdumpArgv, type PacketSink, type StopOptions, type TcpdumpExit, type TcpdumpStats } from './tcpdump.ts';

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
  /** where sessions report their last entry after they were unsubscribed */
  ends: SessionEnds;
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

/**
 * The final entries of sessions that were unsubscribed: a teardown cannot emit through
 * its closed subscriber, and stopping tcpdump takes time, so the entry arrives here once
 * the process has exited. `drained` resolves when no stop is in flight: the agent waits
 * for it before it exits, so it never leaves a tcpdump behind.
 */
export class SessionEnds {
  private readonly ended = new Subject<SessionUpdate>();
  private readonly settled = new Subject<void>();
  private pending = 0;
  readonly updates$ = this.ended.asObservable();

  track(final$: Observable<SessionUpdate>): void {
    this.pending++;
    final$.subscribe({
      next: (update) => this.ended.next(update),
      complete: () => this.settle(),
      error: () => this.settle(),
    });
  }

  get inFlight(): number {
    return this.pending;
  }

  async drained(): Promise<void> {
    while (this.pending > 0) await firstValueFrom(this.settled);
  }

  private settle(): void {
    this.pending--;
    this.settled.next();
  }
}

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

/**
 * Session entries of this node, from the capture and pod snapshots: per slot, the latest
 * identity picks the session, and every change of identity ends the old one. When `stop$`
 * emits, every slot goes away with AgentShutdown; await `deps.ends.drained()` after that.
 *
 * With `restart`, the pipeline starts again `restart.delayMs` after it fails. Only the part
 * that makes sessions is retried: the sessions the failure tore down report their last
 * entry through deps.ends once their tcpdump has exited, which is during the wait, so the
 * ends stay subscribed across it. `stop$` should then replay its stop (a ReplaySubject): a
 * pipeline that starts again after it must start nothing.
 */
export function sessionUpdates(
  captures$: Observable<Snapshot<PacketCapture>>,
  pods$: Observable<Snapshot<Pod>>,
  node: string,
  stop$: Observable<unknown>,
  deps: SessionDeps,
  restart?: Restart,
): Observable<SessionUpdate> {
  const SHUTDOWN = undefined;
  const events$ = combineLatest([captures$, pods$]).pipe(
    takeUntil(stop$),
    endWith(SHUTDOWN),
    scan(
      (acc: { current: Map<SlotKey, Identity>; events: SlotEvent[] }, snapshots) => {
        const next = snapshots ? identities(snapshots[0], snapshots[1], node, (deps.scheduler ?? asyncScheduler).now()) : new Map<SlotKey, Identity>();
        const why = (gone: Identity) => (snapshots ? whyGone(gone, snapshots[0], snapshots[1]) : REASONS.AgentShutdown);
        return { current: next, events: slotEvents(acc.current, next, why) };
      },
      { current: new Map<SlotKey, Identity>(), events: [] },
    ),
    mergeMap(({ events }) => events),
  );
  const live$ = events$.pipe(
    // a slot's group ends with its disappearance, so slots of deleted captures and pods are forgotten
    groupBy((event) => event.slot, { duration: (group) => group.pipe(filter((event) => !event.identity)) }),
    mergeMap((group) => slotSessions(group, deps)),
  );
  const restarting$ = restart
    ? live$.pipe(
        retry({
          delay: (err: unknown) => {
            restart.onError?.(err);
            return timer(restart.delayMs, deps.scheduler ?? asyncScheduler);
          },
        }),
      )
    : live$;
  return merge(restarting$, deps.ends.updates$);
}

/**
 * One slot: a session per distinct identity; the previous one ends with the reason of the
 * switch. A session that ends because its pod's netns changed or went is followed by a new
 * one for the same identity, built from the slot's latest view of it (the pod's IPs and the
 * capture's first start may have arrived since).
 */
function slotSessions(events$: Observable<SlotEvent>, deps: SessionDeps): Observable<SessionUpdate> {
  return defer(() => {
    let current: Identity | undefined;
    let latest: Identity | undefined;
    // read by the old session's teardown, which switchMap runs right after this is set
    let ending: Reason = REASONS.Error;
    // the previous session's stop, until its tcpdump has exited: a successor in the same
    // pod instance waits for it, so one slot never has two processes in one netns at once
    let previous: { podUID: string; stopped$: Observable<unknown> } | undefined;
    const following = (): Observable<SessionUpdate> => {
      let endedWith: string | undefined;
      return defer(() => {
        // switchMap has run the old session's teardown by now; a session torn down by a
        // failure, without a switch, must not report the previous switch's reason
        ending = REASONS.Error;
        const identity = latest!;
        return captureSession(identity, deps, () => ending, {
          after$: previous?.podUID === identity.podUID ? previous.stopped$ : undefined,
          stopping: (stopped$) => (previous = { podUID: identity.podUID, stopped$ }),
        });
      }).pipe(
        tap((update) => (endedWith = update.session.endReason)),
        repeat({ delay: () => (NETNS_ENDS.has(endedWith ?? '') ? of(true) : EMPTY) }),
      );
    };
    return events$.pipe(
      tap((event) => (latest = event.identity)),
      distinctUntilChanged((a, b) => (a.identity && b.identity ? sameIdentity(a.identity, b.identity) : a.identity === b.identity)),
      tap((event) => {
        if (current) ending = endReason(current, event.identity, event.why);
        current = event.identity;
      }),
      switchMap((event) => (event.identity ? following() : EMPTY)),
    );
  });
}

let lastIdTime = 0;

/** New for every subscription and never reused, so a session's directory holds only its own files. */
export function newSessionId(identity: Identity, nowMs: number): string {
  lastIdTime = Math.max(nowMs, lastIdTime + 1);
  return `g${identity.generation}-${identity.podUID.slice(0, 8)}-${lastIdTime.toString(36)}`;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The entry without its unset fields, so equal entries serialize equally. */
function clean(entry: SessionStatus): SessionStatus {
  return Object.fromEntries(Object.entries(entry).filter(([, v]) => v !== undefined)) as unknown as SessionStatus;
}

/** The last line worth showing of what tcpdump said on stderr. */
function stderrMessage(tail: string): string {
  const lines = tail
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !/packets? (captured|received by filter|dropped by)/.test(line) && !/^tcpdump: listening on /.test(line));
  return lines.slice(-3).join('; ').slice(-500);
}

const nowNs = (scheduler: SchedulerLike): bigint => BigInt(scheduler.now()) * 1_000_000n;

/** The writer's limits from the spec; throws RangeError for a quantity the schema should have refused. */
export function writerLimits(spec: Identity['spec']): WriterLimits {
  const limits = spec.limits ?? {};
  return {
    ...(limits.fileSize !== undefined ? { fileSizeBytes: parseQuantity(limits.fileSize) } : {}),
    ...(limits.fileSize !== undefined && limits.fileCount !== undefined ? { fileCount: limits.fileCount } : {}),
    ...(limits.maxPackets !== undefined ? { maxPackets: limits.maxPackets } : {}),
  };
}

/**
 * One tcpdump for one identity: find the pod's netns (Pending with the reason while it
 * cannot be found) and hold it open, check the filter, start tcpdump in the held netns
 * with the agent writing its packets, report progress, end by itself at maxPackets or the
 * duration, on a write error, or when the pod no longer lives in the netns it captures
 * (NetnsChanged, NetnsGone). Unsubscribing stops the process (SIGTERM, SIGKILL after the
 * grace) and reports the entry Ended with `ending()`, the reason the slot's switch
 * recorded, through deps.ends. Ends in EXACT_STOP_ENDS keep no packet after the stop instant.
 */
export function captureSession(
  identity: Identity,
  deps: SessionDeps,
  ending: () => Reason,
  handoff: {
    /** tcpdump starts only after this completes (the predecessor's process in the same netns has exited) */
    after$?: Observable<unknown>;
    /** told of the stop a teardown begins; it completes when the process has exited */
    stopping?(stopped$: Observable<unknown>): void;
  } = {},
): Observable<SessionUpdate> {
  return new Observable<SessionUpdate>((subscriber) => {
    const scheduler = deps.scheduler ?? asyncScheduler;
    const timing = { ...SESSION_TIMING, ...deps.timing };
    const createdAt = scheduler.now();
    const capture: CaptureRef = { uid: identity.pcUID, namespace: identity.namespace, name: identity.name };
    const id = newSessionId(identity, scheduler.now());
    const dir = sessionDir(deps.dataDir, identity.namespace, identity.name, identity.podUID, id);
    const log = deps.log.child({
      namespace: identity.namespace,
      name: identity.name,
      podUID: identity.podUID,
      ...('node' in deps.log.bindings() ? {} : { node: identity.node }),
      session: id,
    });
    const work = new Subscription();
    let entry: SessionStatus = clean({
      id,
      podUID: identity.podUID,
      podName: identity.podName,
      nodeName: identity.node,
      generation: identity.generation,
      state: 'Pending',
    });
    let tcpdump: CaptureProcess | undefined;
    let writer: SessionWriter | undefined;
    let launching: Observable<CaptureProcess> | undefined;
    // set when the session ends by itself (limit, duration, disk, netns, exit), which beats the switch's reason
    let selfEnd: { reason: Reason; message?: string; cutNs?: bigint; failed?: boolean } | undefined;
    let final = false;

    const publish = (patch: Partial<SessionStatus>) => {
      const next = clean({ ...entry, ...patch });
      if (JSON.stringify(next) === JSON.stringify(entry)) return;
      entry = next;
      subscriber.next({ capture, session: entry });
    };
    const finish = (patch: Partial<SessionStatus>) => {
      final = true;
      publish(patch);
      subscriber.complete();
    };
    const step = <T>(input: ObservableInput<T>, next: (value: T) => void, fail: (err: unknown) => void) =>
      work.add(from(input).subscribe({ next, error: fail }));

    const fail = (reason: Reason, message: string) => {
      log.warn({ reason, message }, 'session failed');
      finish({ state: 'Failed', reason, message, endTime: iso(scheduler.now()) });
    };
    const failWith = (err: unknown, attempt: number) => {
      if (err instanceof CaptureError && (err.reason === REASONS.NetnsNotFound || err.reason === REASONS.NetnsMismatch)) {
        retryLater(attempt, err.reason, err.message);
      } else if (err instanceof CaptureError) fail(err.reason, err.message);
      // parseQuantity and parseDuration: a spec value the schema should have refused
      else if (err instanceof RangeError) fail(REASONS.InvalidSpec, err.message);
      else fail(REASONS.Error, err instanceof Error ? err.message : String(err));
    };
    let backoffs = 0;
    const retryLater = (attempt: number, reason: Reason, message: string) => {
      const starting = scheduler.now() - createdAt < timing.startupWindowMs;
      // a pod being started has no sandbox for a moment: only a wait past that is worth a warning
      if (entry.reason !== reason) log[starting ? 'debug' : 'warn']({ reason, message }, 'not capturing yet');
      publish({ state: 'Pending', reason, message });
      const delay = starting ? timing.startupRetryMs : Math.min(timing.retryMs * 2 ** backoffs++, timing.maxRetryMs);
      work.add(timer(delay, scheduler).subscribe(() => resolve(attempt + 1)));
    };

    const resolve = (attempt: number) =>
      step(
        deps.findNetns(identity.podUID),
        (lookup) => {
          if (!lookup.found) {
            // a pod instance does not leave the node's namespace: retrying would not change the answer
            if (lookup.reason === REASONS.HostNetwork) fail(lookup.reason, lookup.message);
            else retryLater(attempt, lookup.reason, lookup.message);
            return;
          }
          let netns: HeldNetns;
          try {
            netns = deps.holdNetns(identity.podUID, lookup);
          } catch (err) {
            return failWith(err, attempt);
          }
          prepare(netns, lookup.pids, attempt);
        },
        (err) => failWith(err, attempt),
      );

    const prepare = (netns: HeldNetns, pids: readonly number[], attempt: number) => {
      let argv: string[];
      let expression: string;
      let durationMs: number | undefined;
      let limits: WriterLimits;
      try {
        argv = tcpdumpArgv(identity.spec, { podIPs: identity.podIPs });
        expression = buildFilter(identity.spec.filter, identity.podIPs);
        durationMs = identity.spec.limits?.duration ? parseDuration(identity.spec.limits.duration) : undefined;
        limits = writerLimits(identity.spec);
      } catch (err) {
        netns.close();
        return failWith(err, attempt);
      }
      step(
        deps.compileFilter(expression, netns),
        (compiled) => {
          if (!compiled.ok) {
            netns.close();
            return fail(REASONS.InvalidFilter, `tcpdump rejects the filter "${expression}": ${compiled.message}`);
          }
          const go = () => launch(netns, pids, argv, argv.at(-1)!, limits, durationMs, attempt);
          if (!handoff.after$) return go();
          // the netns stays held meanwhile; a teardown during the wait closes it
          work.add(() => (launching || tcpdump ? undefined : netns.close()));
          step(handoff.after$.pipe(ignoreElements(), endWith(true)), go, go);
        },
        (err) => {
          netns.close();
          failWith(err, attempt);
        },
      );
    };

    const launch = (netns: HeldNetns, pids: readonly number[], argv: string[], expression: string, limits: WriterLimits, durationMs: number | undefined, attempt: number) => {
      const sink = deps.writer({
        dir,
        limits,
        label: {
          namespace: identity.namespace,
          name: identity.name,
          captureUID: identity.pcUID,
          generation: identity.generation,
          podName: identity.podName,
          podUID: identity.podUID,
          node: identity.node,
          podIPs: identity.podIPs,
          sessionId: id,
          filter: expression,
          snapLen: identity.spec.limits?.snapLen ?? DEFAULTS.snapLen,
          agentVersion: deps.agentVersion ?? 'dev',
        },
        onLimit: () => endBySelf({ reason: REASONS.PacketLimit }),
        onWriteError: (err) =>
          endBySelf({
            reason: err.code === 'ENOSPC' || err.code === 'EDQUOT' ? REASONS.DiskFull : REASONS.Error,
            message: `writing ${dir} failed (${err.code ?? err.message}); the packets after it were not kept, so the session was stopped`,
            failed: true,
          }),
      });
      writer = sink;
      // kept apart from `work`: a start in flight at teardown must still be stopped once it resolves
      const started$ = from(deps.start({ identity, sessionId: id, dir, netns, writer: sink, argv, log })).pipe(
        finalize(() => netns.close()),
        shareReplay({ bufferSize: 1, refCount: false }),
      );
      launching = started$;
      step(
        started$,
        (proc) => {
          launching = undefined;
          running(proc, netns.inode, pids, durationMs);
        },
        (err) => {
          launching = undefined;
          writer = undefined;
          failWith(err, attempt);
        },
      );
    };

    /** Stops tcpdump for a reason of the session's own; its exit then ends the session with it. */
    const endBySelf = (end: NonNullable<typeof selfEnd>) => {
      if (selfEnd) return;
      selfEnd = end;
      // before `running` (a limit reached by the packets held until verification) the start stops it
      if (tcpdump) work.add(from(tcpdump.stop({ graceMs: timing.stopGraceMs, cutNs: end.cutNs })).subscribe());
    };

    const running = (proc: CaptureProcess, inode: number, pids: readonly number[], durationMs: number | undefined) => {
      tcpdump = proc;
      log.info({ pid: proc.pid, dir, verifyMs: proc.verifiedAt.getTime() - proc.startedAt.getTime() }, 'session started');
      publish({ state: 'Running', reason: undefined, message: undefined, startTime: proc.verifiedAt.toISOString(), path: dir });
      if (selfEnd) work.add(from(proc.stop({ graceMs: timing.stopGraceMs, cutNs: selfEnd.cutNs })).subscribe());
      if (durationMs !== undefined) {
        // the whole capture's duration counts from the first session of this generation, on whichever node (crds/lifecycle.ts)
        const until = (identity.firstStartTime ? Date.parse(identity.firstStartTime) : proc.verifiedAt.getTime()) + durationMs;
        work.add(timer(Math.max(0, until - scheduler.now()), scheduler).subscribe(() => endBySelf({ reason: REASONS.Duration, cutNs: BigInt(until) * 1_000_000n })));
      }
      const stats$ = defer(() => (proc.requestStats ? from(proc.requestStats()) : of(undefined))).pipe(
        catchError((err: unknown) => {
          log.debug({ err: String(err) }, 'cannot read tcpdump counters');
          return of(undefined);
        }),
      );
      work.add(
        timer(timing.pollMs, timing.pollMs, scheduler)
          .pipe(exhaustMap(() => stats$))
          .subscribe((stats) => publish({ ...writer!.counts, droppedByKernel: stats?.droppedByKernel ?? entry.droppedByKernel })),
      );
      // tcpdump holds its netns open, so a recreated sandbox would leave it capturing a dead one
      let known = pids;
      work.add(
        timer(timing.netnsCheckMs, timing.netnsCheckMs, scheduler)
          .pipe(
            exhaustMap(() =>
              from(deps.checkNetns(identity.podUID, { inode, pids: known })).pipe(
                catchError((err: unknown) => {
                  log.debug({ err: String(err) }, 'cannot check the netns');
                  return EMPTY;
                }),
              ),
            ),
          )
          .subscribe((check) => {
            if (check.state === 'same') return void (known = check.pids);
            const reason = check.state === 'changed' ? REASONS.NetnsChanged : REASONS.NetnsGone;
            log.info({ reason, message: check.message }, 'the pod no longer lives in the captured netns');
            endBySelf({ reason, message: check.message });
          }),
      );
      step(
        proc.exited,
        (exit) => {
          const end = (selfEnd ??= { reason: REASONS.TcpdumpExited, failed: true });
          // an end by error is a failure the capture's conditions show; a limit reached is an end
          const message =
            end.reason === REASONS.TcpdumpExited
              ? `tcpdump exited (${exit.signal ?? `code ${exit.code}`}): ${stderrMessage(exit.stderrTail) || 'no message'}`
              : end.message;
          const ended = finalEntry(end.reason, exit, message, end.failed ?? false, end.cutNs);
          if (end.failed) log.warn({ reason: end.reason, packets: ended.packets, message }, 'session failed');
          else log.info({ endReason: end.reason, packets: ended.packets }, 'session ended');
          finish(ended);
        },
        (err) => fail(REASONS.Error, String(err)),
      );
    };

    /**
     * The last entry, with the writer's final counts: Ended, or Failed when `failed`, with
     * `message`. A session cut at a stop instant ends then: its files hold nothing later.
     */
    const finalEntry = (reason: Reason, exit: TcpdumpExit | undefined, message?: string, failed = false, cutNs?: bigint): SessionStatus => {
      const counts = writer?.close();
      return clean({
        ...entry,
        ...(failed ? { state: 'Failed' as const, reason, endReason: undefined } : { state: 'Ended' as const, reason: undefined, endReason: reason }),
        endTime: iso(cutNs !== undefined ? Number(cutNs / 1_000_000n) : scheduler.now()),
        ...(counts && tcpdump ? counts : {}),
        droppedByKernel: exit?.stats.droppedByKernel ?? entry.droppedByKernel,
        message: message ?? (entry.state === 'Pending' ? entry.message : undefined),
      });
    };

    subscriber.next({ capture, session: entry });
    resolve(0);

    return () => {
      work.unsubscribe();
      if (final) return;
      const end = selfEnd ?? { reason: ending() };
      // the stop instant is now, unless the session's own end named an earlier one
      const cutNs = end.cutNs ?? (EXACT_STOP_ENDS.has(end.reason) ? nowNs(scheduler) : undefined);
      const stopped$ = (proc: CaptureProcess) =>
        from(proc.stop({ graceMs: timing.stopGraceMs, cutNs })).pipe(
          map((exit) => finalEntry(end.reason, exit, end.message, end.failed ?? false, cutNs)),
          tap((ended) => log.info({ endReason: end.reason, packets: ended.packets, pid: proc.pid }, 'session ended')),
        );
      const final$: Observable<SessionStatus> = tcpdump
        ? stopped$(tcpdump)
        : launching
          ? launching.pipe(
              tap((proc) => (tcpdump = proc)),
              switchMap(stopped$),
              catchError(() => of(finalEntry(end.reason, undefined))),
            )
          : of(finalEntry(end.reason, undefined));
      const settled$ = final$.pipe(
        map((session) => ({ capture, session })),
        catchError((err: unknown) => {
          log.error({ err: String(err) }, 'could not stop session');
          return EMPTY;
        }),
        shareReplay({ bufferSize: 1, refCount: false }),
      );
      handoff.stopping?.(settled$);
      deps.ends.track(settled$);
    };
  });
}
