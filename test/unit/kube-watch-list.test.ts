// kube/watch.ts against a fake API server on loopback: the list comes in pages, each
// object is kept as `transform` makes it, and watch events follow on the listed version.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { firstValueFrom, filter } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { watchSnapshots, type KubeObject } from '../../kube/watch.ts';

interface Item extends KubeObject {
  spec?: { big?: string; keep?: string };
}

const item = (uid: string): Item => ({ metadata: { name: uid, uid, resourceVersion: '7' }, spec: { big: 'x'.repeat(100), keep: uid } });

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** Pages of two items; the watch sends one ADDED event and stays open. */
function fakeApiServer(items: Item[], requests: URL[]): Promise<KubeConfig> {
  server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    requests.push(url);
    res.setHeader('content-type', 'application/json');
    if (url.searchParams.get('watch') === 'true') {
      res.write(`${JSON.stringify({ type: 'ADDED', object: { ...item('late'), metadata: { ...item('late').metadata, resourceVersion: '8' } } })}\n`);
      return;
    }
    const from = Number(url.searchParams.get('continue') ?? 0);
    const limit = Number(url.searchParams.get('limit'));
    const next = from + limit < items.length ? String(from + limit) : undefined;
    res.end(JSON.stringify({ metadata: { resourceVersion: '7', ...(next ? { continue: next } : {}) }, items: items.slice(from, from + limit) }));
  });
  return new Promise((resolve) =>
    server!.listen(0, '127.0.0.1', () => {
      const kc = new KubeConfig();
      const { port } = server!.address() as AddressInfo;
      kc.loadFromClusterAndUser({ name: 'fake', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }, { name: 'nobody' });
      resolve(kc);
    }),
  );
}

describe('watchSnapshots list', () => {
  it('reads every page, keeps what transform returns, and watches from the listed version', async () => {
    const requests: URL[] = [];
    const kc = await fakeApiServer([item('a'), item('b'), item('c'), item('d'), item('e')], requests);
    const watched = watchSnapshots<Item>(kc, {
      path: '/api/v1/things',
      pageSize: 2,
      transform: (o) => ({ metadata: o.metadata, spec: { keep: o.spec?.keep } }),
    });
    const snapshot = await firstValueFrom(watched.pipe(filter((s) => s.has('late'))));
    expect([...snapshot.keys()].sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'late']);
    expect(snapshot.get('c')?.spec).toEqual({ keep: 'c' });
    expect(snapshot.get('late')?.spec).toEqual({ keep: 'late' });
    const lists = requests.filter((u) => u.searchParams.get('watch') !== 'true');
    expect(lists.map((u) => u.searchParams.get('continue'))).toEqual([null, '2', '4']);
    expect(lists.every((u) => u.searchParams.get('limit') === '2')).toBe(true);
    const watch = requests.find((u) => u.searchParams.get('watch') === 'true');
    expect(watch?.searchParams.get('resourceVersion')).toBe('7');
  });
});
