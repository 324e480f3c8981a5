// One undici dispatcher per KubeConfig (kube/http.ts): requests share keep-alive
// connections instead of each opening a TLS connection of its own.

import { KubeConfig } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { DISPATCHER_TTL_MS, retireDispatcher, sharedDispatcher } from '../../kube/http.ts';

const agent = () => {
  const a = { closed: 0, destroyed: 0, close: async () => void a.closed++, destroy: async () => void a.destroyed++ };
  return a;
};

describe('sharedDispatcher', () => {
  it('hands every request of one KubeConfig the first dispatcher, and another KubeConfig its own', () => {
    const kc = new KubeConfig();
    const first = agent();
    expect(sharedDispatcher(kc, first, 0)).toBe(first);
    expect(sharedDispatcher(kc, agent(), 1000)).toBe(first);
    const other = agent();
    expect(sharedDispatcher(new KubeConfig(), other, 1000)).toBe(other);
  });

  it('takes a fresh one after DISPATCHER_TTL_MS and closes the old one', () => {
    const kc = new KubeConfig();
    const first = agent();
    sharedDispatcher(kc, first, 0);
    const second = agent();
    expect(sharedDispatcher(kc, second, DISPATCHER_TTL_MS)).toBe(second);
    expect(first.closed).toBe(1);
    expect(sharedDispatcher(kc, agent(), DISPATCHER_TTL_MS + 1)).toBe(second);
  });

  it('after a request timed out (its connection may be dead), the next request gets a fresh one', () => {
    const kc = new KubeConfig();
    const first = agent();
    sharedDispatcher(kc, first, 0);
    retireDispatcher(kc);
    expect(first.destroyed).toBe(1);
    const second = agent();
    expect(sharedDispatcher(kc, second, 1000)).toBe(second);
    retireDispatcher(new KubeConfig());
    expect(sharedDispatcher(kc, agent(), 2000)).toBe(second);
  });

  it('passes "no dispatcher" (plain HTTP) through', () => {
    expect(sharedDispatcher(new KubeConfig(), undefined)).toBeUndefined();
  });
});
