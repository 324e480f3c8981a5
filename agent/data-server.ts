// The agent's data port: capture files and live streams (serve.ts, stream.ts), for the
// packet-capture API and nobody else. Mutual TLS both ways:
// - the client must present a certificate the project's data CA signed for the API
//   component (apiserver/data-ca.ts); the CA bundle is re-read from its ConfigMap, so a new
//   CA is trusted without a restart, and while there is none nobody is admitted;
// - the agent presents a self-signed certificate, published on its presence Lease, which
//   the API pins: only this process holds its key. It is replaced at half its life: the new
//   one is published next to the old before it serves, so no connection sees an unknown one.
// The ops port (kube/health.ts) serves health and metrics only, never data.

import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { API_CLIENT_CN } from '../apiserver/api.ts';
import { pastFraction, pemBundle, pemCertificates, selfSignedServerCert, validity, type KeyPair } from '../kube/certificates.ts';
import type { Logger } from '../kube/log.ts';

export type Route = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;

export const SERVER_CERT_LIFETIME_MS = 7 * 24 * 3600_000;
const REFRESH_MS = 60_000;

export interface DataServerOptions {
  port: number;
  host?: string;
  /** the address the API connects to, named by the certificate */
  advertiseAddress: string;
  /** the agent's node, named by the certificate */
  node: string;
  routes: Route[];
  /** the PEM bundle of the CAs whose API certificates are admitted; undefined while there is none */
  trust: () => Promise<string | undefined>;
  /** makes the pinned certificates (PEM bundle, newest first) known to the API; throws if it could not */
  publish: (pinned: string) => Promise<void>;
  log: Logger;
  /** how often the trust is re-read and the certificate's age checked (default 60 s) */
  refreshMs?: number;
  certLifetimeMs?: number;
  now?: () => number;
}

export interface DataServer {
  server: Server;
  port: number;
  url: string;
  /** the certificates the API may pin, newest first */
  pinned(): string;
  /** re-read the trust and renew the certificate if due (what the timer does) */
  refresh(): Promise<void>;
  close(): Promise<void>;
}

const urlHost = (address: string): string => (address.includes(':') ? `[${address}]` : address);

/** Whether a request came from the API component over a verified client certificate. */
export function fromApiComponent(req: IncomingMessage): boolean {
  const socket = req.socket as TLSSocket;
  if (!socket.authorized) return false;
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return (Array.isArray(cn) ? cn[0] : cn) === API_CLIENT_CN;
}

const refuse = (res: ServerResponse, status: number, error: string) => {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ error }));
};

export async function startDataServer(opts: DataServerOptions): Promise<DataServer> {
  const now = opts.now ?? Date.now;
  const lifetimeMs = opts.certLifetimeMs ?? SERVER_CERT_LIFETIME_MS;
  const issue = () => selfSignedServerCert(`packet-capture-agent ${opts.node}`, [opts.advertiseAddress], { now: now(), lifetimeMs });
  let serving: KeyPair = await issue();
  let previous: string | undefined;
  let trust: string | undefined = await opts.trust().catch((err: unknown) => {
    opts.log.warn({ err: String(err) }, 'cannot read the data CA; the data port admits nobody until it can');
    return undefined;
  });
  if (!trust) opts.log.warn('no data CA yet; the data port admits nobody until the packet-capture API has made one');
  const pinned = () => pemBundle([serving.cert, ...(previous && validity(previous).notAfter > now() ? [previous] : [])]);
  // with no CA, the agent's own leaf is the only "CA": nothing it never signed chains to it
  const context = () => ({ ...serving, ca: trust ? pemCertificates(trust) : [serving.cert], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' as const });

  const server = createServer(context(), (req, res) => {
    void (async () => {
      // the TLS layer already refused any other client; this says so even if it is misconfigured
      if (!fromApiComponent(req)) return refuse(res, 403, 'only the packet-capture API may read capture data');
      for (const route of opts.routes) if (await route(req, res)) return;
      refuse(res, 404, 'not found');
    })().catch((err: unknown) => {
      if (!res.headersSent) refuse(res, 500, String(err));
      else res.destroy();
    });
  });
  server.on('tlsClientError', (err) => opts.log.debug({ err: String(err) }, 'data port: TLS handshake refused'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', resolve);
  });
  const port = (server.address() as AddressInfo).port;

  const refresh = async () => {
    const next = await opts.trust().catch((err: unknown) => {
      opts.log.warn({ err: String(err) }, 'cannot re-read the data CA; keeping the one loaded');
      return trust;
    });
    let changed = false;
    if (next !== trust) {
      trust = next;
      changed = true;
      opts.log.info({ cas: (trust?.match(/BEGIN CERTIFICATE/g) ?? []).length }, 'data CA bundle changed; new connections use it');
    }
    if (pastFraction(serving.cert, now(), 0.5)) {
      const renewed = await issue();
      // published (next to the current one) before it serves
      await opts.publish(pemBundle([renewed.cert, serving.cert]));
      previous = serving.cert;
      serving = renewed;
      changed = true;
      opts.log.info({ notAfter: new Date(validity(serving.cert).notAfter).toISOString() }, 'data port certificate renewed');
    }
    if (changed) server.setSecureContext(context());
  };
  const timer = setInterval(() => {
    refresh().catch((err: unknown) => opts.log.warn({ err: String(err) }, 'cannot renew the data port certificate; keeping the current one'));
  }, opts.refreshMs ?? REFRESH_MS);
  timer.unref();

  return {
    server,
    port,
    url: `https://${urlHost(opts.advertiseAddress)}:${port}`,
    pinned,
    refresh,
    close: () =>
      new Promise((resolve) => {
        clearInterval(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
