import { describe, expect, it } from 'vitest';
import {
  endReason,
  identities,
  podIPsOf,
  sameIdentity,
  slotKey,
  whyGone,
  type Identity,
} from '../../agent/identity.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { capture, NODE, pod, session, snapshot } from './agent-fixtures.ts';

const A = 'aaaaaaaa-0000-0000-0000-000000000001';
const B = 'bbbbbbbb-0000-0000-0000-000000000002';

const only = (ids: Map<string, Identity>): Identity => {
  expect(ids.size).toBe(1);
  return [...ids.values()][0]!;
};

describe('identities', () => {
  it('binds a podName capture to the running instance on this node, by UID', () => {
    const id = only(identities(snapshot(capture()), snapshot(pod({ uid: A, ip: '10.244.1.9' })), NODE));
    expect(id).toMatchObject({ pcUID: 'pc-1', namespace: 'shop', name: 'web', generation: 1, podUID: A, podName: 'web-0', podIP: '10.244.1.9', podIPs: ['10.244.1.9'], node: NODE });
    expect(identities(snapshot(capture()), snapshot(pod({ uid: A })), NODE).has(slotKey('pc-1', 'web-0'))).toBe(true);
  });

  it('carries every IP of a dual-stack pod, podIP first', () => {
    const dual = pod({ uid: A, ip: '10.244.1.9' });
    dual.status!.podIPs = [{ ip: 'fd00:10:244:1::9' }, { ip: '10.244.1.9' }];
    expect(only(identities(snapshot(capture()), snapshot(dual), NODE)).podIPs).toEqual(['10.244.1.9', 'fd00:10:244:1::9']);
    expect(podIPsOf(pod({ uid: A, ip: '10.244.1.9' }))).toEqual(['10.244.1.9']);
  });

  it('captures a pod from the start: Pending and without an IP, its sandbox may already run (init containers)', () => {
    const id = only(identities(snapshot(capture()), snapshot(pod({ uid: A, phase: 'Pending', ip: '' })), NODE));
    expect(id).toMatchObject({ podUID: A, podIPs: [] });
    expect(id).not.toHaveProperty('podIP');
    expect(identities(snapshot(capture()), snapshot(pod({ uid: A, phase: 'Running', ip: '' })), NODE).size).toBe(1);
  });

  it.each(['Ingress', 'Egress'] as const)('lets an %s filter, which names the pod IPs, wait until the pod has them', (direction) => {
    const pc = capture({ spec: { filter: { direction } } });
    expect(identities(snapshot(pc), snapshot(pod({ uid: A, phase: 'Pending', ip: '' })), NODE).size).toBe(0);
    expect(only(identities(snapshot(pc), snapshot(pod({ uid: A, phase: 'Pending', ip: '10.244.1.9' })), NODE)).podIPs).toEqual(['10.244.1.9']);
    expect(identities(snapshot(capture({ spec: { filter: { direction: 'Both', protocol: 'UDP' } } })), snapshot(pod({ uid: A, ip: '' })), NODE).size).toBe(1);
  });

  it('gives every pod a selector matches its own slot', () => {
    const pc = capture({ spec: { target: { podSelector: { matchLabels: { app: 'web' } } } } });
    const ids = identities(
      snapshot(pc),
      snapshot(pod({ uid: A, name: 'web-0' }), pod({ uid: B, name: 'web-1' }), pod({ uid: 'c', name: 'db-0', labels: { app: 'db' } })),
      NODE,
    );
    expect([...ids.keys()].sort()).toEqual(['pc-1/web-0', 'pc-1/web-1']);
  });

  it.each([
    ['on another node', pod({ node: 'node-b' })],
    ['that Succeeded', pod({ phase: 'Succeeded' })],
    ['that Failed', pod({ phase: 'Failed' })],
    ['terminating', pod({ deleting: true })],
    ['in another namespace', pod({ namespace: 'other' })],
    ['with another name', pod({ name: 'web-1' })],
  ])('skips a pod %s', (_why, p) => {
    expect(identities(snapshot(capture()), snapshot(p), NODE).size).toBe(0);
  });

  it.each([
    ['being deleted', capture({ deleting: true })],
    ['Completed', capture({ phase: 'Completed' })],
    ['without a target', capture({ spec: { target: {} } })],
    [
      'whose session of this instance and generation ended at its packet limit',
      capture({ sessions: [session({ id: 's1', podUID: A, generation: 1, endReason: REASONS.PacketLimit })] }),
    ],
    [
      'whose session of this instance and generation ended at its duration',
      capture({ sessions: [session({ id: 's1', podUID: A, generation: 1, endReason: REASONS.Duration })] }),
    ],
    ['Once, after its first session ended', capture({ spec: { lifecycle: 'Once' }, sessions: [session({ id: 's1', podUID: B, endReason: REASONS.PodDeleted })] })],
  ])('captures nothing for a capture %s', (_why, pc) => {
    expect(identities(snapshot(pc), snapshot(pod({ uid: A })), NODE).size).toBe(0);
  });

  it('starts nothing once the duration counted from the first session has run out', () => {
    const sessions = [session({ id: 's1', podUID: 'x', startTime: '2024-05-01T10:00:00Z' })];
    const pc = capture({ spec: { limits: { duration: '10m' } }, sessions });
    expect(identities(snapshot(pc), snapshot(pod({ uid: A })), NODE, Date.parse('2024-05-01T10:09:59Z')).size).toBe(1);
    expect(identities(snapshot(pc), snapshot(pod({ uid: A })), NODE, Date.parse('2024-05-01T10:10:00Z')).size).toBe(0);
  });

  it('captures again when the limit was reached by another instance or generation', () => {
    const ended = [
      session({ id: 's1', podUID: B, generation: 2, endReason: REASONS.PacketLimit }),
      session({ id: 's2', podUID: A, generation: 1, endReason: REASONS.PacketLimit }),
    ];
    expect(identities(snapshot(capture({ generation: 2, sessions: ended })), snapshot(pod({ uid: A })), NODE).size).toBe(1);
  });

  it('keeps capturing a Once capture whose session ended because the pod\'s netns changed or went', () => {
    for (const endReason of [REASONS.NetnsChanged, REASONS.NetnsGone]) {
      const sessions = [session({ id: 's1', podUID: A, endReason })];
      expect(identities(snapshot(capture({ spec: { lifecycle: 'Once' }, sessions })), snapshot(pod({ uid: A })), NODE).size).toBe(1);
    }
  });

  it('keeps capturing a Once capture while its first session runs', () => {
    const running = [session({ id: 's1', podUID: A, state: 'Running' })];
    expect(identities(snapshot(capture({ spec: { lifecycle: 'Once' }, sessions: running })), snapshot(pod({ uid: A })), NODE).size).toBe(1);
  });

  it('gives a slot to the newer of two instances of one name, whatever the snapshot order', () => {
    const old = pod({ uid: B });
    old.metadata.creationTimestamp = '2024-05-01T10:00:00Z';
    const replacement = pod({ uid: A });
    replacement.metadata.creationTimestamp = '2024-05-01T10:01:00Z';
    expect(only(identities(snapshot(capture()), snapshot(old, replacement), NODE)).podUID).toBe(A);
    expect(only(identities(snapshot(capture()), snapshot(replacement, old), NODE)).podUID).toBe(A);
  });

  it('carries the earliest session start of this generation, on any node, for the duration limit: an edit restarts the clock', () => {
    const sessions = [
      session({ id: 's0', startTime: '2024-05-01T09:00:00Z', generation: 1 }),
      session({ id: 's2', startTime: '2024-05-01T10:05:00Z', nodeName: 'node-b', generation: 2 }),
      session({ id: 's1', startTime: '2024-05-01T10:00:00Z', nodeName: 'node-c', generation: 2 }),
      session({ id: 's3', state: 'Pending', generation: 2 }),
    ];
    const id = only(identities(snapshot(capture({ generation: 2, sessions })), snapshot(pod({ uid: A })), NODE, Date.parse('2024-05-01T10:01:00Z')));
    expect(id.firstStartTime).toBe('2024-05-01T10:00:00Z');
  });
});

