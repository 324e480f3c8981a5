import { describe, expect, it } from 'vitest';
import { REASONS, type LabelSelector } from '../../crds/packetcapture.ts';
import { describeSelector, selectorMatches } from '../../controller/selector.ts';
import { resolveTargets } from '../../controller/targets.ts';
import { capture, pod } from './controller-fixtures.ts';

describe('selectorMatches', () => {
  const labels = { app: 'web', tier: 'front' };
  it.each<[string, LabelSelector, Record<string, string> | undefined, boolean]>([
    ['an empty selector matches every pod', {}, labels, true],
    ['an empty selector matches a pod without labels', {}, undefined, true],
    ['matchLabels needs every pair', { matchLabels: { app: 'web', tier: 'front' } }, labels, true],
    ['matchLabels fails on one different value', { matchLabels: { app: 'web', tier: 'back' } }, labels, false],
    ['matchLabels fails on a missing key', { matchLabels: { zone: 'a' } }, labels, false],
    ['matchLabels fails on a pod without labels', { matchLabels: { app: 'web' } }, undefined, false],
    ['In matches a listed value', { matchExpressions: [{ key: 'tier', operator: 'In', values: ['front', 'mid'] }] }, labels, true],
    ['In fails on an unlisted value', { matchExpressions: [{ key: 'tier', operator: 'In', values: ['back'] }] }, labels, false],
    ['In fails on a missing key', { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }, labels, false],
    ['NotIn matches an unlisted value', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['back'] }] }, labels, true],
    ['NotIn fails on a listed value', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['front'] }] }, labels, false],
    ['NotIn matches a missing key', { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, labels, true],
    ['Exists matches a present key', { matchExpressions: [{ key: 'app', operator: 'Exists' }] }, labels, true],
    ['Exists fails on a missing key', { matchExpressions: [{ key: 'zone', operator: 'Exists' }] }, labels, false],
    ['DoesNotExist matches a missing key', { matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, labels, true],
    ['DoesNotExist fails on a present key', { matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, labels, false],
    [
      'matchLabels and matchExpressions are ANDed',
      { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['back'] }] },
      labels,
      false,
    ],
    ['a key inherited from Object.prototype is not a label', { matchExpressions: [{ key: 'toString', operator: 'Exists' }] }, {}, false],
  ])('%s', (_name, selector, podLabels, expected) => {
    expect(selectorMatches(selector, podLabels)).toBe(expected);
  });

  it('describes itself in kubectl syntax', () => {
    expect(
      describeSelector({
        matchLabels: { app: 'web' },
        matchExpressions: [
          { key: 'tier', operator: 'In', values: ['a', 'b'] },
          { key: 'x', operator: 'NotIn', values: ['c'] },
          { key: 'y', operator: 'Exists' },
          { key: 'z', operator: 'DoesNotExist' },
        ],
      }),
    ).toBe('app=web,tier in (a,b),x notin (c),y,!z');
  });
});

