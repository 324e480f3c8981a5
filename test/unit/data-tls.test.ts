// The agent's data port admits the packet-capture API and nobody else: certificates made in
// process, the data CA's rotation rule, and the port's mutual TLS over loopback, for every
// route, including a CA and a certificate that change while it runs.

import { X509Certificate } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request } from 'node:https';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_CLIENT_CN } from '../../apiserver/api.ts';
import { rotateCa, type CaState } from '../../apiserver/data-ca.ts';
import { startDataServer, type DataServer } from '../../agent/data-server.ts';
import { createCa, issueClientCert, pastFraction, pemBundle, pemCertificates, selfSignedServerCert, validity, type KeyPair } from '../../kube/certificates.ts';

const HOUR = 3600_000;
const t0 = Date.parse('2026-06-01T00:00:00Z');

describe('certificates', () => {
  it('a client certificate chains to its CA, for client authentication only, and never outlives the CA', async () => {
    const ca = await createCa('test CA', { now: t0, lifetimeMs: 10 * HOUR });
    const client = await issueClientCert(ca, API_CLIENT_CN, { now: t0, lifetimeMs: 24 * HOUR });
    const cert = new X509Certificate(client.cert);
    expect(cert.checkIssued(new X509Certificate(ca.cert))).toBe(true);
    expect(cert.verify(new X509Certificate(ca.cert).publicKey)).toBe(true);
    expect(cert.subject).toBe(`CN=${API_CLIENT_CN}`);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.ca).toBe(false);
    expect(new X509Certificate(ca.cert).ca).toBe(true);
    expect(validity(client.cert).notAfter).toBe(validity(ca.cert).notAfter);
  });

  it('a serving certificate names its address and signs for itself alone', async () => {
    const server = await selfSignedServerCert('agent n1', ['10.1.2.3', 'agent.example'], { now: t0, lifetimeMs: HOUR });
    const cert = new X509Certificate(server.cert);
    expect(cert.subjectAltName).toBe('IP Address:10.1.2.3, DNS:agent.example');
    expect(cert.ca).toBe(false);
    expect(cert.checkIP('10.1.2.3')).toBe('10.1.2.3');
  });

  it('pastFraction measures from notBefore (a minute early, for skewed clocks) to notAfter', async () => {
    const { cert } = await createCa('x', { now: t0, lifetimeMs: 99 * 60_000 });
    const half = t0 - 60_000 + 50 * 60_000;
    expect(pastFraction(cert, half - 1000, 0.5)).toBe(false);
    expect(pastFraction(cert, half, 0.5)).toBe(true);
  });
});

describe('rotateCa', () => {
  const LIFE = 100 * HOUR;
  let made = 0;
  const maker = (at: () => number) => () => {
    made++;
    return createCa(`CA ${made}`, { now: at(), lifetimeMs: LIFE });
  };

  it('makes a CA, adds the next at half life, signs with it from three quarters, drops the old when it expires', async () => {
    let now = t0;
    const create = maker(() => now);
    const first = await rotateCa(undefined, now, create);
    expect(first.next).toBeUndefined();
    expect(first.bundle).toEqual([first.signing.cert]);
    // nothing changes before half life
    now = t0 + 40 * HOUR;
    expect(await rotateCa(first, now, create)).toEqual(first);

    now = t0 + 50 * HOUR;
    const published = await rotateCa(first, now, create);
    expect(published.signing).toEqual(first.signing);
    expect(published.next).toBeDefined();
    expect(published.bundle).toEqual([first.signing.cert, published.next!.cert]);
    expect(await rotateCa(published, t0 + 60 * HOUR, create)).toEqual(published);

    now = t0 + 75 * HOUR;
    const promoted = await rotateCa(published, now, create);
    expect(promoted.signing).toEqual(published.next);
    expect(promoted.next).toBeUndefined();
    // the old CA is still trusted: client certificates it signed are still out there
    expect(promoted.bundle).toEqual([published.next!.cert, first.signing.cert]);

    now = t0 + 101 * HOUR;
    const pruned = await rotateCa(promoted, now, create);
    expect(pruned.bundle).not.toContain(first.signing.cert);
    // by then the promoted CA is itself past half its life: the one after it is out
    expect(pruned.bundle).toEqual([promoted.signing.cert, pruned.next!.cert]);
  });

  it('a state read back from its Secret rotates the same way', async () => {
    const state: CaState = await rotateCa(undefined, t0, maker(() => t0));
    const again = await rotateCa(JSON.parse(JSON.stringify(state)) as CaState, t0 + HOUR, maker(() => t0));
    expect(again).toEqual(state);
  });
});

