// The simulated node against the real control plane and the real kernel: pods bound to it
// become network namespaces on the bridge with an IP that answers HTTP, a process in a
// kubepods cgroup named with the pod UID, and a Running status; deletion undoes all of it.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { cgroupNamesPod, findPodNetns, netnsInodeOfPid } from '../../agent/netns.ts';
import { isNotFound, kubeRequest } from '../../kube/http.ts';
import { CGROUP_LAYOUTS, layoutRoot, parseCgroupMounts, type CgroupLayout } from '../../local/cgroups.ts';
import { cleanupStale, complete, FABRIC_NETNS, netnsPath, ourNetnsNames } from '../../local/fabric.ts';
import { createHost, ping, tcpRequests, type Host } from '../../local/netns-host.ts';
import { SimulatedNode, type Pod, type PodNetns, type SandboxEvent } from '../../local/node.ts';
import { cluster, controlPlaneAvailable, useNamespace } from '../support/cluster.ts';
import { missingRootOrTools, requireOrSkip } from '../support/require.ts';

const REPO = resolve(import.meta.dirname, '../..');
const TOOLS = ['ip', 'nsenter', 'setpriv', 'ping'];

const rootAvailable = requireOrSkip('root with network namespaces and cgroups', () => missingRootOrTools(TOOLS, 'iproute2 util-linux iputils-ping'));


const WAIT = { timeout: 60_000, interval: 100 };
// node subnets 10.244.41.0/24 and .42.0/24 are this file's; other e2e files use their own
const SUBNET = 41;
const CRASH_SUBNET = 42;

const vethExists = async (veth: string) => (await complete('ip', ['-n', FABRIC_NETNS, 'link', 'show', veth])).code === 0;
const vethOf = (netnsName: string) => `v${netnsName.slice('pc-'.length)}`;

