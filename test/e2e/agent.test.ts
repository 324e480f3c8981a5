// The agent end to end: a real control plane, a simulated node (netns, cgroups, pod
// processes), the agent in this process running real tcpdumps, files read with tshark.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { agentLeaseName } from '../../agent/lease.ts';
import { AGENT_LEASE_LABEL, liveAgentNodes, type Lease } from '../../controller/agents.ts';
import { runController, type ControllerHandle } from '../../controller/main.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { kubeRequest } from '../../kube/http.ts';
import { cgroupChain, containerCgroupSegments, placeInCgroup, removeCgroupChain, resolveCgroupLayout } from '../../local/cgroups.ts';
import { tcpRequests, udpFlood } from '../../local/netns-host.ts';
import {
  agentE2eAvailable,
  createBareNode,
  createCapture,
  createPod,
  createPodWithoutSandbox,
  deleteCapture,
  deleteNode,
  foreignPackets,
  getCapture,
  isLinkLocalControl,
  netnsInode,
  packetCount,
  patchCaptureSpec,
  quietLog,
  readPcap,
  sessionsOnDisk,
  startAgent,
  tcpdumpsOf,
  useAgentOnNode,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

describe.runIf(agentE2eAvailable)('agent on a simulated node', () => {
  const { ns, nodeName, kc, dataDir, node, host, agent } = useAgentOnNode('agent');
  /** the tcpdumps of this file's agent inside the netns of `podUID` */
  const tcpdumpsIn = async (podUID: string) => {
    const sandbox = node().podNetns(podUID);
    if (!sandbox) return [];
    const inode = await netnsInode(sandbox.netnsPath);
    return (await tcpdumpsOf(dataDir())).filter((t) => t.netns === inode);
  };

  it('captures traffic to the target instance, and every packet under its UID is to or from its IP', async () => {
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    await createCapture(kc(), ns.name, 'traffic', { target: { podName: 'web-0' } });
    const running = await waitSession(kc(), ns.name, 'traffic', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running for web-0');
    expect(running.path).toBe(join(dataDir(), ns.name, 'traffic', pod.uid, running.id));
    expect(await tcpdumpsIn(pod.uid)).toHaveLength(1);

    const sent = await udpFlood(host(), pod.ip, 31000, { packets: 2000, ratePps: 2000 });
    const http = await tcpRequests(host(), pod.ip, 80, 20);
    expect(http.ok).toBe(20);
    // progress reaches status while the session runs
    await waitSession(kc(), ns.name, 'traffic', (s) => s.id === running.id && (s.packets ?? 0) > 0 && (s.bytes ?? 0) > 0, 'with progress');
    await deleteCapture(kc(), ns.name, 'traffic');
    await vi.waitFor(async () => expect(await tcpdumpsIn(pod.uid)).toEqual([]), WAIT);

    const sessions = await sessionsOnDisk(dataDir(), ns.name, 'traffic');
    expect(sessions.map((s) => s.podUID)).toEqual([pod.uid]);
    const packets = (await Promise.all(sessions.flatMap((s) => s.files).map(readPcap))).flat();
    expect(foreignPackets(packets, pod.ip)).toEqual([]);
    const udpIn = packets.filter((p) => !p.protocols.includes('icmp') && p.udpDstPorts.includes(31000)).length;
    const tcp = packets.filter((p) => p.protocols.includes(':tcp')).length;
    const linkLocal = packets.filter(isLinkLocalControl).length;
    console.log(
      `traffic test: UDP sent ${sent.sent} (send failures ${sent.failed}), captured ${udpIn}, lost ${sent.sent - udpIn}; TCP packets captured ${tcp}; IPv6 link-local control frames ${linkLocal}`,
    );
    expect(udpIn).toBeGreaterThan(0);
    expect(tcp).toBeGreaterThanOrEqual(20 * 3);
  });

  it('keeps its presence Lease fresh and counts sessions in /metrics', async () => {
    const lease = await kubeRequest<Lease>(kc(), 'GET', `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${agentLeaseName(nodeName)}`);
    expect(lease.metadata.labels).toMatchObject({ [AGENT_LEASE_LABEL]: 'true' });
    expect(lease.spec).toMatchObject({ holderIdentity: nodeName, leaseDurationSeconds: 30 });
    expect(liveAgentNodes([lease], Date.now())).toEqual(new Set([nodeName]));
    const metrics = await (await fetch(`http://127.0.0.1:${agent().port}/metrics`)).text();
    expect(Number(/^packetcapture_agent_sessions_started_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    expect(metrics).toMatch(/^packetcapture_agent_sessions_ended_total\{reason="CaptureDeleted"\} [1-9]/m);
    expect(Number(/^packetcapture_agent_packets_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2000);
  });

  it('a spec change ends the session SpecChanged and starts a new one in a new directory', async () => {
    const pod = await createPod(kc(), ns.name, 'web-1', nodeName);
    await createCapture(kc(), ns.name, 'respec', { target: { podName: 'web-1' } });
    const first = await waitSession(kc(), ns.name, 'respec', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running, generation 1');
    const [before] = await tcpdumpsIn(pod.uid);

    await patchCaptureSpec(kc(), ns.name, 'respec', { filter: { protocol: 'UDP', port: 5353 } });
    const second = await waitSession(kc(), ns.name, 'respec', (s) => s.generation === 2 && s.state === 'Running', 'Running, generation 2');
    const ended = await waitSession(kc(), ns.name, 'respec', (s) => s.id === first.id && s.state === 'Ended', 'generation 1 ended');
    expect(ended.endReason).toBe(REASONS.SpecChanged);
    expect(second.id).not.toBe(first.id);
    expect(second.path).not.toBe(first.path);
    expect((await stat(first.path!)).isDirectory()).toBe(true);
    expect((await stat(second.path!)).isDirectory()).toBe(true);

    await vi.waitFor(async () => {
      const now = await tcpdumpsIn(pod.uid);
      expect(now.map((t) => t.pid)).not.toContain(before!.pid);
      expect(now).toHaveLength(1);
      expect(now[0]!.argv.at(-1)).toBe('(udp and port 5353) and not link[10] == 3');
      expect(now[0]!.session).toBe(second.id);
    }, WAIT);
    await deleteCapture(kc(), ns.name, 'respec');
  });

  it('maxPackets ends the session PacketLimit with exactly that many packets, and it is not restarted', async () => {
    const pod = await createPod(kc(), ns.name, 'web-2', nodeName);
    await createCapture(kc(), ns.name, 'limit', { target: { podName: 'web-2' }, filter: { protocol: 'UDP' }, limits: { maxPackets: 50 } });
    const running = await waitSession(kc(), ns.name, 'limit', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running');
    await udpFlood(host(), pod.ip, 31001, { packets: 200, ratePps: 1000 });
    const ended = await waitSession(kc(), ns.name, 'limit', (s) => s.id === running.id && s.state === 'Ended', 'ended');
    expect(ended).toMatchObject({ endReason: REASONS.PacketLimit, packets: 50, files: 1 });
    const [session] = await sessionsOnDisk(dataDir(), ns.name, 'limit');
    expect(session!.files).toHaveLength(1);
    expect(await packetCount(session!.files[0]!)).toBe(50);
    expect(await tcpdumpsIn(pod.uid)).toEqual([]);
    // a restart would follow the next snapshot within moments; give it a few
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(await tcpdumpsIn(pod.uid)).toEqual([]);
    expect((await getCapture(kc(), ns.name, 'limit')).status?.sessions?.filter((s) => s.podUID === pod.uid)).toHaveLength(1);
    await deleteCapture(kc(), ns.name, 'limit');
  });

  it('a BPF filter tcpdump rejects fails the session with InvalidFilter and tcpdump\'s message, without capturing', async () => {
    const pod = await createPod(kc(), ns.name, 'web-3', nodeName);
    await createCapture(kc(), ns.name, 'badfilter', { target: { podName: 'web-3' }, filter: { bpf: 'tcp port 80 and frobnicate 7' } });
    const failed = await waitSession(kc(), ns.name, 'badfilter', (s) => s.podUID === pod.uid && s.state !== 'Pending', 'Failed');
    expect(failed).toMatchObject({ state: 'Failed', reason: REASONS.InvalidFilter });
    expect(failed.message).toContain('tcp port 80 and frobnicate 7');
    expect(failed.message).toMatch(/syntax error|frobnicate/);
    expect(await tcpdumpsIn(pod.uid)).toEqual([]);
    expect(await sessionsOnDisk(dataDir(), ns.name, 'badfilter')).toEqual([]);
    await deleteCapture(kc(), ns.name, 'badfilter');
  });

  it('with the controller running, a bad filter makes the capture Stalled', async () => {
    const controller: ControllerHandle = await runController({
      kubeConfig: kc(),
      namespace: ns.name,
      watchNamespace: ns.name,
      leaderElect: false,
      log: quietLog(),
      resyncMs: 2000,
    });
    try {
      await controller.ready;
      const pod = await createPod(kc(), ns.name, 'web-4', nodeName);
      await createCapture(kc(), ns.name, 'stalled', { target: { podName: 'web-4' }, filter: { bpf: 'udp and (' + 'nonsense)' } });
      await vi.waitFor(async () => {
        const capture = await getCapture(kc(), ns.name, 'stalled');
        const stalled = capture.status?.conditions?.find((c) => c.type === 'Stalled');
        expect(stalled).toMatchObject({ status: 'True', reason: REASONS.InvalidFilter });
        expect(capture.status?.sessions?.find((s) => s.podUID === pod.uid)).toMatchObject({ state: 'Failed', reason: REASONS.InvalidFilter });
      }, WAIT);
      await deleteCapture(kc(), ns.name, 'stalled');
    } finally {
      await controller.stop();
    }
  });

  it('a pod whose network namespace cannot be found is reported NetnsNotFound and never captured', async () => {
    const ghostNode = `${ns.name}-ghost`;
    await createBareNode(kc(), ghostNode);
    const ghostDir = await mkdtemp(join(tmpdir(), 'agent-e2e-ghost-'));
    const ghostAgent = await startAgent({ kubeConfig: kc(), nodeName: ghostNode, dataDir: ghostDir, namespace: ns.name });
    try {
      await ghostAgent.ready;
      const pod = await createPodWithoutSandbox(kc(), ns.name, 'ghost-0', ghostNode, '10.244.99.99');
      await createCapture(kc(), ns.name, 'ghost', { target: { podName: 'ghost-0' } });
      const pending = await waitSession(kc(), ns.name, 'ghost', (s) => s.podUID === pod.uid && s.reason === REASONS.NetnsNotFound, 'NetnsNotFound');
      expect(pending).toMatchObject({ state: 'Pending', nodeName: ghostNode });
      expect(pending.message).toContain(pod.uid);
      expect(pending.startTime).toBeUndefined();
      expect(await tcpdumpsOf(ghostDir)).toEqual([]);
      expect(await sessionsOnDisk(ghostDir, ns.name, 'ghost')).toEqual([]);
      await deleteCapture(kc(), ns.name, 'ghost');
    } finally {
      await ghostAgent.stop();
      await rm(ghostDir, { recursive: true, force: true });
      await deleteNode(kc(), ghostNode);
    }
  });

  it("a hostNetwork pod (its process in the node's own netns) is reported HostNetwork and never captured", async () => {
    const hostNode = `${ns.name}-hostnet`;
    await createBareNode(kc(), hostNode);
    const hostDir = await mkdtemp(join(tmpdir(), 'agent-e2e-hostnet-'));
    const hostAgent = await startAgent({ kubeConfig: kc(), nodeName: hostNode, dataDir: hostDir, namespace: ns.name });
    // the pod's process as a runtime starts a hostNetwork container: in a kubepods cgroup named by the pod UID, no netns of its own
    const pod = await createPodWithoutSandbox(kc(), ns.name, 'hostnet-0', hostNode, '10.244.98.98');
    const { layout, root } = await resolveCgroupLayout();
    const chain = cgroupChain(root, containerCgroupSegments(layout, pod.uid, 'BestEffort', randomBytes(32).toString('hex')));
    const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
    const controller = await runController({ kubeConfig: kc(), namespace: ns.name, watchNamespace: ns.name, leaderElect: false, log: quietLog(), resyncMs: 2000 });
    try {
      await placeInCgroup(chain, sleeper.pid!);
      await Promise.all([hostAgent.ready, controller.ready]);
      await createCapture(kc(), ns.name, 'hostnet', { target: { podName: 'hostnet-0' } });
      const failed = await waitSession(kc(), ns.name, 'hostnet', (s) => s.podUID === pod.uid && s.state === 'Failed', 'Failed');
      expect(failed.reason).toBe(REASONS.HostNetwork);
      expect(failed.message).toContain(`pod ${pod.uid} runs in the node's network namespace (hostNetwork)`);
      // the controller says so in the conditions and as a Warning Event
      await vi.waitFor(async () => {
        const capture = await getCapture(kc(), ns.name, 'hostnet');
        expect(capture.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: REASONS.HostNetwork });
        const events = await kubeRequest<{ items: { type: string; reason: string; message: string }[] }>(kc(), 'GET', `/api/v1/namespaces/${ns.name}/events`, {
          query: { fieldSelector: 'involvedObject.name=hostnet' },
        });
        expect(events.items.find((e) => e.reason === REASONS.HostNetwork)).toMatchObject({ type: 'Warning', message: expect.stringContaining('hostNetwork') });
      }, WAIT);
      expect(await tcpdumpsOf(hostDir)).toEqual([]);
      expect(await sessionsOnDisk(hostDir, ns.name, 'hostnet')).toEqual([]);
      await deleteCapture(kc(), ns.name, 'hostnet');
    } finally {
      await controller.stop();
      sleeper.kill('SIGKILL');
      await new Promise((resolve) => (sleeper.exitCode !== null || sleeper.signalCode !== null ? resolve(undefined) : sleeper.once('exit', resolve)));
      await removeCgroupChain(chain, 2);
      await hostAgent.stop();
      await rm(hostDir, { recursive: true, force: true });
      await deleteNode(kc(), hostNode);
    }
  });
});
