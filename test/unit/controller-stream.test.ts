import { distinctUntilChanged, map, Observable, scan } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import type { Lease } from '../../controller/agents.ts';
import { decider, decisions, latestSerially, perCapture, type Decisions, type World } from '../../controller/stream.ts';
import { afterEvent, listedSnapshot } from '../../kube/watch.ts';
import type { Pod } from '../../controller/targets.ts';
import { agentLease, capture, pod, snapshot } from './controller-fixtures.ts';

const newScheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

const CAP = 'cap-uid';
const byName = capture({ target: { podName: 'web-0' } });
const bySelector = (app: string, generation = 1) => capture({ target: { podSelector: { matchLabels: { app } } } }, { generation });
const LEASES = snapshot<Lease>(agentLease('node-a', '2100-01-01T00:00:00Z'), agentLease('node-b', '2100-01-01T00:00:00Z'));

type Captures = ReadonlyMap<string, PacketCapture>;
type Pods = ReadonlyMap<string, Pod>;

/** The capture's targets as `uid@node` words, one emission per change of decision. */
function targets(ts: TestScheduler, captures$: Observable<Captures>, pods$: Observable<Pods>): Observable<string> {
  return decisions(captures$, pods$, ts.createColdObservable('a', { a: LEASES }), { resyncMs: 1_000, scheduler: ts }).pipe(
    map((d) => (d.byCapture.get(CAP)?.resolution.targets ?? []).map((t) => `${t.podUID}@${t.nodeName}`).join(' ') || '-'),
    distinctUntilChanged(),
  );
}

type WatchEvent = ['ADDED' | 'MODIFIED' | 'DELETED', Pod];

/** What kube/watch.ts does with each event: a new snapshot keyed by UID. */
const fromEvents = (events$: Observable<WatchEvent>): Observable<Pods> =>
  events$.pipe(
    scan((items: Pods, [type, p]: WatchEvent) => {
      const next = new Map(items);
      if (type === 'DELETED') next.delete(p.metadata.uid);
      else next.set(p.metadata.uid, p);
      return next;
    }, new Map<string, Pod>()),
  );

const web0 = {
  running: pod('web-0', 'u1', { node: 'node-a', ip: '10.244.0.5', created: '2026-01-01T00:00:00Z' }),
  terminating: pod('web-0', 'u1', { node: 'node-a', ip: '10.244.0.5', deleting: true, created: '2026-01-01T00:00:00Z' }),
  unscheduled: pod('web-0', 'u2', { node: null, phase: 'Pending', created: '2026-01-01T00:05:00Z' }),
  scheduled: pod('web-0', 'u2', { node: 'node-b', phase: 'Pending', created: '2026-01-01T00:05:00Z' }),
  replacement: pod('web-0', 'u2', { node: 'node-b', ip: '10.244.1.9', created: '2026-01-01T00:05:00Z' }),
};

