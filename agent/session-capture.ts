// Capture and stop, a session's last stages: a proven tcpdump writes into the session's
// writer while its counters are reported, until the first end: the slot's, the writer's
// (a limit, a write that failed), the duration's deadline, the pod leaving the captured
// netns, or tcpdump exiting by itself. Then the stop (once, with the end's cut) and the
// exit are waited for, and the end is the last fact. Unsubscribed before that, the
// process is stopped all the same: its life is this subscription's.

import {
  catchError,
  concat,
  defer,
  EMPTY,
  exhaustMap,
  expand,
  filter,
  from,
  map,
  merge,
  mergeMap,
  NEVER,
  type Observable,
  type ObservableInput,
  of,
  race,
  shareReplay,
  switchMap,
  take,
  takeUntil,
  tap,
  timer,
  type SchedulerLike,
} from 'rxjs';
import { REASONS } from '../crds/packetcapture.ts';
import type { Logger } from '../kube/log.ts';
import type { Identity } from './identity.ts';
import type { NetnsRecheck } from './netns.ts';
import type { SessionEnd, SessionFact } from './session-entry.ts';
import { stopOnce } from './session-stop.ts';
import type { Started } from './session-verify.ts';
import type { CaptureProcess, SessionTiming, SessionWriter } from './sessions.ts';
import type { TcpdumpExit } from './tcpdump.ts';

/** The writer's counts and tcpdump's kernel drops every `pollMs`. */
export function progress(proc: Pick<CaptureProcess, 'requestStats'>, writer: Pick<SessionWriter, 'counts'>, pollMs: number, scheduler: SchedulerLike, log: Logger): Observable<SessionFact> {
  const stats$ = defer(() => (proc.requestStats ? from(proc.requestStats()) : of(undefined))).pipe(
    catchError((err: unknown) => {
      log.debug({ err: String(err) }, 'cannot read tcpdump counters');
      return of(undefined);
    }),
  );
  return timer(pollMs, pollMs, scheduler).pipe(
    exhaustMap(() => stats$),
    map((stats): SessionFact => ({ kind: 'progress', counts: writer.counts, droppedByKernel: stats?.droppedByKernel })),
  );
}

/**
 * Emits NetnsChanged or NetnsGone when the pod no longer lives in the captured netns,
 * checked every `everyMs` against the pod's processes the last check saw. tcpdump holds its
 * netns open, so a recreated sandbox would otherwise leave it capturing a dead one.
 */
export function netnsLeft(
  check: (captured: { inode: number; pids: readonly number[] }) => ObservableInput<NetnsRecheck>,
  captured: { inode: number; pids: readonly number[] },
  everyMs: number,
  scheduler: SchedulerLike,
  log: Logger,
): Observable<SessionEnd> {
  const lookAfterPause = (pids: readonly number[]): Observable<NetnsRecheck> =>
    timer(everyMs, scheduler).pipe(
      switchMap(() => from(check({ inode: captured.inode, pids }))),
      catchError((err: unknown) => {
        log.debug({ err: String(err) }, 'cannot check the netns');
        return of<NetnsRecheck>({ state: 'same', pids: [...pids] });
      }),
    );
  return lookAfterPause(captured.pids).pipe(
    expand((seen) => (seen.state === 'same' ? lookAfterPause(seen.pids) : EMPTY)),
    filter((seen) => seen.state !== 'same'),
    take(1),
    map((seen) => {
      const reason = seen.state === 'changed' ? REASONS.NetnsChanged : REASONS.NetnsGone;
      log.info({ reason, message: seen.message }, 'the pod no longer lives in the captured netns');
      return { reason, message: seen.message };
    }),
  );
}

/**
 * Emits Duration at the capture's deadline, with the deadline as the cut: the duration of
 * the whole capture counts from the first session of this generation, on whichever node
 * (crds/lifecycle.ts), else from this one's proof.
 */
export function deadline(identity: Pick<Identity, 'firstStartTime'>, durationMs: number | undefined, verifiedAt: Date, scheduler: SchedulerLike): Observable<SessionEnd> {
  if (durationMs === undefined) return NEVER;
  const until = (identity.firstStartTime ? Date.parse(identity.firstStartTime) : verifiedAt.getTime()) + durationMs;
  return timer(Math.max(0, until - scheduler.now()), scheduler).pipe(map(() => ({ reason: REASONS.Duration, cutNs: BigInt(until) * 1_000_000n })));
}

