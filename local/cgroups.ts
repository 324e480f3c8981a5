// Kubepods cgroups as a kubelet and containerd would lay them out, so the agent's
// UID -> process lookup meets the same /proc/<pid>/cgroup lines here as on a real node.

import { constants, rmdirSync } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Cgroup driver and version: `cgroupfs-v1` is `/kubepods/besteffort/pod<U>/<id>` in the pids hierarchy. */
export const CGROUP_LAYOUTS = ['cgroupfs-v1', 'cgroupfs-v2', 'systemd-v1', 'systemd-v2'] as const;
export type CgroupLayout = (typeof CGROUP_LAYOUTS)[number];

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

/** The v1 hierarchy a process is placed in; one is enough for the lookup, and pids always exists. */
const V1_CONTROLLER = 'pids';

/**
 * The cgroup path segments of one container, from the hierarchy root down, leaf last.
 * Guaranteed pods sit directly under kubepods; the other classes in a QoS level.
 */
export function containerCgroupSegments(layout: CgroupLayout, podUID: string, qos: QosClass, containerId: string): string[] {
  const level = qos === 'Guaranteed' ? undefined : qos.toLowerCase();
  if (layout.startsWith('cgroupfs')) {
    return ['kubepods', ...(level ? [level] : []), `pod${podUID}`, containerId];
  }
  const podUnit = podUID.replaceAll('-', '_');
  return level
    ? ['kubepods.slice', `kubepods-${level}.slice`, `kubepods-${level}-pod${podUnit}.slice`, `cri-containerd-${containerId}.scope`]
    : ['kubepods.slice', `kubepods-pod${podUnit}.slice`, `cri-containerd-${containerId}.scope`];
}

export interface CgroupMounts {
  /** mount point of the cgroup2 hierarchy, when it is mounted at its root */
  v2?: string;
  /** mount point of the v1 pids hierarchy */
  v1?: string;
}

/**
 * The cgroup hierarchies in a /proc/self/mountinfo text. A mount of a sub-tree (root
 * field other than `/`) is skipped: paths under it would not match /proc/<pid>/cgroup.
 */
export function parseCgroupMounts(mountinfo: string): CgroupMounts {
  const mounts: CgroupMounts = {};
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fstype, , superOptions = ''] = right.split(' ');
    const root = fields[3];
    const mountPoint = fields[4];
    if (root !== '/' || !mountPoint) continue;
    if (fstype === 'cgroup2') mounts.v2 ??= mountPoint;
    if (fstype === 'cgroup' && superOptions.split(',').includes(V1_CONTROLLER)) mounts.v1 ??= mountPoint;
  }
  return mounts;
}

/** The hierarchy root a layout writes under, or undefined if this machine lacks it. */
export const layoutRoot = (layout: CgroupLayout, mounts: CgroupMounts): string | undefined =>
  layout.endsWith('-v2') ? mounts.v2 : mounts.v1;

const writable = (dir: string) => access(dir, constants.W_OK).then(() => true, () => false);

/**
 * The layout to use and its hierarchy root: the one asked for, or systemd on cgroup v2
 * (what current distributions run) when that hierarchy is writable, else cgroupfs on v1.
 */
export async function resolveCgroupLayout(wanted?: CgroupLayout): Promise<{ layout: CgroupLayout; root: string }> {
  const mounts = parseCgroupMounts(await readFile('/proc/self/mountinfo', 'utf8'));
  const candidates: CgroupLayout[] = wanted ? [wanted] : ['systemd-v2', 'cgroupfs-v1'];
  for (const layout of candidates) {
    const root = layoutRoot(layout, mounts);
    if (root && (await writable(root))) return { layout, root };
  }
  const seen = `cgroup2 ${mounts.v2 ?? 'not mounted'}, v1 ${V1_CONTROLLER} ${mounts.v1 ?? 'not mounted'}`;
  throw new Error(`no writable cgroup hierarchy for ${candidates.join(' or ')} (${seen}); run as root with /sys/fs/cgroup mounted read-write`);
}

/** Absolute directories of a container's cgroup and its ancestors below the root, leaf first. */
export const cgroupChain = (root: string, segments: readonly string[]): string[] =>
  segments.map((_, i) => join(root, ...segments.slice(0, i + 1))).reverse();

// Shared parents (kubepods, the QoS level) are created and removed by every pod; one
// queue keeps this process's mkdir and rmdir of them from interleaving.
let queue: Promise<unknown> = Promise.resolve();
const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
  const next = queue.then(fn, fn);
  queue = next.catch(() => undefined);
  return next;
};

/** Creates the chain and moves `pid` into its leaf. */
export function placeInCgroup(chain: readonly string[], pid: number): Promise<void> {
  return serialized(async () => {
    const leaf = chain[0]!;
    // another process may remove an empty shared parent between our mkdir and use: retry
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(leaf, { recursive: true });
        await writeFile(join(leaf, 'cgroup.procs'), `${pid}\n`);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err;
      }
    }
  });
}

/** The PIDs in one cgroup; none if it does not exist. */
export async function cgroupPids(dir: string): Promise<number[]> {
  try {
    const text = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    return text.split('\n').filter(Boolean).map(Number);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * Removes the chain leaf first. The first `own` directories belong to one pod and must go;
 * removal stops quietly at the first shared parent still in use (another pod's cgroup below it).
 * Synchronous so a process's 'exit' listener can use it too.
 */
export function removeCgroupChainSync(chain: readonly string[], own: number): void {
  for (const [i, dir] of chain.entries()) {
    try {
      rmdirSync(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      if (i >= own && (code === 'EBUSY' || code === 'ENOTEMPTY')) return;
      throw err;
    }
  }
}

export const removeCgroupChain = (chain: readonly string[], own: number): Promise<void> =>
  serialized(async () => removeCgroupChainSync(chain, own));
