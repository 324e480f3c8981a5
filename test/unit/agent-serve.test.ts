import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSessionDir } from '../../agent/files.ts';
import { filesRoute, parseRange } from '../../agent/serve.ts';

const UID = '6f1c7f0e-3b1a-4d2c-9e55-0a1b2c3d4e5f';

describe('parseRange', () => {
  it.each([
    [undefined, undefined],
    ['bytes=0-99', { start: 0, end: 99 }],
    ['bytes=100-', { start: 100, end: 999 }],
    ['bytes=-100', { start: 900, end: 999 }],
    ['bytes=-5000', { start: 0, end: 999 }],
    ['bytes=900-5000', { start: 900, end: 999 }],
    ['bytes=1000-', 'unsatisfiable'],
    ['bytes=5-4', 'unsatisfiable'],
    ['bytes=-0', 'unsatisfiable'],
    ['bytes=0-1,5-6', undefined],
    ['items=0-1', undefined],
  ])('%s of 1000 bytes -> %j', (header, expected) => {
    expect(parseRange(header, 1000)).toEqual(expected);
  });
});

describe('/files routes', () => {
  let dataDir: string;
  // the routes alone, over plain HTTP: the data port's TLS is data-server.test.ts's
  let server: Server;
  let port: number;
  const body = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
  const url = (path: string) => `http://127.0.0.1:${port}${path}`;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'agent-serve-'));
    const session = join(dataDir, 'shop', 'web', UID, 'g1-6f1c7f0e-abc');
    await makeSessionDir(session, { captureUID: 'cap-1', generation: 1, podUID: UID, podName: 'web-0' });
    // a session directory without its session file: listed, but with no capture instance
    await mkdir(join(dataDir, 'shop', 'web', UID, 'g1-6f1c7f0e-abd'), { recursive: true });
    await writeFile(join(session, 'capture-1.pcapng'), body);
    await writeFile(join(session, 'capture-2.pcapng'), body.subarray(0, 10));
    await writeFile(join(session, 'notes.txt'), 'not a capture');
    await writeFile(join(dataDir, 'shop', 'web', '.deleted'), 'marker');
    const route = filesRoute(dataDir);
    server = createServer((req, res) => {
      void Promise.resolve(route(req, res)).then((served) => {
        if (!served) res.writeHead(404).end('not found');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('lists every pod instance and session of a capture', async () => {
    const res = await fetch(url('/files/shop/web'));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      namespace: 'shop',
      name: 'web',
      pods: [
        {
          podUID: UID,
          sessions: [
            { id: 'g1-6f1c7f0e-abc', captureUID: 'cap-1', bytes: 3010, files: [{ name: 'capture-1.pcapng', size: 3000 }, { name: 'capture-2.pcapng', size: 10 }] },
            { id: 'g1-6f1c7f0e-abd', bytes: 0, files: [] },
          ],
        },
      ],
    });
    expect(await (await fetch(url(`/files/shop/web/${UID}`))).json()).toMatchObject({ podUID: UID, sessions: [{ id: 'g1-6f1c7f0e-abc' }, { id: 'g1-6f1c7f0e-abd' }] });
    expect(await (await fetch(url('/files/shop/nothing'))).json()).toEqual({ namespace: 'shop', name: 'nothing', pods: [] });
  });

  it('serves a file whole, and from an offset so a download can resume', async () => {
    const path = `/files/shop/web/${UID}/g1-6f1c7f0e-abc/capture-1.pcapng`;
    const whole = await fetch(url(path));
    expect(whole.status).toBe(200);
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    expect(Buffer.from(await whole.arrayBuffer())).toEqual(body);

    const rest = await fetch(url(path), { headers: { range: 'bytes=1234-' } });
    expect(rest.status).toBe(206);
    expect(rest.headers.get('content-range')).toBe('bytes 1234-2999/3000');
    expect(Buffer.from(await rest.arrayBuffer())).toEqual(body.subarray(1234));

    const beyond = await fetch(url(path), { headers: { range: 'bytes=3000-' } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe('bytes */3000');
  });

  it.each([
    ['a file that is not a capture file', `/files/shop/web/${UID}/g1-6f1c7f0e-abc/notes.txt`, 404],
    ['a missing file', `/files/shop/web/${UID}/g1-6f1c7f0e-abc/capture-7.pcapng`, 404],
    ['a path climbing out of the data dir', `/files/shop/web/${UID}/..%2F..%2F..%2Fetc/capture-1.pcapng`, 400],
    ['too short a path', '/files/shop', 400],
  ])('refuses %s', async (_what, path, status) => {
    expect((await fetch(url(path))).status).toBe(status);
  });

  it('refuses dot segments a client did not normalise', async () => {
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: `/files/shop/web/../../../etc/passwd` }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(400);
  });

  it('leaves other paths to the next route', async () => {
    expect((await fetch(url('/filesystem'))).status).toBe(404);
    expect(await (await fetch(url('/filesystem'))).text()).toBe('not found');
  });
});
