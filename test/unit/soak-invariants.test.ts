import { describe, expect, it } from 'vitest';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import {
  CLOCK_SLACK_MS,
  framesOfAnother,
  memoryGrowth,
  rejectedWrites,
  STALE_GRACE_MS,
  StaleTracker,
  staleness,
  stateMismatch,
  subtract,
  targetedLongEnough,
  uncapturedInstances,
  union,
  type InstanceLife,
  type TimedFrame,
} from '../../soak/invariants.ts';
import { renderReport, Tally } from '../../soak/report.ts';

describe('soak intervals', () => {
  it('merges overlapping intervals and drops empty ones', () => {
    expect(union([{ from: 5, to: 8 }, { from: 0, to: 2 }, { from: 1, to: 3 }, { from: 9, to: 9 }])).toEqual([
      { from: 0, to: 3 },
      { from: 5, to: 8 },
    ]);
  });

  it('cuts holes out of intervals', () => {
    expect(subtract([{ from: 0, to: 10 }], [{ from: 2, to: 4 }, { from: 8, to: 20 }])).toEqual([
      { from: 0, to: 2 },
      { from: 4, to: 8 },
    ]);
  });
});

describe('soak: packets of another instance', () => {
  const instance: InstanceLife = { uid: 'u1', name: 'soak-0', ip: '10.244.202.2', from: 10_000, to: 20_000 };
  const frame = (time: number, src: string, dst: string): TimedFrame => ({ time, src, dst, arpIps: [] });

  it('accepts the instance’s own packets while its sandbox exists', () => {
    expect(framesOfAnother([frame(12_000, '10.244.250.202', '10.244.202.2'), frame(15_000, '10.244.202.2', '10.244.250.202')], instance)).toEqual([]);
  });

  it('flags a packet naming another address', () => {
    const other = frame(12_000, '10.244.250.202', '10.244.202.3');
    expect(framesOfAnother([other], instance)).toEqual([other]);
  });

  it('flags a packet to the same IP captured after the instance was removed (its IP taken by another pod)', () => {
    const late = frame(20_000 + CLOCK_SLACK_MS + 1, '10.244.250.202', '10.244.202.2');
    const early = frame(10_000 - CLOCK_SLACK_MS - 1, '10.244.250.202', '10.244.202.2');
    expect(framesOfAnother([late, early, frame(20_000 + CLOCK_SLACK_MS - 1, '10.244.250.202', '10.244.202.2')], instance)).toEqual([late, early]);
  });

  it('accepts ARP requests about other addresses, which the bridge floods to every port', () => {
    expect(framesOfAnother([{ time: 12_000, arpIps: ['10.244.250.202', '10.244.202.7'], arpOpcode: 1 }], instance)).toEqual([]);
  });
});

describe('soak: every targeted instance captured', () => {
  const instance = (uid: string, from: number, to: number, targeted = [{ from: 0, to: 100_000 }]) => ({ uid, life: { from, to }, targeted });

  it('requires packets of an instance targeted 2 s at a stretch', () => {
    expect(uncapturedInstances([instance('a', 0, 2_000), instance('b', 0, 1_999)], [], new Set())).toEqual(['a']);
    expect(uncapturedInstances([instance('a', 0, 2_000)], [], new Set(['a']))).toEqual([]);
  });

  it('does not count time outside a capture that selects it', () => {
    expect(uncapturedInstances([instance('a', 0, 10_000, [{ from: 9_000, to: 20_000 }])], [], new Set())).toEqual([]);
  });

  it('does not count time during a disruption, nor add up the pieces around it', () => {
    const disruption = [{ from: 1_500, to: 3_000 }];
    expect(uncapturedInstances([instance('a', 0, 4_000)], disruption, new Set())).toEqual([]);
    expect(targetedLongEnough([instance('a', 0, 4_000), instance('b', 0, 6_000)], disruption)).toBe(1);
  });
});

describe('soak: no stale tcpdump', () => {
  const meta = { captureUID: 'c1', generation: 2, podUID: 'p1', podName: 'soak-0' };
  const world = { instanceRuns: (uid: string) => uid === 'p1', captures: new Map([['c1', 2]]) };

  it('names why a tcpdump should be gone', () => {
    expect(staleness(meta, world)).toBeUndefined();
    expect(staleness({ ...meta, podUID: 'p2' }, world)).toBe('instance gone');
    expect(staleness({ ...meta, captureUID: 'c2' }, world)).toBe('capture deleted');
    expect(staleness({ ...meta, generation: 1 }, world)).toBe('older generation');
    expect(staleness(undefined, world)).toBe('no session directory');
  });

  it('reports a tcpdump stale for the grace period of quiet time, once', () => {
    const t = new StaleTracker();
    const stale = new Map([[42, 'instance gone' as const]]);
    expect(t.observe(0, stale, 0)).toEqual([]);
    expect(t.observe(STALE_GRACE_MS - 1, stale, 0)).toEqual([]);
    expect(t.observe(STALE_GRACE_MS, stale, 0)).toEqual([{ pid: 42, reason: 'instance gone', staleMs: STALE_GRACE_MS }]);
    expect(t.observe(STALE_GRACE_MS + 1, stale, 0)).toEqual([]);
  });

  it('counts the grace from the end of the last disruption, and forgets a tcpdump that went', () => {
    const t = new StaleTracker();
    const stale = new Map([[42, 'capture deleted' as const]]);
    t.observe(0, stale, 0);
    expect(t.observe(STALE_GRACE_MS, stale, 5_000)).toEqual([]);
    t.observe(STALE_GRACE_MS + 1, new Map(), 5_000);
    expect(t.observe(STALE_GRACE_MS + 5_000, stale, 5_000)).toEqual([]);
  });
});

