// The node agents this API reads from: each publishes the URL of its file server on its
// presence Lease (agent/lease.ts, DATA_URL_ANNOTATION) in the system namespace. A listing
// asks every live agent and merges their answers; a file is served by the agent that has it.

import { request, type IncomingMessage } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { AGENT_LEASE_LABEL, liveAgentNodes, type Lease } from '../controller/agents.ts';
import { DATA_URL_ANNOTATION, type PodListing } from '../agent/serve.ts';
import { kubeRequest } from '../kube/http.ts';

export interface Agent {
  node: string;
  url: string;
}

export interface NodeListing {
  node: string;
  pods: PodListing[];
}

export interface CaptureListing {
  nodes: NodeListing[];
  /** agents that did not answer, one line each: the listing is then incomplete, and says so */
  unreachable: string[];
}

/** Live agents that publish a data URL, from their Leases (pure). */
export function agentsFrom(leases: Iterable<Lease & { metadata: { annotations?: Record<string, string> } }>, now: number): Agent[] {
  const all = [...leases];
  const live = liveAgentNodes(all, now);
  return all
    .flatMap((l) => {
      const node = l.spec?.holderIdentity;
      const url = l.metadata.annotations?.[DATA_URL_ANNOTATION];
      return node && url && live.has(node) ? [{ node, url: url.replace(/\/$/, '') }] : [];
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
  headers: Record<string, string> = {},
  signal?: AbortSignal,
  { timeoutMs = AGENT_TIMEOUT_MS } = {},
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(`${agent.url}${path}`, { headers, signal, timeout: timeoutMs }, resolve);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end();
  });
}

async function agentJson<T>(agent: Agent, path: string): Promise<T> {
  const res = await agentGet(agent, path);
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (res.statusCode !== 200) throw new Error(`${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text) as T;
}

const filesPath = (...segments: string[]): string => `/files/${segments.map(encodeURIComponent).join('/')}`;

/** What every live agent holds of this capture; nodes with nothing are left out. */
export async function listCapture(agents: Agent[], namespace: string, name: string): Promise<CaptureListing> {
  const answers = await Promise.allSettled(agents.map((a) => agentJson<{ pods: PodListing[] }>(a, filesPath(namespace, name))));
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
export async function agentWithFile(agents: Agent[], namespace: string, name: string, podUID: string, session: string, file: string): Promise<Agent | undefined> {
  const answers = await Promise.allSettled(
    agents.map((a) => agentJson<{ files: { name: string }[] }>(a, filesPath(namespace, name, podUID, session))),
  );
  const i = answers.findIndex((a) => a.status === 'fulfilled' && a.value.files.some((f) => f.name === file));
  return i < 0 ? undefined : agents[i];
}

export const agentFilePath = (namespace: string, name: string, podUID: string, session: string, file: string): string =>
  filesPath(namespace, name, podUID, session, file);
