// Capture files, for the packet-capture API (apiserver/), which reaches the agent's data
// port (data-server.ts) at the URL its presence Lease publishes (DATA_URL_ANNOTATION):
//   GET /files/<ns>/<name>                              JSON: every pod instance and session
//   GET /files/<ns>/<name>/<podUID>                     JSON: that instance's sessions
//   GET /files/<ns>/<name>/<podUID>/<session>           JSON: that session's files
//   GET /files/<ns>/<name>/<podUID>/<session>/<file>    the file; Range requests resume it
// Only names of the data dir's own shape are served: nothing can climb out of it.

import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Route } from './data-server.ts';
import { CAPTURE_FILE, listSessionFiles, readSessionMeta, type SessionFile } from './files.ts';

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const PCAP_TYPE = 'application/x-pcapng';

/** On the agent's presence Lease: the base URL of its data port, for the packet-capture API. */
export const DATA_URL_ANNOTATION = 'packetcapture.dev/data-url';
/** On the agent's presence Lease: the certificates of its data port (PEM), which the API pins. */
export const DATA_CERT_ANNOTATION = 'packetcapture.dev/data-cert';

export interface SessionListing {
  id: string;
  /** the capture instance that made the session (missing if its session file is gone) */
  captureUID?: string;
  files: SessionFile[];
  bytes: number;
}

export interface PodListing {
  podUID: string;
  sessions: SessionListing[];
}

async function subdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isDirectory() && SEGMENT.test(e.name))
    .map((e) => e.name)
    .sort();
}

async function sessionListing(dir: string, id: string): Promise<SessionListing> {
  const [files, meta] = await Promise.all([listSessionFiles(join(dir, id)), readSessionMeta(join(dir, id))]);
  return { id, ...(meta ? { captureUID: meta.captureUID } : {}), files, bytes: files.reduce((sum, f) => sum + f.size, 0) };
}

export async function listPod(dataDir: string, namespace: string, name: string, podUID: string): Promise<PodListing> {
  const dir = join(dataDir, namespace, name, podUID);
  return { podUID, sessions: await Promise.all((await subdirs(dir)).map((id) => sessionListing(dir, id))) };
}

export async function listCapture(dataDir: string, namespace: string, name: string): Promise<PodListing[]> {
  const pods = await subdirs(join(dataDir, namespace, name));
  return Promise.all(pods.map((podUID) => listPod(dataDir, namespace, name, podUID)));
}

/** A single `bytes=` range of a file of `size` bytes; undefined to serve it whole, 'unsatisfiable' for 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header?.trim() ?? '');
  if (!match) return undefined; // absent, multiple ranges or another unit: the whole file is a valid answer
  const [, from, to] = match;
  if (from === '' && to === '') return undefined;
  if (from === '') {
    const suffix = Number(to);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(from);
  const end = to === '' ? size - 1 : Math.min(Number(to), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

async function sendFile(req: IncomingMessage, res: ServerResponse, path: string, name: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile()) return json(res, 404, { error: `no file ${name}` });
  res.setHeader('accept-ranges', 'bytes');
  res.setHeader('content-type', PCAP_TYPE);
  res.setHeader('content-disposition', `attachment; filename="${name}"`);
  res.setHeader('last-modified', info.mtime.toUTCString());
  const range = parseRange(req.headers.range, info.size);
  if (range === 'unsatisfiable') {
    res.statusCode = 416;
    res.setHeader('content-range', `bytes */${info.size}`);
    return void res.end();
  }
  const { start, end } = range ?? { start: 0, end: info.size - 1 };
  res.statusCode = range ? 206 : 200;
  if (range) res.setHeader('content-range', `bytes ${start}-${end}/${info.size}`);
  res.setHeader('content-length', String(Math.max(0, end - start + 1)));
  if (req.method === 'HEAD' || end < start) return void res.end();
  await new Promise<void>((resolve) => {
    // a file still being written is served up to the size seen above, so the length holds
    const stream = createReadStream(path, { start, end });
    stream.on('error', () => res.destroy());
    res.on('close', () => {
      stream.destroy();
      resolve();
    });
    stream.pipe(res);
  });
}

/** The /files routes over `dataDir`. */
export function filesRoute(dataDir: string): Route {
  return async (req, res) => {
    // the raw path, not a URL-normalised one: a `..` segment is refused, never resolved
    const path = (req.url ?? '/').split('?')[0]!;
    if (path !== '/files' && !path.startsWith('/files/')) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      json(res, 405, { error: 'only GET and HEAD' });
      return true;
    }
    let segments: string[];
    try {
      segments = path.split('/').slice(2).filter((s) => s !== '').map(decodeURIComponent);
    } catch {
      json(res, 400, { error: 'malformed path' });
      return true;
    }
    if (segments.length < 2 || segments.length > 5 || !segments.every((s) => SEGMENT.test(s))) {
      json(res, 400, { error: 'expected /files/<namespace>/<name>[/<podUID>[/<session>[/<file>]]]' });
      return true;
    }
    const [namespace, name, podUID, session, file] = segments as [string, string, string?, string?, string?];
    if (podUID === undefined) json(res, 200, { namespace, name, pods: await listCapture(dataDir, namespace, name) });
    else if (session === undefined) json(res, 200, { namespace, name, ...(await listPod(dataDir, namespace, name, podUID)) });
    else if (file === undefined) json(res, 200, { namespace, name, podUID, ...(await sessionListing(join(dataDir, namespace, name, podUID), session)) });
    else if (!CAPTURE_FILE.test(file)) json(res, 404, { error: `no file ${file}` });
    else await sendFile(req, res, join(dataDir, namespace, name, podUID, session, file), file);
    return true;
  };
}
