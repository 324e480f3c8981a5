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
}

export const APPLY_PATCH = 'application/apply-patch+yaml';
export const MERGE_PATCH = 'application/merge-patch+json';
export const JSON_PATCH = 'application/json-patch+json';

/** The URL, credentials and TLS dispatcher of one request: the one place for auth and TLS. */
async function prepare(kc: KubeConfig, method: keyof typeof HttpMethod, path: string, query: RequestOptions['query']) {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/$/, '') + path);
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const ctx = new RequestContext(url.toString(), HttpMethod[method]);
  await kc.applySecurityAuthentication(ctx);
  return { url, headers: { ...ctx.getHeaders() }, dispatcher: ctx.getDispatcher() as never };
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
  const res = await fetch(url, { method, headers, body, dispatcher, signal: opts.signal });
  const text = await res.text();
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
 * for any status outside 2xx, as kubeRequest does.
 */
export async function kubeStream(
  kc: KubeConfig,
  path: string,
  opts: { headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<StreamResponse> {
  const { url, headers, dispatcher } = await prepare(kc, 'GET', path, undefined);
  const res = await fetch(url, { method: 'GET', headers: { ...headers, ...opts.headers }, dispatcher, signal: opts.signal });
  if (!res.ok || !res.body) throw kubeError('GET', path, res.status, res.statusText, await res.text());
  return { status: res.status, headers: res.headers as unknown as Headers, body: res.body as ReadableStream<Uint8Array> };
}
