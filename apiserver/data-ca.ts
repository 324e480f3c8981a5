// The project's data CA: it signs the client certificate by which the packet-capture API
// proves itself to the agents' data ports (agent/data-server.ts), and nothing else. The API
// component creates it on first start and owns it: the key stays in a Secret only the API
// may read; the certificates go to a ConfigMap the agents read. Both are made at run time,
// never synced from git, so Argo CD and Flux have nothing of them to compare.
//
// Rotation without restarts: the client certificate lives a day and is reissued in memory
// at half of it. A CA lives a year; at half of its life the next CA is made and published
// to the agents, and it starts signing only at three quarters, by when every agent has long
// re-read the bundle. A CA stays in the bundle until it expires.

import type { KubeConfig } from '@kubernetes/client-node';
import { API_CLIENT_CN, DATA_CA_NAME } from './api.ts';
import { createCa, issueClientCert, pastFraction, pemBundle, pemCertificates, validity, type KeyPair } from '../kube/certificates.ts';
import { isConflict, isNotFound, kubeRequest } from '../kube/http.ts';
import type { Logger } from '../kube/log.ts';

export const CA_BUNDLE_KEY = 'ca.crt';

const DAY_MS = 24 * 3600_000;
export const CA_LIFETIME_MS = 365 * DAY_MS;
export const CLIENT_LIFETIME_MS = DAY_MS;

export interface CaState {
  signing: KeyPair;
  /** made at half of signing's life, published, and signing from three quarters on */
  next?: KeyPair;
  /** every unexpired CA certificate, the agents' trust */
  bundle: string[];
}

/** The CA state after `now`: made, rolled over and pruned as the rules above say. */
export async function rotateCa(state: CaState | undefined, now: number, create: () => Promise<KeyPair>): Promise<CaState> {
  let signing = state?.signing ?? (await create());
  let next = state?.next;
  if (next && pastFraction(signing.cert, now, 0.75)) [signing, next] = [next, undefined];
  if (!next && pastFraction(signing.cert, now, 0.5)) next = await create();
  const bundle = [...new Set([signing.cert, ...(next ? [next.cert] : []), ...(state?.bundle ?? [])])].filter((pem) => validity(pem).notAfter > now);
  return { signing, ...(next ? { next } : {}), bundle };
}

