/** kstatus' verdict on an object, as Flux health checks and `kubectl wait`-style tools compute it. */
export type KstatusStatus = 'InProgress' | 'Failed' | 'Current' | 'Terminating';

interface Observed {
  metadata: { generation?: number; deletionTimestamp?: string };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

/**
 * The generic rules of sigs.k8s.io/cli-utils/pkg/kstatus for a custom resource, in its
 * order: a deletion is Terminating; an unobserved generation or Reconciling=True is
 * InProgress; Stalled=True is Failed; anything else is Current.
 */
export function kstatus(obj: Observed): { status: KstatusStatus; message: string } {
  if (obj.metadata.deletionTimestamp) return { status: 'Terminating', message: 'resource scheduled for deletion' };
  const observed = obj.status?.observedGeneration;
  const generation = obj.metadata.generation;
  if (observed !== undefined && generation !== undefined && observed !== generation) {
    return { status: 'InProgress', message: `generation is ${generation}, but latest observed generation is ${observed}` };
  }
  const condition = (type: string) => obj.status?.conditions?.find((c) => c.type === type && c.status === 'True');
  const reconciling = condition('Reconciling');
  if (reconciling) return { status: 'InProgress', message: reconciling.message ?? reconciling.reason ?? 'Reconciling' };
  const stalled = condition('Stalled');
  if (stalled) return { status: 'Failed', message: stalled.message ?? stalled.reason ?? 'Stalled' };
  return { status: 'Current', message: 'resource is current' };
}