describe('resolveTargets by podName', () => {
  const byName = capture({ target: { podName: 'web-0' } });

  it('targets the running instance with its UID, node and IP', () => {
    const r = resolveTargets(byName, [pod('web-0', 'u1', { node: 'node-a', ip: '10.244.0.5' }), pod('web-1', 'u2')]);
    expect(r.targets).toEqual([{ podName: 'web-0', podUID: 'u1', nodeName: 'node-a', podIP: '10.244.0.5' }]);
    expect(r.reason).toBe(REASONS.PodFound);
    expect(r.message).toContain('u1');
  });

  it('is PodNotFound when no pod has the name', () => {
    const r = resolveTargets(byName, [pod('web-1', 'u2')]);
    expect(r).toMatchObject({ targets: [], reason: REASONS.PodNotFound });
    expect(r.message).toContain('web-0');
  });

  it('ignores a pod of the same name in another namespace', () => {
    const r = resolveTargets(byName, [pod('web-0', 'u9', { namespace: 'other' })]);
    expect(r).toMatchObject({ targets: [], reason: REASONS.PodNotFound });
  });

  it.each([
    ['a terminating instance', pod('web-0', 'u1', { deleting: true }), REASONS.PodTerminating],
    ['an unscheduled instance', pod('web-0', 'u1', { node: null, phase: 'Pending' }), REASONS.PodNotScheduled],
    ['a scheduled but Pending instance', pod('web-0', 'u1', { phase: 'Pending' }), REASONS.PodNotRunning],
    ['a Succeeded instance', pod('web-0', 'u1', { phase: 'Succeeded' }), REASONS.PodNotRunning],
  ])('does not target %s and says why', (_name, p, reason) => {
    const r = resolveTargets(byName, [p]);
    expect(r).toMatchObject({ targets: [], reason });
    expect(r.message).toContain('u1');
  });

  it('targets the replacement, not the terminating old instance', () => {
    const r = resolveTargets(byName, [
      pod('web-0', 'old', { deleting: true, node: 'node-a', created: '2026-01-01T00:00:00Z' }),
      pod('web-0', 'new', { node: 'node-b', created: '2026-01-01T00:05:00Z' }),
    ]);
    expect(r.targets.map((t) => [t.podUID, t.nodeName])).toEqual([['new', 'node-b']]);
  });

  it('never yields two UIDs for one name, even from a snapshot holding two running instances', () => {
    const r = resolveTargets(byName, [
      pod('web-0', 'old', { created: '2026-01-01T00:00:00Z' }),
      pod('web-0', 'new', { created: '2026-01-01T00:05:00Z' }),
    ]);
    expect(r.targets.map((t) => t.podUID)).toEqual(['new']);
  });

  it('never targets another pod that now holds the old instance IP', () => {
    const r = resolveTargets(byName, [pod('api-7', 'other', { ip: '10.244.0.5' })]);
    expect(r.targets).toEqual([]);
  });

  it('leaves podIP out until the pod has one', () => {
    expect(resolveTargets(byName, [pod('web-0', 'u1')]).targets[0]).not.toHaveProperty('podIP');
  });
});

describe('resolveTargets by podSelector', () => {
  const bySelector = capture({ target: { podSelector: { matchLabels: { app: 'web' } } } });
  const web = { app: 'web' };

  it('targets every running matching pod of the namespace, sorted by name', () => {
    const r = resolveTargets(bySelector, [
      pod('web-b', 'u2', { labels: web }),
      pod('web-a', 'u1', { labels: web, node: 'node-b' }),
      pod('db-0', 'u3', { labels: { app: 'db' } }),
      pod('web-c', 'u4', { labels: web, namespace: 'other' }),
    ]);
    expect(r.targets.map((t) => t.podUID)).toEqual(['u1', 'u2']);
    expect(r.reason).toBe(REASONS.PodsFound);
  });

  it('names matching pods that are not targets yet', () => {
    const r = resolveTargets(bySelector, [pod('web-a', 'u1', { labels: web }), pod('web-b', 'u2', { labels: web, phase: 'Pending' })]);
    expect(r.targets.map((t) => t.podUID)).toEqual(['u1']);
    expect(r.message).toContain('web-b (PodNotRunning)');
  });

  it('is NoMatchingPods when nothing matches', () => {
    expect(resolveTargets(bySelector, [pod('db-0', 'u3', { labels: { app: 'db' } })])).toMatchObject({
      targets: [],
      reason: REASONS.NoMatchingPods,
    });
  });

  it('gives the reason of the waiting pods when none runs', () => {
    expect(resolveTargets(bySelector, [pod('web-a', 'u1', { labels: web, deleting: true })])).toMatchObject({
      targets: [],
      reason: REASONS.PodTerminating,
    });
  });
});

describe('resolveTargets with an invalid target', () => {
  it.each([
    ['neither podName nor podSelector', {}],
    ['both podName and podSelector', { podName: 'web-0', podSelector: {} }],
  ])('is InvalidSpec with %s', (_name, target) => {
    expect(resolveTargets(capture({ target }), [pod('web-0', 'u1')])).toMatchObject({ targets: [], reason: REASONS.InvalidSpec });
  });
});
