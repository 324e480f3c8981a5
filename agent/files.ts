// A capture's files on the node: <dataDir>/<namespace>/<name>/<podUID>/<sessionId>/capture-<n>.pcapng
// and their upkeep: keep files of deleted captures for a while, never fill the disk.

import { mkdirSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** The n-th file of a session (from 1): a rotation counts on, a ring keeps the newest. */
export const captureFileName = (n: number): string => `capture-${n}.pcapng`;
/** Names of capture files, for whoever serves or lists them. */
export const CAPTURE_FILE = /^capture-[1-9][0-9]*\.pcapng$/;

/** Written into <dataDir>/<namespace>/<name>/ when that capture is first seen gone. */
export const DELETED_MARKER = '.deleted';

export interface SessionFile {
  name: string;
  size: number;
}

// One path segment each: Kubernetes names, UIDs and session ids are all of this shape, and
// nothing of this shape can climb out of the data dir.
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

/** The directory of one session. Throws RangeError for anything that is not a plain name. */
export function sessionDir(dataDir: string, namespace: string, name: string, podUID: string, sessionId: string): string {
  for (const [field, value] of Object.entries({ namespace, name, podUID, sessionId })) {
    if (!SEGMENT.test(value)) throw new RangeError(`${field} "${value}" cannot be a directory name under the data dir`);
  }
  return join(dataDir, namespace, name, podUID, sessionId);
}

/** Kept in each session directory: which capture instance the files belong to. */
export const SESSION_FILE = 'session.json';

export interface SessionMeta {
  captureUID: string;
  generation: number;
  podUID: string;
  podName: string;
}

/**
 * Creates a session's directory (packets are private, so only root may read them) with its
 * SESSION_FILE, synchronously (the writer makes it the instant its netns is verified): a capture deleted and created again under its name shares the
 * <namespace>/<name> directory with its predecessor until retention removes the old files,
 * and this is how the two are told apart.
 */
export function makeSessionDir(dir: string, meta: SessionMeta): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, SESSION_FILE), JSON.stringify(meta), { mode: 0o600 });
}

/** The session's SESSION_FILE, or undefined when it is missing or unreadable. */
export async function readSessionMeta(dir: string): Promise<SessionMeta | undefined> {
  try {
    const meta = JSON.parse(await readFile(join(dir, SESSION_FILE), 'utf8')) as Partial<SessionMeta>;
    return typeof meta.captureUID === 'string' ? (meta as SessionMeta) : undefined;
  } catch {
    return undefined;
  }
}

/** The capture files of a session directory in rotation order; [] when it does not exist. */
export async function listSessionFiles(dir: string): Promise<SessionFile[]> {
  return (await captureFiles(dir)).map(({ name, size }) => ({ name, size }));
}

async function captureFiles(dir: string): Promise<(SessionFile & { mtimeMs: number })[]> {
  const names = (await entries(dir)).filter((name) => CAPTURE_FILE.test(name));
  const files = await Promise.all(
    names.map(async (name) => {
      const info = await stat(join(dir, name)).catch(ignoreMissing);
      return info && { name, size: info.size, mtimeMs: info.mtimeMs };
    }),
  );
  return files
    .filter((file) => file !== undefined)
    .sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

/** The newest modification time of anything under `dir` (0 when empty or gone). */
async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  for (const name of await entries(dir)) {
    const path = join(dir, name);
    const info = await stat(path).catch(ignoreMissing);
    if (!info) continue;
    newest = Math.max(newest, info.isDirectory() ? await newestMtime(path) : info.mtimeMs);
  }
  return newest;
}

async function entries(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(ignoreMissing)) ?? [];
}

function ignoreMissing(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
  throw err;
}

/** <dataDir>/<namespace>/<name> directories, as 'namespace/name' keys. */
async function captureDirs(dataDir: string): Promise<{ key: string; path: string }[]> {
  const result: { key: string; path: string }[] = [];
  for (const namespace of await entries(dataDir)) {
    for (const name of await entries(join(dataDir, namespace))) {
      const path = join(dataDir, namespace, name);
      if ((await stat(path).catch(ignoreMissing))?.isDirectory()) result.push({ key: `${namespace}/${name}`, path });
    }
  }
  return result;
}

/**
 * Removes the files of capture instances that no longer exist, `keepMs` after they were
 * first seen gone (a marker file records when) and after their newest file: the whole
 * <namespace>/<name> directory when no capture has that name, else the sessions that an
 * earlier capture of the same name left (their SESSION_FILE names another UID). Something
 * that shows up again (a snapshot that was briefly incomplete) loses its marker. Call it
 * with a complete capture snapshot as 'namespace/name' -> UID. Returns removed paths.
 */
export async function pruneDeleted(
  dataDir: string,
  liveCaptures: ReadonlyMap<string, string>,
  { keepMs = 24 * 3600_000, now = Date.now() }: { keepMs?: number; now?: number } = {},
): Promise<string[]> {
  const removed: string[] = [];
  const expire = async (path: string, gone: boolean): Promise<void> => {
    const marker = join(path, DELETED_MARKER);
    if (!gone) return void (await rm(marker, { force: true }));
    const deletedAt = Date.parse((await readFile(marker, 'utf8').catch(ignoreMissing)) ?? '');
    if (Number.isNaN(deletedAt)) return void (await writeFile(marker, new Date(now).toISOString()));
    if (now - Math.max(deletedAt, await newestMtime(path)) >= keepMs) {
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    }
  };
  for (const { key, path } of await captureDirs(dataDir)) {
    const uid = liveCaptures.get(key);
    await expire(path, uid === undefined);
    if (uid === undefined) continue;
    for (const podUID of await entries(path)) {
      const podDir = join(path, podUID);
      const sessions = await entries(podDir);
      for (const session of sessions) {
        const meta = await readSessionMeta(join(podDir, session));
        if (meta) await expire(join(podDir, session), meta.captureUID !== uid);
      }
      // a pod instance whose last session just went: its directory goes too
      if (sessions.length > 0 && (await entries(podDir)).length === 0) await rm(podDir, { recursive: true, force: true });
    }
  }
  return removed;
}

/**
 * Removes whole ended sessions, oldest newest-file first, until the data dir holds at
 * most `capBytes` of captures. Directories in `protectedDirs` (running sessions) are never
 * touched, so the result can stay above the cap: `bytes` says what is left.
 */
export async function enforceDiskCap(
  dataDir: string,
  capBytes: number,
  protectedDirs: ReadonlySet<string> = new Set(),
): Promise<{ removed: string[]; bytes: number }> {
  const keep = new Set([...protectedDirs].map((dir) => resolve(dir)));
  const sessions: { path: string; bytes: number; newest: number }[] = [];
  for (const { path: captureDir } of await captureDirs(dataDir)) {
    for (const podUID of await entries(captureDir)) {
      for (const session of await entries(join(captureDir, podUID))) {
        const path = join(captureDir, podUID, session);
        const files = await captureFiles(path);
        sessions.push({
          path,
          bytes: files.reduce((sum, file) => sum + file.size, 0),
          newest: Math.max(0, ...files.map((file) => file.mtimeMs)),
        });
      }
    }
  }
  let bytes = sessions.reduce((sum, session) => sum + session.bytes, 0);
  const removed: string[] = [];
  const candidates = sessions.filter((session) => !keep.has(resolve(session.path))).sort((a, b) => a.newest - b.newest);
  for (const session of candidates) {
    if (bytes <= capBytes) break;
    await rm(session.path, { recursive: true, force: true });
    removed.push(session.path);
    bytes -= session.bytes;
  }
  return { removed, bytes };
}
