// A selector capture over more pods on one node than the session history keeps: every
// instance reaches maxPackets once, none is captured again after its entry dropped out of
// status.sessions, and the capture completes (the node's record in status.nodes decides).

import { describe, expect, it, vi } from 'vitest';
import { runController } from '../../controller/main.ts';
import { REASONS, SESSION_HISTORY } from '../../crds/packetcapture.ts';
import { udpFlood } from '../../local/netns-host.ts';
import {
  agentE2eAvailable,
  createCapture,
  deleteCapture,
  getCapture,
  postPod,
  quietLog,
  sessionsOnDisk,
  tcpdumpsOf,
  useAgentOnNode,
  waitRunning,
} from './support/agent-harness.ts';

const PODS = 60;
const MAX_PACKETS = 5;
const PORT = 31700;
const WAIT_LONG = { timeout: 240_000, interval: 250 };

describe.runIf(agentE2eAvailable)(`a selector capture of ${PODS} pods on one node with maxPackets`, () => {
  const { ns, nodeName, kc, dataDir, host } = useAgentOnNode('many');

  it(`captures each instance once, up to its limit, and completes (history: ${SESSION_HISTORY} per node)`, { timeout: 600_000 }, async () => {
    const names = Array.from({ length: PODS }, (_, i) => `many-${i}`);
    const uids = await Promise.all(names.map((name) => postPod(kc(), ns.name, name, nodeName, { app: 'many' })));
    const pods = await Promise.all(names.map((name, i) => waitRunning(kc(), ns.name, name, uids[i]!)));
    const controller = await runController({ kubeConfig: kc(), namespace: ns.name, watchNamespace: ns.name, leaderElect: false, log: quietLog(), resyncMs: 2000 });
    try {
      await controller.ready;
      const created = Date.now();
      await createCapture(kc(), ns.name, 'many', {
        target: { podSelector: { matchLabels: { app: 'many' } } },
        filter: { protocol: 'UDP', dstPort: PORT },
        limits: { maxPackets: MAX_PACKETS },
      });
      await vi.waitFor(async () => {
        const running = new Set((await getCapture(kc(), ns.name, 'many')).status?.sessions?.filter((s) => s.state === 'Running').map((s) => s.podUID));
        expect(running.size).toBe(PODS);
      }, WAIT_LONG);
      const capturing = Date.now();
      // a few pods at a time: each traffic run is a process of its own
      for (let i = 0; i < PODS; i += 10) {
        await Promise.all(pods.slice(i, i + 10).map((pod) => udpFlood(host(), pod.ip, PORT, { packets: 4 * MAX_PACKETS, ratePps: 200 })));
      }
      const completed = await vi.waitFor(async () => {
        const capture = await getCapture(kc(), ns.name, 'many');
        expect(capture.status?.phase).toBe('Completed');
        return capture;
      }, WAIT_LONG);
      console.log(
        `${PODS} pods, maxPackets ${MAX_PACKETS}: all sessions Running ${capturing - created} ms after the capture was created, Completed ${Date.now() - created} ms after it`,
      );
      expect(completed.status?.conditions?.find((c) => c.type === 'Ready')?.message).toContain('every target reached its limit');
      const [record] = completed.status?.nodes ?? [];
      expect(new Set(record?.limitedPods)).toEqual(new Set(uids));

      // nothing was captured twice: one session per instance on disk, each with its limit
      await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir())).toEqual([]), WAIT_LONG);
      const onDisk = await sessionsOnDisk(dataDir(), ns.name, 'many');
      expect(onDisk.map((s) => s.podUID).sort()).toEqual([...uids].sort());
      const ended = completed.status?.sessions ?? [];
      expect(ended.length).toBeLessThanOrEqual(SESSION_HISTORY);
      expect(ended.every((s) => s.endReason === REASONS.PacketLimit && s.packets === MAX_PACKETS)).toBe(true);
      await deleteCapture(kc(), ns.name, 'many');
    } finally {
      await controller.stop();
    }
  });
});
