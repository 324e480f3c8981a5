// What the controller's integration tests play themselves against the real API server:
// the kubelet (pods bound to a node, reported Running with an IP, deleted with grace 0)
// and the node agents (a presence Lease, and status.sessions applied with the agent's
// own field manager). No mock anywhere: every request goes to kube-apiserver.

import type { KubeConfig } from '@kubernetes/client-node';
import { Writable } from 'node:stream';
import pino from 'pino';
import { vi } from 'vitest';
import {
  agentFieldManager,
  API_VERSION,
  GROUP,
  KIND,
  PLURAL,
  VERSION,
  type PacketCapture,
  type PacketCaptureSpec,
  type SessionStatus,
} from '../../crds/packetcapture.ts';
import { AGENT_LEASE_LABEL } from '../../controller/agents.ts';
import { microTime } from '../../kube/lease.ts';
import { APPLY_PATCH, isNotFound, kubeRequest, MERGE_PATCH } from '../../kube/http.ts';
import type { Logger } from '../../kube/log.ts';
import { cluster, installCrds } from '../support/cluster.ts';

export const WAIT = { timeout: 30_000, interval: 100 };

export interface Pod {
  metadata: { name: string; namespace: string; uid: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
}

export interface CoreEvent {
  reason: string;
  message: string;
  type: string;
  involvedObject: { uid: string; name: string };
}

/** A logger that keeps its lines for assertions and prints nothing unless LOG_LEVEL asks. */
export function memoryLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      if (process.env.LOG_LEVEL) process.stderr.write(chunk);
      done();
    },
  });
  return { log: pino({ level: 'debug', base: { component: 'controller' } }, sink), lines };
}

export class Fixture {
  constructor(
    readonly kc: KubeConfig,
    readonly namespace: string,
  ) {}

  /** A test file's fixture on the shared cluster: the CRDs installed, and a Node object for each of `nodes`. */
  static async withNodes(namespace: string, nodes: string[]): Promise<Fixture> {
    const { kubeConfig } = cluster();
    await installCrds(kubeConfig);
    const f = new Fixture(kubeConfig, namespace);
    for (const node of nodes) await f.createNode(node);
    return f;
  }

  private podPath = (name: string) => `/api/v1/namespaces/${this.namespace}/pods/${name}`;
  capturePath = (name: string) => `/apis/${GROUP}/${VERSION}/namespaces/${this.namespace}/${PLURAL}/${name}`;

