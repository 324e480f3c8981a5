// How a session is ended. Before its tcpdump runs, the slot's end aborts whatever stage
// it is in (SessionEnded, thrown through the stages so each releases what it holds); once
// tcpdump runs, an end is a stop: asked once, with the exact cut for the ends that need
// one, and waited for until the process has exited.

import { from, mergeMap, race, shareReplay, throwError, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { EXACT_STOP_ENDS, type Reason } from '../crds/packetcapture.ts';
import type { SessionEnd } from './session-entry.ts';
import type { CaptureProcess } from './sessions.ts';
import type { TcpdumpExit } from './tcpdump.ts';

/**
 * The end the slot gives a session at `nowMs`: for SpecChanged, CaptureDeleted,
 * CaptureCompleted and Duration the stop instant is now, so nothing after it is kept; the
 * others (PodReplaced, PodDeleted, AgentShutdown, ...) keep the tail tcpdump still delivers.
 */
export function slotEnd(reason: Reason, nowMs: number): SessionEnd {
  return EXACT_STOP_ENDS.has(reason) ? { reason, cutNs: BigInt(nowMs) * 1_000_000n } : { reason };
}

/** The slot ended the session before its tcpdump ran. */
export class SessionEnded extends Error {
  constructor(readonly end: SessionEnd) {
    super(`session ended: ${end.reason}`);
  }
}

/**
 * The source, failed with SessionEnded when `end$` emits before the source's first value
 * (at once if it already has); after that value the end is the next stage's to handle.
 */
export function endedBefore<T>(end$: Observable<SessionEnd>): MonoTypeOperatorFunction<T> {
  return (source) => race(end$.pipe(mergeMap((end) => throwError(() => new SessionEnded(end)))), source);
}

/**
 * The process's stop, asked at most once whoever asks (the end the session decided, or an
 * unsubscription): the first ask's cut holds, and every ask gets the same exit.
 */
export function stopOnce(proc: Pick<CaptureProcess, 'stop'>, graceMs: number): (cutNs?: bigint) => Observable<TcpdumpExit> {
  let stopped$: Observable<TcpdumpExit> | undefined;
  return (cutNs) => (stopped$ ??= from(proc.stop({ graceMs, cutNs })).pipe(shareReplay(1)));
}
