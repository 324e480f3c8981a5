// The session pipeline in virtual time: fake netns lookups and fake tcpdump processes,
// real identities(), real switchMap. Inputs are cold marbles of snapshots; the output is
// read as a timestamped log of session entries and process starts/stops.

import pino from 'pino';
import { defer, map, NEVER, Observable, of, ReplaySubject, takeUntil, timer } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import type { Pod } from '../../agent/identity.ts';
import type { NetnsLookup } from '../../agent/netns.ts';
import { captureSession, newSessionId, sessionUpdates, slotEvents, type CaptureProcess, type SessionDeps, type SessionUpdate, type WriterRequest } from '../../agent/sessions.ts';
import { CaptureError, type TcpdumpExit } from '../../agent/tcpdump.ts';
import { REASONS, type PacketCapture } from '../../crds/packetcapture.ts';
import type { Snapshot } from '../../kube/watch.ts';
import { capture, NODE, pod, session, snapshot } from './agent-fixtures.ts';

const A = 'aaaaaaaa-0000-0000-0000-000000000001';
const B = 'bbbbbbbb-0000-0000-0000-000000000002';
const C = 'cccccccc-0000-0000-0000-000000000003';
const STOP_MS = 5;
const silent = pino({ level: 'silent' });

interface FakeNode {
  deps: SessionDeps;
  /** `<ms> start <uid8> <sessionId> net:[<inode>]` and `<ms> exit <uid8> <signal|code>` */
  processes: string[];
  live: Map<number, { podUID: string; exitByItself(exit: Partial<TcpdumpExit>): void }>;
  /** the writer requests, in order: a test plays the writer's limit or write error through them */
  writers: WriterRequest[];
  /** `<ms> stop <uid8> cut=<ms of the cut>|none` */
  stops: string[];
}

/**
 * A node whose netns lookups and tcpdumps answer in virtual time. `sandbox` is the inode of
 * a pod's netns at a virtual time, undefined while it has no process (default: one netns
 * per pod, for ever); `netns` overrides the lookups by attempt.
 */
