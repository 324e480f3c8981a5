// The snapshots kube/watch.ts emits: immutable versions sharing structure, and the keys
// that changed between two of them at the cost of the events in between.

import { describe, expect, it } from 'vitest';
import { afterEvent, CHANGE_HISTORY, changedKeys, listedSnapshot, type KubeObject, type Snapshot } from '../../kube/watch.ts';

const obj = (uid: string, name = uid): KubeObject => ({ metadata: { name, uid } });
const names = <T extends KubeObject>(s: Snapshot<T>) => [...s.values()].map((o) => o.metadata.name).sort();

describe('watch snapshots', () => {
  it('reads as a ReadonlyMap keyed by UID', () => {
    const s = listedSnapshot([obj('a'), obj('b')]);
    expect(s.size).toBe(2);
    expect(s.get('a')?.metadata.name).toBe('a');
    expect(s.has('c')).toBe(false);
    expect([...s.keys()].sort()).toEqual(['a', 'b']);
    expect(new Map(s)).toEqual(new Map([['a', obj('a')], ['b', obj('b')]]));
    const seen: string[] = [];
    s.forEach((v, k, m) => seen.push(`${k}=${v.metadata.name}/${m.size}`));
    expect(seen.sort()).toEqual(['a=a/2', 'b=b/2']);
  });

  it('never changes once made: an event makes a new version', () => {
    const first = listedSnapshot([obj('a'), obj('b')]);
    const second = afterEvent(first, 'MODIFIED', obj('a', 'a2'));
    const third = afterEvent(second, 'DELETED', obj('b'));
    const fourth = afterEvent(third, 'ADDED', obj('c'));
    expect(names(first)).toEqual(['a', 'b']);
    expect(names(second)).toEqual(['a2', 'b']);
    expect(names(third)).toEqual(['a2']);
    expect(names(fourth)).toEqual(['a2', 'c']);
  });

  it('names the keys changed between two versions, however far apart', () => {
    const first = listedSnapshot([obj('a'), obj('b'), obj('c')]);
    const second = afterEvent(first, 'MODIFIED', obj('a', 'a2'));
    const third = afterEvent(second, 'DELETED', obj('b'));
    const fourth = afterEvent(third, 'MODIFIED', obj('a', 'a3'));
    expect([...changedKeys(first, second)]).toEqual(['a']);
    expect([...changedKeys(second, fourth)].sort()).toEqual(['a', 'b']);
    expect([...changedKeys(fourth, fourth)]).toEqual([]);
  });

  it('compares whole snapshots across a relist, for plain maps, and past the history it keeps', () => {
    const first = listedSnapshot([obj('a'), obj('b')]);
    const relisted = listedSnapshot([obj('a', 'a2'), first.get('b')!, obj('c')], first);
    expect([...changedKeys(first, relisted)].sort()).toEqual(['a', 'c']);
    const plain = new Map([['a', first.get('a')!]]);
    expect([...changedKeys(plain, first)]).toEqual(['b']);
    let later: Snapshot<KubeObject> = first;
    for (let i = 0; i < 2 * CHANGE_HISTORY + 1; i++) later = afterEvent(later, 'MODIFIED', obj('a', `a${i}`));
    later = afterEvent(later, 'ADDED', obj('z'));
    // the history of the first versions is gone: the answer comes from comparing, and is the same
    expect([...changedKeys(first, later)].sort()).toEqual(['a', 'z']);
  });
});