describe('snapshots → targets (marbles)', () => {
  it('a name reused by a new UID on another node: the old instance, nothing, then the new one', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const pods$ = fromEvents(
        cold<WatchEvent>('a-b-c-d-e-f', {
          a: ['ADDED', web0.running],
          b: ['MODIFIED', web0.terminating],
          c: ['DELETED', web0.terminating],
          d: ['ADDED', web0.unscheduled],
          e: ['MODIFIED', web0.scheduled],
          f: ['MODIFIED', web0.replacement],
        }),
      );
      expectObservable(targets(ts, cold('a', { a: snapshot(byName) }), pods$), '^ 20ms !').toBe('a-b-------c', {
        a: 'u1@node-a',
        b: '-',
        c: 'u2@node-b',
      });
    });
  });

  it("the IP of a deleted pod handed to a different pod is never a target", () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const other = pod('api-7', 'u9', { node: 'node-a', ip: '10.244.0.5', labels: { app: 'api' } });
      const pods$ = fromEvents(
        cold<WatchEvent>('a-b-c-d', {
          a: ['ADDED', web0.running],
          b: ['DELETED', web0.running],
          c: ['ADDED', { ...other, status: { phase: 'Pending' } }],
          d: ['MODIFIED', other],
        }),
      );
      expectObservable(targets(ts, cold('a', { a: snapshot(byName) }), pods$), '^ 20ms !').toBe('a-b', { a: 'u1@node-a', b: '-' });
    });
  });

  it('pods joining and leaving the selector, and the selector itself changing', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const a1 = pod('web-a', 'ua', { labels: { app: 'web' } });
      const b1 = pod('web-b', 'ub', { labels: { app: 'web' }, node: 'node-b' });
      const bRelabelled = { ...b1, metadata: { ...b1.metadata, labels: { app: 'api' } } };
      const pods$ = fromEvents(
        cold<WatchEvent>('a-b-c', { a: ['ADDED', a1], b: ['ADDED', b1], c: ['MODIFIED', bRelabelled] }),
      );
      const captures$ = cold('a-------b', { a: snapshot(bySelector('web')), b: snapshot(bySelector('api', 2)) });
      expectObservable(targets(ts, captures$, pods$), '^ 20ms !').toBe('a-b-c---d', {
        a: 'ua@node-a',
        b: 'ua@node-a ub@node-b',
        c: 'ua@node-a',
        d: 'ub@node-b',
      });
    });
  });

  it('duplicated events change no decision', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      const pods$ = fromEvents(
        cold<WatchEvent>('a-a-b-b-b', { a: ['ADDED', web0.running], b: ['MODIFIED', web0.running] }),
      );
      expectObservable(targets(ts, cold('a', { a: snapshot(byName) }), pods$), '^ 20ms !').toBe('a', { a: 'u1@node-a' });
    });
  });

  it('out-of-order events reach the same decision and never target two UIDs of one name', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      // the replacement is seen before the old instance's deletion, and a stale update of the
      // old instance arrives after it is terminating
      const pods$ = fromEvents(
        cold<WatchEvent>('a-b-c-d-e', {
          a: ['ADDED', web0.running],
          b: ['ADDED', web0.replacement],
          c: ['MODIFIED', web0.terminating],
          d: ['MODIFIED', web0.running],
          e: ['DELETED', web0.running],
        }),
      );
      expectObservable(targets(ts, cold('a', { a: snapshot(byName) }), pods$), '^ 20ms !').toBe('a-b', {
        a: 'u1@node-a',
        b: 'u2@node-b',
      });
    });
  });

  it('re-derives on the resync clock: an agent lease running out turns into NoNodeAgent without any event', () => {
    const ts = newScheduler();
    ts.run(({ cold, expectObservable }) => {
      // renewed at time 0 for 3s: expires at 3000ms of virtual time
      const leases$ = cold('a', { a: snapshot<Lease>(agentLease('node-a', new Date(0).toISOString(), 3)) });
      const reason = decisions(cold('a', { a: snapshot(byName) }), cold('a', { a: snapshot<Pod>(web0.running) }), leases$, {
        resyncMs: 60_000,
        scheduler: ts,
      }).pipe(
        map((d) => d.byCapture.get(CAP)!.derived.status.conditions.find((c) => c.type === 'Capturing')!.reason),
        distinctUntilChanged(),
      );
      expectObservable(reason, '^ 5s !').toBe('a 2999ms b', { a: 'SessionsStarting', b: 'NoNodeAgent' });
    });
  });
});

describe('latestSerially (marbles)', () => {
  it('works on one value at a time, skipping the ones that were superseded meanwhile', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, expectObservable, flush }) => {
      const started: string[] = [];
      const work = (v: string) => {
        started.push(`${v}@${ts.now()}`);
        return cold('---|');
      };
      expectObservable(hot('abc-----d--|').pipe(latestSerially(work, () => 1, ts))).toBe('-----------|');
      flush();
      expect(started).toEqual(['a@0', 'c@3', 'd@8']);
    });
  });

  it('retries a failed run after the backoff, with the newest value by then', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, expectObservable, flush }) => {
      const started: string[] = [];
      const work = (v: string) => {
        started.push(`${v}@${ts.now()}`);
        return v === 'a' ? cold('-#') : cold('-|');
      };
      // a fails at 1, waits 5 (first failure), then b (arrived meanwhile) runs at 6
      expectObservable(hot('a-b-------|').pipe(latestSerially(work, (n) => n * 5, ts))).toBe('----------|');
      flush();
      expect(started).toEqual(['a@0', 'b@6']);
    });
  });

  it('retries the same value when nothing newer arrived, with growing backoff', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, flush }) => {
      const started: string[] = [];
      let failures = 2;
      const work = (v: string) => {
        started.push(`${v}@${ts.now()}`);
        return failures-- > 0 ? cold('#') : cold('|');
      };
      hot('a').pipe(latestSerially(work, (n) => n * 10, ts)).subscribe();
      flush();
      expect(started).toEqual(['a@0', 'a@10', 'a@30']);
    });
  });
});

