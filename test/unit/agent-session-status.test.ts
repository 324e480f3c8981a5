import { describe, expect, it } from 'vitest';
import { adoptEntries, capLimited, inStatusOrder, nextRecord, retainedEntries, sessionShare } from '../../agent/session-status.ts';
import { MAX_LIMITED_PER_NODE, MAX_SESSIONS, REASONS, SESSION_HISTORY, type SessionStatus } from '../../crds/packetcapture.ts';
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

  it('gives history way to live entries within the share, and lists no more live ones than the share', () => {
    const finished = Array.from({ length: 10 }, (_, i) => session({ id: `e${i}`, startTime: at(i), endTime: at(i + 1) }));
    const live = Array.from({ length: 4 }, (_, i) => session({ id: `r${i}`, state: 'Running', startTime: at(20 + i) }));
    expect(retainedEntries([...finished, ...live], 6).map((s) => s.id)).toEqual(['e8', 'e9', 'r0', 'r1', 'r2', 'r3']);
    expect(retainedEntries([...finished, ...live], 3).map((s) => s.id)).toEqual(['r0', 'r1', 'r2']);
  });
});

describe('sessionShare', () => {
  const entriesOn = (nodes: number) => capture({ sessions: Array.from({ length: nodes }, (_, i) => session({ id: `s${i}`, nodeName: `node-${i}` })) });

  it(`keeps the sum of the shares within ${MAX_SESSIONS} while as many nodes again join unseen`, () => {
    for (const nodes of [1, 15, 60, 499]) {
      const shares = Array.from({ length: nodes }, (_, i) => sessionShare(entriesOn(nodes), `node-${i}`));
      const joining = Array.from({ length: nodes }, (_, i) => sessionShare(entriesOn(nodes), `node-new-${i}`));
      expect([nodes, [...shares, ...joining].reduce((a, b) => a + b, 0) <= MAX_SESSIONS]).toEqual([nodes, true]);
    }
  });

  it(`leaves the full history of ${SESSION_HISTORY} to each of 25 nodes, less to each of more`, () => {
    expect(sessionShare(entriesOn(25), 'node-0')).toBe(SESSION_HISTORY);
    expect(sessionShare(entriesOn(26), 'node-0')).toBeLessThan(SESSION_HISTORY);
  });
});

describe('capLimited', () => {
  const uids = (n: number, prefix = 'u') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

  it('keeps every instance up to the cap', () => {
    expect(capLimited(uids(MAX_LIMITED_PER_NODE), new Set())).toEqual(uids(MAX_LIMITED_PER_NODE));
  });

  it('past the cap drops instances no longer targeted first, oldest first, then the oldest of the rest', () => {
    const limited = uids(6);
    expect(capLimited(limited, new Set(['u0', 'u1', 'u3']), 4)).toEqual(['u0', 'u1', 'u3', 'u5']);
    expect(capLimited(limited, new Set(limited), 4)).toEqual(['u2', 'u3', 'u4', 'u5']);
  });

  it('is applied to the record as sessions are folded in', () => {
    const ended = (i: number) => session({ id: `s${i}`, podUID: `u${i}`, startTime: at(0), endTime: at(1), endReason: REASONS.PacketLimit });
    const record = Array.from({ length: MAX_LIMITED_PER_NODE + 3 }, (_, i) => ended(i)).reduce(
      (r: ReturnType<typeof nextRecord> | undefined, s) => nextRecord(r, s, capture({})),
      undefined,
    );
    expect(record!.limitedPods).toHaveLength(MAX_LIMITED_PER_NODE);
    expect(record!.limitedPods!.at(-1)).toBe(`u${MAX_LIMITED_PER_NODE + 2}`);
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
