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

/**
 * Server-side apply of one field manager's part of an object's status, written only when
 * it differs from what the cluster shows. GitOps tools watch for churn, so a status that
 * is already right costs no request; `lastApplied` covers the gap until the watch catches
 * up with our own write.
 */
export class StatusWriter<S extends object> {
  private readonly lastApplied = new Map<string, { status: string; at: number }>();
  writes = 0;

  /** after this long an unanswered apply is retried: the write or its watch event was lost */
  static readonly ECHO_WAIT_MS = 30_000;

  constructor(
    private readonly kc: KubeConfig,
    readonly fieldManager: string,
  ) {}

  /** @param observed our fields as the latest snapshot shows them */
  async apply(target: StatusTarget, desired: S, observed: S): Promise<boolean> {
    const want = canonical(desired);
    const key = target.uid;
    if (want === canonical(observed)) {
      this.lastApplied.delete(key);
      return false;
    }
    const pending = this.lastApplied.get(key);
    if (pending?.status === want && Date.now() - pending.at < StatusWriter.ECHO_WAIT_MS) return false;
    try {
      await kubeRequest(this.kc, 'PATCH', `${target.path}/status`, {
        query: { fieldManager: this.fieldManager, force: true },
        contentType: APPLY_PATCH,
        body: {
          apiVersion: target.apiVersion,
          kind: target.kind,
          metadata: { name: target.name, namespace: target.namespace, uid: target.uid },
          status: desired,
        },
      });
    } catch (err) {
      // The object (or this instance of it: uid precondition) is gone; nothing to report on.
      if (isNotFound(err) || (err as { statusCode?: number }).statusCode === 409) return false;
      throw err;
    }
    this.writes++;
    this.lastApplied.set(key, { status: want, at: Date.now() });
    return true;
  }

  /** Forget an object that left the snapshot, so the map stays as big as the cluster. */
  forget(uid: string): void {
    this.lastApplied.delete(uid);
  }
}
