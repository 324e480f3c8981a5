import { HttpMethod, KubeConfig, RequestContext } from '@kubernetes/client-node';
import { fetch } from 'undici';

/** An error answered by the API server, with its HTTP code and the Status reason/message. */
export class KubeError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeError';
  }
}

export const isNotFound = (err: unknown): boolean => err instanceof KubeError && err.statusCode === 404;
export const isConflict = (err: unknown): boolean => err instanceof KubeError && err.statusCode === 409;
export const isGone = (err: unknown): boolean => err instanceof KubeError && err.statusCode === 410;

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  /** give up on an answer after this long (default REQUEST_TIMEOUT_MS) */
  timeoutMs?: number;
}

/**
 * Without it undici waits 300 s for an answer, and a component whose connection went
 * silent acts on stale truth that long. The API server itself ends an ordinary request
 * after 60 s; an answer that has not come in 30 s is not coming.
 */
export const REQUEST_TIMEOUT_MS = 30_000;

/** The caller's signal, or else a timeout: whichever fires first aborts the request. */
function deadline(timeoutMs: number, signal?: AbortSignal): AbortSignal {
  // AbortSignal.timeout takes whole milliseconds only
  const timeout = AbortSignal.timeout(Math.ceil(timeoutMs));
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/**
 * A request that ran out of time says which one and how long it waited, not just "aborted".
 * Its connection may be one the network silently dropped, and the pool would hand the same
 * dead connections to the next requests: the pool is retired, so they open new ones.
 */
function timedOut(kc: KubeConfig, method: string, path: string, timeoutMs: number, err: unknown): unknown {
  if (!(err instanceof DOMException && err.name === 'TimeoutError')) return err;
  retireDispatcher(kc);
  return new Error(`${method} ${path}: no answer from the API server in ${timeoutMs} ms`, { cause: err });
}

export const APPLY_PATCH = 'application/apply-patch+yaml';
export const MERGE_PATCH = 'application/merge-patch+json';
export const JSON_PATCH = 'application/json-patch+json';

/**
 * client-node's applySecurityAuthentication makes a new undici Agent for every request, so
 * every request opened a TLS connection of its own and left it open until the idle timeout:
 * at a few hundred requests a second, hundreds of sockets and secure contexts at once (most
 * of the controller's memory at 1,000 captures) and a handshake per request on both ends.
 * One Agent per KubeConfig keeps connections alive and shared; it is replaced now and then
 * so that a rotated client certificate or CA file still takes effect.
 */
export const DISPATCHER_TTL_MS = 10 * 60_000;
const dispatchers = new WeakMap<KubeConfig, { dispatcher: object; since: number }>();

export function sharedDispatcher(kc: KubeConfig, fresh: object | undefined, now = Date.now()): object | undefined {
  if (!fresh) return undefined;
  const cached = dispatchers.get(kc);
  if (cached && now - cached.since < DISPATCHER_TTL_MS) return cached.dispatcher;
  // requests still running on the old one finish first
  if (cached) void (cached.dispatcher as { close?: () => Promise<void> }).close?.().catch(() => undefined);
  dispatchers.set(kc, { dispatcher: fresh, since: now });
  return fresh;
}

/**
 * The next request of `kc` gets a new dispatcher, and the old one is destroyed: requests
 * queued on its connections (silently dead ones among them) fail now and are retried on new
 * connections by their callers, rather than each waiting out its own deadline.
 */
export function retireDispatcher(kc: KubeConfig): void {
  const cached = dispatchers.get(kc);
  if (!cached) return;
  dispatchers.delete(kc);
  void (cached.dispatcher as { destroy?: () => Promise<void> }).destroy?.().catch(() => undefined);
}

/** The URL, credentials and TLS dispatcher of one request: the one place for auth and TLS. */
async function prepare(kc: KubeConfig, method: keyof typeof HttpMethod, path: string, query: RequestOptions['query']) {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/$/, '') + path);
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const ctx = new RequestContext(url.toString(), HttpMethod[method]);
  await kc.applySecurityAuthentication(ctx);
  return { url, headers: { ...ctx.getHeaders() }, dispatcher: sharedDispatcher(kc, ctx.getDispatcher() as object | undefined) as never };
}

/** The API server's Status (or the raw text) of a failed answer, as a KubeError. */
function kubeError(method: string, path: string, status: number, statusText: string, text: string): KubeError {
  let reason = statusText;
  let message = text;
  try {
    const parsed = JSON.parse(text) as { reason?: string; message?: string };
    reason = parsed.reason ?? reason;
    message = parsed.message ?? message;
  } catch {
    // not a Status object: keep the raw text
  }
  return new KubeError(status, reason, `${method} ${path}: ${status} ${message}`);
}

/**
 * One raw request to the API server with the kubeconfig's credentials. Everything this
 * project sends goes through here, so authentication, TLS and error shape live in one place.
 */
export async function kubeRequest<T = unknown>(
  kc: KubeConfig,
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  path: string,
  opts: RequestOptions = {},
): Promise<T> {
  const { url, headers, dispatcher } = await prepare(kc, method, path, opts.query);
  headers.accept = 'application/json';
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers['content-type'] = opts.contentType ?? 'application/json';
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  }
  const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const signal = deadline(timeoutMs, opts.signal);
  let res: Awaited<ReturnType<typeof fetch>>;
  let text: string;
  try {
    res = await fetch(url, { method, headers, body, dispatcher, signal });
    text = await res.text();
  } catch (err) {
    throw timedOut(kc, method, path, timeoutMs, err);
  }
  if (!res.ok) throw kubeError(method, path, res.status, res.statusText, text);
  return (text ? JSON.parse(text) : undefined) as T;
}

export interface StreamResponse {
  status: number;
  headers: Headers;
  body: ReadableStream<Uint8Array>;
}

/**
 * A GET whose answer is bytes to stream rather than JSON (capture files through the API
 * server's proxy), with extra request headers such as Range. Rejects with a KubeError
 * for any status outside 2xx, as kubeRequest does. The timeout covers the wait for the
 * answer's headers only: the body may take as long as the file is big.
 */
export async function kubeStream(
  kc: KubeConfig,
  path: string,
  opts: { headers?: Record<string, string>; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<StreamResponse> {
  const { url, headers, dispatcher } = await prepare(kc, 'GET', path, undefined);
  const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const waiting = new AbortController();
  const timer = setTimeout(() => waiting.abort(new DOMException('no answer in time', 'TimeoutError')), timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, waiting.signal]) : waiting.signal;
  let res: Awaited<ReturnType<typeof fetch>>;
  try {
    res = await fetch(url, { method: 'GET', headers: { ...headers, ...opts.headers }, dispatcher, signal });
    if (!res.ok || !res.body) throw kubeError('GET', path, res.status, res.statusText, await res.text());
  } catch (err) {
    throw timedOut(kc, 'GET', path, timeoutMs, err);
  } finally {
    clearTimeout(timer);
  }
  return { status: res.status, headers: res.headers as unknown as Headers, body: res.body as ReadableStream<Uint8Array> };
}
