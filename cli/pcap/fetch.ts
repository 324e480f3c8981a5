// `kubectl pcap fetch`: a capture's session files through the packet-capture API
// (`get packetcaptures/files` in the capture's namespace), which asks the agent of every
// node. Files land in <dir>/<podUID>/<sessionId>/<file>; an interrupted download is continued
// from where it stopped (HTTP Range) and every file's size is checked against the agent's.

import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { CaptureListing } from '../../apiserver/agents.ts';
import { subresourcePath } from '../../apiserver/api.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import { KubeError, kubeStream } from '../../kube/http.ts';
import { apiError, apiJson, getCapture, PcapError, type Target } from './client.ts';

/** What the agent serves: one path segment each, nothing that could climb out of <dir>. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const PARTIAL = '.part';

export interface RemoteFile {
  node: string;
  podUID: string;
  sessionId: string;
  name: string;
  size: number;
}

export type Plan = { action: 'skip' } | { action: 'get'; from: number };

/**
 * What to ask for, given the bytes already here (a finished or partial copy) and the
 * agent's size: nothing, the rest, or everything again when ours is longer (a ring file
 * that tcpdump started over).
 */
export function planDownload(have: number | undefined, remote: number): Plan {
  if (have === remote) return { action: 'skip' };
  if (have === undefined || have > remote) return { action: 'get', from: 0 };
  return { action: 'get', from: have };
}

/** The file's total size as a 206 answer states it in Content-Range, or its length for a 200. */
export function servedEnd(status: number, headers: { get(name: string): string | null }, from: number): number | undefined {
  if (status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== from) return undefined;
    return Number(m[2]) + 1;
  }
  const length = headers.get('content-length');
  return length === null ? undefined : Number(length);
}

const sizeOf = (path: string): Promise<number | undefined> => stat(path).then((s) => s.size, () => undefined);

/** A problem with no session or no file to fetch: said with what the status knows about why. */
function noFilesYet(c: PacketCapture, podUID?: string, otherInstances = 0): PcapError {
  const resolved = c.status?.conditions?.find((k) => k.type === 'TargetResolved' && k.status !== 'True');
  const why = resolved ? `; ${resolved.reason}: ${resolved.message}` : '';
  const of = podUID ? ` of pod UID ${podUID}` : '';
  return new PcapError(
    `no files yet: packetcapture ${c.metadata.namespace}/${c.metadata.name} has no capture files${of} (phase ${c.status?.phase ?? 'unknown'}${why})` +
      (otherInstances > 0 ? `; ${otherLeftOut(otherInstances)}` : ''),
  );
}

export const otherLeftOut = (n: number): string =>
  `${n} session(s) on the nodes were made by an earlier capture of the same name and are left out`;

export interface FetchedFile extends RemoteFile {
  path: string;
  bytes: number;
  /** what this run did: downloaded whole, continued from an offset, or found it complete */
  action: 'downloaded' | 'resumed' | 'up to date';
  from: number;
}

export interface FetchResult {
  files: FetchedFile[];
  /** nodes whose agent could not be asked, and files that failed, each said in one line */
  failures: string[];
  /** sessions left on the nodes by an earlier capture of the same name, not fetched */
  otherInstances: number;
}

export interface FetchOptions {
  outDir: string;
  podUID?: string;
  onFile?: (file: FetchedFile) => void;
  /** as bytes arrive: how many of all the files' bytes are here (fetched now or before), of their total */
  onProgress?: (done: number, total: number) => void;
}

