// The node agents this API reads from: each publishes the URL and the certificate of its
// data port on its presence Lease (agent/lease.ts, DATA_URL_ANNOTATION, DATA_CERT_ANNOTATION)
// in the system namespace. Every request is mutual TLS: the API pins the agent's published
// certificate and presents its own data client certificate (data-ca.ts). A listing asks
// every live agent and merges their answers; a file is served by the agent that has it.

import type { IncomingMessage } from 'node:http';
import { request } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { AGENT_LEASE_LABEL, liveAgentNodes, type Lease } from '../controller/agents.ts';
import { DATA_CERT_ANNOTATION, DATA_URL_ANNOTATION, type PodListing } from '../agent/serve.ts';
import { pemCertificates, type KeyPair } from '../kube/certificates.ts';
import { kubeRequest } from '../kube/http.ts';

export interface Agent {
  node: string;
  url: string;
  /** the data port's certificates (PEM), the only ones trusted for this agent */
  cert: string;
}

/** The API component's client certificate, current at each call (it rotates). */
export type ClientCredentials = () => KeyPair;

export interface NodeListing {
  node: string;
  pods: PodListing[];
}

export interface CaptureListing {
  nodes: NodeListing[];
  /** agents that did not answer, one line each: the listing is then incomplete, and says so */
  unreachable: string[];
}

/** Live agents that publish a data URL and certificate, from their Leases (pure). */
export function agentsFrom(leases: Iterable<Lease & { metadata: { annotations?: Record<string, string> } }>, now: number): Agent[] {
  const all = [...leases];
  const live = liveAgentNodes(all, now);
  return all
    .flatMap((l) => {
      const node = l.spec?.holderIdentity;
      const url = l.metadata.annotations?.[DATA_URL_ANNOTATION];
      const cert = l.metadata.annotations?.[DATA_CERT_ANNOTATION];
      return node && url && cert && live.has(node) ? [{ node, url: url.replace(/\/$/, ''), cert }] : [];
    })
    .sort((a, b) => a.node.localeCompare(b.node));
}

/** The agents of the system namespace; of every namespace when it is undefined (a local cluster shared by tests). */
export async function listAgents(kc: KubeConfig, systemNamespace: string | undefined): Promise<Agent[]> {
  const where = systemNamespace ? `/namespaces/${systemNamespace}` : '';
  const list = await kubeRequest<{ items: Lease[] }>(kc, 'GET', `/apis/coordination.k8s.io/v1${where}/leases`, {
    query: { labelSelector: `${AGENT_LEASE_LABEL}=true` },
  });
  return agentsFrom(list.items, Date.now());
}

const AGENT_TIMEOUT_MS = 10_000;

/** One GET to an agent; the answer streams (its body is not read here). A live stream has no idle timeout (timeoutMs 0). */
export function agentGet(
  agent: Agent,
  path: string,
  client: ClientCredentials,
  { headers = {}, signal, timeoutMs = AGENT_TIMEOUT_MS }: { headers?: Record<string, string>; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const options = {
      headers,
      signal,
      timeout: timeoutMs,
      ...client(),
      ca: pemCertificates(agent.cert),
      // the pin is the identity: only this agent holds the key of the certificate it published
      checkServerIdentity: () => undefined,
      // connections are not pooled across certificates: each request states its own trust
      agent: false as const,
    };
    const req = request(`${agent.url}${path}`, options, resolve);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end();
  });
}

async function agentJson<T>(agent: Agent, path: string, client: ClientCredentials): Promise<T> {
  const res = await agentGet(agent, path, client);
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (res.statusCode !== 200) throw new Error(`${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text) as T;
}

const filesPath = (...segments: string[]): string => `/files/${segments.map(encodeURIComponent).join('/')}`;

/** What every live agent holds of this capture; nodes with nothing are left out. */
export async function listCapture(agents: Agent[], client: ClientCredentials, namespace: string, name: string): Promise<CaptureListing> {
  const answers = await Promise.allSettled(agents.map((a) => agentJson<{ pods: PodListing[] }>(a, filesPath(namespace, name), client)));
  const nodes: NodeListing[] = [];
  const unreachable: string[] = [];
  answers.forEach((answer, i) => {
    const { node } = agents[i]!;
    if (answer.status === 'rejected') unreachable.push(`node ${node}: ${(answer.reason as Error).message}`);
    else if (answer.value.pods.length > 0) nodes.push({ node, pods: answer.value.pods });
  });
  return { nodes, unreachable };
}

/** The agent whose node holds this session's file, if any answers that it does. */
export async function agentWithFile(agents: Agent[], client: ClientCredentials, namespace: string, name: string, podUID: string, session: string, file: string): Promise<Agent | undefined> {
  const answers = await Promise.allSettled(
    agents.map((a) => agentJson<{ files: { name: string }[] }>(a, filesPath(namespace, name, podUID, session), client)),
  );
  const i = answers.findIndex((a) => a.status === 'fulfilled' && a.value.files.some((f) => f.name === file));
  return i < 0 ? undefined : agents[i];
}

export const agentFilePath = (namespace: string, name: string, podUID: string, session: string, file: string): string =>
  filesPath(namespace, name, podUID, session, file);
