// Pod UID -> network namespace. Container runtimes put every process of a pod in a cgroup
// whose path names the pod UID; those processes' /proc/<pid>/ns/net is the pod's netns.
// The lookup reads /proc and proves its answer or says why it cannot: it never guesses.

import { closeSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { REASONS } from '../crds/packetcapture.ts';
import { CaptureError } from './capture-error.ts';

export type NetnsLookup =
  | { found: true; pid: number; netnsPath: string; inode: number; pids: number[] }
  | { found: false; reason: typeof REASONS.NetnsNotFound | typeof REASONS.NetnsMismatch | typeof REASONS.HostNetwork; message: string };

/**
 * Whether a /proc/<pid>/cgroup text places the process in the pod `podUID`: some line's
 * path has a segment that is exactly the pod's (`pod<U>`, `pod<U_>.slice`,
 * `kubepods-besteffort-pod<U_>.slice`, ... with U the UID, U_ it with underscores).
 * Exact segments, so a UID that merely starts with this one, or appears in a container
 * id, is not a match.
 */
export function cgroupNamesPod(cgroupFileText: string, podUID: string): boolean {
  if (podUID === '') return false;
  const forms = [podUID, podUID.replaceAll('-', '_')];
  for (const line of cgroupFileText.split('\n')) {
    // hierarchy-ID:controller-list:path; the path is everything after the second colon
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    for (const segment of line.slice(second + 1).split('/')) {
      if (forms.some((form) => isPodSegment(segment, form))) return true;
    }
  }
  return false;
}

/** `pod<X>` or `pod<X>.slice`, alone or after a systemd slice prefix ending in `-`. */
function isPodSegment(segment: string, form: string): boolean {
  const unit = segment.endsWith('.slice') ? segment.slice(0, -'.slice'.length) : segment;
  return unit === `pod${form}` || unit.endsWith(`-pod${form}`);
}

/** The inode of a process's network namespace; throws if the process is gone. */
export async function netnsInodeOfPid(pid: number, procRoot = '/proc'): Promise<number> {
  return (await stat(join(procRoot, String(pid), 'ns', 'net'))).ino;
}

// /proc files live in memory: reading one synchronously takes ~20µs where the async path
// costs ~170µs (measured, 2 busy cores), so the scan reads batches synchronously and
// yields to the event loop between them, which stays free for other work.
const BATCH = 256;

/**
 * Finds the network namespace of the pod `podUID` among this node's processes: every
 * process whose cgroup names the pod is a candidate, and all candidates must share one
 * netns (a pod's containers do). Processes that exit mid-scan are ignored.
 */
export async function findPodNetns(podUID: string, { procRoot = '/proc' }: { procRoot?: string } = {}): Promise<NetnsLookup> {
  const pids = (await readdir(procRoot)).filter((entry) => /^[0-9]+$/.test(entry)).map(Number);
  const underscored = podUID.replaceAll('-', '_');
  const candidates: number[] = [];
  for (let first = 0; first < pids.length; first += BATCH) {
    for (const pid of pids.slice(first, first + BATCH)) {
      const text = readIfPresent(join(procRoot, String(pid), 'cgroup'));
      // cheap substring test first: almost every process on a node belongs to another pod
      if (text === undefined || (!text.includes(podUID) && !text.includes(underscored))) continue;
      if (cgroupNamesPod(text, podUID)) candidates.push(pid);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }

  const inodes = new Map<number, number>();
  const unreadable: string[] = [];
  await Promise.all(
    candidates.map(async (pid) => {
      try {
        inodes.set(pid, await netnsInodeOfPid(pid, procRoot));
      } catch (err) {
        if (!vanished(err)) unreadable.push(`${pid} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }),
  );
  return decide(podUID, procRoot, inodes, unreadable, await nodeNetnsInodes(procRoot));
}

/**
 * The node's own network namespaces: init's (the agent runs with hostPID) and the agent's.
 * One the agent cannot read is left out; the pod lookup itself then fails for the same reason.
 */
async function nodeNetnsInodes(procRoot: string): Promise<Set<number>> {
  const inodes = await Promise.allSettled([netnsInodeOfPid(1, procRoot), netnsInodeOfPid(process.pid, procRoot)]);
  return new Set(inodes.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])));
}

function decide(podUID: string, procRoot: string, inodes: Map<number, number>, unreadable: string[], node: Set<number>): NetnsLookup {
  if (unreadable.length > 0) {
    return {
      found: false,
      reason: REASONS.NetnsNotFound,
      message: `cannot read the network namespace of pod ${podUID}'s processes ${unreadable.join(', ')}; the agent needs root and hostPID`,
    };
  }
  const pids = [...inodes.keys()].sort((a, b) => a - b);
  const distinct = new Set(inodes.values());
  if (pids.length === 0) {
    return {
      found: false,
      reason: REASONS.NetnsNotFound,
      message: `no process of pod ${podUID} in this node's cgroups; is the pod running on this node?`,
    };
  }
  if (distinct.size > 1) {
    const byInode = pids.map((pid) => `${pid}:net:[${inodes.get(pid)}]`).join(', ');
    return {
      found: false,
      reason: REASONS.NetnsMismatch,
      message: `processes of pod ${podUID} are in different network namespaces (${byInode}); cannot tell which is the pod's, not capturing`,
    };
  }
  const pid = pids[0]!;
  if (node.has(inodes.get(pid)!)) {
    // a hostNetwork pod: its "netns" carries every packet of the node and of its other hostNetwork pods
    return {
      found: false,
      reason: REASONS.HostNetwork,
      message: `pod ${podUID} runs in the node's network namespace (hostNetwork); a capture there would hold the node's and other pods' packets, so it is not captured`,
    };
  }
  return { found: true, pid, netnsPath: join(procRoot, String(pid), 'ns', 'net'), inode: inodes.get(pid)!, pids };
}

/** An open handle on a pod's netns: what tcpdump enters, so a PID reused after the lookup cannot redirect it. */
export interface HeldNetns {
  fd: number;
  inode: number;
  /** the process the lookup found it through */
  pid: number;
  /** closes the handle; safe to call more than once */
  close(): void;
}

/**
 * Opens the netns the lookup found and proves the handle is the pod's: the open file is
 * the inode the lookup saw, and the process it was opened through still belongs to the
 * pod after the open (its PID was not reused by another process in between). Throws
 * NetnsNotFound when the process is gone, NetnsMismatch when the proof fails.
 */
export function holdNetns(podUID: string, lookup: { pid: number; inode: number }, { procRoot = '/proc' }: { procRoot?: string } = {}): HeldNetns {
  let fd: number;
  try {
    fd = openSync(join(procRoot, String(lookup.pid), 'ns', 'net'), 'r');
  } catch (err) {
    if (vanished(err)) throw new CaptureError(REASONS.NetnsNotFound, `pod ${podUID}'s process ${lookup.pid} exited before its network namespace could be opened`);
    throw err;
  }
  let open = true;
  // idempotent: a session closes it when tcpdump is in, and again on every way out
  const close = () => {
    if (open) closeSync(fd);
    open = false;
  };
  const held = fstatSync(fd).ino;
  if (held !== lookup.inode || !stillInPod(lookup.pid, podUID, lookup.inode, procRoot)) {
    close();
    throw new CaptureError(
      REASONS.NetnsMismatch,
      `process ${lookup.pid} no longer proves pod ${podUID}'s network namespace (opened net:[${held}], the lookup saw net:[${lookup.inode}]); looking again`,
    );
  }
  return { fd, inode: held, pid: lookup.pid, close };
}

/** Whether the netns a session captures is still its pod's, as recheckPodNetns sees it. */
export type NetnsRecheck =
  | { state: 'same'; pids: number[] }
  | { state: 'changed' | 'gone'; message: string };

/**
 * Whether a process of pod `podUID` still lives in the netns `inode` a session captures.
 * The pids the session knows come first: each still counts when its netns is `inode` and
 * its cgroup still names the pod (an exited process's pid may be reused by anyone). Only
 * when none is left is /proc scanned: then `same` with the pod's processes now, `changed`
 * when they live in another netns (the sandbox was recreated under the same UID), `gone`
 * when the pod has no process left on this node.
 */
export async function recheckPodNetns(
  podUID: string,
  captured: { inode: number; pids: readonly number[] },
  { procRoot = '/proc' }: { procRoot?: string } = {},
): Promise<NetnsRecheck> {
  const pids = captured.pids.filter((pid) => stillInPod(pid, podUID, captured.inode, procRoot));
  if (pids.length > 0) return { state: 'same', pids };
  const lookup = await findPodNetns(podUID, { procRoot });
  if (lookup.found && lookup.inode === captured.inode) return { state: 'same', pids: lookup.pids };
  if (lookup.found) {
    return {
      state: 'changed',
      message: `pod ${podUID}'s processes now live in net:[${lookup.inode}], not in the captured net:[${captured.inode}]: its sandbox was recreated; a new session captures there`,
    };
  }
  if (lookup.reason === REASONS.NetnsNotFound) {
    return {
      state: 'gone',
      message: `no process of pod ${podUID} is left in net:[${captured.inode}] or anywhere on this node; a new session waits for the pod's netns`,
    };
  }
  // its processes are split over namespaces, or in the node's own: the new session's lookup says which
  return { state: 'changed', message: `${lookup.message} (this session captured net:[${captured.inode}])` };
}

// synchronous for the reason the scan's reads are (BATCH): two reads of files in memory
function stillInPod(pid: number, podUID: string, inode: number, procRoot: string): boolean {
  try {
    if (statSync(join(procRoot, String(pid), 'ns', 'net')).ino !== inode) return false;
    return cgroupNamesPod(readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8'), podUID);
  } catch (err) {
    if (vanished(err)) return false;
    throw err;
  }
}

function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (vanished(err)) return undefined;
    throw err;
  }
}

/** A process that exits while we read its /proc entry shows up as one of these. */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH' || code === 'ENOTDIR';
}
