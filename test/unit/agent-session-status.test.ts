import { describe, expect, it } from 'vitest';
import { adoptEntries, inStatusOrder, retainedEntries } from '../../agent/session-status.ts';
import { REASONS, SESSION_HISTORY, type SessionStatus } from '../../crds/packetcapture.ts';
import { capture, NODE, session } from './agent-fixtures.ts';

const at = (minute: number) => new Date(Date.UTC(2024, 4, 1, 10, minute)).toISOString();

describe('adoptEntries', () => {
  it("keeps this node's ended entries and ends the live ones of the previous agent with AgentRestart", () => {
    const sessions = [
      session({ id: 'ended', state: 'Ended', endReason: REASONS.PodDeleted, startTime: at(0), endTime: at(1) }),
      session({ id: 'running', state: 'Running', startTime: at(2), packets: 40 }),
      session({ id: 'pending', state: 'Pending', reason: REASONS.NetnsNotFound, message: 'no process' }),
      session({ id: 'other-node', state: 'Running', nodeName: 'node-b', startTime: at(2) }),
    ];
    const adopted = adoptEntries(capture({ sessions }), NODE, at(5));
    expect(adopted.map((s) => s.id)).toEqual(['ended', 'running', 'pending']);
    expect(adopted[0]).toEqual(sessions[0]);
    expect(adopted[1]).toMatchObject({ state: 'Ended', endReason: REASONS.AgentRestart, endTime: at(5), packets: 40, startTime: at(2) });
    expect(adopted[2]).toMatchObject({ state: 'Ended', endReason: REASONS.AgentRestart });
    expect(adopted[2]!.reason).toBeUndefined();
  });

  it('adopts nothing from a capture without status', () => {
    expect(adoptEntries(capture(), NODE, at(0))).toEqual([]);
  });
});

describe('retainedEntries', () => {
  it(`keeps every live session and the newest ${SESSION_HISTORY} finished ones`, () => {
    const finished: SessionStatus[] = Array.from({ length: SESSION_HISTORY + 5 }, (_, i) =>
      session({ id: `e${i}`, state: i % 2 ? 'Ended' : 'Failed', startTime: at(i), endTime: at(i + 1) }),
    );
    const live = [session({ id: 'r', state: 'Running', startTime: at(50) }), session({ id: 'p', state: 'Pending' })];
    const kept = retainedEntries([...live, ...finished.slice().reverse()]);
    expect(kept.map((s) => s.id)).toEqual([...finished.slice(5).map((s) => s.id), 'r', 'p']);
  });
});

describe('inStatusOrder', () => {
  it('orders by start, sessions that never started last, so written and read-back lists compare equal', () => {
    const a = session({ id: 'b', startTime: at(3) });
    const b = session({ id: 'a', startTime: at(3) });
    const c = session({ id: 'c', startTime: at(1) });
    const d = session({ id: 'd', state: 'Pending' });
    const e = session({ id: 'e', state: 'Failed', endTime: at(2) });
    expect(inStatusOrder([d, a, b, e, c]).map((s) => s.id)).toEqual(['c', 'e', 'a', 'b', 'd']);
  });
});