function fakeNode(
  scheduler: TestScheduler,
  opts: {
    netns?: (podUID: string, attempt: number) => NetnsLookup;
    sandbox?: (podUID: string, now: number) => number | undefined;
    startMs?: number;
    startError?: CaptureError;
  } = {},
): FakeNode {
  const processes: string[] = [];
  const stops: string[] = [];
  const writers: WriterRequest[] = [];
  const live: FakeNode['live'] = new Map();
  const attempts = new Map<string, number>();
  let nextPid = 100;
  const stamp = () => scheduler.now();
  const inodeOf = (podUID: string) => (opts.sandbox ? opts.sandbox(podUID, stamp()) : podUID.charCodeAt(0));
  const deps: SessionDeps = {
    dataDir: '/data',
    log: silent,
    findNetns: (podUID) => {
      const attempt = attempts.get(podUID) ?? 0;
      attempts.set(podUID, attempt + 1);
      const inode = inodeOf(podUID);
      const lookup: NetnsLookup =
        inode === undefined
          ? { found: false, reason: REASONS.NetnsNotFound, message: `no process of pod ${podUID}` }
          : { found: true, pid: 1, netnsPath: `/proc/1/ns/net`, inode, pids: [1] };
      return of(opts.netns?.(podUID, attempt) ?? lookup);
    },
    checkNetns: (podUID, captured) => {
      const inode = inodeOf(podUID);
      if (inode === captured.inode) return of({ state: 'same' as const, pids: [...captured.pids] });
      return of(inode === undefined ? { state: 'gone' as const, message: 'no process left' } : { state: 'changed' as const, message: `now in net:[${inode}]` });
    },
    holdNetns: (_podUID, lookup) => ({ fd: -1, pid: lookup.pid, inode: lookup.inode, close: () => undefined }),
    compileFilter: (expression) => of(expression.includes('bogus') ? { ok: false as const, message: 'syntax error' } : { ok: true as const }),
    writer: (request) => {
      writers.push(request);
      let closed = false;
      return {
        push: () => undefined,
        verified: () => undefined,
        cut: () => undefined,
        pastCut: false,
        get counts() {
          return closed ? { packets: 7, files: 1, bytes: 24 } : { packets: 3, files: 1, bytes: 24 };
        },
        close: () => {
          closed = true;
          return { packets: 7, files: 1, bytes: 24 };
        },
      };
    },
    start: (request) => {
      if (opts.startError) return timer(opts.startMs ?? 0).pipe(map(() => { throw opts.startError; }));
      const pid = nextPid++;
      const exit$ = new ReplaySubject<TcpdumpExit>(1);
      const uid8 = request.identity.podUID.slice(0, 8);
      const end = (exit: Partial<TcpdumpExit>) => {
        if (!live.has(pid)) return;
        live.delete(pid);
        processes.push(`${stamp()} exit ${uid8} ${exit.signal ?? exit.code}`);
        exit$.next({ code: null, signal: null, stats: { captured: 7 }, stderrTail: '', ...exit });
        exit$.complete();
      };
      const proc: CaptureProcess = {
        pid,
        startedAt: new Date(stamp()),
        verifiedAt: new Date(stamp() + (opts.startMs ?? 0)),
        exited: exit$,
        stop: ({ cutNs }) => {
          stops.push(`${stamp()} stop ${uid8} cut=${cutNs === undefined ? 'none' : Number(cutNs / 1_000_000n)}`);
          scheduler.schedule(() => end({ signal: 'SIGTERM' }), STOP_MS);
          return exit$;
        },
        requestStats: () => of({ captured: 3 }),
      };
      return timer(opts.startMs ?? 0).pipe(
        map(() => {
          live.set(pid, { podUID: request.identity.podUID, exitByItself: end });
          processes.push(`${stamp()} start ${uid8} ${request.sessionId} net:[${request.netns.inode}]`);
          return proc;
        }),
      );
    },
    // the netns is checked often, so every test also shows that a pod staying in it changes nothing
    timing: { retryMs: 10, maxRetryMs: 40, startupWindowMs: 0, startupRetryMs: 5, pollMs: 1000, netnsCheckMs: 10, stopGraceMs: 50 },
  };
  return { deps, processes, live, writers, stops };
}

/** `<ms> <uid letter>:<state>[/<reason or endReason>]` */
const short = (scheduler: TestScheduler) => (u: SessionUpdate) =>
  `${scheduler.now()} ${u.session.podUID[0]}:${u.session.state}${u.session.endReason ? `/${u.session.endReason}` : u.session.reason ? `/${u.session.reason}` : ''}`;

function run(body: (helpers: { cold: TestScheduler['createColdObservable']; scheduler: TestScheduler }) => void): void {
  const scheduler = new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
  scheduler.run(({ cold }) => body({ cold, scheduler }));
}

/** Runs the pipeline until `endMs` (stop$ at `stopMs`) and returns the update log. */
function drive(
  scheduler: TestScheduler,
  node: FakeNode,
  captures$: Observable<Snapshot<PacketCapture>>,
  pods$: Observable<Snapshot<Pod>>,
  stopMs: number,
  endMs = stopMs + 100,
): { log: string[]; updates: SessionUpdate[]; completedAt?: number } {
  return collect(scheduler, sessionUpdates(captures$, pods$, NODE, timer(stopMs), node.deps), endMs);
}

/** Every update `updates$` emits until `endMs`, as the log `short` writes, and when it completed if it did. */
function collect(scheduler: TestScheduler, updates$: Observable<SessionUpdate>, endMs: number): { log: string[]; updates: SessionUpdate[]; completedAt?: number } {
  const log: string[] = [];
  const updates: SessionUpdate[] = [];
  let completedAt: number | undefined;
  updates$.pipe(takeUntil(timer(endMs))).subscribe({
    next: (u) => {
      updates.push(u);
      log.push(short(scheduler)(u));
    },
    complete: () => (completedAt = scheduler.now()),
  });
  scheduler.flush();
  return { log, updates, completedAt };
}

