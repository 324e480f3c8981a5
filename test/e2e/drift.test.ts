// THE drift test: the pod behind a PacketCapture is recreated 20 times (same name, new
// UID) while traffic flows, and in some rounds another pod takes the old instance's IP.
// Every instance gets traffic with its own UDP destination port, sent only while it is
// the instance, so a packet in a file is "foreign" exactly when its port is another's.
// The promise: every file is under the UID that produced it and holds no packet of any
// other instance; each old tcpdump is gone and each new one runs in the new netns; no
// tcpdump remains once the capture is deleted.

import { filter } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import { udpFlood } from '../../local/netns-host.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  deletePod,
  exitTime,
  foreignPackets,
  netnsInode,
  now,
  readPcap,
  sessionsOnDisk,
  summary,
  tcpdumpsOf,
  useAgentOnNode,
  WAIT,
  waitSession,
  type PodInstance,
  type TcpdumpOnNode,
} from './support/agent-harness.ts';

const RECREATIONS = 20;
const PACKETS_PER_INSTANCE = 300;

describe.runIf(agentE2eAvailable)('drift: a pod recreated 20 times under a running capture', () => {
  const { ns, nodeName, kc, dataDir, node, host } = useAgentOnNode('drift');

  it('keeps every file bound to the instance that produced it', { timeout: 900_000 }, async () => {
    const runningAt = new Map<string, number>();
    const events = node().events.pipe(filter((e) => e.type === 'Running')).subscribe((e) => runningAt.set(e.uid, e.type === 'Running' ? e.runningAt : 0));
    const instances = new Map<string, PodInstance & { port: number; sent: number }>();
    const squatterUIDs = new Set<string>();
    const switchMs: number[] = [];
    const exitMs: number[] = [];
    const ipTakeovers: string[] = [];
    let sameIpReuses = 0;
    let squatter: { pod: PodInstance; flood: Promise<unknown> } | undefined;

    try {
      await createCapture(kc(), ns.name, 'drift', { target: { podName: 'web-0' } });
      let pod = await createPod(kc(), ns.name, 'web-0', nodeName);

      for (let round = 0; round <= RECREATIONS; round++) {
        const port = 32000 + round;
        // the new tcpdump runs in this instance's netns, and it is the agent's only one
        const inode = await netnsInode(node().podNetns(pod.uid)!.netnsPath);
        const tcpdump: TcpdumpOnNode = await vi.waitFor(async () => {
          const all = await tcpdumpsOf(dataDir());
          expect(all.map((t) => t.netns)).toEqual([inode]);
          return all[0]!;
        }, WAIT);
        const session = await waitSession(kc(), ns.name, 'drift', (s) => s.podUID === pod.uid && s.state === 'Running', `Running for ${pod.uid}`);
        switchMs.push(Date.parse(session.startTime!) - runningAt.get(pod.uid)!);

        const { sent } = await udpFlood(host(), pod.ip, port, { packets: PACKETS_PER_INSTANCE, ratePps: 1500 });
        instances.set(pod.uid, { ...pod, port, sent });
        if (round === RECREATIONS) break;

        const deleteAt = now();
        const exited = exitTime(tcpdump.pid);
        await deletePod(kc(), ns.name, 'web-0', pod.uid);
        exitMs.push((await exited) - deleteAt);
        await vi.waitFor(async () => expect((await tcpdumpsOf(dataDir())).map((t) => t.pid)).not.toContain(tcpdump.pid), WAIT);

        if (round % 3 === 1) {
          // another pod takes the old instance's address, and gets traffic of its own there
          const previous = squatter;
          const taker = await createPod(kc(), ns.name, `squatter-${round}`, nodeName, { app: 'squatter' });
          expect(taker.ip).toBe(pod.ip);
          squatterUIDs.add(taker.uid);
          ipTakeovers.push(taker.ip);
          squatter = { pod: taker, flood: udpFlood(host(), taker.ip, 33000 + round, { packets: 600, ratePps: 300 }) };
          if (previous) {
            // its flood ends before its address can go to the next web-0
            await previous.flood;
            await deletePod(kc(), ns.name, previous.pod.name, previous.pod.uid);
          }
        }
        const next = await createPod(kc(), ns.name, 'web-0', nodeName);
        if (next.ip === pod.ip) sameIpReuses++;
        pod = next;
      }

      await deleteCapture(kc(), ns.name, 'drift');
      await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir())).toEqual([]), WAIT);
      await squatter?.flood;
    } finally {
      events.unsubscribe();
    }

    // every session directory is under a web-0 instance's UID and holds only its packets
    const sessions = await sessionsOnDisk(dataDir(), ns.name, 'drift');
    expect(new Set(sessions.map((s) => s.podUID))).toEqual(new Set(instances.keys()));
    let sent = 0;
    let captured = 0;
    for (const session of sessions) {
      const instance = instances.get(session.podUID)!;
      expect(squatterUIDs.has(session.podUID)).toBe(false);
      const packets = (await Promise.all(session.files.map(readPcap))).flat();
      expect(foreignPackets(packets, instance.ip), `foreign packets in ${session.dir}`).toEqual([]);
      const ports = new Set(packets.flatMap((p) => p.udpDstPorts).filter((p) => p >= 32000 && p < 34000));
      expect([...ports], `UDP markers in ${session.dir}`).toEqual([instance.port]);
      sent += instance.sent;
      captured += packets.filter((p) => !p.protocols.includes('icmp') && p.udpDstPorts.includes(instance.port)).length;
    }

    console.log(
      [
        `drift test: ${RECREATIONS} recreations, ${instances.size} instances, ${ipTakeovers.length} IP takeovers by another pod, ${sameIpReuses} same-IP reuses by web-0`,
        `  new pod Running -> its tcpdump verified: ${summary(switchMs)}`,
        `  old pod DELETE sent -> old tcpdump exited: ${summary(exitMs)}`,
        `  UDP to web-0 instances: sent ${sent}, captured ${captured}, lost ${sent - captured}`,
      ].join('\n'),
    );
    expect(ipTakeovers.length).toBeGreaterThanOrEqual(5);
  });
});