describe.runIf(controlPlaneAvailable && rootAvailable)('simulated node', () => {
  const ns = useNamespace('simnode');
  const nodeName = `${ns.name}-node`;
  let node: SimulatedNode | undefined;
  let host: Host | undefined;
  const events: SandboxEvent[] = [];

  const kc = () => cluster().kubeConfig;
  const podPath = (name: string) => `/api/v1/namespaces/${ns.name}/pods/${name}`;

  const createPod = (name: string, spec: Record<string, unknown> = { nodeName }) =>
    kubeRequest<Pod>(kc(), 'POST', `/api/v1/namespaces/${ns.name}/pods`, {
      body: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name },
        spec: { ...spec, containers: [{ name: 'web', image: 'nginx:1.27', ports: [{ containerPort: 8080 }] }] },
      },
    });

  /** The pod once its status says Running with an IP, and its sandbox on the node. */
  const runningPod = (name: string) =>
    vi.waitFor(async () => {
      const pod = await kubeRequest<Pod>(kc(), 'GET', podPath(name));
      if (pod.status?.phase !== 'Running' || !pod.status.podIP) throw new Error(`${name} is ${pod.status?.phase ?? 'without status'}`);
      const sandbox = node!.podNetns(pod.metadata.uid);
      if (!sandbox) throw new Error(`${name} is Running but the node has no sandbox for it`);
      return { pod, sandbox };
    }, WAIT);

  const deletePod = async (name: string) => {
    await kubeRequest(kc(), 'DELETE', podPath(name));
    await vi.waitFor(async () => {
      const gone = await kubeRequest(kc(), 'GET', podPath(name)).then(
        () => false,
        (err: unknown) => (isNotFound(err) ? true : Promise.reject(err)),
      );
      if (!gone) throw new Error(`pod ${name} still exists`);
    }, WAIT);
  };

  const expectTornDown = async (sandbox: PodNetns) => {
    expect(existsSync(sandbox.netnsPath)).toBe(false);
    expect(await vethExists(vethOf(sandbox.netnsName))).toBe(false);
    expect(existsSync(sandbox.cgroupDir)).toBe(false);
    expect(existsSync(join(sandbox.cgroupDir, '..'))).toBe(false);
    expect(existsSync(`/proc/${sandbox.pid}`)).toBe(false);
  };

  beforeAll(async () => {
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: SUBNET });
    node.events.subscribe((e) => events.push(e));
    host = await createHost(`${ns.name}-src`, '10.244.250.41');
  });

  afterAll(async () => {
    await host?.destroy();
    await node?.stop();
  });

  let first: { pod: Pod; sandbox: PodNetns } | undefined;

  it('runs a pod bound to it in its own network namespace, in a cgroup named with its UID, and reports it Running', async () => {
    await createPod('web-a');
    first = await runningPod('web-a');
    const { pod, sandbox } = first;
    const uid = pod.metadata.uid;

    expect(pod.status?.podIP).toBe(sandbox.ip);
    expect(sandbox.ip).toMatch(new RegExp(`^10\\.244\\.${SUBNET}\\.\\d+$`));
    expect(sandbox.netnsName).toBe(`pc-${uid.replaceAll('-', '').slice(0, 12)}`);
    expect(pod.status).toMatchObject({
      hostIP: node!.address,
      podIPs: [{ ip: sandbox.ip }],
      containerStatuses: [{ name: 'web', ready: true, state: { running: {} } }],
    });
    expect(pod.status?.conditions?.filter((c) => c.status === 'True').map((c) => c.type)).toEqual(
      expect.arrayContaining(['Ready', 'ContainersReady', 'Initialized', 'PodScheduled']),
    );

    // the process is in the namespace the node made, and its cgroup names the pod
    expect(await netnsInodeOfPid(sandbox.pid)).toBe((await stat(sandbox.netnsPath)).ino);
    const procCgroup = readFileSync(`/proc/${sandbox.pid}/cgroup`, 'utf8');
    expect(cgroupNamesPod(procCgroup, uid)).toBe(true);
    expect(readFileSync(join(sandbox.cgroupDir, 'cgroup.procs'), 'utf8').split('\n')).toContain(String(sandbox.pid));

    // the agent's own lookup, from the UID alone, lands on the same namespace
    const lookup = await findPodNetns(uid);
    expect(lookup).toMatchObject({ found: true, pid: sandbox.pid });

    const http = await tcpRequests(host!, sandbox.ip, 80, 5);
    expect(http).toMatchObject({ ok: 5, failed: 0 });
    expect(Object.keys(http.bodies).map((b) => JSON.parse(b) as { uid: string })).toEqual([{ namespace: ns.name, name: 'web-a', uid }]);
    expect(await tcpRequests(host!, sandbox.ip, 8080, 1)).toMatchObject({ ok: 1 });
    expect(await ping(host!, sandbox.ip, 2)).toEqual({ transmitted: 2, received: 2 });

    const running = events.find((e) => e.type === 'Running' && e.uid === uid);
    expect(running).toMatchObject({ ip: sandbox.ip, netnsName: sandbox.netnsName });
    expect(running!.type === 'Running' && running!.runningAt >= running!.seenAt).toBe(true);
  });

  it('tears the sandbox down when the pod is deleted, then deletes the Pod object as a kubelet would', async () => {
    const { pod, sandbox } = first!;
    await deletePod('web-a');
    expect(node!.podNetns(pod.metadata.uid)).toBeUndefined();
    await expectTornDown(sandbox);
    expect(events).toContainEqual(expect.objectContaining({ type: 'Removed', uid: pod.metadata.uid, ip: sandbox.ip }));
    expect((await tcpRequests(host!, sandbox.ip, 80, 1, { timeoutMs: 1_000 })).ok).toBe(0);
  });

  it('gives the next pod the address the deleted pod freed, answering as the new instance', async () => {
    await createPod('web-b');
    const { pod, sandbox } = await runningPod('web-b');
    expect(sandbox.ip).toBe(first!.sandbox.ip);
    expect(sandbox.netnsName).not.toBe(first!.sandbox.netnsName);
    const http = await tcpRequests(host!, sandbox.ip, 80, 3);
    expect(Object.keys(http.bodies).map((b) => (JSON.parse(b) as { uid: string }).uid)).toEqual([pod.metadata.uid]);
  });

  it('is a node the scheduler places pods on', async () => {
    await createPod('scheduled', { nodeSelector: { 'kubernetes.io/hostname': nodeName } });
    const { pod } = await runningPod('scheduled');
    expect(pod.spec.nodeName).toBe(nodeName);
  });

  it('stop() removes every sandbox it made and its Node', async () => {
    const sandboxes = await Promise.all(['web-b', 'scheduled'].map(async (name) => (await runningPod(name)).sandbox));
    await node!.stop();
    for (const sandbox of sandboxes) await expectTornDown(sandbox);
    expect(ourNetnsNames().filter((n) => sandboxes.some((s) => s.netnsName === n))).toEqual([]);
    await expect(kubeRequest(kc(), 'GET', `/api/v1/nodes/${nodeName}`)).rejects.toSatisfy(isNotFound);
  });
});

// what each layout's pod process shows in /proc/<pid>/cgroup (U: the UID, U_: with underscores)
const CGROUP_LINES: Record<CgroupLayout, (uid: string) => RegExp> = {
  'cgroupfs-v1': (u) => new RegExp(`^\\d+:pids:/kubepods/besteffort/pod${u}/([0-9a-f]{64})$`, 'm'),
  'cgroupfs-v2': (u) => new RegExp(`^0::/kubepods/besteffort/pod${u}/([0-9a-f]{64})$`, 'm'),
  'systemd-v1': (u) => new RegExp(`^\\d+:pids:${systemdPath(u)}$`, 'm'),
  'systemd-v2': (u) => new RegExp(`^0::${systemdPath(u)}$`, 'm'),
};
function systemdPath(uid: string): string {
  const slice = `kubepods-besteffort-pod${uid.replaceAll('-', '_')}`;
  return `/kubepods\\.slice/kubepods-besteffort\\.slice/${slice}\\.slice/cri-containerd-([0-9a-f]{64})\\.scope`;
}

