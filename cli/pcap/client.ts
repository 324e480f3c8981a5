// The plugin's view of a cluster: kubeconfig and context as kubectl picks them, and the
// captures, events and capture files (the packet-capture API) it reads, with errors that
// say what to do.

import type { KubeConfig } from '@kubernetes/client-node';
import { API_GROUP, APISERVICE_NAME } from '../../apiserver/api.ts';
import { GROUP, PLURAL, VERSION, type PacketCapture } from '../../crds/packetcapture.ts';
import { loadKubeConfig } from '../../kube/client.ts';
import { isNotFound, KubeError, kubeRequest } from '../../kube/http.ts';

/** A failure the user can act on: printed as its message alone, exit code 1. */
export class PcapError extends Error {
  override name = 'PcapError';
}

export interface GlobalOptions {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  systemNamespace: string;
}

export interface Target {
  kc: KubeConfig;
  namespace: string;
  systemNamespace: string;
}

/** --kubeconfig, then in-cluster, then KUBECONFIG / ~/.kube/config; --context switches; the namespace as kubectl defaults it. */
export function connect(opts: GlobalOptions): Target {
  let kc: KubeConfig;
  try {
    kc = loadKubeConfig(opts.kubeconfig);
  } catch (err) {
    throw new PcapError((err as Error).message);
  }
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) {
      throw new PcapError(`context "${opts.context}" is not in the kubeconfig (it has: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    }
    kc.setCurrentContext(opts.context);
  }
  const namespace = opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, namespace, systemNamespace: opts.systemNamespace };
}

export const capturesPath = (namespace?: string): string =>
  `/apis/${GROUP}/${VERSION}${namespace ? `/namespaces/${namespace}` : ''}/${PLURAL}`;

/** Transport failures and API errors, reworded where the API server's own words do not help. */
function explain(err: unknown, what: string): Error {
  if (err instanceof PcapError) return err;
  if (err instanceof KubeError) {
    if (err.statusCode === 401) return new PcapError(`${what}: the API server does not accept these credentials (401)`);
    if (err.statusCode === 403) return new PcapError(`${what}: forbidden: ${err.message}`);
    if (err.statusCode === 404 && /the server could not find the requested resource/i.test(err.message)) {
      return new PcapError(`${what}: this cluster does not serve ${PLURAL}.${GROUP}; install the CRD (kubectl apply -f dist/packet-capture-crds.k8s.yaml)`);
    }
    return new PcapError(`${what}: ${err.message}`);
  }
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return new PcapError(`${what}: cannot reach the API server (${cause?.code ?? cause?.message ?? (err as Error).message})`);
}

export async function getCapture(t: Target, name: string): Promise<PacketCapture> {
  try {
    return await kubeRequest<PacketCapture>(t.kc, 'GET', `${capturesPath(t.namespace)}/${name}`);
  } catch (err) {
    if (isNotFound(err) && !/could not find the requested resource/i.test((err as Error).message)) {
      throw new PcapError(`packetcapture "${name}" not found in namespace "${t.namespace}"`);
    }
    throw explain(err, `reading packetcapture ${t.namespace}/${name}`);
  }
}

export async function listCaptures(t: Target, allNamespaces: boolean): Promise<PacketCapture[]> {
  try {
    const list = await kubeRequest<{ items: PacketCapture[] }>(t.kc, 'GET', capturesPath(allNamespaces ? undefined : t.namespace));
    return list.items;
  } catch (err) {
    throw explain(err, 'listing packetcaptures');
  }
}

export interface CoreEvent {
  type?: string;
  reason?: string;
  message?: string;
  count?: number;
  lastTimestamp?: string;
  eventTime?: string;
  firstTimestamp?: string;
  metadata: { creationTimestamp?: string };
  source?: { component?: string; host?: string };
  reportingComponent?: string;
}

/** Events about this capture instance (by UID), oldest first. */
export async function captureEvents(t: Target, capture: PacketCapture): Promise<CoreEvent[]> {
  try {
    const list = await kubeRequest<{ items: CoreEvent[] }>(t.kc, 'GET', `/api/v1/namespaces/${capture.metadata.namespace}/events`, {
      query: { fieldSelector: `involvedObject.uid=${capture.metadata.uid}` },
    });
    return list.items;
  } catch (err) {
    throw explain(err, 'listing events');
  }
}

/** A GET of the packet-capture API (apiserver/), with its errors said in the plugin's words. */
export async function apiJson<T>(t: Target, path: string): Promise<T> {
  try {
    return await kubeRequest<T>(t.kc, 'GET', path);
  } catch (err) {
    throw apiError(err, `reading ${path}`);
  }
}

export function apiError(err: unknown, what: string): Error {
  if (err instanceof KubeError && err.statusCode === 404 && /the server could not find the requested resource/i.test(err.message)) {
    return new PcapError(`${what}: this cluster does not serve ${API_GROUP}, the packet-capture API; install dist/ (its APIService ${APISERVICE_NAME})`);
  }
  if (err instanceof KubeError && err.statusCode === 503) {
    return new PcapError(`${what}: the packet-capture API (APIService ${APISERVICE_NAME}) is not available: ${err.message}`);
  }
  return explain(err, what);
}
