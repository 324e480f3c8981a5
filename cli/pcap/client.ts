// The plugin's view of a cluster: kubeconfig and context as kubectl picks them, and the
// captures, events and agent Leases it reads, with errors that say what to do.

import type { KubeConfig } from '@kubernetes/client-node';
import { FILES_PROXY_ANNOTATION, agentLeaseName } from '../../agent/lease.ts';
import { AGENT_LEASE_LABEL, type Lease } from '../../controller/agents.ts';
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

export interface AgentEndpoint {
  node: string;
  /** API-server path prefix that proxies to the agent's ops server */
  proxy: string;
  /** when its Lease runs out; in the past means the agent stopped renewing it */
  expires?: Date;
}

/** How to reach the agent of `node`: the files-proxy annotation on its presence Lease. */
export async function agentEndpoint(t: Target, node: string): Promise<AgentEndpoint> {
  const name = agentLeaseName(node);
  let lease: Lease & { metadata: { annotations?: Record<string, string> } };
  try {
    lease = await kubeRequest(t.kc, 'GET', `/apis/coordination.k8s.io/v1/namespaces/${t.systemNamespace}/leases/${name}`);
  } catch (err) {
    if (isNotFound(err)) {
      throw new PcapError(
        `agent not reachable: node ${node} has no agent (no Lease ${t.systemNamespace}/${name}); is the agent DaemonSet running there? ` +
          `(--system-namespace if the agents run elsewhere)`,
      );
    }
    throw explain(err, `reading the agent Lease of node ${node}`);
  }
  const proxy = lease.metadata.annotations?.[FILES_PROXY_ANNOTATION];
  if (!proxy) throw new PcapError(`agent not reachable: the agent of node ${node} does not publish ${FILES_PROXY_ANNOTATION} on its Lease (an older agent?)`);
  const { renewTime, leaseDurationSeconds } = lease.spec ?? {};
  const expires = renewTime && leaseDurationSeconds ? new Date(Date.parse(renewTime) + leaseDurationSeconds * 1000) : undefined;
  return { node, proxy: proxy.replace(/\/$/, ''), expires };
}

/** The nodes whose agent keeps a presence Lease in the system namespace. */
export async function agentNodes(t: Target): Promise<string[]> {
  try {
    const list = await kubeRequest<{ items: Lease[] }>(t.kc, 'GET', `/apis/coordination.k8s.io/v1/namespaces/${t.systemNamespace}/leases`, {
      query: { labelSelector: `${AGENT_LEASE_LABEL}=true` },
    });
    return list.items.flatMap((l) => (l.spec?.holderIdentity ? [l.spec.holderIdentity] : [])).sort();
  } catch (err) {
    throw explain(err, 'listing the agent Leases');
  }
}

/** A GET through the agent's proxy path, with agent-unreachable errors said as such. */
export async function agentJson<T>(t: Target, agent: AgentEndpoint, path: string): Promise<T> {
  try {
    return await kubeRequest<T>(t.kc, 'GET', `${agent.proxy}${path}`);
  } catch (err) {
    throw agentError(err, agent);
  }
}

export function agentError(err: unknown, agent: AgentEndpoint): Error {
  if (err instanceof KubeError && [502, 503, 504].includes(err.statusCode)) {
    const stale = agent.expires && agent.expires.getTime() < Date.now() ? `; its Lease expired at ${agent.expires.toISOString()}` : '';
    return new PcapError(`agent not reachable: the agent of node ${agent.node} does not answer through the API server (${agent.proxy})${stale}: ${err.message}`);
  }
  return explain(err, `asking the agent of node ${agent.node}`);
}
