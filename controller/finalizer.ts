import { FINALIZER, REASONS, type PacketCapture } from '../crds/packetcapture.ts';

export interface FinalizerOptions {
  /** how long a deleted capture waits for sessions on nodes whose agent is gone */
  agentGoneGraceMs: number;
  /** the longest a deleted capture waits for any agent, so a namespace deletion never hangs */
  maxWaitMs: number;
}

export const DEFAULT_FINALIZER_OPTIONS: FinalizerOptions = { agentGoneGraceMs: 30_000, maxWaitMs: 300_000 };

export type FinalizerDecision =
  | { action: 'none' }
  | { action: 'add' }
  | { action: 'wait'; reason: string; message: string; nextDecisionAt: number }
  | { action: 'release'; reason: string; message: string };

const nodesList = (nodes: string[]) => nodes.join(', ');

/**
 * What to do with our finalizer. A live capture gets it; a deleted one keeps it until no
 * agent reports a running session of it, so deleting the resource (a GitOps prune
 * included) stops tcpdump everywhere before the object disappears. Sessions on a node
 * whose agent is gone cannot be confirmed stopped; those are waited for a bounded time.
 */
export function decideFinalizer(
  capture: PacketCapture,
  agentNodes: ReadonlySet<string>,
  now: number,
  opts: FinalizerOptions = DEFAULT_FINALIZER_OPTIONS,
): FinalizerDecision {
  const has = capture.metadata.finalizers?.includes(FINALIZER) ?? false;
  const { deletionTimestamp } = capture.metadata;
  if (!deletionTimestamp) return has ? { action: 'none' } : { action: 'add' };
  if (!has) return { action: 'none' };

  const running = (capture.status?.sessions ?? []).filter((s) => s.state === 'Running');
  if (running.length === 0) {
    return { action: 'release', reason: REASONS.CaptureDeleting, message: 'no session of this capture is running' };
  }
  const nodes = [...new Set(running.map((s) => s.nodeName))].sort();
  const gone = nodes.filter((n) => !agentNodes.has(n));
  const alive = nodes.filter((n) => agentNodes.has(n));
  const deletedAt = Date.parse(deletionTimestamp);
  const goneDeadline = deletedAt + opts.agentGoneGraceMs;
  const maxDeadline = deletedAt + opts.maxWaitMs;

  if (alive.length === 0) {
    const message = `the agent on ${nodesList(gone)} is gone (no fresh presence Lease) and cannot confirm its ${running.length} session(s) stopped`;
    if (now >= goneDeadline) return { action: 'release', reason: REASONS.AgentGone, message: `${message}; released the capture anyway` };
    return {
      action: 'wait',
      reason: REASONS.AgentGone,
      message: `${message}; releasing the capture at ${new Date(goneDeadline).toISOString()} unless it comes back`,
      nextDecisionAt: goneDeadline,
    };
  }
  if (now >= maxDeadline) {
    return {
      action: 'release',
      reason: REASONS.CaptureDeleting,
      message: `the agent on ${nodesList(alive)} did not report its sessions stopped within ${opts.maxWaitMs / 1000}s; released the capture anyway`,
    };
  }
  return {
    action: 'wait',
    reason: REASONS.CaptureDeleting,
    message:
      `waiting for the agent on ${nodesList(alive)} to stop ${running.length} running session(s)` +
      (gone.length > 0 ? `; the agent on ${nodesList(gone)} is gone` : ''),
    nextDecisionAt: maxDeadline,
  };
}

/** metadata.finalizers with ours added or removed, everyone else's kept in order. */
export function withFinalizer(finalizers: string[] | undefined, present: boolean): string[] {
  const others = (finalizers ?? []).filter((f) => f !== FINALIZER);
  return present ? [...others, FINALIZER] : others;
}