/** The last line worth showing of what tcpdump said on stderr. */
export function stderrMessage(tail: string): string {
  const lines = tail
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !/packets? (captured|received by filter|dropped by)/.test(line) && !/^tcpdump: listening on /.test(line));
  return lines.slice(-3).join('; ').slice(-500);
}

/** The end of a tcpdump that exited before anyone stopped it: a failure the capture's conditions show. */
export function exitedByItself(exit: TcpdumpExit): SessionEnd {
  const message = `tcpdump exited (${exit.signal ?? `code ${exit.code}`}): ${stderrMessage(exit.stderrTail) || 'no message'}`;
  return { reason: REASONS.TcpdumpExited, message, failed: true };
}

export interface CaptureOptions {
  identity: Identity;
  dir: string;
  durationMs?: number;
  timing: SessionTiming;
  scheduler: SchedulerLike;
  log: Logger;
  checkNetns(podUID: string, captured: { inode: number; pids: readonly number[] }): ObservableInput<NetnsRecheck>;
}

/**
 * Running, progress, and at the first end the stop and the end itself. An end already
 * given by the slot while tcpdump was starting stops it at once, without a Running entry.
 */
export function captureUntilEnd(run: Started, slotEnd$: Observable<SessionEnd>, opts: CaptureOptions): Observable<SessionFact> {
  return defer(() => {
    const { proc, writer } = run;
    const { timing, scheduler, log } = opts;
    const stop = stopOnce(proc, timing.stopGraceMs);
    const ownEnd$ = merge(
      run.writerEnd$,
      deadline(opts.identity, opts.durationMs, proc.verifiedAt, scheduler),
      netnsLeft((captured) => opts.checkNetns(opts.identity.podUID, captured), run, timing.netnsCheckMs, scheduler, log),
    );
    const decided$ = race(
      from(proc.exited).pipe(map((exit) => ({ end: exitedByItself(exit), exit }))),
      merge(slotEnd$, ownEnd$).pipe(map((end) => ({ end, exit: undefined }))),
    ).pipe(take(1), shareReplay({ bufferSize: 1, refCount: true }));
    const ended$ = decided$.pipe(
      mergeMap(({ end, exit }) => (exit ? of({ end, exit }) : stop(end.cutNs).pipe(map((stopped) => ({ end, exit: stopped }))))),
      map(({ end, exit }): SessionFact => {
        const counts = writer.close();
        if (end.failed) log.warn({ reason: end.reason, packets: counts.packets, message: end.message }, 'session failed');
        else log.info({ endReason: end.reason, packets: counts.packets, pid: proc.pid }, 'session ended');
        return { kind: 'ended', end, atMs: scheduler.now(), run: { startTime: proc.verifiedAt, path: opts.dir, counts, droppedByKernel: exit.stats.droppedByKernel } };
      }),
    );
    // subscribed first, so an end replayed at once is decided before Running could be said
    return merge(
      ended$,
      defer(() => {
        log.info({ pid: proc.pid, dir: opts.dir, verifyMs: proc.verifiedAt.getTime() - proc.startedAt.getTime() }, 'session started');
        const running: SessionFact = { kind: 'running', startTime: proc.verifiedAt, path: opts.dir };
        return concat(of(running), progress(proc, writer, timing.pollMs, scheduler, log));
      }).pipe(takeUntil(decided$)),
    ).pipe(
      tap({
        unsubscribe: () => stopAbandoned(stop, proc, log),
        error: () => stopAbandoned(stop, proc, log),
      }),
    );
  });
}

/** Stops a process whose session went away without an end, without waiting for it. */
export function stopAbandoned(stop: (cutNs?: bigint) => Observable<TcpdumpExit>, proc: Pick<CaptureProcess, 'pid'>, log: Logger): void {
  stop().subscribe({ error: (err: unknown) => log.error({ err: String(err), pid: proc.pid }, 'could not stop tcpdump') });
}