describe('sessionUpdates', () => {
  it('recreated pod with the same name gets a new session under the new UID; the old one ends PodReplaced', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const pc = { c: snapshot(capture()) };
      const pods = { a: snapshot(pod({ uid: A })), b: snapshot(pod({ uid: B })) };
      const { log, updates } = drive(scheduler, node, cold('c', pc), cold('a 9ms b', pods), 50);
      expect(log).toEqual([
        '0 a:Pending',
        '0 a:Running',
        '10 b:Pending',
        '10 b:Running',
        `${10 + STOP_MS} a:Ended/PodReplaced`,
        `${50 + STOP_MS} b:Ended/AgentShutdown`,
      ]);
      expect(node.processes).toEqual([
        expect.stringMatching(/^0 start aaaaaaaa g1-aaaaaaaa-/),
        expect.stringMatching(/^10 start bbbbbbbb g1-bbbbbbbb-/),
        `${10 + STOP_MS} exit aaaaaaaa SIGTERM`,
        `${50 + STOP_MS} exit bbbbbbbb SIGTERM`,
      ]);
      // another pod instance, another netns: the new one starts at once, and the old one keeps its tail (no cut)
      expect(node.stops).toEqual(['10 stop aaaaaaaa cut=none', '50 stop bbbbbbbb cut=none']);
      const ids = new Set(updates.map((u) => u.session.id));
      expect(ids.size).toBe(2);
      for (const u of updates) {
        // a directory exists only once the session runs
        expect(u.session.path).toBe(u.session.state === 'Pending' ? undefined : `/data/shop/web/${u.session.podUID}/${u.session.id}`);
      }
    });
  });

  it('a spec edit restarts the session in a new directory once the old process has exited; the old one ends SpecChanged, cut at the edit', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const pcs = { c: snapshot(capture()), d: snapshot(capture({ generation: 2, spec: { filter: { port: 80 } } })) };
      const { log, updates } = drive(scheduler, node, cold('c 19ms d', pcs), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '20 a:Pending', `${20 + STOP_MS} a:Ended/SpecChanged`, `${20 + STOP_MS} a:Running`, '55 a:Ended/AgentShutdown']);
      // nothing after the edit instant is kept by the old session, and the two never capture the netns at once
      expect(node.stops).toEqual(['20 stop aaaaaaaa cut=20', '50 stop aaaaaaaa cut=none']);
      expect(node.processes.map((p) => p.split(' ').slice(0, 2).join(' '))).toEqual(['0 start', '25 exit', '25 start', '55 exit']);
      // its end is the stop instant, though tcpdump drained until 25
      expect(updates.find((u) => u.session.endReason === 'SpecChanged')!.session.endTime).toBe(new Date(20).toISOString());
      const [first, second] = [...new Set(updates.map((u) => u.session.id))];
      expect(first).toMatch(/^g1-aaaaaaaa-/);
      expect(second).toMatch(/^g2-aaaaaaaa-/);
      const pathOf = (id: string | undefined) => updates.find((u) => u.session.id === id && u.session.path)!.session.path;
      expect(pathOf(second)).not.toBe(pathOf(first));
    });
  });

  it('duplicate and reordered snapshots of the same instances never restart a session', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const relabelled = pod({ uid: A, labels: { app: 'web', rev: '2' } });
      const pods = { a: snapshot(pod({ uid: A })), r: snapshot(relabelled), w: snapshot(pod({ uid: A }), pod({ uid: C, name: 'other' })) };
      const { log } = drive(scheduler, node, cold('c 4ms c 4ms c', { c: snapshot(capture()) }), cold('a 2ms a r w a r a', pods), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '55 a:Ended/AgentShutdown']);
      expect(node.processes).toHaveLength(2);
    });
  });

  it('deleting the capture ends every session CaptureDeleted and leaves no process', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const spec = { target: { podSelector: { matchLabels: { app: 'web' } } } };
      const pcs = { c: snapshot(capture({ spec })), d: snapshot(capture({ spec, deleting: true })), g: snapshot<PacketCapture>() };
      const pods = { p: snapshot(pod({ uid: A }), pod({ uid: B, name: 'web-1' })) };
      const { log } = drive(scheduler, node, cold('c 19ms d 9ms g', pcs), cold('p', pods), 60);
      expect(log.filter((l) => l.includes('Ended'))).toEqual(['25 a:Ended/CaptureDeleted', '25 b:Ended/CaptureDeleted']);
      // deleted for privacy: nothing after the deletion instant is kept
      expect(node.stops).toEqual(['20 stop aaaaaaaa cut=20', '20 stop bbbbbbbb cut=20']);
      expect(node.live.size).toBe(0);
    });
  });

  it('a pod leaving a selector slot ends only its own session, PodDeleted', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const spec = { target: { podSelector: { matchLabels: { app: 'web' } } } };
      const pods = {
        p: snapshot(pod({ uid: A }), pod({ uid: B, name: 'web-1' })),
        t: snapshot(pod({ uid: A }), pod({ uid: B, name: 'web-1', deleting: true })),
        g: snapshot(pod({ uid: A })),
      };
      const { log } = drive(scheduler, node, cold('c', { c: snapshot(capture({ spec })) }), cold('p 19ms t 9ms g', pods), 60);
      expect(log.filter((l) => l.includes('Ended'))).toEqual(['25 b:Ended/PodDeleted', '65 a:Ended/AgentShutdown']);
    });
  });

  it('maxPackets ends the session PacketLimit and the same instance is not captured again', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const spec = { limits: { maxPackets: 7 } };
      const ended = session({ id: 'x', podUID: A, endReason: REASONS.PacketLimit });
      const pcs = { c: snapshot(capture({ spec })), s: snapshot(capture({ spec, sessions: [ended] })) };
      const pods = { a: snapshot(pod({ uid: A })), b: snapshot(pod({ uid: B })) };
      // the writer counts the packets and says when the limit is reached; the session then stops tcpdump
      scheduler.schedule(() => node.writers[0]!.onLimit(), 20);
      const { log, updates } = drive(scheduler, node, cold('c 29ms s', pcs), cold('a 39ms a 9ms b', pods), 80);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', `${20 + STOP_MS} a:Ended/PacketLimit`, '50 b:Pending', '50 b:Running', '85 b:Ended/AgentShutdown']);
      expect(updates[2]!.session).toMatchObject({ packets: 7, files: 1, bytes: 24, endTime: new Date(20 + STOP_MS).toISOString() });
      expect(node.stops[0]).toBe('20 stop aaaaaaaa cut=none');
    });
  });

  it('while the netns cannot be found the session is Pending with the reason, retried with backoff', () => {
    run(({ cold, scheduler }) => {
      const notFound: NetnsLookup = { found: false, reason: REASONS.NetnsNotFound, message: 'no process of pod a' };
      const node = fakeNode(scheduler, { netns: (_uid, attempt) => (attempt < 2 ? notFound : undefined!) });
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      // attempts at 0, 10, 10+20: found on the third
      expect(log).toEqual(['0 a:Pending', '0 a:Pending/NetnsNotFound', '30 a:Running', '55 a:Ended/AgentShutdown']);
      expect(updates[1]!.session.message).toBe('no process of pod a');
      expect(updates[2]!.session.message).toBeUndefined();
    });
  });

  it('a Pending pod is captured as soon as its netns exists, and turning Running with an IP changes nothing', () => {
    run(({ cold, scheduler }) => {
      // the sandbox appears at 25; the pod reports Running with its IP at 40
      const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < 25 ? undefined : 1) });
      const pods = { p: snapshot(pod({ uid: A, phase: 'Pending', ip: '' })), r: snapshot(pod({ uid: A, ip: '10.244.1.5' })) };
      const { log } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('p 39ms r', pods), 60);
      // lookups at 0, 10 and 30 (backoff 10, 20)
      expect(log).toEqual(['0 a:Pending', '0 a:Pending/NetnsNotFound', '30 a:Running', `${60 + STOP_MS} a:Ended/AgentShutdown`]);
      expect(node.processes.filter((p) => p.includes('start'))).toHaveLength(1);
    });
  });

  it('a pod being started is looked for every startupRetryMs during the startup window, then with backoff', () => {
    const runningAt = (sandboxAt: number) => {
      let log: string[] = [];
      run(({ cold, scheduler }) => {
        const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < sandboxAt ? undefined : 1) });
        node.deps.timing = { ...node.deps.timing, startupWindowMs: 20, startupRetryMs: 5 };
        log = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('p', { p: snapshot(pod({ uid: A, phase: 'Pending', ip: '' })) }), 70).log;
      });
      return log[2];
    };
    // lookups at 0, 5, 10, 15: the sandbox of 12 ms is captured at 15, not at the backoff's 30
    expect(runningAt(12)).toBe('15 a:Running');
    // past the window (20): 20, then backoff 10 and 20, so a sandbox of 31 ms is found at 50
    expect(runningAt(31)).toBe('50 a:Running');
  });

  it('a pod whose netns never appears is never captured, and ends with its reason when deleted', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler, { netns: () => ({ found: false, reason: REASONS.NetnsNotFound, message: 'no process' }) });
      const pods = { a: snapshot(pod({ uid: A })), g: snapshot<Pod>() };
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a 99ms g', pods), 150);
      expect(log).toEqual(['0 a:Pending', '0 a:Pending/NetnsNotFound', '100 a:Ended/PodDeleted']);
      expect(updates.at(-1)!.session).toMatchObject({ message: 'no process' });
      expect(updates.at(-1)!.session.startTime).toBeUndefined();
      expect(updates.at(-1)!.session.path).toBeUndefined();
      expect(node.processes).toEqual([]);
    });
  });

  it('a sandbox recreated under the same UID ends the session NetnsChanged and a new session captures the new netns', () => {
    run(({ cold, scheduler }) => {
      // the pod's netns is net:[1] until 25, then net:[2]; checked every 10
      const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < 25 ? 1 : 2) });
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 60);
      expect(log).toEqual([
        '0 a:Pending',
        '0 a:Running',
        `${30 + STOP_MS} a:Ended/NetnsChanged`,
        `${30 + STOP_MS} a:Pending`,
        `${30 + STOP_MS} a:Running`,
        `${60 + STOP_MS} a:Ended/AgentShutdown`,
      ]);
      expect(node.processes).toEqual([
        expect.stringMatching(/^0 start aaaaaaaa g1-aaaaaaaa-\S+ net:\[1\]$/),
        `${30 + STOP_MS} exit aaaaaaaa SIGTERM`,
        expect.stringMatching(/^35 start aaaaaaaa g1-aaaaaaaa-\S+ net:\[2\]$/),
        `${60 + STOP_MS} exit aaaaaaaa SIGTERM`,
      ]);
      const [first, second] = [...new Set(updates.map((u) => u.session.id))];
      expect(second).not.toBe(first);
      expect(updates[2]!.session).toMatchObject({ id: first, podUID: A, state: 'Ended', endReason: REASONS.NetnsChanged, message: 'now in net:[2]' });
      const paths = new Set(updates.filter((u) => u.session.path).map((u) => u.session.path));
      expect(paths.size).toBe(2);
    });
  });

  it('a pod with no process left ends the session NetnsGone without the watch, and the next session waits for its netns', () => {
    run(({ cold, scheduler }) => {
      // the pod's processes are gone from 25 to 60, then it has net:[3]
      const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < 25 ? 1 : now < 60 ? undefined : 3) });
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 100);
      // retries after 10, then 20: at 45 still nothing, at 65 the new netns
      expect(log).toEqual([
        '0 a:Pending',
        '0 a:Running',
        '35 a:Ended/NetnsGone',
        '35 a:Pending',
        '35 a:Pending/NetnsNotFound',
        '65 a:Running',
        `${100 + STOP_MS} a:Ended/AgentShutdown`,
      ]);
      expect(updates[2]!.session.message).toBe('no process left');
      expect(node.processes.filter((p) => p.includes('start'))).toEqual([expect.stringMatching(/net:\[1\]$/), expect.stringMatching(/^65 .*net:\[3\]$/)]);
    });
  });

  it('the session waiting after NetnsGone ends with the reason the Pod watch gives', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < 25 ? 1 : undefined) });
      const pods = { a: snapshot(pod({ uid: A })), g: snapshot<Pod>() };
      const { log } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a 49ms g', pods), 100);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '35 a:Ended/NetnsGone', '35 a:Pending', '35 a:Pending/NetnsNotFound', '50 a:Ended/PodDeleted']);
      expect(node.live.size).toBe(0);
    });
  });

  it("a session restarted in a new netns keeps the capture's duration, counted from its first session", () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler, { sandbox: (_uid, now) => (now < 15 ? 1 : 2) });
      const spec = { limits: { duration: '40ms' } };
      const started = session({ id: 'x', podUID: A, state: 'Running', startTime: new Date(0).toISOString() });
      // the status with the first session's start reaches the agent at 5, after the session began
      const pcs = { c: snapshot(capture({ spec })), s: snapshot(capture({ spec, sessions: [started] })) };
      const { log } = drive(scheduler, node, cold('c 4ms s', pcs), cold('a', { a: snapshot(pod({ uid: A })) }), 100);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '25 a:Ended/NetnsChanged', '25 a:Pending', '25 a:Running', `${40 + STOP_MS} a:Ended/Duration`]);
    });
  });

  it("a pod in the node's own netns fails the session HostNetwork, without a process or retry", () => {
    run(({ cold, scheduler }) => {
      const lookups: number[] = [];
      const node = fakeNode(scheduler, {
        netns: (_uid, attempt) => {
          lookups.push(attempt);
          return { found: false, reason: REASONS.HostNetwork, message: 'runs in the node network namespace' };
        },
      });
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 100);
      expect(log).toEqual(['0 a:Pending', '0 a:Failed/HostNetwork']);
      expect(updates.at(-1)!.session.message).toBe('runs in the node network namespace');
      expect(lookups).toEqual([0]);
      expect(node.processes).toEqual([]);
    });
  });

  it('a filter tcpdump rejects fails the session without a process or retry, until the spec changes', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const bad = capture({ spec: { filter: { bpf: 'bogus && (' + ')' } } });
      const fixed = capture({ generation: 2, spec: { filter: { bpf: 'tcp' } } });
      const { log, updates } = drive(scheduler, node, cold('b 9ms b 9ms f', { b: snapshot(bad), f: snapshot(fixed) }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Failed/InvalidFilter', '20 a:Pending', '20 a:Running', '55 a:Ended/AgentShutdown']);
      expect(updates[1]!.session.message).toBe('tcpdump rejects the filter "(bogus && ())": syntax error');
      expect(node.processes.filter((p) => p.includes('start'))).toHaveLength(1);
    });
  });

  it('limits.duration stops the session, counted from the capture\'s first session', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const spec = { limits: { duration: '30ms' } };
      const earlier = session({ id: 'x', podUID: C, state: 'Ended', startTime: new Date(0).toISOString() });
      const pcs = { c: snapshot(capture({ spec })), s: snapshot(capture({ spec, sessions: [earlier] })) };
      const pods = { a: snapshot(pod({ uid: A })), g: snapshot<Pod>(), b: snapshot(pod({ uid: B })) };
      const { log } = drive(scheduler, node, cold('c 4ms s', pcs), cold('a 9ms g 9ms b', pods), 80);
      // A's own start is the first (deadline 30); B, started at 20, inherits the same deadline
      expect(log).toEqual(['0 a:Pending', '0 a:Running', `${10 + STOP_MS} a:Ended/PodDeleted`, '20 b:Pending', '20 b:Running', `${30 + STOP_MS} b:Ended/Duration`]);
      // the cut is the deadline itself, not the moment the timer fired
      expect(node.stops).toEqual(['10 stop aaaaaaaa cut=none', '30 stop bbbbbbbb cut=30']);
    });
  });

  it('a session unsubscribed while tcpdump is starting stops the process once it is up', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler, { startMs: 20 });
      const pods = { a: snapshot(pod({ uid: A })), g: snapshot<Pod>() };
      const { log } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a 9ms g', pods), 80);
      expect(node.processes).toEqual([expect.stringMatching(/^20 start aaaaaaaa/), `${20 + STOP_MS} exit aaaaaaaa SIGTERM`]);
      expect(log).toEqual(['0 a:Pending', `${20 + STOP_MS} a:Ended/PodDeleted`]);
      expect(node.live.size).toBe(0);
    });
  });

  it('tcpdump exiting on its own ends the session TcpdumpExited with what it said', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      scheduler.schedule(
        () => node.live.get(100)!.exitByItself({ code: 1, stderrTail: 'tcpdump: listening on any\ntcpdump: pcap_loop: The interface went down\n0 packets captured\n' }),
        15,
      );
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '15 a:Failed/TcpdumpExited']);
      expect(updates.at(-1)!.session.message).toBe('tcpdump exited (code 1): tcpdump: pcap_loop: The interface went down');
      expect(updates.at(-1)!.session.endTime).toBe(new Date(15).toISOString());
    });
  });

  it('a write the disk refuses stops the session DiskFull at once; the same instance is not captured again', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      node.deps.timing = { ...node.deps.timing, pollMs: 10 };
      scheduler.schedule(() => node.writers[0]!.onWriteError(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })), 20);
      const { log, updates } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 100);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', '10 a:Running', `${20 + STOP_MS} a:Failed/DiskFull`]);
      expect(updates.at(-1)!.session.message).toMatch(/^writing \/data\/.* failed \(ENOSPC\)/);
      expect(node.live.size).toBe(0);
      expect(node.processes.filter((p) => p.includes('start'))).toHaveLength(1);
    });
  });

  it('a tcpdump that lands in the wrong netns is retried as NetnsMismatch; a missing tcpdump fails', () => {
    run(({ cold, scheduler }) => {
      const mismatch = fakeNode(scheduler, { startError: new CaptureError(REASONS.NetnsMismatch, 'runs in net:[1], not net:[2]') });
      const { log } = drive(scheduler, mismatch, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Pending/NetnsMismatch', '50 a:Ended/AgentShutdown']);
    });
    run(({ cold, scheduler }) => {
      const missing = fakeNode(scheduler, { startError: new CaptureError(REASONS.TcpdumpMissing, 'tcpdump is not installed') });
      const { log } = drive(scheduler, missing, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Failed/TcpdumpMissing']);
    });
  });

  it('a limit value that cannot be parsed fails the session InvalidSpec without a process', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const pc = snapshot(capture({ spec: { limits: { fileSize: 'ten megs' } } }));
      const { log, updates } = drive(scheduler, node, cold('c', { c: pc }), cold('a', { a: snapshot(pod({ uid: A })) }), 50);
      expect(log).toEqual(['0 a:Pending', '0 a:Failed/InvalidSpec']);
      expect(updates[1]!.session.message).toContain('ten megs');
      expect(node.processes).toEqual([]);
    });
  });

  it('reports progress of a running session and, on shutdown, waits for every stop', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      node.deps.timing = { ...node.deps.timing, pollMs: 10 };
      const liveAt41: number[] = [];
      scheduler.schedule(() => liveAt41.push(node.live.size), 41);
      const { updates, completedAt } = drive(scheduler, node, cold('c', { c: snapshot(capture()) }), cold('a', { a: snapshot(pod({ uid: A })) }), 40);
      expect(updates[2]!.session).toMatchObject({ state: 'Running', packets: 3, files: 1, bytes: 24 });
      expect(updates).toHaveLength(4);
      // the stop asked at 40 is still in flight at 41; the pipeline completes only once it has exited
      expect(liveAt41).toEqual([1]);
      expect(completedAt).toBe(40 + STOP_MS);
      expect(node.live.size).toBe(0);
    });
  });
});

