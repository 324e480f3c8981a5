import type { KubeObject } from '../kube/watch.ts';

/** The coordination.k8s.io/v1 Lease fields the controller reads. */
export interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/** Label every agent presence Lease carries; the controller watches only those. */
export const AGENT_LEASE_LABEL = 'packetcapture.dev/agent';

/**
 * Nodes whose agent renewed its presence Lease within the lease duration. A node missing
 * here has no agent that could start or stop a capture (NoNodeAgent, AgentGone).
 */
export function liveAgentNodes(leases: Iterable<Lease>, now: number): Set<string> {
  const nodes = new Set<string>();
  for (const lease of leases) {
    const { holderIdentity, renewTime, leaseDurationSeconds } = lease.spec ?? {};
    if (!holderIdentity || !renewTime || !leaseDurationSeconds) continue;
    if (Date.parse(renewTime) + leaseDurationSeconds * 1000 > now) nodes.add(holderIdentity);
  }
  return nodes;
}

/** When the earliest live agent lease runs out: the next time liveAgentNodes can change by itself. */
export function nextAgentExpiry(leases: Iterable<Lease>, now: number): number | undefined {
  let next: number | undefined;
  for (const lease of leases) {
    const { renewTime, leaseDurationSeconds } = lease.spec ?? {};
    if (!renewTime || !leaseDurationSeconds) continue;
    const at = Date.parse(renewTime) + leaseDurationSeconds * 1000;
    if (at > now && (next === undefined || at < next)) next = at;
  }
  return next;
}
