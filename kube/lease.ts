// The coordination.k8s.io/v1 Lease as this project writes it: the controller's leader
// election (kube/leader.ts) and every agent's presence (agent/lease.ts). One wire format and
// one renewal loop, so the two cannot drift apart in how they spell a time or pace a renewal.

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: LeaseSpec;
}

/** The Leases of a namespace, or with `name` the one Lease. */
export const leasePath = (namespace: string, name?: string): string =>
  `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases${name === undefined ? '' : `/${name}`}`;

export const leaseBody = (metadata: Lease['metadata'], spec: LeaseSpec): Lease => ({
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  metadata,
  spec,
});

/** metav1.MicroTime, as the API server parses it: RFC 3339 with exactly six fractional digits. */
export const microTime = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export interface Renewal {
  /** settles once the first run has */
  first: Promise<void>;
  /** no run starts after this is called; settles once the run in flight, if any, has */
  stop(): Promise<void>;
}

/**
 * Runs `run` now, then again `periodMs` after each run settles: a slow API server delays the
 * next renewal instead of piling requests onto it. `run` handles its own errors; a rejection
 * here would be unhandled.
 */
export function renewEvery(periodMs: number, run: () => Promise<unknown>): Renewal {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  const loop = async (): Promise<void> => {
    running = run();
    await running;
    if (!stopped) timer = setTimeout(() => void loop(), periodMs);
  };
  const first = loop();
  return {
    first,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