export async function fetchCapture(t: Target, name: string, opts: FetchOptions): Promise<FetchResult> {
  const capture = await getCapture(t, name);
  const sessions = (capture.status?.sessions ?? []).filter((s) => !opts.podUID || s.podUID === opts.podUID);
  const targets = (capture.status?.targets ?? []).filter((s) => !opts.podUID || s.podUID === opts.podUID);
  // with --pod-uid, its sessions may have left the status history; their files stay on the node
  if (sessions.length === 0 && !opts.podUID) throw noFilesYet(capture);
  const listing = await apiJson<CaptureListing>(t, subresourcePath(capture.metadata.namespace!, capture.metadata.name, 'files'));

  const failures = listing.unreachable.map((line) => `agent not reachable: ${line}`);
  // a node the status names that no agent answered for: its files cannot be read now
  const answered = new Set([...listing.nodes.map((n) => n.node), ...listing.unreachable.map((l) => /^node (\S+):/.exec(l)?.[1])]);
  for (const node of new Set([...sessions, ...targets].map((s) => s.nodeName).filter(Boolean))) {
    if (!answered.has(node)) failures.push(`agent not reachable: node ${node} has no live agent that the packet-capture API can ask; is the agent DaemonSet running there?`);
  }
  let otherInstances = 0;
  const remote: RemoteFile[] = [];
  for (const { node, pods } of listing.nodes) {
    for (const pod of pods) {
      if (opts.podUID && pod.podUID !== opts.podUID) continue;
      for (const session of pod.sessions) {
        // files of a deleted capture stay until retention removes them; a new capture of the same name is another capture
        if (session.captureUID !== capture.metadata.uid) {
          otherInstances++;
          continue;
        }
        for (const f of session.files) {
          if (![pod.podUID, session.id, f.name].every((s) => SEGMENT.test(s))) {
            failures.push(`node ${node}: refusing the unsafe name ${JSON.stringify([pod.podUID, session.id, f.name].join('/'))}`);
            continue;
          }
          remote.push({ node, podUID: pod.podUID, sessionId: session.id, name: f.name, size: f.size });
        }
      }
    }
  }
  if (remote.length === 0 && failures.length === 0) throw noFilesYet(capture, opts.podUID, otherInstances);

  const files: FetchedFile[] = [];
  const total = remote.reduce((sum, file) => sum + file.size, 0);
  let done = 0;
  const arrived = (n: number) => opts.onProgress?.((done += n), total);
  for (const file of remote) {
    try {
      const fetched = await downloadFile(t, capture, file, opts.outDir, arrived);
      files.push(fetched);
      opts.onFile?.(fetched);
    } catch (err) {
      if (!(err instanceof PcapError)) throw err;
      failures.push(err.message);
    }
  }
  return { files, failures, otherInstances };
}

async function downloadFile(
  t: Target,
  c: PacketCapture,
  file: RemoteFile,
  outDir: string,
  arrived: (bytes: number) => void,
): Promise<FetchedFile> {
  const dir = join(outDir, file.podUID, file.sessionId);
  const path = join(dir, file.name);
  const partial = path + PARTIAL;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // a finished copy that the session has since added to is continued like a partial one
  const have = (await sizeOf(partial)) ?? (await sizeOf(path));
  const plan = planDownload(have, file.size);
  if (plan.action === 'skip') {
    await rm(partial, { force: true });
    arrived(file.size);
    return { ...file, path, bytes: file.size, action: 'up to date', from: file.size };
  }
  if ((await sizeOf(partial)) === undefined && (await sizeOf(path)) !== undefined) await rename(path, partial);

  const remotePath = subresourcePath(c.metadata.namespace!, c.metadata.name, 'files', file.podUID, file.sessionId, file.name);
  const get = (from: number) => kubeStream(t.kc, remotePath, { headers: from > 0 ? { range: `bytes=${from}-` } : {} });
  let from = plan.from;
  let res;
  try {
    res = await get(from);
  } catch (err) {
    // ours is longer than what the agent has now: start over
    if (!(err instanceof KubeError && err.statusCode === 416)) throw apiError(err, `reading ${remotePath}`);
    from = 0;
    res = await get(0).catch((again: unknown) => {
      throw apiError(again, `reading ${remotePath}`);
    });
  }
  // an agent that ignores Range sends the whole file
  if (res.status === 200) from = 0;
  const end = servedEnd(res.status, res.headers, from);
  if (end === undefined) throw new PcapError(`${remotePath}: the agent's answer (${res.status}) does not say how long the file is`);
  arrived(from);
  try {
    await pipeline(
      Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
      async function* (chunks: AsyncIterable<Uint8Array>) {
        for await (const chunk of chunks) {
          arrived(chunk.length);
          yield chunk;
        }
      },
      createWriteStream(partial, { flags: from > 0 ? 'a' : 'w', mode: 0o600 }),
    );
  } catch (err) {
    throw new PcapError(`${file.podUID}/${file.sessionId}/${file.name}: download cut off at ${(await sizeOf(partial)) ?? 0} of ${end} bytes (${(err as Error).message}); run fetch again to continue`);
  }
  const got = (await sizeOf(partial)) ?? 0;
  if (got !== end) {
    throw new PcapError(`${file.podUID}/${file.sessionId}/${file.name}: size check failed, have ${got} bytes but the agent served ${end}; run fetch again to continue`);
  }
  await rename(partial, path);
  return { ...file, path, bytes: got, action: from > 0 ? 'resumed' : 'downloaded', from };
}
