import { KubeConfig, Watch } from '@kubernetes/client-node';
import { Map as PersistentMap } from 'immutable';
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

/** Every object of a kind the watch can see, keyed by UID. Never changes once emitted. */
export type Snapshot<T> = ReadonlyMap<string, T>;

/** How many versions back changedKeys can name a watch's changes without comparing whole snapshots. */
export const CHANGE_HISTORY = 4096;

/**
 * The keys each version of one watch changed, from one list on (a relist starts a new
 * History: its versions are not related to the ones before). Only the last CHANGE_HISTORY
 * are kept, so a consumer that fell further behind compares snapshots instead.
 */
class History {
  private keys: string[] = [];
  /** the version whose change keys[0] is */
  private first: number;

  constructor(readonly listed: number) {
    this.first = listed + 1;
  }

  record(key: string): number {
    this.keys.push(key);
    // dropping in halves keeps recording amortised O(1)
    if (this.keys.length >= 2 * CHANGE_HISTORY) {
      this.keys = this.keys.slice(CHANGE_HISTORY);
      this.first += CHANGE_HISTORY;
    }
    return this.first + this.keys.length - 1;
  }

  /** The keys versions (from, to] changed, or undefined once some of them are forgotten. */
  between(from: number, to: number): Set<string> | undefined {
    if (from + 1 < this.first || to < from) return undefined;
    return new Set(this.keys.slice(from + 1 - this.first, to + 1 - this.first));
  }
}

/**
 * One version of a watched kind. An event makes the next version from the last one in
 * O(log n), sharing everything else with it (immutable.js' hash array mapped trie), so a
 * consumer may hold any version as long as it likes and never pays for a copy of the cache.
 */
class WatchSnapshot<T> implements Snapshot<T> {
  constructor(
    readonly items: PersistentMap<string, T>,
    readonly history: History,
    readonly version: number,
  ) {}

  get size(): number {
    return this.items.size;
  }
  get(key: string): T | undefined {
    return this.items.get(key);
  }
  has(key: string): boolean {
    return this.items.has(key);
  }
  *keys(): MapIterator<string> {
    yield* this.items.keys();
  }
  *values(): MapIterator<T> {
    yield* this.items.values();
  }
  *entries(): MapIterator<[string, T]> {
    yield* this.items.entries();
  }
  [Symbol.iterator](): MapIterator<[string, T]> {
    return this.entries();
  }
  forEach(callback: (value: T, key: string, map: Snapshot<T>) => void, thisArg?: unknown): void {
    for (const [key, value] of this.items) callback.call(thisArg, value, key, this);
  }

  with(key: string, value: T | undefined): WatchSnapshot<T> {
    const items = value === undefined ? this.items.delete(key) : this.items.set(key, value);
    return new WatchSnapshot(items, this.history, this.history.record(key));
  }
}

/**
 * The snapshot a list makes: a new History, so changedKeys never takes the versions before
 * a relist for neighbours of the ones after it.
 */
export function listedSnapshot<T extends KubeObject>(items: Iterable<T>, after?: Snapshot<T>): Snapshot<T> {
  const version = after instanceof WatchSnapshot ? after.version + 1 : 1;
  const map = PersistentMap<string, T>().withMutations((m) => {
    for (const item of items) m.set(item.metadata.uid, item);
  });
  return new WatchSnapshot(map, new History(version), version);
}

/** The snapshot after one watch event: `obj` stored under its UID, or removed for DELETED. */
export function afterEvent<T extends KubeObject>(snapshot: Snapshot<T>, type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: T): Snapshot<T> {
  const base = snapshot instanceof WatchSnapshot ? (snapshot as WatchSnapshot<T>) : (listedSnapshot(snapshot.values()) as WatchSnapshot<T>);
  return base.with(obj.metadata.uid, type === 'DELETED' ? undefined : obj);
}

/** The keys whose value differs between two snapshots: the whole of both compared, by reference. */
function differingKeys<T>(older: Snapshot<T>, newer: Snapshot<T>): Set<string> {
  const keys = new Set<string>();
  for (const [key, value] of newer) if (older.get(key) !== value) keys.add(key);
  for (const key of older.keys()) if (!newer.has(key)) keys.add(key);
  return keys;
}

/**
 * The keys (UIDs) added, changed or removed from `older` to `newer`. For two versions of
 * one watch this costs what the events between them changed, not the size of the kind;
 * any other pair (a relist between them, or plain Maps in tests) is compared whole.
 */
export function changedKeys<T>(older: Snapshot<T>, newer: Snapshot<T>): ReadonlySet<string> {
  if (older === newer) return new Set();
  if (older instanceof WatchSnapshot && newer instanceof WatchSnapshot && older.history === newer.history) {
    const keys = newer.history.between(older.version, newer.version);
    if (keys) return keys;
  }
  return differingKeys(older, newer);
}

export interface WatchOptions<T extends KubeObject = KubeObject> {
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
  /**
   * What of each object to keep (controller-runtime's cache transforms): the cache holds
   * only what the consumer reads, not managedFields, container specs and the like. Gets
   * the object as the API server sent it; may return it as it is.
   */
  transform?: (obj: T) => T;
  /** objects per page of a list (default LIST_PAGE_SIZE) */
  pageSize?: number;
}

/**
 * client-go's reflector pages its lists by 500 too: a kind of 30,000 pods then never sits
 * in memory twice over (as one answer's text and its parse) next to the cache it fills.
 */
export const LIST_PAGE_SIZE = 500;

interface ListResponse<T> {
  metadata: { resourceVersion: string; continue?: string };
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
export function watchSnapshots<T extends KubeObject>(kc: KubeConfig, opts: WatchOptions<T>): Observable<Snapshot<T>> {
  return new Observable<Snapshot<T>>((subscriber) => {
    const initialBackoff = opts.backoffMs ?? 500;
    const silentMs = opts.silentMs ?? SILENT_WATCH_MS;
    const maxBackoff = opts.maxBackoffMs ?? 30_000;
    const query = { fieldSelector: opts.fieldSelector, labelSelector: opts.labelSelector };
    let closed = false;
    let abort: AbortController | undefined;
    let wake: (() => void) | undefined;
    const keep = opts.transform ?? ((obj: T) => obj);
    let snapshot: Snapshot<T> = new Map();
    let resourceVersion: string | undefined;
    let backoff = initialBackoff;

    const emit = () => subscriber.next(snapshot);
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });

    const list = async () => {
      let listedVersion: string | undefined;
      let page: string | undefined;
      const items: T[] = [];
      do {
        // every page is read at the first page's resourceVersion: together they are one consistent list
        const res = await kubeRequest<ListResponse<T>>(kc, 'GET', opts.path, {
          query: { ...query, limit: opts.pageSize ?? LIST_PAGE_SIZE, continue: page },
        });
        for (const item of res.items) items.push(keep(item));
        listedVersion ??= res.metadata.resourceVersion;
        page = res.metadata.continue || undefined;
      } while (page !== undefined);
      snapshot = listedSnapshot(items, snapshot);
      resourceVersion = listedVersion;
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
              snapshot = afterEvent(snapshot, type as 'ADDED' | 'MODIFIED' | 'DELETED', type === 'DELETED' ? o : keep(o));
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
