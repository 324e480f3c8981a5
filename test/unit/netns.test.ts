import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cgroupNamesPod, findPodNetns, recheckPodNetns } from '../../agent/netns.ts';

const U = '6f1c7f0e-3b1a-4d2c-9e55-0a1b2c3d4e5f';
const U_ = U.replaceAll('-', '_');
const CONTAINER = 'a3f5c2b1d4e6f7081928374656abcdef0123456789abcdef0123456789abcdef';

describe('cgroupNamesPod', () => {
  it.each([
    ['cgroup v1, cgroupfs, BestEffort', `4:pids:/kubepods/besteffort/pod${U}/${CONTAINER}`],
    ['cgroup v1, cgroupfs, Guaranteed', `4:pids:/kubepods/pod${U}/${CONTAINER}`],
    ['cgroup v1, the pod cgroup itself', `4:pids:/kubepods/burstable/pod${U}`],
    [
      'cgroup v2, systemd, containerd',
      `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice/cri-containerd-${CONTAINER}.scope`,
    ],
    [
      'kind, kubelet cgroup root /kubelet',
      `0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${U_}.slice/cri-containerd-${CONTAINER}.scope`,
    ],
    ['private cgroup namespace, relative path', `0::/../../kubepods-besteffort-pod${U_}.slice/cri-containerd-${CONTAINER}.scope`],
    ['CRI-O', `0::/kubepods.slice/kubepods-pod${U_}.slice/crio-${CONTAINER}.scope`],
    ['systemd slice named with dashes', `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${U}.slice/x.scope`],
    [
      'one matching line among many (cgroup v1, several hierarchies)',
      `12:memory:/user.slice\n4:pids:/kubepods/besteffort/pod${U}/${CONTAINER}\n1:name=systemd:/kubepods/besteffort/pod${U}/${CONTAINER}\n0::/\n`,
    ],
  ])('%s names the pod', (_shape, text) => {
    expect(cgroupNamesPod(text, U)).toBe(true);
  });

  it.each([
    ['another pod whose UID starts with this one', `4:pids:/kubepods/besteffort/pod${U}0/${CONTAINER}`],
    ['another pod (systemd) whose UID starts with this one', `0::/kubepods.slice/kubepods-besteffort-pod${U_}ab.slice/cri-containerd-${CONTAINER}.scope`],
    ['the UID inside a container id', `0::/kubepods.slice/kubepods-besteffort-podother.slice/cri-containerd-${U}.scope`],
    ['the UID as a plain cgroup name', `4:pids:/kubepods/besteffort/${U}/${CONTAINER}`],
    ['no pod segment at all', '0::/system.slice/containerd.service\n4:pids:/\n'],
    ['pod<U> as a substring of a longer segment', `4:pids:/kubepods/besteffort/xpod${U}/${CONTAINER}`],
    ['pod<U> followed by more characters', `4:pids:/kubepods/besteffort/pod${U}-old/${CONTAINER}`],
    ['pod<U> with a suffix other than .slice', `0::/kubepods.slice/pod${U}.scope`],
    ['the UID only in the controller list', `4:pod${U}:/`],
    ['an empty file', ''],
  ])('%s does not name the pod', (_shape, text) => {
    expect(cgroupNamesPod(text, U)).toBe(false);
  });

  it('an empty UID names no pod', () => {
    expect(cgroupNamesPod('4:pids:/kubepods/besteffort/pod/x', '')).toBe(false);
  });
});

/**
 * A fake /proc for each test of the calling describe: <pid>/cgroup files and <pid>/ns/net
 * links to files whose inodes stand for the network namespaces `netnsNames` (stat follows
 * the link, as it does for nsfs).
 */
function useFakeProc(netnsNames: readonly string[]) {
  const dirs = { proc: '', namespaces: '' };
  beforeEach(async () => {
    dirs.proc = await mkdtemp(join(tmpdir(), 'netns-proc-'));
    dirs.namespaces = await mkdtemp(join(tmpdir(), 'netns-ns-'));
    await Promise.all(netnsNames.map((ns) => writeFile(join(dirs.namespaces, ns), '')));
  });
  afterEach(async () => {
    await rm(dirs.proc, { recursive: true, force: true });
    await rm(dirs.namespaces, { recursive: true, force: true });
  });
  return {
    root: () => dirs.proc,
    inode: async (netns: string) => (await stat(join(dirs.namespaces, netns))).ino,
    async processOf(pid: number, cgroup: string, netns?: string) {
      await mkdir(join(dirs.proc, String(pid), 'ns'), { recursive: true });
      await writeFile(join(dirs.proc, String(pid), 'cgroup'), cgroup);
      if (netns) await symlink(join(dirs.namespaces, netns), join(dirs.proc, String(pid), 'ns', 'net'));
    },
  };
}

