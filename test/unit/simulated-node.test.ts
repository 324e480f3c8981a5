// The pure parts of the simulated node: cgroup paths, mount detection, address allocation,
// the pod status it reports. The cgroup paths are checked against the agent's own matcher,
// so the simulation cannot drift from what the agent recognises.

import { describe, expect, it } from 'vitest';
import { cgroupNamesPod } from '../../agent/netns.ts';
import { cgroupChain, CGROUP_LAYOUTS, containerCgroupSegments, layoutRoot, parseCgroupMounts, type QosClass } from '../../local/cgroups.ts';
import { isOurNetns, macForAddress, parseStartTime } from '../../local/fabric.ts';
import { isFabricAddress } from '../../local/netns-host.ts';
import { lowestFreeAddress, podTcpPorts, runningPodStatus, sandboxNames, statusShows, type Pod } from '../../local/node.ts';

const UID = '3f2a9c1e-7b4d-4e8a-9f10-2b3c4d5e6f70';
const ID = 'a'.repeat(64);

describe('containerCgroupSegments', () => {
  it('lays out cgroupfs paths with the QoS level, Guaranteed pods directly under kubepods', () => {
    expect(containerCgroupSegments('cgroupfs-v1', UID, 'BestEffort', ID)).toEqual(['kubepods', 'besteffort', `pod${UID}`, ID]);
    expect(containerCgroupSegments('cgroupfs-v2', UID, 'Burstable', ID)).toEqual(['kubepods', 'burstable', `pod${UID}`, ID]);
    expect(containerCgroupSegments('cgroupfs-v1', UID, 'Guaranteed', ID)).toEqual(['kubepods', `pod${UID}`, ID]);
  });

  it('lays out systemd slices with the UID in underscores and a containerd scope', () => {
    const U_ = UID.replaceAll('-', '_');
    expect(containerCgroupSegments('systemd-v2', UID, 'BestEffort', ID)).toEqual([
      'kubepods.slice',
      'kubepods-besteffort.slice',
      `kubepods-besteffort-pod${U_}.slice`,
      `cri-containerd-${ID}.scope`,
    ]);
    expect(containerCgroupSegments('systemd-v1', UID, 'Guaranteed', ID)).toEqual([
      'kubepods.slice',
      `kubepods-pod${U_}.slice`,
      `cri-containerd-${ID}.scope`,
    ]);
  });

  const qosClasses: QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort'];
  for (const layout of CGROUP_LAYOUTS) {
    for (const qos of qosClasses) {
      it(`${layout} ${qos}: the agent finds the pod in the /proc/<pid>/cgroup line, and no other pod`, () => {
        const path = '/' + containerCgroupSegments(layout, UID, qos, ID).join('/');
        const line = layout.endsWith('-v2') ? `0::${path}` : `8:pids:${path}`;
        const procCgroup = `9:name=systemd:/\n${line}\n1:cpu:/\n`;
        expect(cgroupNamesPod(procCgroup, UID)).toBe(true);
        expect(cgroupNamesPod(procCgroup, '3f2a9c1e-7b4d-4e8a-9f10-2b3c4d5e6f71')).toBe(false);
      });
    }
  }
});

describe('parseCgroupMounts', () => {
  const line = (id: number, root: string, mountPoint: string, fstype: string, superOptions: string) =>
    `${id} 30 0:${id} ${root} ${mountPoint} rw,relatime - ${fstype} ${fstype} ${superOptions}`;

  it('finds cgroup2 and the v1 pids hierarchy on a hybrid machine', () => {
    const mountinfo = [
      line(30, '/', '/sys/fs/cgroup', 'tmpfs', 'rw,mode=755'),
      line(31, '/', '/sys/fs/cgroup/cpu', 'cgroup', 'rw,cpu'),
      line(38, '/', '/sys/fs/cgroup/pids', 'cgroup', 'rw,pids'),
      line(40, '/', '/sys/fs/cgroup/unified', 'cgroup2', 'rw'),
    ].join('\n');
    const mounts = parseCgroupMounts(mountinfo);
    expect(mounts).toEqual({ v2: '/sys/fs/cgroup/unified', v1: '/sys/fs/cgroup/pids' });
    expect(layoutRoot('systemd-v2', mounts)).toBe('/sys/fs/cgroup/unified');
    expect(layoutRoot('cgroupfs-v1', mounts)).toBe('/sys/fs/cgroup/pids');
  });

  it('ignores a mount of a sub-tree, whose paths would not match /proc/<pid>/cgroup', () => {
    const mounts = parseCgroupMounts(line(40, '/docker/abc', '/sys/fs/cgroup', 'cgroup2', 'rw'));
    expect(mounts).toEqual({});
    expect(layoutRoot('systemd-v2', mounts)).toBeUndefined();
  });

  it('does not take a v1 hierarchy of another controller for pids', () => {
    expect(parseCgroupMounts(line(31, '/', '/sys/fs/cgroup/cpu,cpuacct', 'cgroup', 'rw,cpu,cpuacct'))).toEqual({});
  });
});

describe('cgroupChain', () => {
  it('lists the leaf first, then each ancestor below the root', () => {
    expect(cgroupChain('/sys/fs/cgroup/pids', ['kubepods', 'besteffort', 'podU', 'c1'])).toEqual([
      '/sys/fs/cgroup/pids/kubepods/besteffort/podU/c1',
      '/sys/fs/cgroup/pids/kubepods/besteffort/podU',
      '/sys/fs/cgroup/pids/kubepods/besteffort',
      '/sys/fs/cgroup/pids/kubepods',
    ]);
  });
});

