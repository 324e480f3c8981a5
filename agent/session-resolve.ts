// Resolve, a session's first stage: find the pod's netns and hold it open, and while it
// cannot be found or proven yet, say so (Pending with the reason) and look again.

import { catchError, concat, defer, map, Observable, of, retry, switchMap, throwError, type SchedulerLike } from 'rxjs';
import { REASONS } from '../crds/packetcapture.ts';
import type { Logger } from '../kube/log.ts';
import type { HeldNetns } from './netns.ts';
import type { SessionFact } from './session-entry.ts';
import type { SessionDeps, SessionTiming } from './sessions.ts';
import { CaptureError } from './tcpdump.ts';

export interface PodNetns {
  netns: HeldNetns;
  /** the pod's processes the lookup found in it */
  pids: readonly number[];
  /** keeps the handle open past this subscription, until the function it returns is called */
  retain(): () => void;
}

/**
 * One look for the pod's netns, held open for as long as this is subscribed and retained
 * (it closes when the last of them lets go). Fails with CaptureError when the netns cannot
 * be found or proven.
 */
export function holdPodNetns(podUID: string, deps: Pick<SessionDeps, 'findNetns' | 'holdNetns'>): Observable<PodNetns> {
  return defer(() => deps.findNetns(podUID)).pipe(
    switchMap((lookup) => {
      if (!lookup.found) throw new CaptureError(lookup.reason, lookup.message);
      return new Observable<PodNetns>((subscriber) => {
        const netns = deps.holdNetns(podUID, lookup);
        let holders = 0;
        const retain = () => {
          holders++;
          let held = true;
          return () => {
            if (held && --holders === 0) netns.close();
            held = false;
          };
        };
        const release = retain();
        subscriber.next({ netns, pids: lookup.pids, retain });
        return release;
      });
    }),
  );
}

/** A failure that means "not yet": the pod's netns is looked for again. HostNetwork, a bad spec or a missing tcpdump are not. */
export const notYet = (err: unknown): err is CaptureError =>
  err instanceof CaptureError && (err.reason === REASONS.NetnsNotFound || err.reason === REASONS.NetnsMismatch);

/**
 * How long to wait before looking again: every startupRetryMs while the session is younger
 * than the startup window (a pod's sandbox appears a moment after it is scheduled, and its
 * first packets follow at once), then retryMs doubling with each `backoffs` up to maxRetryMs.
 */
export function retryDelayMs(timing: Pick<SessionTiming, 'retryMs' | 'maxRetryMs' | 'startupWindowMs' | 'startupRetryMs'>, ageMs: number, backoffs: number): number {
  return ageMs < timing.startupWindowMs ? timing.startupRetryMs : Math.min(timing.retryMs * 2 ** backoffs, timing.maxRetryMs);
}

/**
 * `attempt$` until it gets past "not yet": each such failure is emitted as a Pending fact,
 * then `wait$(ms)` is waited for before the attempt starts again. Other failures go on.
 */
export function untilFound<T>(
  attempt$: Observable<T>,
  opts: { timing: SessionTiming; scheduler: SchedulerLike; log: Logger; wait$(ms: number): Observable<unknown> },
): Observable<T | SessionFact> {
  return defer(() => {
    const createdAt = opts.scheduler.now();
    let backoffs = 0;
    let shown: string | undefined;
    return attempt$.pipe(
      catchError((err: unknown) => {
        if (!notYet(err)) return throwError(() => err);
        const ageMs = opts.scheduler.now() - createdAt;
        const starting = ageMs < opts.timing.startupWindowMs;
        // a pod being started has no sandbox for a moment: only a wait past that is worth a warning
        if (err.reason !== shown) opts.log[starting ? 'debug' : 'warn']({ reason: err.reason, message: err.message }, 'not capturing yet');
        shown = err.reason;
        const delayMs = retryDelayMs(opts.timing, ageMs, backoffs);
        if (!starting) backoffs++;
        const pending: SessionFact = { kind: 'pending', reason: err.reason, message: err.message };
        return concat(of(pending), opts.wait$(delayMs).pipe(map(() => { throw err; })));
      }),
      retry({ delay: (err: unknown) => (notYet(err) ? of(true) : throwError(() => err)) }),
    );
  });
}
