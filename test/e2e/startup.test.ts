// From the first packet: a pod is captured as soon as its sandbox exists, not when it turns
// Running, so what it sends while starting up (init containers, a slow first container) is
// in its file. The simulated node here keeps each new pod Pending for PENDING_MS after its
// netns and process exist, as init containers would; UDP reaches the pod all that time.

import { filter, firstValueFrom } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import { kubeRequest } from '../../kube/http.ts';
import { exec, udpFlood } from '../../local/netns-host.ts';
import type { PodNetns } from '../../local/node.ts';
import {
  agentE2eAvailable,
  createCapture,
  deleteCapture,
  foreignPackets,
  getCapture,
  now,
  podPath,
  postPod,
  readPcap,
  sessionsOnDisk,
  tcpdumpsOf,
  useAgentOnNode,
  WAIT,
  waitRunning,
  waitSession,
} from './support/agent-harness.ts';

const PENDING_MS = 5_000;
const PORT = 36000;
/** 3 s of traffic at 1000 pps, all of it while the pod is Pending */
const PACKETS = 3000;

describe.runIf(agentE2eAvailable)('startup: a pod captured from its first packets', () => {
  const { ns, nodeName, kc, dataDir, node, host } = useAgentOnNode('startup', { pendingMs: PENDING_MS });

  it('captures what reaches a Pending pod as soon as its netns exists; a filter on the pod IP waits for the IP', { timeout: 120_000 }, async () => {
    await createCapture(kc(), ns.name, 'boot', { target: { podName: 'boot-0' } });
    await createCapture(kc(), ns.name, 'boot-ingress', { target: { podName: 'boot-0' }, filter: { direction: 'Ingress' } });
    const uid = await postPod(kc(), ns.name, 'boot-0', nodeName);
    const reportedRunning = firstValueFrom(node().events.pipe(filter((e) => e.type === 'Running' && e.uid === uid)));
    const sandbox: PodNetns = await vi.waitFor(() => node().podNetns(uid) ?? Promise.reject(new Error('no sandbox yet')), { timeout: 60_000, interval: 5 });

    const sendingAt = now();
    expect(await exec(host(), ['ip', 'route', 'get', sandbox.ip])).not.toMatch(/\bvia\b/);
    const { sent } = await udpFlood(host(), sandbox.ip, PORT, { packets: PACKETS, ratePps: 1000 });
    const phase = (await kubeRequest<{ status?: { phase?: string } }>(kc(), 'GET', podPath(ns.name, 'boot-0'))).status?.phase;
    expect(phase, 'the pod is still Pending after the traffic').toBe('Pending');
    // the traffic took seconds: the session has long been Running, its status written
    const running = await waitSession(kc(), ns.name, 'boot', (s) => s.podUID === uid && s.state === 'Running', 'Running for boot-0', 1000);
    // the Ingress filter names the pod IP, which a Pending pod's status does not have yet
    expect((await getCapture(kc(), ns.name, 'boot-ingress')).status?.sessions ?? []).toEqual([]);

    const { runningAt } = (await reportedRunning) as { runningAt: number };
    const pod = await waitRunning(kc(), ns.name, 'boot-0', uid);
    await waitSession(kc(), ns.name, 'boot-ingress', (s) => s.podUID === uid && s.state === 'Running', 'Running for the Ingress capture');
    await deleteCapture(kc(), ns.name, 'boot');
    await deleteCapture(kc(), ns.name, 'boot-ingress');
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir())).toEqual([]), WAIT);

    const [onDisk] = await sessionsOnDisk(dataDir(), ns.name, 'boot');
    expect(onDisk?.sessionId).toBe(running.id);
    const packets = (await Promise.all(onDisk!.files.map(readPcap))).flat();
    expect(foreignPackets(packets, pod.ip)).toEqual([]);
    const udp = packets.filter((p) => !p.protocols.includes('icmp') && p.udpDstPorts.includes(PORT));
    const first = Math.min(...udp.map((p) => p.time * 1000));
    console.log(
      [
        `startup: pod Pending for ${PENDING_MS} ms after its sandbox exists; UDP sent while Pending ${sent}, captured ${udp.length}, lost ${sent - udp.length}`,
        `  sandbox complete -> session Running: ${(Date.parse(running.startTime!) - sandbox.createdAt).toFixed(0)} ms; first packet captured ${(first - sendingAt).toFixed(0)} ms after sending began; pod reported Running ${(runningAt - sandbox.createdAt).toFixed(0)} ms after its sandbox was complete`,
      ].join('\n'),
    );
    expect(Date.parse(running.startTime!)).toBeLessThan(runningAt);
    expect(udp.length).toBeGreaterThan(sent / 2);
    expect(udp.every((p) => p.time * 1000 < runningAt)).toBe(true);
  });
});