const inPod = (uid: string) => `0::/kubepods.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-${CONTAINER}.scope\n`;

describe('findPodNetns', () => {
  const fake = useFakeProc(['pod-a', 'pod-a-debug', 'host']);
  const { processOf } = fake;

  it("finds the netns every process of the pod shares, with the pod's pids", async () => {
    await processOf(1, '0::/init.scope\n', 'host');
    await processOf(40, inPod(U), 'pod-a');
    await processOf(7, inPod(U), 'pod-a');
    await processOf(99, inPod(`${U}0`), 'host');
    await mkdir(join(fake.root(), 'self'));

    const lookup = await findPodNetns(U, { procRoot: fake.root() });

    expect(lookup).toMatchObject({ found: true, pid: 7, pids: [7, 40], netnsPath: join(fake.root(), '7', 'ns', 'net') });
    if (!lookup.found) throw new Error('unreachable');
    expect(lookup.inode).toBe(await fake.inode('pod-a'));
  });

  it('says the pod has no process here when no cgroup names it', async () => {
    await processOf(1, '0::/init.scope\n', 'host');
    await processOf(12, inPod(`${U}0`), 'pod-a');

    expect(await findPodNetns(U, { procRoot: fake.root() })).toEqual({
      found: false,
      reason: 'NetnsNotFound',
      message: `no process of pod ${U} in this node's cgroups; is the pod running on this node?`,
    });
  });

  it('refuses to choose when processes of the pod are in different namespaces', async () => {
    await processOf(40, inPod(U), 'pod-a');
    await processOf(41, inPod(U), 'pod-a-debug');

    const lookup = await findPodNetns(U, { procRoot: fake.root() });

    expect(lookup).toMatchObject({ found: false, reason: 'NetnsMismatch' });
    if (lookup.found) throw new Error('unreachable');
    expect(lookup.message).toContain('40:net:[');
    expect(lookup.message).toContain('41:net:[');
  });

  it("refuses a pod whose processes are in the node's own namespace (hostNetwork)", async () => {
    await processOf(1, '0::/init.scope\n', 'host');
    await processOf(40, inPod(U), 'host');

    const lookup = await findPodNetns(U, { procRoot: fake.root() });

    expect(lookup).toMatchObject({ found: false, reason: 'HostNetwork' });
    if (lookup.found) throw new Error('unreachable');
    expect(lookup.message).toContain(`pod ${U} runs in the node's network namespace (hostNetwork)`);
  });

  it('ignores a process that exited between reading its cgroup and its netns', async () => {
    await processOf(40, inPod(U), 'pod-a');
    await processOf(41, inPod(U)); // no ns/net: gone mid-scan

    expect(await findPodNetns(U, { procRoot: fake.root() })).toMatchObject({ found: true, pid: 40, pids: [40] });
  });
});

describe('recheckPodNetns', () => {
  const fake = useFakeProc(['old', 'new', 'other']);
  const { processOf, inode } = fake;

  it('keeps the known pids that still live in the captured netns, without a scan', async () => {
    await processOf(40, inPod(U), 'old');
    await processOf(41, inPod(U), 'old');
    // a process of the pod the session does not know, elsewhere: only a scan would see it
    await processOf(50, inPod(U), 'new');

    expect(await recheckPodNetns(U, { inode: await inode('old'), pids: [40, 41, 42] }, { procRoot: fake.root() })).toEqual({ state: 'same', pids: [40, 41] });
  });

  it("does not count a known pid reused by another pod's process in the same netns inode", async () => {
    await processOf(40, inPod(`${U}0`), 'old');

    expect(await recheckPodNetns(U, { inode: await inode('old'), pids: [40] }, { procRoot: fake.root() })).toMatchObject({ state: 'gone' });
  });

  it('scans when no known pid is left: the pod still in the captured netns is the same', async () => {
    await processOf(60, inPod(U), 'old');

    expect(await recheckPodNetns(U, { inode: await inode('old'), pids: [40] }, { procRoot: fake.root() })).toEqual({ state: 'same', pids: [60] });
  });

  it('says the netns changed when the pod now lives in another one (sandbox recreated)', async () => {
    await processOf(40, inPod(U), 'new');
    const old = await inode('old');

    const check = await recheckPodNetns(U, { inode: old, pids: [40] }, { procRoot: fake.root() });

    expect(check).toEqual({
      state: 'changed',
      message: `pod ${U}'s processes now live in net:[${await inode('new')}], not in the captured net:[${old}]: its sandbox was recreated; a new session captures there`,
    });
  });

  it('says the netns is gone when the pod has no process left', async () => {
    await processOf(70, inPod(`${U}0`), 'other');

    expect(await recheckPodNetns(U, { inode: await inode('old'), pids: [40] }, { procRoot: fake.root() })).toMatchObject({ state: 'gone' });
  });
});
