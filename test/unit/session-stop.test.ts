// How a session is ended: the slot's end and its cut, the abort before tcpdump runs, one stop per process.

import { defer, NEVER, of, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { endedBefore, SessionEnded, slotEnd, stopOnce } from '../../agent/session-stop.ts';
import type { SessionEnd } from '../../agent/session-entry.ts';
import type { TcpdumpExit } from '../../agent/tcpdump.ts';
import { REASONS } from '../../crds/packetcapture.ts';

const testScheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('slotEnd', () => {
  it('cuts at the end instant for the ends that keep nothing after it, and keeps the tail for the others', () => {
    for (const reason of [REASONS.SpecChanged, REASONS.CaptureDeleted, REASONS.CaptureCompleted, REASONS.Duration]) {
      expect(slotEnd(reason, 1234)).toEqual({ reason, cutNs: 1_234_000_000n });
    }
    for (const reason of [REASONS.PodReplaced, REASONS.PodDeleted, REASONS.AgentShutdown, REASONS.Error]) expect(slotEnd(reason, 1234)).toEqual({ reason });
  });
});

describe('endedBefore', () => {
  const end: SessionEnd = { reason: REASONS.PodDeleted };

  it('fails with SessionEnded when the end comes before the first value, and lets the source go', () => {
    testScheduler().run(({ cold, hot, expectObservable, expectSubscriptions }) => {
      const source = cold('----a|');
      const end$ = hot('--e', { e: end }) as Observable<SessionEnd>;
      expectObservable(source.pipe(endedBefore(end$))).toBe('--#', undefined, new SessionEnded(end));
      expectSubscriptions(source.subscriptions).toBe('^-!');
    });
  });

  it('after the first value the end is no longer its business', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const end$ = hot('---e', { e: end }) as Observable<SessionEnd>;
      expectObservable(cold('-a---b|').pipe(endedBefore(end$))).toBe('-a---b|');
    });
  });

  it('an end that already happened fails it before the source is subscribed', () => {
    let subscribed = false;
    const errors: unknown[] = [];
    defer(() => ((subscribed = true), NEVER))
      .pipe(endedBefore(of(end)))
      .subscribe({ error: (err) => errors.push(err) });
    expect(errors).toEqual([new SessionEnded(end)]);
    expect(subscribed).toBe(false);
  });
});

describe('stopOnce', () => {
  it('asks the process to stop once, with the first cut, and gives every asker the same exit', () => {
    const asked: (bigint | undefined)[] = [];
    const exit: TcpdumpExit = { code: 0, signal: null, stats: {}, stderrTail: '' };
    const stop = stopOnce({ stop: ({ cutNs }) => (asked.push(cutNs), Promise.resolve(exit)) }, 50);
    const exits: TcpdumpExit[] = [];
    stop(5n).subscribe((e) => exits.push(e));
    stop().subscribe((e) => exits.push(e));
    return new Promise<void>((resolve) =>
      setTimeout(() => {
        expect(asked).toEqual([5n]);
        expect(exits).toEqual([exit, exit]);
        resolve();
      }, 10),
    );
  });
});
