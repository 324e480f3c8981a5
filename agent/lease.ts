// The agent's presence: a coordination.k8s.io/v1 Lease `agent-<node>` in the system
// namespace, renewed every 10 s and valid for 30. The controller reads a node without a
// fresh lease as having no agent (NoNodeAgent), so it never waits for captures there.

import type { KubeConfig } from '@kubernetes/client-node';
import { AGENT_LEASE_LABEL } from '../controller/agents.ts';
import { agentFieldManager } from '../crds/packetcapture.ts';
import { APPLY_PATCH, kubeRequest } from '../kube/http.ts';
import { leaseBody, leasePath, microTime, renewEvery } from '../kube/lease.ts';
import type { Logger } from '../kube/log.ts';

const LEASE_DURATION_SECONDS = 30;
const LEASE_RENEW_MS = 10_000;

export const agentLeaseName = (node: string): string => `agent-${node}`;

export interface AgentLease {
  /** settles after the first renewal attempt */
  first: Promise<void>;
  /** renews now (with the annotations as they are now); false if that failed */
  renewNow(): Promise<boolean>;
  stop(): void;
}

export function startAgentLease(opts: {
  kubeConfig: KubeConfig;
  node: string;
  namespace: string;
  log: Logger;
  renewMs?: number;
  /** read at every renewal */
  annotations?: () => Record<string, string>;
}): AgentLease {
  const name = agentLeaseName(opts.node);
  const where = { lease: name, namespace: opts.namespace };
  const acquireTime = microTime(Date.now());
  const renewMs = opts.renewMs ?? LEASE_RENEW_MS;
  let failing = false;

  const renew = async () => {
    try {
      // server-side apply creates the Lease when it is missing and renews it otherwise
      await kubeRequest(opts.kubeConfig, 'PATCH', leasePath(opts.namespace, name), {
        contentType: APPLY_PATCH,
        query: { fieldManager: agentFieldManager(opts.node), force: true },
        // a renewal that hangs must not hold up the next one past the lease's 30 s
        timeoutMs: renewMs,
        body: leaseBody(
          { name, namespace: opts.namespace, labels: { [AGENT_LEASE_LABEL]: 'true' }, annotations: opts.annotations?.() },
          { holderIdentity: opts.node, leaseDurationSeconds: LEASE_DURATION_SECONDS, acquireTime, renewTime: microTime(Date.now()) },
        ),
      });
      if (failing) opts.log.info(where, 'agent lease renewed again');
      failing = false;
      return true;
    } catch (err) {
      if (!failing) opts.log.warn({ ...where, err: String(err) }, 'cannot renew the agent lease; the controller will see no agent on this node');
      failing = true;
      return false;
    }
  };
  const renewal = renewEvery(renewMs, renew);
  return { first: renewal.first, renewNow: renew, stop: () => void renewal.stop() };
}
