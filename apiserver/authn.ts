// Who is asking: the Kubernetes API server authenticates the user and forwards the request
// over a client certificate of its front-proxy CA, with the identity in headers. Only a
// connection whose certificate that CA signed (and whose CN is an allowed name) may set
// them; anything else is unauthenticated. The CA, the allowed names and the header names
// come from kube-system's extension-apiserver-authentication ConfigMap, as for every
// aggregated API server (metrics-server, KubeVirt).

import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';

export const AUTH_CONFIGMAP = { namespace: 'kube-system', name: 'extension-apiserver-authentication' } as const;

export interface RequestHeaderConfig {
  /** PEM bundle of the front-proxy CA (requestheader-client-ca-file) */
  ca: string;
  /** CNs a front proxy may have; empty means any certificate of the CA */
  allowedNames: string[];
  usernameHeaders: string[];
  groupHeaders: string[];
  extraHeaderPrefixes: string[];
}

export interface UserInfo {
  user: string;
  groups: string[];
  extra: Record<string, string[]>;
}

const jsonList = (text: string | undefined): string[] => {
  if (!text) return [];
  const parsed = JSON.parse(text) as unknown;
  return Array.isArray(parsed) ? parsed.filter((v): v is string => typeof v === 'string') : [];
};

/** The ConfigMap's data; throws when the API server is not configured for aggregation. */
export function requestHeaderConfig(data: Record<string, string> | undefined): RequestHeaderConfig {
  const ca = data?.['requestheader-client-ca-file'];
  if (!ca) {
    throw new Error(
      `${AUTH_CONFIGMAP.namespace}/${AUTH_CONFIGMAP.name} has no requestheader-client-ca-file: ` +
        'the API server needs --requestheader-client-ca-file (and --proxy-client-cert-file) to aggregate APIs',
    );
  }
  return {
    ca,
    allowedNames: jsonList(data['requestheader-allowed-names']),
    usernameHeaders: jsonList(data['requestheader-username-headers']),
    groupHeaders: jsonList(data['requestheader-group-headers']),
    extraHeaderPrefixes: jsonList(data['requestheader-extra-headers-prefix']),
  };
}

/** Each header line apart: `headers` would join repeated X-Remote-Group lines with commas. */
type Headers = Pick<IncomingMessage, 'headersDistinct'>;
const values = (req: Headers, header: string): string[] => req.headersDistinct[header.toLowerCase()] ?? [];

/**
 * The identity of a request that came through the front proxy, or undefined. `peer` is
 * what the TLS layer verified: the certificate's CN, and whether the CA signed it.
 */
export function identityFrom(
  req: Headers,
  peer: { authorized: boolean; commonName?: string },
  config: RequestHeaderConfig,
): UserInfo | undefined {
  if (!peer.authorized) return undefined;
  if (config.allowedNames.length > 0 && !config.allowedNames.includes(peer.commonName ?? '')) return undefined;
  const user = config.usernameHeaders.map((h) => values(req, h)[0]).find((u) => !!u);
  if (!user) return undefined;
  const groups = config.groupHeaders.flatMap((h) => values(req, h));
  const extra: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(req.headersDistinct)) {
    const prefix = config.extraHeaderPrefixes.find((p) => name.startsWith(p.toLowerCase()));
    if (!prefix || value === undefined) continue;
    // extra keys travel percent-encoded in the header name
    const key = decodeURIComponent(name.slice(prefix.length));
    extra[key] = [...(extra[key] ?? []), ...value];
  }
  return { user, groups, extra };
}

/** What the TLS layer knows about the client of this request. */
export function peerOf(req: IncomingMessage): { authorized: boolean; commonName?: string } {
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== 'function') return { authorized: false };
  const cert = socket.getPeerCertificate();
  const cn = cert?.subject?.CN;
  return { authorized: socket.authorized, commonName: Array.isArray(cn) ? cn[0] : cn };
}
