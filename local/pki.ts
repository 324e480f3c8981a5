// A throwaway certificate authority for a local control plane. Certificates are made by
// the openssl CLI (node:crypto can sign but cannot build X.509 certificates); keys are
// P-256 because generating them is instant, which keeps control-plane start-up short.

import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertPaths {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: CertPaths;
  /** the API server's serving certificate, valid for 127.0.0.1 and localhost */
  serving: CertPaths;
  /** O=system:masters, which RBAC lets do anything without any binding */
  admin: CertPaths;
  /** the service account token signing key pair */
  serviceAccount: { privateKey: string; publicKey: string };
  /**
   * The aggregation layer's own CA and the client certificate the API server presents to
   * aggregated APIs (--proxy-client-cert-file), which then trust X-Remote-User/-Group.
   */
  frontProxyCa: CertPaths;
  frontProxyClient: CertPaths;
}

/** The CN the API servers of aggregated APIs accept front-proxy requests from (--requestheader-allowed-names). */
export const FRONT_PROXY_CLIENT = 'front-proxy-client';

export interface Identity {
  user: string;
  groups?: string[];
}

// The API server maps a client certificate's CN to the user name and each O to a group.
function subject({ user, groups = [] }: Identity): string {
  const escape = (v: string): string => v.replace(/[\\/,+=]/g, (c) => `\\${c}`);
  return [`/CN=${escape(user)}`, ...groups.map((g) => `/O=${escape(g)}`)].join('');
}

/** The first address of the API server's --service-cluster-ip-range: the `kubernetes` Service. */
export const KUBERNETES_SERVICE_IP = '10.96.0.1';

const fileSafe = (name: string): string => name.replace(/[^A-Za-z0-9_.-]/g, '_');

async function selfSignedCa(dir: string, name = 'ca', cn = 'packet-capture-local-ca'): Promise<CertPaths> {
  const paths = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', paths.key, '-out', paths.cert, '-subj', `/CN=${cn}`, '-days', '365',
  ]);
  return paths;
}

async function issue(
  ca: CertPaths,
  dir: string,
  name: string,
  subj: string,
  extensions: string[],
): Promise<CertPaths> {
  const paths = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', paths.key, '-out', paths.cert, '-subj', subj, '-days', '365',
    '-CA', ca.cert, '-CAkey', ca.key,
    // without these openssl's default config would mark every leaf as a CA
    '-addext', 'basicConstraints=critical,CA:FALSE',
    ...extensions.flatMap((e) => ['-addext', e]),
  ]);
  return paths;
}

/** A serving certificate signed by the CA, valid for `sans` (e.g. `IP:10.88.0.1`). */
export function issueServingCert(pki: Pick<Pki, 'ca' | 'dir'>, name: string, sans: readonly string[]): Promise<CertPaths> {
  return issue(pki.ca, pki.dir, fileSafe(name), `/CN=${name}`, [`subjectAltName=${sans.join(',')}`, 'extendedKeyUsage=serverAuth']);
}

/** A client certificate signed by the CA: the API server will see `user` in `groups`. */
export function issueClientCert(pki: Pick<Pki, 'ca' | 'dir'>, identity: Identity): Promise<CertPaths> {
  // unique, so two tests minting the same identity at once never share files
  const name = `client-${fileSafe(identity.user)}-${randomUUID().slice(0, 8)}`;
  return issue(pki.ca, pki.dir, name, subject(identity), ['extendedKeyUsage=clientAuth']);
}

export async function createPki(dir: string): Promise<Pki> {
  await mkdir(dir, { recursive: true });
  const [ca, frontProxyCa] = await Promise.all([
    selfSignedCa(dir),
    // its own CA, as kubeadm keeps it: a client certificate of the cluster CA must not be
    // able to pose as the front proxy and claim any identity in X-Remote-User
    selfSignedCa(dir, 'front-proxy-ca', 'packet-capture-local-front-proxy-ca'),
  ]);
  const sa = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const serviceAccount = { privateKey: join(dir, 'sa.key'), publicKey: join(dir, 'sa.pub') };
  const [serving, admin, frontProxyClient] = await Promise.all([
    issue(ca, dir, 'apiserver', '/CN=kube-apiserver', [
      // 10.96.0.1: the `kubernetes` Service, which in-cluster clients of a real node dial
      `subjectAltName=IP:127.0.0.1,IP:${KUBERNETES_SERVICE_IP},DNS:localhost,DNS:kubernetes.default.svc`,
      'extendedKeyUsage=serverAuth',
    ]),
    issueClientCert({ ca, dir }, { user: 'packet-capture-admin', groups: ['system:masters'] }),
    issue(frontProxyCa, dir, FRONT_PROXY_CLIENT, `/CN=${FRONT_PROXY_CLIENT}`, ['extendedKeyUsage=clientAuth']),
    writeFile(serviceAccount.privateKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 }),
    writeFile(serviceAccount.publicKey, sa.publicKey.export({ type: 'spki', format: 'pem' })),
  ]);
  return { dir, ca, serving, admin, serviceAccount, frontProxyCa, frontProxyClient };
}

export const readBase64 = async (path: string): Promise<string> => (await readFile(path)).toString('base64');