describe('sameIdentity and endReason', () => {
  const base = only(identities(snapshot(capture()), snapshot(pod({ uid: A })), NODE));

  it('ignores everything but capture, generation and pod instance', () => {
    expect(sameIdentity(base, { ...base, podIP: '10.9.9.9', firstStartTime: '2024-01-01T00:00:00Z' })).toBe(true);
    expect(sameIdentity(base, { ...base, podUID: B })).toBe(false);
    expect(sameIdentity(base, { ...base, generation: 2 })).toBe(false);
  });

  it('names the switch: new UID, new generation, or why the slot went away', () => {
    expect(endReason(base, { ...base, podUID: B })).toBe(REASONS.PodReplaced);
    expect(endReason(base, { ...base, generation: 2 })).toBe(REASONS.SpecChanged);
    expect(endReason(base, undefined, REASONS.CaptureDeleted)).toBe(REASONS.CaptureDeleted);
    expect(endReason(base, undefined, REASONS.AgentShutdown)).toBe(REASONS.AgentShutdown);
    expect(endReason(base, undefined)).toBe(REASONS.PodDeleted);
  });

  it('tells from the snapshot why a slot is gone', () => {
    const pods = snapshot(pod({ uid: A }));
    expect(whyGone(base, snapshot(), pods)).toBe(REASONS.CaptureDeleted);
    expect(whyGone(base, snapshot(capture({ deleting: true })), pods)).toBe(REASONS.CaptureDeleted);
    expect(whyGone(base, snapshot(capture({ phase: 'Completed' })), pods)).toBe(REASONS.CaptureCompleted);
    expect(whyGone(base, snapshot(capture({ generation: 2, spec: { target: { podName: 'web-1' } } })), pods)).toBe(REASONS.SpecChanged);
    expect(whyGone(base, snapshot(capture()), snapshot())).toBe(REASONS.PodDeleted);
    expect(whyGone(base, snapshot(capture()), snapshot(pod({ uid: A, deleting: true })))).toBe(REASONS.PodDeleted);
    expect(whyGone(base, snapshot(capture()), snapshot(pod({ uid: A, phase: 'Succeeded' })))).toBe(REASONS.PodNotRunning);
    const selector = { ...base, spec: { target: { podSelector: { matchLabels: { app: 'web' } } } } };
    expect(whyGone(selector, snapshot(capture({ spec: selector.spec })), snapshot(pod({ uid: A, labels: { app: 'other' } })))).toBe(
      REASONS.PodNotSelected,
    );
  });
});
