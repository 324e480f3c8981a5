import type { KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { combineLatest, firstValueFrom, of, shareReplay, type Observable } from 'rxjs';
import { CONTROLLER_FIELD_MANAGER, GROUP, PLURAL, VERSION, type PacketCapture } from '../crds/packetcapture.ts';
import { EventRecorder } from '../kube/events.ts';
import { startOpsServer, type OpsServer } from '../kube/health.ts';
import { LeaderElector } from '../kube/leader.ts';
import type { Logger } from '../kube/log.ts';
import { StatusWriter } from '../kube/status.ts';
import { watchSnapshots, type KubeObject } from '../kube/watch.ts';
import { AGENT_LEASE_LABEL, type Lease } from './agents.ts';
import { cachedCapture, cachedLease, cachedPod } from './cache.ts';
import type { ControllerStatus } from './conditions.ts';
import { DEFAULT_FINALIZER_OPTIONS, type FinalizerOptions } from './finalizer.ts';
import { ControllerMetrics } from './metrics.ts';
import { reconciler } from './reconciler.ts';
import type { Pod } from './targets.ts';

/** Name of the leader-election Lease in the system namespace. */
export const CONTROLLER_LEASE = 'packet-capture-controller';
export const CONTROLLER_COMPONENT = 'packet-capture-controller';
/**
 * Every decision follows from a watch event or a due time (wakes), so the resync is only a
 * safety net, as controller-runtime's SyncPeriod is: each one re-derives every capture and
 * compares its status, and at 10,000 captures one every 10 s was most of the controller's
 * work (and the garbage its heap grew for) while nothing happened.
 */
export const DEFAULT_RESYNC_MS = 5 * 60_000;

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  /** the system namespace: the leader Lease and the agents' presence Leases live here */
  namespace: string;
  leaderElect: boolean;
  /** /healthz, /readyz, /metrics; 0 picks a free port; undefined serves none */
  metricsPort?: number;
  log: Logger;
  /** this replica's name in the leader Lease (default: POD_NAME, else host, pid and a nonce) */
  identity?: string;
  /** watch PacketCaptures and Pods of this namespace only (default: all namespaces) */
  watchNamespace?: string;
  /** re-derive every decision this often even when nothing changed (default DEFAULT_RESYNC_MS) */
  resyncMs?: number;
  leaseDurationSeconds?: number;
  leaseRetryPeriodMs?: number;
  finalizer?: Partial<FinalizerOptions>;
}

export interface ControllerHandle {
  /** settles once every watch has delivered its first full list */
  ready: Promise<void>;
  isReady(): boolean;
  isLeader(): boolean;
  metrics: ControllerMetrics;
  /** the ops server's port, when one was asked for */
  port?: number;
  /** status applies this replica made */
  statusWrites(): number;
  /**
   * Stops watching and writing. `releaseLease: false` leaves the leader Lease held, as a
   * crashed replica would, so a standby must wait for it to expire.
   */
  stop(opts?: { releaseLease?: boolean }): Promise<void>;
}

const shared = <T>(source: Observable<T>): Observable<T> => source.pipe(shareReplay({ bufferSize: 1, refCount: true }));

/** The controller as a library: the CLI, local mode, benchmarks and tests all start it here. */
export async function runController(opts: ControllerOptions): Promise<ControllerHandle> {
  const kc = opts.kubeConfig;
  const log = opts.log;
  const metrics = new ControllerMetrics();
  const identity = opts.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const scope = opts.watchNamespace ? `/namespaces/${opts.watchNamespace}` : '';
  const watch = <T extends KubeObject>(path: string, transform: (obj: T) => T, labelSelector?: string) =>
    shared(watchSnapshots<T>(kc, { path, labelSelector, transform, log }));

  const captures$ = watch<PacketCapture>(`/apis/${GROUP}/${VERSION}${scope}/${PLURAL}`, cachedCapture);
  const pods$ = watch<Pod>(`/api/v1${scope}/pods`, cachedPod);
  const leases$ = watch<Lease>(`/apis/coordination.k8s.io/v1/namespaces/${opts.namespace}/leases`, cachedLease, `${AGENT_LEASE_LABEL}=true`);

  const elector = opts.leaderElect
    ? new LeaderElector(kc, {
        namespace: opts.namespace,
        name: CONTROLLER_LEASE,
        identity,
        leaseDurationSeconds: opts.leaseDurationSeconds,
        retryPeriodMs: opts.leaseRetryPeriodMs,
        log,
      })
    : undefined;
  const writer = new StatusWriter<ControllerStatus>(kc, CONTROLLER_FIELD_MANAGER);

  let synced = false;
  const synced$ = combineLatest([captures$, pods$, leases$]);
  const ready = firstValueFrom(synced$).then(() => {
    synced = true;
    log.info({ identity, leaderElect: opts.leaderElect }, 'watches synced');
  });
  // keeps the shared watches open (and readiness true) on replicas that are not the leader, and feeds every replica's metrics
  const syncedSub = synced$.subscribe(([captures, , leases]) => metrics.observeWorld(captures, leases));

  const reconciling = reconciler({
    kc,
    log,
    metrics,
    events: new EventRecorder(kc, CONTROLLER_COMPONENT, log, identity),
    captures$,
    pods$,
    leases$,
    isLeader$: elector?.isLeader$ ?? of(true),
    resyncMs: opts.resyncMs ?? DEFAULT_RESYNC_MS,
    finalizer: { ...DEFAULT_FINALIZER_OPTIONS, ...opts.finalizer },
    writer,
  });
  const subscription = reconciling.run$.subscribe({ error: (err: unknown) => log.error({ err: String(err) }, 'reconciler stopped') });
  elector?.start();

  let ops: OpsServer | undefined;
  if (opts.metricsPort !== undefined) {
    ops = await startOpsServer({ port: opts.metricsPort, registry: metrics.registry, ready: () => synced });
  }

  return {
    ready,
    isReady: () => synced,
    isLeader: () => (elector ? elector.isLeader : true),
    metrics,
    port: ops?.port,
    statusWrites: () => writer.writes,
    async stop({ releaseLease = true } = {}) {
      // stop writing before the lease is handed over, so two replicas never write at once
      subscription.unsubscribe();
      syncedSub.unsubscribe();
      await reconciling.settled();
      await elector?.stop({ release: releaseLease });
      await ops?.close();
      log.info('controller stopped');
    },
  };
}