describe('parseStartTime', () => {
  it('reads field 22 even when the command name holds spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    expect(parseStartTime(`1234 (node (a) b) ${fields.join(' ')}`)).toBe('22');
  });
});

describe('macForAddress', () => {
  it('derives a locally administered unicast MAC from the IPv4 address', () => {
    expect(macForAddress('10.244.7.2')).toBe('0a:58:0a:f4:07:02');
    expect(macForAddress('10.244.250.254')).toBe('0a:58:0a:f4:fa:fe');
  });
});

describe('lowestFreeAddress', () => {
  it('starts at .2, skipping the node address .1', () => {
    expect(lowestFreeAddress(7, new Set())).toBe('10.244.7.2');
  });

  it('hands out a freed address again before any higher one', () => {
    expect(lowestFreeAddress(7, new Set(['10.244.7.2', '10.244.7.4']))).toBe('10.244.7.3');
  });

  it('has nothing to give when .2-.254 are taken', () => {
    const all = new Set(Array.from({ length: 253 }, (_, i) => `10.244.7.${i + 2}`));
    expect(lowestFreeAddress(7, all)).toBeUndefined();
  });
});

describe('sandboxNames', () => {
  it('derives the netns and veth from the first 12 hex digits of the UID', () => {
    expect(sandboxNames(UID)).toEqual({ netns: 'pc-3f2a9c1e7b4d', veth: 'v3f2a9c1e7b4d' });
  });

  it('names a namespace that cleanupStale() recognises as ours, unlike look-alikes', () => {
    expect(isOurNetns(sandboxNames(UID).netns)).toBe(true);
    expect(isOurNetns('pc-host-src')).toBe(true);
    for (const other of ['pc-fabric', 'pcx-a', 'pce2e-0112c4-pod', 'pc-3f2a9c1e7b4', 'pc-3F2A9C1E7B4D', 'cni-3f2a9c1e7b4d']) {
      expect(isOurNetns(other), other).toBe(false);
    }
  });

  it('keeps the veth within the 15-character interface name limit', () => {
    expect(sandboxNames(UID).veth.length).toBeLessThanOrEqual(15);
    expect(sandboxNames(UID, 3).veth.length).toBeLessThanOrEqual(15);
  });

  it('gives a recreated sandbox names of its own, which cleanupStale() still recognises', () => {
    const names = [0, 1, 2].map((generation) => sandboxNames(UID, generation));
    expect(new Set(names.map((n) => n.netns)).size).toBe(3);
    for (const n of names) expect(isOurNetns(n.netns)).toBe(true);
  });
});

describe('isFabricAddress', () => {
  it('accepts host addresses inside 10.244.0.0/16 only', () => {
    expect(isFabricAddress('10.244.250.1')).toBe(true);
    expect(isFabricAddress('10.245.0.1')).toBe(false);
    expect(isFabricAddress('10.244.250.0')).toBe(false);
    expect(isFabricAddress('10.244.250.255')).toBe(false);
    expect(isFabricAddress('192.0.2.1')).toBe(false);
  });
});

const pod = (overrides: Partial<Pod['status']> = {}, ports?: { containerPort: number; protocol?: string }[]): Pod => ({
  metadata: { name: 'web-0', namespace: 'shop', uid: UID },
  spec: {
    nodeName: 'node-a',
    containers: [
      { name: 'nginx', image: 'nginx:1.27', ports },
      { name: 'sidecar', image: 'busybox' },
    ],
  },
  status: { phase: 'Pending', ...overrides },
});

describe('podTcpPorts', () => {
  it('listens on 80 and every declared TCP port, once each', () => {
    expect(podTcpPorts(pod({}, [{ containerPort: 8080 }, { containerPort: 80 }, { containerPort: 53, protocol: 'UDP' }]))).toEqual([80, 8080]);
  });
});

describe('runningPodStatus', () => {
  const sandbox = { ip: '10.244.7.2', hostIP: '10.244.7.1', containerIds: ['c1', 'c2'], startTime: '2024-05-01T10:00:00Z' };

  it('reports every container running with its containerd ID, and the pod IP', () => {
    const status = runningPodStatus(pod(), sandbox);
    expect(status).toMatchObject({ phase: 'Running', podIP: '10.244.7.2', podIPs: [{ ip: '10.244.7.2' }], hostIP: '10.244.7.1' });
    expect(status.containerStatuses.map((c) => [c.name, c.containerID, c.ready])).toEqual([
      ['nginx', 'containerd://c1', true],
      ['sidecar', 'containerd://c2', true],
    ]);
    expect(Object.fromEntries(status.conditions.map((c) => [c.type, c.status]))).toEqual({
      PodReadyToStartContainers: 'True',
      Initialized: 'True',
      Ready: 'True',
      ContainersReady: 'True',
      PodScheduled: 'True',
    });
  });

  it("keeps the scheduler's PodScheduled transition time", () => {
    const scheduled = pod({ conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: '2024-05-01T09:59:58Z' }] });
    const condition = runningPodStatus(scheduled, sandbox).conditions.find((c) => c.type === 'PodScheduled');
    expect(condition?.lastTransitionTime).toBe('2024-05-01T09:59:58Z');
  });

  it('is what statusShows recognises, and an older sandbox is not', () => {
    const status = runningPodStatus(pod(), sandbox);
    const reported = pod({ phase: status.phase, podIP: status.podIP, containerStatuses: status.containerStatuses });
    expect(statusShows(reported, sandbox)).toBe(true);
    expect(statusShows(reported, { ...sandbox, containerIds: ['c0', 'c2'] })).toBe(false);
    expect(statusShows(pod(), sandbox)).toBe(false);
  });
});
