// The fold that owns a session's status entry: facts in, entries out, only on change.

import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { applyFact, firstEntry, sessionEntries, type SessionFact } from '../../agent/session-entry.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { NODE } from './agent-fixtures.ts';

const identity = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 2, podUID: 'uid-a', podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: {} } };
const first = firstEntry(identity, 's1');
const counts = { packets: 7, files: 1, bytes: 24 };

describe('session entries', () => {
  it('starts Pending with the instance it captures, and nothing unset in it', () => {
    expect(first).toEqual({ id: 's1', podUID: 'uid-a', podName: 'web-0', nodeName: NODE, generation: 2, state: 'Pending' });
  });

  it('Running clears the Pending reason and message, and names the directory', () => {
    const pending = applyFact(first, { kind: 'pending', reason: REASONS.NetnsNotFound, message: 'no process' });
    const running = applyFact(pending, { kind: 'running', startTime: new Date(5), path: '/data/x' });
    expect(running).toEqual({ ...first, state: 'Running', startTime: new Date(5).toISOString(), path: '/data/x' });
  });

  it('an exact stop ends at its cut, not when tcpdump exited, with the counts of the run', () => {
    const running = applyFact(first, { kind: 'running', startTime: new Date(5), path: '/data/x' });
    const ended = applyFact(running, { kind: 'ended', end: { reason: REASONS.SpecChanged, cutNs: 20_000_000n }, atMs: 25, run: { startTime: new Date(5), path: '/data/x', counts, droppedByKernel: 2 } });
    expect(ended).toMatchObject({ state: 'Ended', endReason: 'SpecChanged', endTime: new Date(20).toISOString(), ...counts, droppedByKernel: 2 });
    expect(ended.reason).toBeUndefined();
  });

  it('a failure shows its reason, not an end reason; an end without a message keeps the Pending one', () => {
    const pending = applyFact(first, { kind: 'pending', reason: REASONS.NetnsNotFound, message: 'no process' });
    expect(applyFact(pending, { kind: 'ended', end: { reason: REASONS.PodDeleted }, atMs: 9 })).toMatchObject({ state: 'Ended', endReason: 'PodDeleted', message: 'no process', endTime: new Date(9).toISOString() });
    const failed = applyFact(pending, { kind: 'ended', end: { reason: REASONS.HostNetwork, message: 'node netns', failed: true }, atMs: 9 });
    expect(failed).toMatchObject({ state: 'Failed', reason: 'HostNetwork', message: 'node netns' });
    expect(failed.endReason).toBeUndefined();
    expect(failed.packets).toBeUndefined();
  });

  it('emits the first entry, then an entry only when a fact changed it', async () => {
    const facts: SessionFact[] = [
      { kind: 'running', startTime: new Date(5), path: '/d' },
      { kind: 'progress', counts },
      { kind: 'progress', counts },
      { kind: 'progress', counts, droppedByKernel: 1 },
      // tcpdump did not answer this time: the kernel drops it last said stay
      { kind: 'progress', counts },
    ];
    const entries = await lastValueFrom(from(facts).pipe(sessionEntries(first), toArray()));
    expect(entries.map((e) => [e.state, e.packets, e.droppedByKernel])).toEqual([
      ['Pending', undefined, undefined],
      ['Running', undefined, undefined],
      ['Running', 7, undefined],
      ['Running', 7, 1],
    ]);
  });
});