describe('decider: one world after another', () => {
  const inNamespace = (c: PacketCapture, namespace: string): PacketCapture => ({ ...c, metadata: { ...c.metadata, namespace } });
  const shop = capture({ target: { podName: 'web-0' } }, { uid: 'shop-cap' });
  const other = inNamespace(capture({ target: { podName: 'web-0' } }, { uid: 'other-cap' }), 'other');
  const shopPod = pod('web-0', 'u1', { ip: '10.244.0.5' });
  const otherPod = pod('web-0', 'u2', { namespace: 'other', ip: '10.244.0.6' });
  const world = (over: Partial<World> = {}): World => ({
    captures: snapshot(shop, other),
    pods: snapshot(shopPod, otherPod),
    leases: LEASES,
    now: Date.parse('2026-06-01T00:00:00Z'),
    ...over,
  });
  const plain = (d: Decisions) => [...d.byCapture].map(([uid, x]) => [uid, x.resolution, x.derived.status]);

  it('keeps the decision of a capture no changed pod can concern, and re-derives the other', () => {
    const decide = decider();
    const first = decide(world());
    const shopBefore = first.byCapture.get('shop-cap');
    const otherBefore = first.byCapture.get('other-cap');
    const replaced = pod('web-0', 'u3', { namespace: 'other', ip: '10.244.0.7', created: '2026-01-02T00:00:00Z' });
    const next = decide(world({ pods: snapshot(shopPod, replaced) }));
    expect(next.byCapture.get('shop-cap')).toBe(shopBefore);
    expect(next.byCapture.get('other-cap')).not.toBe(otherBefore);
    expect(next.byCapture.get('other-cap')!.resolution.targets.map((t) => t.podUID)).toEqual(['u3']);
    expect([...next.changed!]).toEqual(['other-cap']);
  });

  it('re-derives a podName capture only for pods of its name, a podSelector capture for any pod of its namespace', () => {
    const decide = decider();
    const selecting = capture({ target: { podSelector: { matchLabels: { app: 'web' } } } }, { uid: 'sel-cap' });
    decide(world({ captures: snapshot(shop, other, selecting) }));
    const neighbour = pod('api-0', 'u7', { labels: { app: 'api' } });
    const next = decide(world({ captures: snapshot(shop, other, selecting), pods: snapshot(shopPod, otherPod, neighbour) }));
    expect([...next.changed!]).toEqual(['sel-cap']);
  });

  it('two captures of one pod name, and two instances of that name: each goes to both, and the one left after a deletion', () => {
    const decide = decider();
    const second = capture({ target: { podName: 'web-0' } }, { uid: 'shop-cap-2', name: 'cap-2' });
    const targetsOf = (d: Decisions, uid: string) => d.byCapture.get(uid)!.resolution.targets.map((t) => t.podUID);
    decide(world({ captures: snapshot(shop, second, other) }));
    const old = pod('web-0', 'u1', { ip: '10.244.0.5', deleting: true });
    const replacement = pod('web-0', 'u9', { ip: '10.244.0.9', created: '2026-01-02T00:00:00Z' });
    const both = decide(world({ captures: snapshot(shop, second, other), pods: snapshot(old, replacement, otherPod) }));
    expect(new Set(both.changed)).toEqual(new Set(['shop-cap', 'shop-cap-2']));
    const during = [targetsOf(both, 'shop-cap'), targetsOf(both, 'shop-cap-2')];
    expect(during[0]).toEqual(during[1]);
    const after = decide(world({ captures: snapshot(shop, second, other), pods: snapshot(replacement, otherPod) }));
    expect([targetsOf(after, 'shop-cap'), targetsOf(after, 'shop-cap-2')]).toEqual([['u9'], ['u9']]);
    // the second capture gone, the first still hears the pods of its name
    decide(world({ captures: snapshot(shop, other), pods: snapshot(replacement, otherPod) }));
    const back = decide(world({ captures: snapshot(shop, other), pods: snapshot(shopPod, otherPod) }));
    expect(targetsOf(back, 'shop-cap')).toEqual(['u1']);
  });

  it('re-derives a capture whose object changed, and drops one that left', () => {
    const decide = decider();
    const first = decide(world());
    const otherBefore = first.byCapture.get('other-cap');
    const edited = capture({ target: { podName: 'web-1' } }, { uid: 'shop-cap', generation: 2 });
    const next = decide(world({ captures: snapshot(edited, other) }));
    expect(next.byCapture.get('shop-cap')!.resolution.reason).toBe('PodNotFound');
    expect(next.byCapture.get('other-cap')).toBe(otherBefore);
    const gone = decide(world({ captures: snapshot(other) }));
    expect(gone.byCapture.has('shop-cap')).toBe(false);
    expect([...gone.changed!]).toEqual(['shop-cap']);
  });

  it('re-derives everything when the set of live agents changes, or when asked to', () => {
    const decide = decider();
    decide(world());
    const next = decide(world({ leases: snapshot(agentLease('node-a', '2100-01-01T00:00:00Z')) }));
    expect([...next.changed!].sort()).toEqual(['other-cap', 'shop-cap']);
    const renewed = decide(world({ leases: snapshot(agentLease('node-a', '2100-01-01T00:00:10Z')) }));
    expect([...renewed.changed!]).toEqual([]);
    const resynced = decide(world({ leases: snapshot(agentLease('node-a', '2100-01-01T00:00:10Z')) }), true);
    expect([...resynced.changed!].sort()).toEqual(['other-cap', 'shop-cap']);
  });

  it('re-derives a capture whose decision is due by the clock, and only then', () => {
    const timed = capture({ target: { podName: 'web-0' }, limits: { duration: '1m' } }, {
      uid: 'shop-cap',
      status: { sessions: [{ id: 's1', podName: 'web-0', podUID: 'u1', nodeName: 'node-a', generation: 1, state: 'Running', startTime: '2026-06-01T00:00:00Z' }] },
    });
    const start = Date.parse('2026-06-01T00:00:00Z');
    const captures = snapshot(timed, other);
    const decide = decider();
    const first = decide(world({ captures, now: start + 1000 }));
    const before = first.byCapture.get('shop-cap');
    expect(first.wakeAt).toBe(start + 60_000);
    const early = decide(world({ captures, now: start + 2000 }));
    expect(early.byCapture.get('shop-cap')).toBe(before);
    expect(early.wakeAt).toBe(start + 60_000);
    const due = decide(world({ captures, now: start + 60_000 }));
    expect(due.byCapture.get('shop-cap')).not.toBe(before);
    expect(due.byCapture.get('shop-cap')!.derived.status.phase).toBe('Completed');
    // only the agents' leases running out are left to wake for
    expect(due.wakeAt).toBe(Date.parse('2100-01-01T00:00:30Z'));
  });

  it('wakes at the earliest of the captures\' times, and forgets the time of a capture that left', () => {
    const timed = (uid: string, duration: string) =>
      capture({ target: { podName: 'web-0' }, limits: { duration } }, {
        uid,
        status: { sessions: [{ id: `s-${uid}`, podName: 'web-0', podUID: 'u1', nodeName: 'node-a', generation: 1, state: 'Running', startTime: '2026-06-01T00:00:00Z' }] },
      });
    const start = Date.parse('2026-06-01T00:00:00Z');
    const decide = decider();
    const both = decide(world({ captures: snapshot(timed('a', '2m'), timed('b', '1m')), now: start }));
    expect(both.wakeAt).toBe(start + 60_000);
    const one = decide(world({ captures: snapshot(timed('a', '2m')), now: start + 1000 }));
    expect(one.wakeAt).toBe(start + 120_000);
  });

  it('derives the same decisions one world after another as from scratch', () => {
    const decide = decider();
    decide(world());
    const moved = pod('web-0', 'u1', { ip: '10.244.0.5', node: 'node-b' });
    const incremental = decide(world({ pods: snapshot(moved, otherPod) }));
    const fresh = decider()(world({ pods: snapshot(moved, otherPod) }));
    expect(plain(incremental)).toEqual(plain(fresh));
    expect(incremental.byCapture.get('shop-cap')!.resolution.targets[0]!.nodeName).toBe('node-b');
  });

  it('reads the changes of watch snapshots from their history, and reaches the same decisions', () => {
    const decide = decider();
    let pods = listedSnapshot([shopPod, otherPod]);
    decide(world({ pods }));
    const moved = pod('web-0', 'u1', { ip: '10.244.0.5', node: 'node-b' });
    pods = afterEvent(pods, 'MODIFIED', moved);
    const next = decide(world({ pods }));
    expect([...next.changed!]).toEqual(['shop-cap']);
    expect(plain(next)).toEqual(plain(decider()(world({ pods: snapshot(moved, otherPod) }))));
  });
});

