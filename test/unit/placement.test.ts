import { describe, expect, it } from 'vitest';
import { HANDOVER_MS, placedOn, scopedCaptures, type Handover } from '../../agent/capture-scope.ts';
import { NODE_LABEL_PREFIX, nodeLabelKey, PLACED_LABEL, placementNodes, placementPatch, placementPatchOver } from '../../controller/placement.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import { capture, pod, session, snapshot } from './controller-fixtures.ts';

const withLabels = (c: PacketCapture, labels: Record<string, string>): PacketCapture => ({ ...c, metadata: { ...c.metadata, labels } });

describe('placement: which nodes see a capture', () => {
  it('a short node name is its own label; a long one is a hash no node name can be', () => {
    expect(nodeLabelKey('node-a')).toBe(`${NODE_LABEL_PREFIX}node-a`);
    const long = `${'a'.repeat(60)}.example.com`;
    const key = nodeLabelKey(long);
    expect(key).toMatch(new RegExp(`^${NODE_LABEL_PREFIX.replace('.', '\\.')}sha256_[0-9a-f]{56}$`));
    expect(key.length - NODE_LABEL_PREFIX.length).toBe(63);
    expect(nodeLabelKey(`${'a'.repeat(60)}.example.org`)).not.toBe(key);
  });

  it('nodes of the targeted pods that are scheduled and not finished, Pending ones included', () => {
    const c = capture({ target: { podSelector: { matchLabels: { app: 'web' } } } });
    const web = { labels: { app: 'web' } };
    const pods = [
      pod('web-0', 'u0', { ...web, node: 'node-a' }),
      pod('web-1', 'u1', { ...web, node: 'node-b', phase: 'Pending' }),
      pod('web-2', 'u2', { ...web, node: null, phase: 'Pending' }),
      pod('web-3', 'u3', { ...web, node: 'node-c', phase: 'Succeeded' }),
      pod('db-0', 'u4', { labels: { app: 'db' }, node: 'node-d' }),
      pod('web-9', 'u9', { ...web, node: 'node-e', namespace: 'other' }),
    ];
    expect([...placementNodes(c, pods)].sort()).toEqual(['node-a', 'node-b']);
  });

  it('a node keeps seeing a capture it has entries or a record of after its pod left', () => {
    const c = capture(
      { target: { podName: 'web-0' } },
      { status: { sessions: [session('web-0', 'u0', { nodeName: 'node-x', state: 'Ended' })], nodes: [{ nodeName: 'node-y', generation: 1 }] } },
    );
    expect([...placementNodes(c, [pod('web-0', 'u1', { node: 'node-a' })])].sort()).toEqual(['node-a', 'node-x', 'node-y']);
  });

  it('the patch adds missing node labels and the placed mark, removes stale ones, and leaves other labels alone', () => {
    const c = withLabels(capture({ target: { podName: 'web-0' } }), { team: 'net', [nodeLabelKey('node-old')]: 'true', [nodeLabelKey('node-a')]: 'true' });
    expect(placementPatch(c, new Set(['node-a', 'node-b']))).toEqual({
      [nodeLabelKey('node-old')]: null,
      [nodeLabelKey('node-b')]: 'true',
      [PLACED_LABEL]: 'true',
    });
  });

  it('right labels need no patch; a capture placed nowhere stays (or goes back to) unplaced, for every agent to hear', () => {
    const placed = withLabels(capture({ target: { podName: 'web-0' } }), { [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true' });
    expect(placementPatch(placed, new Set(['node-a']))).toBeUndefined();
    expect(placementPatch(capture({ target: { podName: 'web-0' } }), new Set())).toBeUndefined();
    expect(placementPatch(placed, new Set())).toEqual({ [PLACED_LABEL]: null, [nodeLabelKey('node-a')]: null });
  });
});

describe('placement over our own last label patch', () => {
  const placedOnA = withLabels(capture({ target: { podName: 'web-0' } }), { [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true', team: 'x' });
  const unplaced = { [PLACED_LABEL]: null, [nodeLabelKey('node-a')]: null };

  it('a snapshot still showing labels our last patch removed is not taken at its word', () => {
    // the snapshot says placed on node-a, which is right for the pod there, so it asks nothing
    expect(placementPatch(placedOnA, new Set(['node-a']))).toBeUndefined();
    // but our last patch unplaced it: it must be placed again
    expect(placementPatchOver(placedOnA, new Set(['node-a']), unplaced)).toEqual({ [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true' });
  });

  it('what our patch set and the snapshot agrees with asks nothing; others\' labels stay out of it', () => {
    expect(placementPatchOver(placedOnA, new Set(['node-a']), { [nodeLabelKey('node-a')]: 'true' })).toBeUndefined();
    expect(placementPatchOver(placedOnA, new Set(), unplaced)).toBeUndefined();
  });
});

describe('capture scope: what one agent sees', () => {
  const a = capture({ target: { podName: 'web-0' } }, { uid: 'a' });
  const b = capture({ target: { podName: 'web-1' } }, { uid: 'b' });

  it('placed here and unplaced together; the placed copy is the newer and wins', () => {
    const placedA = withLabels(a, { [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true' });
    const seen = scopedCaptures(snapshot(placedA), snapshot(a, b), new Map(), 0);
    expect([...seen.keys()].sort()).toEqual(['a', 'b']);
    expect(seen.get('a')).toBe(placedA);
  });

  it('with nothing unplaced or handed over, the placed snapshot itself', () => {
    const placed = snapshot(a);
    expect(scopedCaptures(placed, new Map(), new Map(), 0)).toBe(placed);
  });

  const held = (c: PacketCapture, until: number): Map<string, Handover> => new Map([[c.metadata.uid, { capture: c, until }]]);

  it('a held capture stays while the placed watch has not shown it yet, then the placed copy is used', () => {
    const handovers = held(a, 1000);
    expect(scopedCaptures(new Map(), new Map(), handovers, 500).get('a')).toBe(a);
    const placedA = withLabels(a, { [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true' });
    expect(scopedCaptures(snapshot(placedA), new Map(), handovers, 600).get('a')).toBe(placedA);
    expect(handovers.size).toBe(0);
  });

  it('only a capture found placed on this node is held on; deleted or placed elsewhere it is not', () => {
    expect(placedOn(withLabels(a, { [PLACED_LABEL]: 'true', [nodeLabelKey('node-a')]: 'true' }), 'node-a')).toBe(true);
    expect(placedOn(withLabels(a, { [PLACED_LABEL]: 'true', [nodeLabelKey('node-b')]: 'true' }), 'node-a')).toBe(false);
    expect(placedOn(withLabels(a, { [nodeLabelKey('node-a')]: 'true' }), 'node-a')).toBe(false);
    expect(placedOn(undefined, 'node-a')).toBe(false);
  });

  it('a hold the placed watch never confirms ends after HANDOVER_MS', () => {
    const handovers = held(a, HANDOVER_MS);
    expect(scopedCaptures(new Map(), new Map(), handovers, HANDOVER_MS - 1).has('a')).toBe(true);
    expect(scopedCaptures(new Map(), new Map(), handovers, HANDOVER_MS).has('a')).toBe(false);
  });
});
