import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DELETED_MARKER,
  enforceDiskCap,
  listSessionFiles,
  makeSessionDir,
  pruneDeleted,
  readSessionMeta,
  SESSION_FILE,
  sessionDir,
} from '../../agent/files.ts';

const UID = '6f1c7f0e-3b1a-4d2c-9e55-0a1b2c3d4e5f';
const HOUR = 3600_000;

describe('sessionDir', () => {
  it('is <dataDir>/<namespace>/<name>/<podUID>/<sessionId>', () => {
    expect(sessionDir('/var/lib/packet-capture', 'web', 'nginx.syn', UID, 's-1')).toBe(`/var/lib/packet-capture/web/nginx.syn/${UID}/s-1`);
  });

  it.each([
    ['namespace', ['..', 'pc', UID, 's1']],
    ['name', ['web', '../../etc', UID, 's1']],
    ['name', ['web', 'a/b', UID, 's1']],
    ['podUID', ['web', 'pc', '.', 's1']],
    ['sessionId', ['web', 'pc', UID, '']],
    ['sessionId', ['web', 'pc', UID, '.hidden']],
    ['sessionId', ['web', 'pc', UID, 'a\0b']],
  ])('rejects a %s that is not a plain name', (field, [namespace, name, podUID, sessionId]) => {
    expect(() => sessionDir('/data', namespace!, name!, podUID!, sessionId!)).toThrow(new RegExp(`^${field} `));
  });
});

