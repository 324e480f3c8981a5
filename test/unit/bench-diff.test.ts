import { describe, expect, it } from 'vitest';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import { changedParts, tally } from '../../bench/diff.ts';

const capture = (status: PacketCapture['status'], finalizers?: string[]): PacketCapture =>
  ({
    apiVersion: 'packetcapture.dev/v1alpha1',
    kind: 'PacketCapture',
    metadata: { name: 'c', namespace: 'n', uid: 'u', finalizers },
    spec: { target: { podName: 'web-0' } },
    status,
  }) as PacketCapture;

const cond = (type: string, status: 'True' | 'False', reason: string, message = 'm', lastTransitionTime = '2026-01-01T00:00:00Z') => ({
  type,
  status,
  reason,
  message,
  lastTransitionTime,
});

describe('what a PacketCapture write changed', () => {
  it('names the finalizer add and the first status', () => {
    expect(changedParts(capture(undefined), capture(undefined, ['x']))).toEqual(['finalizers']);
    expect(changedParts(capture(undefined), capture({ phase: 'Pending', conditions: [cond('Ready', 'False', 'SessionsStarting')] }))).toEqual([
      'status.phase',
      'conditions.Ready',
    ]);
  });

  it('tells a message-only or timestamp-only change from a state change', () => {
    const before = capture({ conditions: [cond('Ready', 'False', 'A', 'one'), cond('Capturing', 'False', 'A')] });
    expect(changedParts(before, capture({ conditions: [cond('Ready', 'False', 'A', 'two'), cond('Capturing', 'False', 'A')] }))).toEqual([
      'conditions.Ready.message',
    ]);
    expect(
      changedParts(before, capture({ conditions: [cond('Ready', 'False', 'A', 'one'), cond('Capturing', 'False', 'A', 'm', '2026-01-02T00:00:00Z')] })),
    ).toEqual(['conditions.Capturing.lastTransitionTime']);
  });

  it('says other when only metadata the bench ignores moved', () => {
    expect(changedParts(capture({ phase: 'Pending' }), capture({ phase: 'Pending' }))).toEqual(['other']);
  });

  it('tallies parts', () => {
    const counts: Record<string, number> = {};
    tally(counts, ['a', 'b']);
    tally(counts, ['a']);
    expect(counts).toEqual({ a: 2, b: 1 });
  });
});
