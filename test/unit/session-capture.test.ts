// Capture and stop: what a proven tcpdump's session reports, and how its first end stops it.

import pino from 'pino';
import { asyncScheduler, map, NEVER, of, ReplaySubject, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import type { NetnsRecheck } from '../../agent/netns.ts';
import { captureUntilEnd, deadline, exitedByItself, netnsLeft, type CaptureOptions } from '../../agent/session-capture.ts';
import type { SessionEnd, SessionFact } from '../../agent/session-entry.ts';
import type { Started } from '../../agent/session-verify.ts';
import { SESSION_TIMING, type CaptureProcess } from '../../agent/sessions.ts';
import type { TcpdumpExit } from '../../agent/tcpdump.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { NODE } from './agent-fixtures.ts';

const silent = pino({ level: 'silent' });
const identity = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 1, podUID: 'uid-a', podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: {} } };
const run = (body: (helpers: { scheduler: TestScheduler; cold: TestScheduler['createColdObservable']; expectObservable: TestScheduler['expectObservable'] }) => void) => {
  const scheduler = new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
  scheduler.run((helpers) => body({ ...helpers, scheduler }));
};

describe('netnsLeft', () => {
  it('follows the pod to the processes each check finds, and ends NetnsChanged when they live elsewhere', () => {
    run(({ scheduler, expectObservable }) => {
      const asked: (readonly number[])[] = [];
      const answers: NetnsRecheck[] = [{ state: 'same', pids: [8] }, { state: 'same', pids: [9] }, { state: 'changed', message: 'now in net:[2]' }];
      const check = (captured: { pids: readonly number[] }) => (asked.push(captured.pids), of(answers.shift()!));
      expectObservable(netnsLeft(check, { inode: 1, pids: [7] }, 10, asyncScheduler, silent)).toBe('30ms (e|)', { e: { reason: REASONS.NetnsChanged, message: 'now in net:[2]' } });
      scheduler.flush();
      expect(asked).toEqual([[7], [8], [9]]);
    });
  });

  it('a check that cannot run is tried again with the same processes; gone is NetnsGone', () => {
    run(({ cold, expectObservable }) => {
      const answers: Observable<NetnsRecheck>[] = [cold('#'), of({ state: 'gone', message: 'no process left' })];
      expectObservable(netnsLeft(() => answers.shift()!, { inode: 1, pids: [7] }, 10, asyncScheduler, silent)).toBe('20ms (e|)', { e: { reason: REASONS.NetnsGone, message: 'no process left' } });
    });
  });
});

describe('deadline', () => {
  it("is the capture's first start plus the duration, cut there, or this session's proof plus it", () => {
    run(({ expectObservable }) => {
      expectObservable(deadline({ firstStartTime: new Date(5).toISOString() }, 30, new Date(20), asyncScheduler)).toBe('35ms (d|)', { d: { reason: REASONS.Duration, cutNs: 35_000_000n } });
      expectObservable(deadline({}, 30, new Date(0), asyncScheduler)).toBe('30ms (d|)', { d: { reason: REASONS.Duration, cutNs: 30_000_000n } });
      expectObservable(deadline({}, undefined, new Date(0), asyncScheduler)).toBe('');
    });
  });
});

describe('exitedByItself', () => {
  it("fails TcpdumpExited with tcpdump's last words, without its banner and counters", () => {
    const exit: TcpdumpExit = { code: 1, signal: null, stats: {}, stderrTail: 'tcpdump: listening on any\npcap_loop: The interface went down\n0 packets captured\n' };
    expect(exitedByItself(exit)).toEqual({ reason: REASONS.TcpdumpExited, message: 'tcpdump exited (code 1): pcap_loop: The interface went down', failed: true });
  });
});

