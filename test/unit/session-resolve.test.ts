// Resolve: find and hold the pod's netns, and look again while it is not there yet.

import pino from 'pino';
import { asyncScheduler, defer, of, throwError, timer } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import type { NetnsLookup } from '../../agent/netns.ts';
import { holdPodNetns, retryDelayMs, untilFound } from '../../agent/session-resolve.ts';
import { SESSION_TIMING } from '../../agent/sessions.ts';
import { CaptureError } from '../../agent/tcpdump.ts';
import { REASONS } from '../../crds/packetcapture.ts';

const silent = pino({ level: 'silent' });
const found: NetnsLookup = { found: true, pid: 7, netnsPath: '/proc/7/ns/net', inode: 42, pids: [7, 8] };

function holding(lookup: NetnsLookup) {
  const closed: number[] = [];
  const deps = {
    findNetns: () => of(lookup),
    holdNetns: (_uid: string, l: { pid: number; inode: number }) => ({ fd: 3, pid: l.pid, inode: l.inode, close: () => closed.push(l.inode) }),
  };
  return { closed, held$: holdPodNetns('uid-a', deps) };
}

describe('holdPodNetns', () => {
  it('holds the netns the lookup found while subscribed, and closes it on unsubscribe', () => {
    const { closed, held$ } = holding(found);
    const seen: unknown[] = [];
    const sub = held$.subscribe((held) => seen.push([held.netns.inode, held.pids]));
    expect(seen).toEqual([[42, [7, 8]]]);
    expect(closed).toEqual([]);
    sub.unsubscribe();
    expect(closed).toEqual([42]);
  });

  it('a retained handle stays open past the subscription until its holder lets go, and closes once', () => {
    const { closed, held$ } = holding(found);
    let release: (() => void) | undefined;
    const sub = held$.subscribe((held) => (release = held.retain()));
    sub.unsubscribe();
    expect(closed).toEqual([]);
    release!();
    release!();
    expect(closed).toEqual([42]);
  });

  it('a netns not found fails with the lookup reason and message', () => {
    const { held$ } = holding({ found: false, reason: REASONS.HostNetwork, message: 'node netns' });
    const errors: unknown[] = [];
    held$.subscribe({ error: (err) => errors.push(err) });
    expect(errors).toEqual([new CaptureError(REASONS.HostNetwork, 'node netns')]);
  });
});

describe('retryDelayMs', () => {
  const timing = { retryMs: 10, maxRetryMs: 40, startupWindowMs: 20, startupRetryMs: 5 };
  it('looks every startupRetryMs while the session is young, then doubles up to the maximum', () => {
    expect(retryDelayMs(timing, 19, 3)).toBe(5);
    expect([0, 1, 2, 3].map((backoffs) => retryDelayMs(timing, 20, backoffs))).toEqual([10, 20, 40, 40]);
  });
});

describe('untilFound', () => {
  const timing = { ...SESSION_TIMING, retryMs: 10, maxRetryMs: 40, startupWindowMs: 0 };
  const run = (body: (helpers: { expectObservable: TestScheduler['expectObservable'] }) => void) =>
    new TestScheduler((actual, expected) => expect(actual).toEqual(expected)).run(body);

  it('emits each "not yet" as Pending with its reason and tries again after the backoff', () => {
    run(({ expectObservable }) => {
      const failures = [new CaptureError(REASONS.NetnsNotFound, 'no process'), new CaptureError(REASONS.NetnsMismatch, 'pid reused')];
      const attempt$ = defer(() => {
        const failure = failures.shift();
        return failure ? throwError(() => failure) : of('held');
      });
      // inside run() the async scheduler's clock is virtual
      const out$ = untilFound(attempt$, { timing, scheduler: asyncScheduler, log: silent, wait$: (ms) => timer(ms) });
      expectObservable(out$).toBe('a 9ms b 19ms (c|)', {
        a: { kind: 'pending', reason: REASONS.NetnsNotFound, message: 'no process' },
        b: { kind: 'pending', reason: REASONS.NetnsMismatch, message: 'pid reused' },
        c: 'held',
      });
    });
  });

  it('any other failure goes on at once', () => {
    run(({ expectObservable }) => {
      const missing = new CaptureError(REASONS.TcpdumpMissing, 'no tcpdump');
      const out$ = untilFound(throwError(() => missing), { timing, scheduler: asyncScheduler, log: silent, wait$: (ms) => timer(ms) });
      expectObservable(out$).toBe('#', undefined, missing);
    });
  });
});