describe('files on disk', () => {
  let data: string;
  const now = Date.parse('2030-01-02T00:00:00Z');

  beforeEach(async () => {
    data = await mkdtemp(join(tmpdir(), 'pcap-files-'));
  });
  afterEach(async () => {
    await rm(data, { recursive: true, force: true });
  });

  /** A session directory holding capture files of the given sizes, last written `ageMs` before `now`. */
  async function session(namespace: string, name: string, id: string, sizes: Record<string, number>, ageMs = 0) {
    const dir = sessionDir(data, namespace, name, UID, id);
    await makeSessionDir(dir, { captureUID: 'cap-1', generation: 1, podUID: UID, podName: 'web-0' });
    for (const [file, size] of Object.entries(sizes)) {
      await writeFile(join(dir, file), Buffer.alloc(size));
      const at = new Date(now - ageMs);
      await utimes(join(dir, file), at, at);
    }
    return dir;
  }

  const stats = async (dir: string) => {
    const files = await listSessionFiles(dir);
    return { files: files.length, bytes: files.reduce((sum, f) => sum + f.size, 0) };
  };

  describe('listSessionFiles', () => {
    it('lists the capture files of a ring in rotation order, and only those', async () => {
      const dir = await session('web', 'pc', 's1', { 'capture-10.pcapng': 5, 'capture-2.pcapng': 3, 'capture-1.pcapng': 1, 'notes.txt': 100 });

      expect(await listSessionFiles(dir)).toEqual([
        { name: 'capture-1.pcapng', size: 1 },
        { name: 'capture-2.pcapng', size: 3 },
        { name: 'capture-10.pcapng', size: 5 },
      ]);
      expect(await stats(dir)).toEqual({ files: 3, bytes: 9 });
    });

    it('a session directory that does not exist has no files', async () => {
      expect(await listSessionFiles(join(data, 'missing'))).toEqual([]);
      expect(await stats(join(data, 'missing'))).toEqual({ files: 0, bytes: 0 });
    });

    it('session directories are private to root', async () => {
      const dir = await session('web', 'pc', 's1', {});
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      expect((await stat(join(dir, SESSION_FILE))).mode & 0o777).toBe(0o600);
    });

    it('a session directory says which capture instance made it', async () => {
      const dir = await session('web', 'pc', 's1', {});
      expect(await readSessionMeta(dir)).toEqual({ captureUID: 'cap-1', generation: 1, podUID: UID, podName: 'web-0' });
      await writeFile(join(dir, SESSION_FILE), '{"generation":1}');
      expect(await readSessionMeta(dir)).toBeUndefined();
      expect(await readSessionMeta(join(data, 'missing'))).toBeUndefined();
    });
  });

  describe('pruneDeleted', () => {
    it('marks a capture that disappeared and keeps its files for keepMs from then', async () => {
      const gone = await session('web', 'gone', 's1', { 'capture-1.pcapng': 10 }, 48 * HOUR);
      const capture = join(data, 'web', 'gone');

      expect(await pruneDeleted(data, new Map(), { keepMs: 24 * HOUR, now })).toEqual([]);
      expect(await readFile(join(capture, DELETED_MARKER), 'utf8')).toBe(new Date(now).toISOString());
      expect(await pruneDeleted(data, new Map(), { keepMs: 24 * HOUR, now: now + 23 * HOUR })).toEqual([]);
      expect(await stats(gone)).toEqual({ files: 1, bytes: 10 });

      expect(await pruneDeleted(data, new Map(), { keepMs: 24 * HOUR, now: now + 24 * HOUR })).toEqual([capture]);
      await expect(stat(capture)).rejects.toThrow(/ENOENT/);
    });

    it('keeps a deleted capture until keepMs after its newest file', async () => {
      await session('web', 'gone', 's1', { 'capture-1.pcapng': 10 }, 0);
      await pruneDeleted(data, new Map(), { keepMs: HOUR, now: now - 10 * HOUR });

      expect(await pruneDeleted(data, new Map(), { keepMs: HOUR, now: now + HOUR / 2 })).toEqual([]);
      expect(await pruneDeleted(data, new Map(), { keepMs: HOUR, now: now + HOUR })).toEqual([join(data, 'web', 'gone')]);
    });

    it('never touches a live capture, and a capture that comes back loses its marker', async () => {
      const live = await session('web', 'live', 's1', { 'capture-1.pcapng': 10 }, 100 * HOUR);
      const keys = new Map([['web/live', 'cap-1']]);
      await pruneDeleted(data, new Map(), { now });

      expect(await pruneDeleted(data, keys, { keepMs: HOUR, now: now + 10 * HOUR })).toEqual([]);
      await expect(stat(join(data, 'web', 'live', DELETED_MARKER))).rejects.toThrow(/ENOENT/);
      expect(await stats(live)).toEqual({ files: 1, bytes: 10 });
      // and its age counts afresh from the next time it disappears
      expect(await pruneDeleted(data, new Map(), { keepMs: HOUR, now: now + 20 * HOUR })).toEqual([]);
    });
  });

  describe('pruneDeleted, a name reused by a new capture', () => {
    it("removes the earlier capture's sessions keepMs after it went, and never the new capture's", async () => {
      const earlier = await session('web', 'pc', 's1', { 'capture-1.pcapng': 10 }, 48 * HOUR);
      const later = sessionDir(data, 'web', 'pc', 'another-pod', 's2');
      await makeSessionDir(later, { captureUID: 'cap-2', generation: 1, podUID: 'another-pod', podName: 'web-0' });
      await writeFile(join(later, 'capture-1.pcapng'), Buffer.alloc(5));
      const live = new Map([['web/pc', 'cap-2']]);

      expect(await pruneDeleted(data, live, { keepMs: 24 * HOUR, now })).toEqual([]);
      expect(await readFile(join(earlier, DELETED_MARKER), 'utf8')).toBe(new Date(now).toISOString());
      await expect(stat(join(later, DELETED_MARKER))).rejects.toThrow(/ENOENT/);
      expect(await pruneDeleted(data, live, { keepMs: 24 * HOUR, now: now + 23 * HOUR })).toEqual([]);

      expect(await pruneDeleted(data, live, { keepMs: 24 * HOUR, now: now + 24 * HOUR })).toEqual([earlier]);
      // the earlier instance's pod directory held nothing else
      await expect(stat(join(data, 'web', 'pc', UID))).rejects.toThrow(/ENOENT/);
      expect(await stats(later)).toEqual({ files: 1, bytes: 5 });
      expect(await pruneDeleted(data, live, { keepMs: 0, now: now + 100 * HOUR })).toEqual([]);
    });
  });

  describe('enforceDiskCap', () => {
    it('removes the oldest ended sessions until the data dir is under the cap', async () => {
      const oldest = await session('web', 'a', 's1', { 'capture-1.pcapng': 400 }, 3 * HOUR);
      const middle = await session('web', 'b', 's1', { 'capture-1.pcapng': 200, 'capture-2.pcapng': 200 }, 2 * HOUR);
      const newest = await session('db', 'c', 's2', { 'capture-1.pcapng': 400 }, HOUR);

      expect(await enforceDiskCap(data, 900)).toEqual({ removed: [oldest], bytes: 800 });
      expect(await enforceDiskCap(data, 399)).toEqual({ removed: [middle, newest], bytes: 0 });
    });

    it("never removes a running session's directory, even when that leaves the data dir over the cap", async () => {
      const running = await session('web', 'a', 's1', { 'capture-1.pcapng': 400 }, 3 * HOUR);
      const ended = await session('web', 'a', 's2', { 'capture-1.pcapng': 100 }, HOUR);

      expect(await enforceDiskCap(data, 100, new Set([`${running}/`]))).toEqual({ removed: [ended], bytes: 400 });
      expect(await stats(running)).toEqual({ files: 1, bytes: 400 });
    });

    it('removes nothing under the cap', async () => {
      await session('web', 'a', 's1', { 'capture-1.pcapng': 400 });
      expect(await enforceDiskCap(data, 400)).toEqual({ removed: [], bytes: 400 });
    });
  });
});
