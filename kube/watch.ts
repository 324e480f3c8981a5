import { KubeConfig, Watch } from '@kubernetes/client-node';
import { Observable } from 'rxjs';
import { isGone, kubeRequest } from './http.ts';
import type { Logger } from './log.ts';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    deletionTimestamp?: string;
  };
}

/** Every object of a kind the watch can see, keyed by UID; a new map for every change. */
export type Snapshot<T> = ReadonlyMap<string, T>;

export interface WatchOptions {
  /** collection path, e.g. /api/v1/pods or /apis/packetcapture.dev/v1alpha1/packetcaptures */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** re-emit the current snapshot this often so time-based decisions are re-derived */
  resyncMs?: number;
  /** first retry delay after an error; doubles up to maxBackoffMs */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** server-side watch timeout; the watch is re-opened from the last resourceVersion */
  watchTimeoutSeconds?: number;
  log?: Logger;
  /** called for every raw watch event; benchmarks use it to measure delivery latency */
  onEvent?: (type: string, obj: unknown) => void;
}

interface ListResponse<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

interface WatchStatus {
  kind: 'Status';
  code?: number;
  message?: string;
}

class WatchExpired extends Error {}

/**
 * List-then-watch as an Observable of snapshots: the one implementation used by the
 * controller and the agent. The first value is the complete list, so nothing downstream
 * decides on a half-filled cache. A 410 Gone (watch expired, etcd compacted) relists; any
 * other failure re-opens the watch after a backoff; the stream itself never errors.
 */
export function watchSnapshots<T extends KubeObject>(kc: KubeConfig, opts: WatchOptions): Observable<Snapshot<T>> {
  return new Observable<Snapshot<T>>((subscriber) => {
    const initialBackoff = opts.backoffMs ?? 500;
    const maxBackoff = opts.maxBackoffMs ?? 30_000;
    const query = { fieldSelector: opts.fieldSelector, labelSelector: opts.labelSelector };
    let closed = false;
    let abort: AbortController | undefined;
    let wake: (() => void) | undefined;
    let items = new Map<string, T>();
    let resourceVersion: string | undefined;
    let backoff = initialBackoff;

    const emit = () => subscriber.next(new Map(items));
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });

    const list = async () => {
      const res = await kubeRequest<ListResponse<T>>(kc, 'GET', opts.path, { query });
      items = new Map(res.items.map((item) => [item.metadata.uid, item]));
      resourceVersion = res.metadata.resourceVersion;
      emit();
    };

    const watchOnce = () =>
      new Promise<void>((resolve, reject) => {
        const watch = new Watch(kc);
        // client-node aborts a watch that is silent this long; bookmarks and the server
        // timeout keep a healthy connection well inside it.
        (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = ((opts.watchTimeoutSeconds ?? 240) + 60) * 1000;
        watch
          .watch(
            opts.path,
            {
              ...query,
              resourceVersion,
              allowWatchBookmarks: true,
              timeoutSeconds: opts.watchTimeoutSeconds ?? 240,
            },
            (type: string, obj: T | WatchStatus) => {
              opts.onEvent?.(type, obj);
              if (type === 'ERROR') {
                const status = obj as WatchStatus;
                reject(status.code === 410 ? new WatchExpired(status.message) : new Error(status.message));
                abort?.abort();
                return;
              }
              const o = obj as T;
              if (o.metadata?.resourceVersion) resourceVersion = o.metadata.resourceVersion;
              if (type === 'BOOKMARK') return;
              backoff = initialBackoff;
              if (type === 'DELETED') items.delete(o.metadata.uid);
              else items.set(o.metadata.uid, o);
              emit();
            },
            (err: unknown) => (err ? reject(err) : resolve()),
          )
          .then((controller) => {
            abort = controller;
            if (closed) controller.abort();
          }, reject);
      });

    const run = async () => {
      let needList = true;
      while (!closed) {
        try {
          if (needList) {
            await list();
            needList = false;
          }
          await watchOnce();
        } catch (err) {
          if (closed) return;
          if (err instanceof WatchExpired || isGone(err)) {
            opts.log?.debug({ path: opts.path }, 'watch expired, relisting');
            needList = true;
            continue;
          }
          opts.log?.warn({ path: opts.path, err: String(err), backoffMs: backoff }, 'watch failed, retrying');
          await sleep(backoff);
          backoff = Math.min(backoff * 2, maxBackoff);
        }
      }
    };
    void run();

    const resync = opts.resyncMs
      ? setInterval(() => {
          if (resourceVersion !== undefined) emit();
        }, opts.resyncMs)
      : undefined;

    return () => {
      closed = true;
      if (resync) clearInterval(resync);
      abort?.abort();
      wake?.();
    };
  });
}