describe('soak: captures reach the state their spec implies', () => {
  const capture = (status: PacketCapture['status'], generation = 2) =>
    ({ metadata: { name: 'c', namespace: 'soak', uid: 'u', generation }, spec: { target: {} }, status }) as PacketCapture;

  it('agrees when phase and targets are as expected for the current generation', () => {
    const c = capture({ observedGeneration: 2, phase: 'Capturing', targets: [{ podName: 'a', podUID: 'p2', nodeName: 'n' }, { podName: 'b', podUID: 'p1', nodeName: 'n' }] });
    expect(stateMismatch(c, { phase: 'Capturing', targets: ['p1', 'p2'] })).toBeUndefined();
  });

  it('says what differs', () => {
    expect(stateMismatch(capture({ observedGeneration: 1, phase: 'Completed' }), { phase: 'Completed' })).toMatch(/observedGeneration 1 != generation 2/);
    expect(stateMismatch(capture({ observedGeneration: 2, phase: 'Pending' }), { phase: 'Completed' })).toMatch(/phase Pending, expected Completed/);
    expect(stateMismatch(capture({ observedGeneration: 2, phase: 'Capturing', targets: [] }), { phase: 'Capturing', targets: ['p1'] })).toMatch(/targets \[\], expected \[p1\]/);
    expect(stateMismatch(capture(undefined), { phase: 'Pending' })).toMatch(/observedGeneration/);
  });
});

describe('soak: no write rejected', () => {
  const line = (err: string) => ({ at: 0, msg: 'cannot write session status, retrying', err });

  it('flags a 4xx answer to a PacketCapture write, but not conflicts, gone objects, throttling or outages', () => {
    const rejected = line('Error: PATCH /apis/packetcapture.dev/v1alpha1/namespaces/soak/packetcaptures/x/status: 422 sessions: Too many: 201');
    const lines = [
      rejected,
      line('Error: PATCH /apis/packetcapture.dev/v1alpha1/namespaces/soak/packetcaptures/x/status: 409 conflict'),
      line('Error: PATCH /apis/packetcapture.dev/v1alpha1/namespaces/soak/packetcaptures/x/status: 404 not found'),
      line('Error: PATCH /apis/packetcapture.dev/v1alpha1/namespaces/soak/packetcaptures/x/status: 429 too many requests'),
      line('Error: PATCH /apis/packetcapture.dev/v1alpha1/namespaces/soak/packetcaptures/x/status timed out after 30000 ms'),
      line('TypeError: fetch failed'),
      { at: 0, msg: 'session started' },
    ];
    expect(rejectedWrites(lines)).toEqual([rejected]);
  });
});

describe('soak: memory flat', () => {
  const series = (rss: (i: number) => number, n = 30) => Array.from({ length: n }, (_, i) => ({ at: i * 5_000, rssMb: rss(i) }));

  it('accepts RSS that wanders but comes back', () => {
    expect(memoryGrowth(series((i) => 120 + (i % 4) * 15))?.grew).toBe(false);
  });

  it('flags RSS that keeps growing', () => {
    const growth = memoryGrowth(series((i) => 100 + i * 5));
    expect(growth?.grew).toBe(true);
    expect(growth!.finalMb).toBeGreaterThan(growth!.baselineMb);
  });

  it('does not judge a process that lived too short after warm-up', () => {
    expect(memoryGrowth(series((i) => 100 + i * 50, 10))).toBeUndefined();
    expect(memoryGrowth([])).toBeUndefined();
  });
});

describe('soak report', () => {
  it('prints every fault and invariant with its count, and each violation', () => {
    const t = new Tally();
    t.fault('agentKill');
    t.checked('foreignPackets', 100);
    t.checked('staleTcpdumps', 3, ['tcpdump 42 still runs'], Date.parse('2026-01-01T00:00:00Z'));
    t.count('packets checked', 100);
    const text = renderReport(t, { seed: 9, durationMs: 90_000, elapsedMs: 150_000 });
    expect(text).toMatch(/seed 9, faults for 90 s, 150 s in all/);
    expect(text).toMatch(/agentKill\s+1/);
    expect(text).toMatch(/etcdCompaction\s+0/);
    expect(text).toMatch(/packets checked\s+100/);
    expect(text).toMatch(/no tcpdump left .* 3 {2}1/);
    expect(text).toMatch(/violations: 1\n {2}2026-01-01T00:00:00.000Z staleTcpdumps: tcpdump 42 still runs/);
  });
});