describe('the data port', () => {
  const log = pino({ level: 'silent' });
  let ca: KeyPair;
  let api: KeyPair;
  let server: DataServer;
  let trust: string | undefined;
  let now = t0;
  const published: string[] = [];
  const ROUTES = ['/files/shop/web', '/files/shop/web/uid-1', '/files/shop/web/uid-1/g1-s', '/files/shop/web/uid-1/g1-s/capture-1.pcapng', '/stream/shop/web'];
  const SECRET = 'packets of shop';

  beforeAll(async () => {
    ca = await createCa('data CA', { now: Date.now(), lifetimeMs: 24 * HOUR });
    api = await issueClientCert(ca, API_CLIENT_CN, { now: Date.now(), lifetimeMs: HOUR });
    trust = ca.cert;
    // the agent's clock starts 6 h back, so its first certificate is past half its 10 h when it catches up
    now = Date.now() - 6 * HOUR;
    server = await startDataServer({
      port: 0,
      host: '127.0.0.1',
      advertiseAddress: '127.0.0.1',
      node: 'n1',
      routes: [
        (req, res) => {
          if (!ROUTES.includes(req.url ?? '')) return false;
          res.end(SECRET);
          return true;
        },
      ],
      trust: async () => trust,
      publish: async (pinned) => void published.push(pinned),
      log,
      refreshMs: 3600_000,
      certLifetimeMs: 10 * HOUR,
      now: () => now,
    });
  });
  afterAll(async () => server?.close());

  /** The body, or the error, of one GET over TLS with these credentials, pinning `pin`. */
  const get = (path: string, credentials: Partial<KeyPair>, pin = server.pinned()): Promise<{ status?: number; body?: string; error?: string; peer?: string }> =>
    new Promise((resolve) => {
      const req = request(
        { host: '127.0.0.1', port: server.port, path, ...credentials, ca: pin, checkServerIdentity: () => undefined, agent: false },
        (res) => {
          let body = '';
          const peer = (res.socket as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256;
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode, body, peer }));
        },
      );
      req.on('error', (err) => resolve({ error: err.message }));
      req.end();
    });

  it('serves the API component its data on every route', async () => {
    for (const path of ROUTES) expect(await get(path, api)).toMatchObject({ status: 200, body: SECRET });
  });

  it('gives nobody else anything, on any route: no certificate, another CA, another name, plain HTTP', async () => {
    const stranger = await createCa('stranger CA', { now: Date.now(), lifetimeMs: HOUR });
    const impostor = await issueClientCert(stranger, API_CLIENT_CN, { now: Date.now(), lifetimeMs: HOUR });
    const otherName = await issueClientCert(ca, 'someone-else', { now: Date.now(), lifetimeMs: HOUR });
    // the agent's own certificate and key do not make a client either
    const own = await selfSignedServerCert('n1', ['127.0.0.1'], { now: Date.now(), lifetimeMs: HOUR });
    for (const path of ROUTES) {
      for (const credentials of [{}, impostor, own]) {
        const got = await get(path, credentials);
        expect(got.body).toBeUndefined();
        expect(got.error).toBeDefined();
      }
      expect(await get(path, otherName)).toEqual(expect.objectContaining({ status: 403, body: expect.not.stringContaining(SECRET) }));
      const plain = await new Promise<string>((resolve) => {
        const req = httpRequest({ host: '127.0.0.1', port: server.port, path }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve(body));
        });
        req.on('error', (err) => resolve(`error: ${err.message}`));
        req.end();
      });
      expect(plain).not.toContain(SECRET);
    }
  });

  it('a new CA bundle is trusted, and a dropped one refused, without a restart', async () => {
    const nextCa = await createCa('next data CA', { now: Date.now(), lifetimeMs: 24 * HOUR });
    const nextApi = await issueClientCert(nextCa, API_CLIENT_CN, { now: Date.now(), lifetimeMs: HOUR });
    expect((await get(ROUTES[0]!, nextApi)).error).toBeDefined();
    trust = pemBundle([ca.cert, nextCa.cert]);
    await server.refresh();
    expect(await get(ROUTES[0]!, nextApi)).toMatchObject({ status: 200 });
    expect(await get(ROUTES[0]!, api)).toMatchObject({ status: 200 });
    trust = nextCa.cert;
    await server.refresh();
    expect((await get(ROUTES[0]!, api)).error).toBeDefined();
    trust = ca.cert;
    await server.refresh();
  });

  it('with no CA at all, admits nobody', async () => {
    trust = undefined;
    await server.refresh();
    expect((await get(ROUTES[0]!, api)).error).toBeDefined();
    trust = ca.cert;
    await server.refresh();
    expect(await get(ROUTES[0]!, api)).toMatchObject({ status: 200 });
  });

  it('renews its certificate at half life, published next to the old one before it serves', async () => {
    const before = server.pinned();
    const oldFingerprint = new X509Certificate(before).fingerprint256;
    expect((await get(ROUTES[0]!, api, before)).peer).toBe(oldFingerprint);
    now = Date.now();
    await server.refresh();
    expect(published).toHaveLength(1);
    const [renewed, previous] = pemCertificates(published[0]!);
    expect(previous).toBe(pemCertificates(before)[0]);
    expect(server.pinned()).toBe(published[0]);
    // a client that read the Lease after the renewal pins both and reaches the new one
    const got = await get(ROUTES[0]!, api, published[0]);
    expect(got).toMatchObject({ status: 200 });
    expect(got.peer).toBe(new X509Certificate(renewed!).fingerprint256);
    // one that still pins only the old certificate is refused, and reads the Lease again
    expect((await get(ROUTES[0]!, api, before)).error).toBeDefined();
  });
});
