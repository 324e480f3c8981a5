import type { KubeConfig } from '@kubernetes/client-node';
import { APPLY_PATCH, isNotFound, kubeRequest } from './http.ts';

export interface StatusTarget {
  /** object path without /status, e.g. /apis/packetcapture.dev/v1alpha1/namespaces/ns/packetcaptures/name */
  path: string;
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

/** JSON with sorted keys, so two equal statuses compare equal whatever order built them. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );
}

export interface StatusWriterOptions {
  /** non-urgent writes of one object at most this often; urgent ones go at once */
  minIntervalMs?: number;
  /** a failed write is retried after `ms`, for writers nobody awaits; without it the caller of apply retries */
  retry?: { ms: number; onError: (target: StatusTarget, err: unknown) => void };
}

interface Waiter {
  resolve: (wrote: boolean) => void;
  reject: (err: unknown) => void;
}

interface ObjectState<S> {
  target: StatusTarget;
  desired?: S;
  observed?: Partial<S>;
  /** our last apply, until the watch shows it */
  applied?: { status: S; canonical: string; at: number };
  lastWrite: number;
  /** desired may differ from what the cluster has and no write carrying it has started */
  dirty: boolean;
  urgent: boolean;
  writing: boolean;
  timer?: NodeJS.Timeout;
  /** callers of apply, answered by the write that carries their status */
  waiting: Waiter[];
}

/**
 * Server-side apply of one field manager's part of objects' status, written only when it
 * differs from what the cluster shows. GitOps tools watch for churn, and every write goes
 * to every watcher and into etcd, so a status that is already right costs no request, a
 * write not yet echoed by the watch is not repeated for ECHO_WAIT_MS, and non-urgent
 * changes of one object are written at most every `minIntervalMs`, coalesced.
 */
export class StatusWriter<S extends object> {
  private readonly objects = new Map<string, ObjectState<S>>();
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  writes = 0;

  /** after this long an unanswered apply is retried: the write or its watch event was lost */
  static readonly ECHO_WAIT_MS = 30_000;

  constructor(
    private readonly kc: KubeConfig,
    readonly fieldManager: string,
    private readonly opts: StatusWriterOptions = {},
  ) {}

  /** Our fields as the latest snapshot shows them. Writes nothing: the next set or apply compares with it. */
  observe(target: StatusTarget, observed: Partial<S>): void {
    const state = this.stateOf(target);
    state.observed = observed;
    if (state.applied && state.applied.canonical === canonical(observed)) state.applied = undefined;
  }

  /** What we applied that the watch does not show yet: newer than the snapshot. */
  pending(uid: string): S | undefined {
    return this.objects.get(uid)?.applied?.status;
  }

  /** `desired` is the object's status from now on; written when its interval allows, at once when `urgent`. */
  set(target: StatusTarget, desired: S, urgent: boolean): void {
    const state = this.stateOf(target);
    state.desired = desired;
    this.schedule(state, urgent);
  }

  /**
   * For a caller that retries by itself (the controller's reconcile): set, urgent, then true
   * once written, false when nothing needed writing; a failed write rejects.
   */
  apply(target: StatusTarget, desired: S): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.stateOf(target).waiting.push({ resolve, reject });
      this.set(target, desired, true);
    });
  }

  /** Writes everything pending now and waits for it: the last act of a stopping agent. */
  async flush(): Promise<void> {
    for (const state of this.objects.values()) {
      if (state.dirty || state.timer) {
        clearTimeout(state.timer);
        state.timer = undefined;
        this.schedule(state, true);
      }
    }
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.objects.values()) clearTimeout(state.timer);
  }

  /** Forget an object that left the snapshot, so the map stays as big as the cluster. A write in flight still ends. */
  forget(uid: string): void {
    clearTimeout(this.objects.get(uid)?.timer);
    this.objects.delete(uid);
  }

  private stateOf(target: StatusTarget): ObjectState<S> {
    let state = this.objects.get(target.uid);
    if (!state) {
      state = { target, lastWrite: 0, dirty: false, urgent: false, writing: false, waiting: [] };
      this.objects.set(target.uid, state);
    }
    return state;
  }

  private schedule(state: ObjectState<S>, urgent: boolean): void {
    if (this.stopped || this.objects.get(state.target.uid) !== state) {
      state.waiting.splice(0).forEach((w) => w.resolve(false));
      return;
    }
    state.dirty = true;
    state.urgent ||= urgent;
    // the write's end schedules again, with whatever arrived meanwhile
    if (state.writing) return;
    const wait = state.urgent ? 0 : Math.max(0, state.lastWrite + (this.opts.minIntervalMs ?? 0) - Date.now());
    if (wait > 0) {
      state.timer ??= setTimeout(() => {
        state.timer = undefined;
        this.write(state);
      }, wait);
      return;
    }
    clearTimeout(state.timer);
    state.timer = undefined;
    this.write(state);
  }

  private write(state: ObjectState<S>): void {
    const { target, desired } = state;
    const waiting = state.waiting.splice(0);
    state.dirty = false;
    state.urgent = false;
    const want = canonical(desired);
    const echoAwaited = state.applied?.canonical === want && Date.now() - state.applied.at < StatusWriter.ECHO_WAIT_MS;
    if (desired === undefined || want === canonical(state.observed) || echoAwaited) {
      waiting.forEach((w) => w.resolve(false));
      return;
    }
    state.writing = true;
    const done = this.request(target, desired)
      .then(
        (wrote) => {
          if (wrote) {
            this.writes++;
            state.lastWrite = Date.now();
            state.applied = { status: desired, canonical: want, at: state.lastWrite };
          }
          waiting.forEach((w) => w.resolve(wrote));
        },
        (err: unknown) => {
          waiting.forEach((w) => w.reject(err));
          if (!this.opts.retry) return;
          this.opts.retry.onError(target, err);
          state.dirty = true;
          state.timer ??= setTimeout(() => {
            state.timer = undefined;
            this.schedule(state, true);
          }, this.opts.retry.ms);
        },
      )
      .finally(() => {
        state.writing = false;
        this.inFlight.delete(done);
        if (state.dirty && !state.timer) this.schedule(state, state.urgent);
      });
    this.inFlight.add(done);
  }

  /** false when there is nothing to report on: the object, or this instance of it (uid precondition), is gone */
  private async request(target: StatusTarget, status: S): Promise<boolean> {
    try {
      await kubeRequest(this.kc, 'PATCH', `${target.path}/status`, {
        query: { fieldManager: this.fieldManager, force: true },
        contentType: APPLY_PATCH,
        body: {
          apiVersion: target.apiVersion,
          kind: target.kind,
          metadata: { name: target.name, namespace: target.namespace, uid: target.uid },
          status,
        },
      });
      return true;
    } catch (err) {
      if (isNotFound(err) || (err as { statusCode?: number }).statusCode === 409) return false;
      throw err;
    }
  }
}