  /** A Node object, so the pod garbage collector does not delete pods bound to it. */
  async createNode(name: string): Promise<void> {
    await kubeRequest(this.kc, 'POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name } } });
  }

  async deleteNode(name: string): Promise<void> {
    await kubeRequest(this.kc, 'DELETE', `/api/v1/nodes/${name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** A pod bound to `node` (no scheduler involved), not yet running. */
  async createPod(name: string, opts: { node?: string; labels?: Record<string, string> } = {}): Promise<Pod> {
    return kubeRequest<Pod>(this.kc, 'POST', `/api/v1/namespaces/${this.namespace}/pods`, {
      body: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, labels: opts.labels },
        spec: {
          ...(opts.node ? { nodeName: opts.node } : {}),
          containers: [{ name: 'app', image: 'registry.invalid/app:1' }],
          terminationGracePeriodSeconds: 30,
        },
      },
    });
  }

  /** What the kubelet reports once the containers run. Fails if `pod` was already replaced. */
  async runPod(pod: Pod, ip: string): Promise<Pod> {
    return kubeRequest<Pod>(this.kc, 'PATCH', `${this.podPath(pod.metadata.name)}/status`, {
      contentType: MERGE_PATCH,
      body: {
        metadata: { uid: pod.metadata.uid },
        status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
      },
    });
  }

  async startPod(name: string, ip: string, opts: { node?: string; labels?: Record<string, string> } = {}): Promise<Pod> {
    return this.runPod(await this.createPod(name, { node: opts.node, labels: opts.labels }), ip);
  }

  async labelPod(name: string, labels: Record<string, string | null>): Promise<void> {
    await kubeRequest(this.kc, 'PATCH', this.podPath(name), { contentType: MERGE_PATCH, body: { metadata: { labels } } });
  }

  /**
   * Deletes a pod. With a grace period the pod lingers as terminating (no kubelet will
   * finish it); grace 0 removes it at once, as a kubelet confirming the stop would.
   */
  async deletePod(name: string, gracePeriodSeconds = 0): Promise<void> {
    await kubeRequest(this.kc, 'DELETE', this.podPath(name), { query: { gracePeriodSeconds } }).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  async waitPodGone(name: string): Promise<void> {
    await vi.waitFor(async () => {
      try {
        await kubeRequest(this.kc, 'GET', this.podPath(name));
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      throw new Error(`pod ${name} still exists`);
    }, WAIT);
  }

  async createCapture(name: string, spec: PacketCaptureSpec): Promise<PacketCapture> {
    return kubeRequest<PacketCapture>(this.kc, 'POST', `/apis/${GROUP}/${VERSION}/namespaces/${this.namespace}/${PLURAL}`, {
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name }, spec },
    });
  }

  async getCapture(name: string): Promise<PacketCapture> {
    return kubeRequest<PacketCapture>(this.kc, 'GET', this.capturePath(name));
  }

  async patchSpec(name: string, spec: Partial<PacketCaptureSpec>): Promise<PacketCapture> {
    return kubeRequest<PacketCapture>(this.kc, 'PATCH', this.capturePath(name), { contentType: MERGE_PATCH, body: { spec } });
  }

  async deleteCapture(name: string): Promise<void> {
    await kubeRequest(this.kc, 'DELETE', this.capturePath(name)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** Until `check` passes on the capture as the API server shows it; returns that capture. */
  async waitCapture(name: string, check: (c: PacketCapture) => void): Promise<PacketCapture> {
    return vi.waitFor(async () => {
      const c = await this.getCapture(name);
      check(c);
      return c;
    }, WAIT);
  }

  async waitCaptureGone(name: string): Promise<void> {
    await vi.waitFor(async () => {
      try {
        await this.getCapture(name);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      throw new Error(`capture ${name} still exists`);
    }, WAIT);
  }

  /** status.sessions of one node, applied as that node's agent does (its own field manager). */
  async reportSessions(captureName: string, node: string, sessions: SessionStatus[]): Promise<void> {
    const c = await this.getCapture(captureName);
    await kubeRequest(this.kc, 'PATCH', `${this.capturePath(captureName)}/status`, {
      contentType: APPLY_PATCH,
      query: { fieldManager: agentFieldManager(node), force: true },
      body: {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: captureName, namespace: this.namespace, uid: c.metadata.uid },
        status: { sessions },
      },
    });
  }

  /** An agent's presence Lease, renewed now (or at `renewTime`, to make it look stale). */
  async agentLease(systemNamespace: string, node: string, renewTime = Date.now()): Promise<void> {
    await kubeRequest(this.kc, 'PATCH', `/apis/coordination.k8s.io/v1/namespaces/${systemNamespace}/leases/agent-${node}`, {
      contentType: APPLY_PATCH,
      query: { fieldManager: agentFieldManager(node), force: true },
      body: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: `agent-${node}`, namespace: systemNamespace, labels: { [AGENT_LEASE_LABEL]: 'true' } },
        spec: { holderIdentity: node, leaseDurationSeconds: 30, renewTime: microTime(renewTime) },
      },
    });
  }

  /** Renews `node`'s presence Lease as its agent would, until the returned function is called. */
  async keepAgentAlive(systemNamespace: string, node: string): Promise<() => void> {
    await this.agentLease(systemNamespace, node);
    const timer = setInterval(() => void this.agentLease(systemNamespace, node).catch(() => undefined), 5_000);
    return () => clearInterval(timer);
  }

  async events(captureName: string): Promise<CoreEvent[]> {
    const list = await kubeRequest<{ items: CoreEvent[] }>(this.kc, 'GET', `/api/v1/namespaces/${this.namespace}/events`, {
      query: { fieldSelector: `involvedObject.name=${captureName}` },
    });
    return list.items;
  }

  async waitEvent(captureName: string, reason: string, match: (e: CoreEvent) => boolean = () => true): Promise<CoreEvent> {
    return vi.waitFor(async () => {
      const found = (await this.events(captureName)).find((e) => e.reason === reason && match(e));
      if (!found) throw new Error(`no ${reason} event on ${captureName} yet`);
      return found;
    }, WAIT);
  }
}

export const condition = (c: PacketCapture, type: string) => c.status?.conditions?.find((x) => x.type === type);

/** A running session as an agent reports it. */
export function runningSession(podName: string, podUID: string, nodeName: string, generation = 1, extra: Partial<SessionStatus> = {}): SessionStatus {
  return {
    id: `${podUID.slice(0, 8)}-g${generation}`,
    podName,
    podUID,
    nodeName,
    generation,
    state: 'Running',
    startTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    ...extra,
  };
}