describe('sessionUpdates that start again after a failure', () => {
  it('every final entry of the sessions a pipeline failure tore down reaches the writer, though it arrives while the pipeline waits to start again', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const pc = { c: snapshot(capture()) };
      const pods = { a: snapshot(pod({ uid: A })), b: snapshot(pod({ uid: B })) };
      // the first attempt's capture watch fails at 30 ms; the one after the restart does not
      const attempts = [cold('c 29ms #', pc), cold('c', pc)];
      const podAttempts = [cold('a 9ms b', pods), cold('b', pods)];
      const captures$ = defer(() => attempts.shift()!);
      const pods$ = defer(() => podAttempts.shift()!);
      const stop$ = new ReplaySubject<void>(1);
      scheduler.schedule(() => stop$.next(), 1100);
      const errors: unknown[] = [];
      const restarting$ = sessionUpdates(captures$, pods$, NODE, stop$, node.deps, { delayMs: 1000, onError: (err) => errors.push(err) });
      const { log } = collect(scheduler, restarting$, 1300);
      expect(errors).toHaveLength(1);
      expect(log).toEqual([
        '0 a:Pending',
        '0 a:Running',
        '10 b:Pending',
        '10 b:Running',
        `${10 + STOP_MS} a:Ended/PodReplaced`,
        // torn down by the failure, not by a switch: it does not carry the slot's last switch reason
        `${30 + STOP_MS} b:Ended/Error`,
        '1030 b:Pending',
        '1030 b:Running',
        `${1100 + STOP_MS} b:Ended/AgentShutdown`,
      ]);
      expect(node.live.size).toBe(0);
    });
  });

  it('a pipeline that starts again after the stop starts no session', () => {
    run(({ cold, scheduler }) => {
      const node = fakeNode(scheduler);
      const attempts = [cold('c 9ms #', { c: snapshot(capture()) }), cold('c', { c: snapshot(capture()) })];
      const stop$ = new ReplaySubject<void>(1);
      scheduler.schedule(() => stop$.next(), 500);
      const pods$ = cold('a', { a: snapshot(pod({ uid: A })) });
      const { log } = collect(scheduler, sessionUpdates(defer(() => attempts.shift()!), pods$, NODE, stop$, node.deps, { delayMs: 1000 }), 2000);
      expect(log).toEqual(['0 a:Pending', '0 a:Running', `${10 + STOP_MS} a:Ended/Error`]);
      expect(node.processes).toHaveLength(2);
    });
  });
});