const mounts = existsSync('/proc/self/mountinfo') ? parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')) : {};

describe.runIf(controlPlaneAvailable && rootAvailable)('simulated node cgroup layouts', () => {
  const ns = useNamespace('simlayout');
  const kc = () => cluster().kubeConfig;

  for (const [i, layout] of CGROUP_LAYOUTS.entries()) {
    const root = layoutRoot(layout, mounts);
    it.skipIf(!root)(`${layout}: the pod process sits where a kubelet would put it, and the agent finds it by UID`, async () => {
      const nodeName = `${ns.name}-${layout}`;
      const node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: 43 + i, cgroupLayout: layout });
      try {
        const pod = await kubeRequest<Pod>(kc(), 'POST', `/api/v1/namespaces/${ns.name}/pods`, {
          body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: layout }, spec: { nodeName, containers: [{ name: 'web', image: 'nginx' }] } },
        });
        const uid = pod.metadata.uid;
        const running = await vi.waitFor(async () => {
          const p = await kubeRequest<Pod>(kc(), 'GET', `/api/v1/namespaces/${ns.name}/pods/${layout}`);
          if (p.status?.phase !== 'Running') throw new Error(`${layout} is ${p.status?.phase}`);
          return p;
        }, WAIT);
        const sandbox = node.podNetns(uid)!;
        expect(sandbox.cgroupDir.startsWith(`${root}/`)).toBe(true);
        const line = CGROUP_LINES[layout](uid).exec(readFileSync(`/proc/${sandbox.pid}/cgroup`, 'utf8'));
        expect(line, `no ${layout} line in /proc/${sandbox.pid}/cgroup`).not.toBeNull();
        expect(running.status?.containerStatuses?.[0]?.containerID).toBe(`containerd://${line![1]}`);
        expect(await findPodNetns(uid)).toMatchObject({ found: true, pid: sandbox.pid });
      } finally {
        await node.stop();
        const path = `/api/v1/namespaces/${ns.name}/pods/${layout}`;
        await kubeRequest(kc(), 'DELETE', path, { query: { gracePeriodSeconds: 0 } }).catch(() => undefined);
      }
    });
  }
});

describe.runIf(controlPlaneAvailable && rootAvailable)('simulated node after a crash', () => {
  const ns = useNamespace('simcrash');
  const nodeName = `${ns.name}-node`;
  const kc = () => cluster().kubeConfig;

  afterAll(async () => {
    await kubeRequest(kc(), 'DELETE', `/api/v1/nodes/${nodeName}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  });

  it("kills the pods' processes with the harness, and cleanupStale() removes their namespaces and cgroups", async () => {
    // a harness in its own process, killed without a chance to clean up
    const script = `
      import { loadKubeConfig } from './kube/client.ts';
      import { SimulatedNode } from './local/node.ts';
      const kubeConfig = loadKubeConfig(${JSON.stringify(inject('kubeconfig'))});
      const node = await SimulatedNode.start({ name: ${JSON.stringify(nodeName)}, kubeConfig, subnetIndex: ${CRASH_SUBNET} });
      node.events.subscribe((e) => {
        if (e.type === 'Running') process.stdout.write(JSON.stringify(node.podNetns(e.uid)) + '\\n');
      });
    `;
    const harness = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, LOG_LEVEL: 'warn' },
    });
    const exited = new Promise((resolve) => harness.once('exit', resolve));
    try {
      const reported = new Promise<PodNetns>((resolve) => {
        harness.stdout.setEncoding('utf8').once('data', (line: string) => resolve(JSON.parse(line) as PodNetns));
      });
      await kubeRequest(kc(), 'POST', `/api/v1/namespaces/${ns.name}/pods`, {
        body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web' }, spec: { nodeName, containers: [{ name: 'web', image: 'nginx' }] } },
      });
      const sandbox = await reported;
      expect(existsSync(sandbox.netnsPath)).toBe(true);

      harness.kill('SIGKILL');
      await exited;
      // the pod process had the harness as its parent-death signal source
      await vi.waitFor(() => expect(existsSync(`/proc/${sandbox.pid}`)).toBe(false), WAIT);
      expect(existsSync(sandbox.netnsPath)).toBe(true);
      expect(existsSync(sandbox.cgroupDir)).toBe(true);

      await cleanupStale();
      expect(existsSync(sandbox.netnsPath)).toBe(false);
      expect(existsSync(netnsPath(sandbox.netnsName))).toBe(false);
      expect(await vethExists(vethOf(sandbox.netnsName))).toBe(false);
      expect(existsSync(sandbox.cgroupDir)).toBe(false);
      expect(existsSync(join(sandbox.cgroupDir, '..'))).toBe(false);
    } finally {
      harness.kill('SIGKILL');
      await cleanupStale();
    }
  });
});