describe('captureUntilEnd', () => {
  /** A tcpdump that exits 5 ms after a stop; `stops` records each stop's cut. */
  function fakeRun(scheduler: TestScheduler, writerEnd$: Observable<SessionEnd> = NEVER) {
    const stops: string[] = [];
    const exited = new ReplaySubject<TcpdumpExit>(1);
    const proc: CaptureProcess = {
      pid: 100,
      startedAt: new Date(0),
      verifiedAt: new Date(0),
      exited,
      stop: ({ cutNs }) => {
        stops.push(`${scheduler.now()} cut=${cutNs ?? 'none'}`);
        scheduler.schedule(() => (exited.next({ code: 0, signal: 'SIGTERM', stats: { droppedByKernel: 1 }, stderrTail: '' }), exited.complete()), 5);
        return exited;
      },
      requestStats: () => of({ droppedByKernel: 0 }),
    };
    const counts = { packets: 3, files: 1, bytes: 24 };
    const writer = { push: () => undefined, verified: () => undefined, cut: () => undefined, pastCut: false, counts, close: () => counts };
    const started: Started = { kind: 'started', proc, writer, writerEnd$, inode: 1, pids: [7] };
    return { stops, exited, started };
  }
  const opts: CaptureOptions = { identity, dir: '/d', timing: { ...SESSION_TIMING, pollMs: 10, netnsCheckMs: 1000, stopGraceMs: 50 }, scheduler: asyncScheduler, log: silent, checkNetns: () => of({ state: 'same' as const, pids: [7] }) };
  const kinds = (fact: SessionFact) => (fact.kind === 'ended' ? `ended/${fact.end.reason}` : fact.kind);

  it('reports Running and progress until the slot ends it, stops once with its cut, and ends when tcpdump has exited', () => {
    run(({ scheduler, cold, expectObservable }) => {
      const { stops, started } = fakeRun(scheduler);
      const slotEnd$ = cold<SessionEnd>('25ms e', { e: { reason: REASONS.SpecChanged, cutNs: 25_000_000n } });
      const facts$ = captureUntilEnd(started, slotEnd$, opts);
      expectObservable(facts$.pipe(map(kinds))).toBe('r 9ms p 9ms p 9ms (e|)', { r: 'running', p: 'progress', e: 'ended/SpecChanged' });
      scheduler.flush();
      expect(stops).toEqual(['25 cut=25000000']);
    });
  });

  it('an end given while tcpdump was starting stops it at once, without a Running entry; the run is in the end', () => {
    run(({ scheduler, expectObservable }) => {
      const { started } = fakeRun(scheduler);
      const facts$ = captureUntilEnd(started, of({ reason: REASONS.PodDeleted }), opts);
      expectObservable(facts$).toBe('5ms (e|)', {
        e: { kind: 'ended', end: { reason: REASONS.PodDeleted }, atMs: 5, run: { startTime: new Date(0), path: '/d', counts: { packets: 3, files: 1, bytes: 24 }, droppedByKernel: 1 } },
      });
    });
  });

  it("the session's own end comes first and keeps its reason when the slot's end follows during the stop", () => {
    run(({ scheduler, cold, expectObservable }) => {
      const { stops, started } = fakeRun(scheduler, cold('2ms l', { l: { reason: REASONS.PacketLimit } }));
      const facts$ = captureUntilEnd(started, cold('4ms e', { e: { reason: REASONS.CaptureDeleted, cutNs: 4_000_000n } }), opts);
      expectObservable(facts$.pipe(map(kinds))).toBe('r 6ms (e|)', { r: 'running', e: 'ended/PacketLimit' });
      scheduler.flush();
      expect(stops).toEqual(['2 cut=none']);
    });
  });

  it('tcpdump exiting by itself ends it without a stop', () => {
    run(({ scheduler, expectObservable }) => {
      const { stops, exited, started } = fakeRun(scheduler);
      scheduler.schedule(() => exited.next({ code: 1, signal: null, stats: {}, stderrTail: 'gone' }), 3);
      expectObservable(captureUntilEnd(started, NEVER, opts).pipe(map(kinds))).toBe('r 2ms (e|)', { r: 'running', e: 'ended/TcpdumpExited' });
      scheduler.flush();
      expect(stops).toEqual([]);
    });
  });

  it('unsubscribed before any end, it still stops tcpdump, once', () => {
    run(({ scheduler }) => {
      const { stops, started } = fakeRun(scheduler);
      const sub = captureUntilEnd(started, NEVER, opts).subscribe();
      scheduler.schedule(() => sub.unsubscribe(), 7);
      scheduler.flush();
      expect(stops).toEqual(['7 cut=none']);
    });
  });
});