interface SecretObject {
  metadata: { resourceVersion?: string };
  data?: Record<string, string>;
}
interface ConfigMapObject {
  metadata: { resourceVersion?: string };
  data?: Record<string, string>;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');
const unb64 = (text: string | undefined) => (text === undefined ? undefined : Buffer.from(text, 'base64').toString('utf8'));

/** The Secret's data as a state; undefined when it holds no signing CA. */
export function caStateFrom(data: Record<string, string> | undefined): CaState | undefined {
  const cert = unb64(data?.['tls.crt']);
  const key = unb64(data?.['tls.key']);
  if (!cert || !key) return undefined;
  const nextCert = unb64(data?.['next.crt']);
  const nextKey = unb64(data?.['next.key']);
  return { signing: { cert, key }, ...(nextCert && nextKey ? { next: { cert: nextCert, key: nextKey } } : {}), bundle: pemCertificates(unb64(data?.[CA_BUNDLE_KEY]) ?? '') };
}

const secretData = (state: CaState): Record<string, string> => ({
  'tls.crt': b64(state.signing.cert),
  'tls.key': b64(state.signing.key),
  ...(state.next ? { 'next.crt': b64(state.next.cert), 'next.key': b64(state.next.key) } : {}),
  [CA_BUNDLE_KEY]: b64(pemBundle(state.bundle)),
});

const labels = { 'app.kubernetes.io/part-of': 'packet-capture', 'app.kubernetes.io/component': 'api' };

/** The agents' trust: the data CA bundle from its ConfigMap, or undefined while there is none. */
export async function readDataCaBundle(kc: KubeConfig, namespace: string): Promise<string | undefined> {
  try {
    const cm = await kubeRequest<ConfigMapObject>(kc, 'GET', `/api/v1/namespaces/${namespace}/configmaps/${DATA_CA_NAME}`);
    return cm.data?.[CA_BUNDLE_KEY] || undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * The API component's client credentials for the agents' data ports, kept current:
 * `refresh()` makes or rotates the CA as needed and reissues the certificate at half life.
 */
export class DataCredentials {
  private client: KeyPair | undefined;
  private issuer: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly kc: KubeConfig,
    private readonly namespace: string,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  /** Made (or read) once, then kept current every `refreshMs` (default 10 min) until close(). */
  static async start(opts: { kubeConfig: KubeConfig; namespace: string; log: Logger; now?: () => number; refreshMs?: number }): Promise<DataCredentials> {
    const credentials = new DataCredentials(opts.kubeConfig, opts.namespace, opts.log, opts.now ?? Date.now);
    await credentials.refresh();
    credentials.timer = setInterval(() => {
      credentials.refresh().catch((err: unknown) => opts.log.warn({ err: String(err) }, 'cannot refresh the data CA or client certificate; keeping the current ones'));
    }, opts.refreshMs ?? 10 * 60_000);
    credentials.timer.unref();
    return credentials;
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** The client certificate and key to present to an agent. */
  current(): KeyPair {
    if (!this.client) throw new Error('no data client certificate yet');
    return this.client;
  }

  async refresh(): Promise<void> {
    const state = await this.ensureCa();
    const now = this.now();
    if (!this.client || this.issuer !== state.signing.cert || pastFraction(this.client.cert, now, 0.5)) {
      this.client = await issueClientCert(state.signing, API_CLIENT_CN, { now, lifetimeMs: CLIENT_LIFETIME_MS });
      this.issuer = state.signing.cert;
      this.log.info({ notAfter: new Date(validity(this.client.cert).notAfter).toISOString() }, 'issued the data client certificate');
    }
  }

  private async ensureCa(): Promise<CaState> {
    const path = `/api/v1/namespaces/${this.namespace}/secrets`;
    const secret = await kubeRequest<SecretObject>(this.kc, 'GET', `${path}/${DATA_CA_NAME}`).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    const before = caStateFrom(secret?.data);
    const now = this.now();
    const state = await rotateCa(before, now, () => createCa(`packet-capture data CA ${new Date(now).toISOString()}`, { now, lifetimeMs: CA_LIFETIME_MS }));
    if (JSON.stringify(state) !== JSON.stringify(before)) {
      const body = { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: DATA_CA_NAME, namespace: this.namespace, labels, resourceVersion: secret?.metadata.resourceVersion }, data: secretData(state) };
      try {
        if (secret) await kubeRequest(this.kc, 'PUT', `${path}/${DATA_CA_NAME}`, { body });
        else await kubeRequest(this.kc, 'POST', path, { body });
        this.log.info({ secret: `${this.namespace}/${DATA_CA_NAME}`, cas: state.bundle.length, made: !before }, before ? 'data CA rotated' : 'data CA created');
      } catch (err) {
        // another replica wrote first: its CA is the one; take it on the next refresh
        if (!isConflict(err)) throw err;
        const theirs = caStateFrom((await kubeRequest<SecretObject>(this.kc, 'GET', `${path}/${DATA_CA_NAME}`)).data);
        if (!theirs) throw err;
        await this.publish(theirs.bundle);
        return theirs;
      }
    }
    await this.publish(state.bundle);
    return state;
  }

  /** The bundle in the agents' ConfigMap, written only when it changes. */
  private async publish(bundle: string[]): Promise<void> {
    const path = `/api/v1/namespaces/${this.namespace}/configmaps`;
    const text = pemBundle(bundle);
    const cm = await kubeRequest<ConfigMapObject>(this.kc, 'GET', `${path}/${DATA_CA_NAME}`).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (cm?.data?.[CA_BUNDLE_KEY] === text) return;
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: DATA_CA_NAME, namespace: this.namespace, labels, resourceVersion: cm?.metadata.resourceVersion }, data: { [CA_BUNDLE_KEY]: text } };
    if (cm) await kubeRequest(this.kc, 'PUT', `${path}/${DATA_CA_NAME}`, { body });
    else await kubeRequest(this.kc, 'POST', path, { body });
  }
}