describe('perCapture (marbles)', () => {
  const world = (...uids: string[]): Decisions => ({
    byCapture: new Map(uids.map((uid) => [uid, { capture: capture({ target: { podName: 'w' } }, { uid }) } as never])),
  });

  it('runs captures independently and disposes a capture that left the world', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, flush }) => {
      const log: string[] = [];
      hot('a---b---c', { a: world('x', 'y'), b: world('x', 'y'), c: world('y') })
        .pipe(
          perCapture<{ uid: string }>({
            init: (d) => ({ uid: d.capture.metadata.uid }),
            work: (_decision, state) => {
              log.push(`${state.uid}@${ts.now()}`);
              return cold('--|');
            },
            dispose: (state) => log.push(`dispose ${state.uid}@${ts.now()}`),
            retryDelay: () => 1,
            scheduler: ts,
          }),
        )
        .subscribe();
      flush();
      expect(log).toEqual(['x@0', 'y@0', 'x@4', 'y@4', 'y@8', 'dispose x@8']);
    });
  });
  it('works only on decisions that are new objects', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, flush }) => {
      const log: string[] = [];
      const first = world('x', 'y');
      const kept: Decisions = { byCapture: new Map([['x', first.byCapture.get('x')!], ...world('y').byCapture]) };
      hot('a---b', { a: first, b: kept })
        .pipe(
          perCapture<{ uid: string }>({
            init: (d) => ({ uid: d.capture.metadata.uid }),
            work: (_decision, state) => {
              log.push(`${state.uid}@${ts.now()}`);
              return cold('-|');
            },
            retryDelay: () => 1,
            scheduler: ts,
          }),
        )
        .subscribe();
      flush();
      expect(log).toEqual(['x@0', 'y@0', 'y@4']);
    });
  });
  it('a capture that leaves during a run gets its newest decision worked on, then is disposed', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, flush }) => {
      const log: string[] = [];
      const first = world('x');
      const edited = world('x');
      hot('a-b-c', { a: first, b: edited, c: world() })
        .pipe(
          perCapture<{ uid: string }>({
            init: (d) => ({ uid: d.capture.metadata.uid }),
            work: (decision, state) => {
              log.push(`${state.uid}${decision === edited.byCapture.get('x') ? "'" : ''}@${ts.now()}`);
              return cold('------|');
            },
            dispose: (state) => log.push(`dispose ${state.uid}@${ts.now()}`),
            retryDelay: () => 1,
            scheduler: ts,
          }),
        )
        .subscribe();
      flush();
      expect(log).toEqual(['x@0', "x'@6", 'dispose x@12']);
    });
  });
  it('tells a run when a newer decision came for its capture, or the capture left', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, flush }) => {
      const log: string[] = [];
      const runs = new Map<string, () => boolean>();
      // x: a newer decision at 2; y: unchanged; z: leaves at 2
      const first = world('x', 'y', 'z');
      const second: Decisions = { byCapture: new Map([...world('x').byCapture, ['y', first.byCapture.get('y')!]]) };
      hot('a-b', { a: first, b: second })
        .pipe(
          perCapture<{ uid: string }>({
            init: (d) => ({ uid: d.capture.metadata.uid }),
            work: (_decision, state, current) => {
              if (!runs.has(state.uid)) runs.set(state.uid, current);
              log.push(`${state.uid}@${ts.now()}:${current()}`);
              return cold('----|');
            },
            retryDelay: () => 1,
            scheduler: ts,
          }),
        )
        .subscribe();
      ts.schedule(() => log.push(...[...runs].map(([uid, current]) => `${uid} first run current at 3:${current()}`)), 3);
      flush();
      expect(log).toEqual(['x@0:true', 'y@0:true', 'z@0:true', 'x first run current at 3:false', 'y first run current at 3:true', 'z first run current at 3:false', 'x@4:true']);
    });
  });
  it('lets go of its source when unsubscribed, even with captures in flight', () => {
    const ts = newScheduler();
    ts.run(({ hot, cold, expectObservable, expectSubscriptions }) => {
      const source = hot('a---b', { a: world('x'), b: world('x') });
      const out = source.pipe(
        perCapture<object>({ init: () => ({}), work: () => cold('------|'), retryDelay: () => 1, scheduler: ts }),
      );
      expectObservable(out, '^-----!').toBe('');
      expectSubscriptions(source.subscriptions).toBe('^-----!');
    });
  });
});
