import { KubeConfig, Watch } from '@kubernetes/client-node';
import { Observable } from 'rxjs';
import { KubeError, kubeRequest } from './http.ts';
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
  /**
   * a watch that delivers neither an event nor a bookmark for this long is taken for a dead
   * connection and the kind is listed again (default SILENT_WATCH_MS)
   */
  silentMs?: number;
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
  reason?: string;
  message?: string;
}

/**
 * The API server sends a watch a bookmark about once a minute (and one 2 s before the
 * watch's own timeout), so a healthy watch is never quiet much longer than 60 s. 90 s
 * leaves half an interval for a bookmark an overloaded server sends late. (An API server
 * without a watch cache sends no bookmarks at all: a quiet watch there is re-listed every
 * 90 s, which costs a list and breaks nothing.)
 */
export const SILENT_WATCH_MS = 90_000;

/**
 * What a failed watch calls for. `expired`: the resourceVersion is gone (410), so list
 * again. `silent`: nothing arrived for silentMs; events may have been lost with the
 * connection, so list again. Anything else re-opens the watch after a backoff.
 */
export function watchFailure(err: unknown): 'expired' | 'silent' | 'failed' {
  // a 410 comes as a KubeError (an ERROR event, or the list) or as client-node 2.0.1's
  // Error for a watch request answered with anything but 200: both carry statusCode
  if ((err as { statusCode?: unknown } | null | undefined)?.statusCode === 410) return 'expired';
  // client-node ends a watch it heard nothing from for requestTimeoutMs with a TimeoutError
  if (err instanceof DOMException && err.name === 'TimeoutError') return 'silent';
  return 'failed';
}

/**
 * List-then-watch as an Observable of snapshots: the one implementation used by the
 * controller and the agent. The first value is the complete list, so nothing downstream
 * decides on a half-filled cache. A 410 Gone (watch expired, etcd compacted) relists; any
 * other failure re-opens the watch after a backoff; the stream itself never errors.
 */
export function watchSnapshots<T extends KubeObject>(kc: KubeConfig, opts: WatchOptions): Observable<Snapshot<T>> {
  return new Observable<Snapshot<T>>((subscriber) => {
    const initialBackoff = opts.backoffMs ?? 500;
    const silentMs = opts.silentMs ?? SILENT_WATCH_MS;
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
        // client-node restarts this timer on every chunk the watch receives (each event or
        // bookmark) and aborts the watch when it runs out: the silent-watch detector, at no
        // cost per event. It also bounds the wait for the watch's answer.
        (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = silentMs;
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
                reject(new KubeError(status.code ?? 500, status.reason ?? 'Error', `watch ${opts.path}: ${status.message ?? 'ERROR event'}`));
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
          const failure = watchFailure(err);
          if (failure === 'expired') {
            opts.log?.debug({ path: opts.path }, 'watch expired, relisting');
            needList = true;
            continue;
          }
          if (failure === 'silent') {
            // listing again at once: a dead connection is no reason to wait
            opts.log?.warn({ path: opts.path, silentMs }, 'watch heard nothing, not even a bookmark; relisting');
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