describe('captureSession', () => {
  it('gives every subscription its own session id and directory', () => {
    run(({ scheduler }) => {
      const node = fakeNode(scheduler);
      const id = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 1, podUID: A, podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: { podName: 'web-0' } } };
      const paths: string[] = [];
      for (let i = 0; i < 3; i++) {
        const sub = captureSession(id, node.deps, NEVER).subscribe((u) => u.session.path && paths.push(u.session.path));
        scheduler.schedule(() => sub.unsubscribe(), 10);
      }
      scheduler.flush();
      expect(paths).toHaveLength(3);
      expect(new Set(paths).size).toBe(3);
    });
  });
});

describe('slotEvents and newSessionId', () => {
  it('emits every current slot and each vanished one with its reason', () => {
    const id = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 1, podUID: A, podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: {} } };
    const events = slotEvents(new Map([['pc/web-0', id], ['pc/web-1', { ...id, podUID: B, podName: 'web-1' }]]), new Map([['pc/web-0', id]]), () => REASONS.PodDeleted);
    expect(events).toEqual([{ slot: 'pc/web-0', identity: id }, { slot: 'pc/web-1', why: REASONS.PodDeleted }]);
  });

  it('never hands out the same id twice, even in the same millisecond', () => {
    const id = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 3, podUID: A, podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: {} } };
    const ids = [newSessionId(id, 1_700_000_000_000), newSessionId(id, 1_700_000_000_000), newSessionId(id, 1_600_000_000_000)];
    expect(new Set(ids).size).toBe(3);
    expect(ids[0]).toMatch(/^g3-aaaaaaaa-[0-9a-z]+$/);
  });
});
