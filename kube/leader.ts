import type { KubeConfig } from '@kubernetes/client-node';
import { BehaviorSubject, distinctUntilChanged, type Observable } from 'rxjs';
import { isConflict, isNotFound, kubeRequest } from './http.ts';
import { leaseBody, leasePath, microTime, renewEvery, type Lease, type LeaseSpec, type Renewal } from './lease.ts';
import type { Logger } from './log.ts';

export interface LeaderElectionOptions {
  /** namespace and name of the coordination.k8s.io/v1 Lease */
  namespace: string;
  name: string;
  /** unique per replica: pod name, or host + pid */
  identity: string;
  leaseDurationSeconds?: number;
  /** how often the leader renews and the others look */
  retryPeriodMs?: number;
  /**
   * a leader that has not renewed for this long stops acting as one, whatever its requests
   * are doing; shorter than the lease (default two thirds of it, as client-go's 10 s of 15)
   */
  renewDeadlineMs?: number;
  /** each request to the API server gives up after this long (default half the renew deadline) */
  requestTimeoutMs?: number;
  log?: Logger;
}

/**
 * Leader election on a Lease, as client-go does it: the holder renews every retry period;
 * another replica takes the lease over only once it has watched the record stay unchanged
 * for a whole lease duration (measured on its own clock, so clock skew cannot hand the
 * lease to two replicas), and every write carries the resourceVersion it read.
 */
export class LeaderElector {
  private readonly leader = new BehaviorSubject(false);
  /** true while this replica holds the lease; only then may it write */
  readonly isLeader$: Observable<boolean> = this.leader.pipe(distinctUntilChanged());
  private readonly leaseDurationSeconds: number;
  private readonly retryPeriodMs: number;
  private readonly renewDeadlineMs: number;
  private readonly requestTimeoutMs: number;
  private readonly path: string;
  private renewal: Renewal | undefined;
  /** fires at lastRenew + renewDeadline: a renew that hangs cannot keep this replica leader */
  private deadline: NodeJS.Timeout | undefined;
  private lastRenew = 0;
  private observed: { record: string; at: number } | undefined;

  constructor(
    private readonly kc: KubeConfig,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.leaseDurationSeconds = opts.leaseDurationSeconds ?? 15;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? Math.round((this.leaseDurationSeconds * 1000 * 2) / 3);
    if (this.renewDeadlineMs >= this.leaseDurationSeconds * 1000) {
      throw new Error(`renew deadline ${this.renewDeadlineMs} ms must be shorter than the lease (${this.leaseDurationSeconds} s)`);
    }
    this.requestTimeoutMs = opts.requestTimeoutMs ?? Math.round(this.renewDeadlineMs / 2);
    this.path = leasePath(opts.namespace, opts.name);
  }

  get isLeader(): boolean {
    return this.leader.value;
  }

  start(): void {
    this.renewal = renewEvery(this.retryPeriodMs, () => this.attempt());
  }

  /** Stops electing. With `release` (a graceful stop) the lease is handed back so a standby takes over at once. */
  async stop({ release = true }: { release?: boolean } = {}): Promise<void> {
    clearTimeout(this.deadline);
    await this.renewal?.stop();
    // the attempt that was in flight may have renewed, arming the deadline again
    clearTimeout(this.deadline);
    const wasLeader = this.leader.value;
    this.leader.next(false);
    this.leader.complete();
    if (release && wasLeader) await this.release();
  }

  private spec(now: number, previous?: LeaseSpec): LeaseSpec {
    const renewing = previous?.holderIdentity === this.opts.identity;
    return {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.leaseDurationSeconds,
      acquireTime: renewing && previous?.acquireTime ? previous.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: (previous?.leaseTransitions ?? 0) + (renewing || !previous ? 0 : 1),
    };
  }

  private async attempt(): Promise<void> {
    const now = Date.now();
    try {
      const lease = await this.get();
      if (!lease) {
        await kubeRequest(this.kc, 'POST', leasePath(this.opts.namespace), {
          timeoutMs: this.requestTimeoutMs,
          body: leaseBody({ name: this.opts.name, namespace: this.opts.namespace }, this.spec(now)),
        });
        return this.acquired(now);
      }
      const spec = lease.spec ?? {};
      const record = `${spec.holderIdentity ?? ''}/${spec.renewTime ?? ''}`;
      if (this.observed?.record !== record) this.observed = { record, at: now };
      const mine = spec.holderIdentity === this.opts.identity;
      const expired = this.observed.at + (spec.leaseDurationSeconds ?? this.leaseDurationSeconds) * 1000 <= now;
      if (!mine && spec.holderIdentity && !expired) {
        if (this.leader.value) this.opts.log?.warn({ holder: spec.holderIdentity }, 'lost the leader lease');
        this.leader.next(false);
        return;
      }
      await kubeRequest(this.kc, 'PUT', this.path, {
        timeoutMs: this.requestTimeoutMs,
        body: { ...lease, spec: this.spec(now, spec) },
      });
      if (!mine) this.opts.log?.info({ previous: spec.holderIdentity || undefined }, 'took over the leader lease');
      this.acquired(now);
    } catch (err) {
      // a conflict means another replica wrote first; the next attempt reads who
      if (!isConflict(err)) this.opts.log?.warn({ err: String(err) }, 'leader election request failed');
    }
  }

  /** `now` is when the attempt began: the lease says renewTime = now, so the deadline counts from it. */
  private acquired(now: number): void {
    const left = now + this.renewDeadlineMs - Date.now();
    // an answer that took the whole deadline renewed a lease the standby may already be timing out
    if (left <= 0) return this.stepDown();
    this.lastRenew = now;
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => this.stepDown(), left);
    if (!this.leader.value) this.opts.log?.info({ identity: this.opts.identity, lease: `${this.opts.namespace}/${this.opts.name}` }, 'became leader');
    this.leader.next(true);
  }

  private stepDown(): void {
    if (!this.leader.value) return;
    this.opts.log?.warn(
      { renewDeadlineMs: this.renewDeadlineMs, sinceRenewMs: Date.now() - this.lastRenew },
      'could not renew the leader lease in time; stepping down',
    );
    this.leader.next(false);
  }

  private async get(): Promise<Lease | undefined> {
    try {
      return await kubeRequest<Lease>(this.kc, 'GET', this.path, { timeoutMs: this.requestTimeoutMs });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async release(): Promise<void> {
    try {
      const lease = await this.get();
      if (!lease || lease.spec?.holderIdentity !== this.opts.identity) return;
      const now = Date.now();
      await kubeRequest(this.kc, 'PUT', this.path, {
        timeoutMs: this.requestTimeoutMs,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(now) } },
      });
      this.opts.log?.info('released the leader lease');
    } catch (err) {
      this.opts.log?.warn({ err: String(err) }, 'could not release the leader lease; a standby takes over when it expires');
    }
  }
}
