// The netns is watched for as long as it is captured. tcpdump holds its network namespace
// open, so when a pod's sandbox is recreated under the same UID (kubelet SandboxChanged) a
// tcpdump nobody re-checks goes on capturing a dead netns while status says Running. Here
// the sandbox of web-0 is recreated ROUNDS times under a running capture (new netns, same
// UID, same IP), with UDP to the pod before and after each recreation, and the pod's last
// process is killed once: each time the old tcpdump must leave within seconds, its session
// end with a reason of its own, and a new session of the same instance take over.

import { describe, expect, it, vi } from 'vitest';
import { findPodNetns, recheckPodNetns } from '../../agent/netns.ts';
import { REASONS, type SessionStatus } from '../../crds/packetcapture.ts';
import { exec, udpFlood } from '../../local/netns-host.ts';
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
  waitRunning,
  waitSession,
  type TcpdumpOnNode,
} from './support/agent-harness.ts';

const ROUNDS = 20;
const PACKETS = 200;
/** "within a few seconds": the re-check interval (1 s), the stop and its drain, with room for a busy machine */
const EXIT_WITHIN_MS = 8_000;

describe.runIf(agentE2eAvailable)('netns watch: a captured pod whose sandbox changes under the same UID', () => {
  // the agent's default netnsCheckMs: what is measured here is what the agent ships with
  const { ns, nodeName, kc, dataDir, node, host } = useAgentOnNode('netns-watch');

  /** The one tcpdump of this agent, once it runs in the netns at `path`. */
  const tcpdumpIn = async (path: string): Promise<TcpdumpOnNode> => {
    const inode = await netnsInode(path);
    return vi.waitFor(async () => {
      const all = await tcpdumpsOf(dataDir());
      expect(all.map((t) => t.netns)).toEqual([inode]);
      return all[0]!;
    }, WAIT);
  };

  /** UDP from the traffic host to `ip`, which must be on the bridge and not behind the host's default route. */
  const sendUdp = async (ip: string, port: number) => {
    expect(await exec(host(), ['ip', 'route', 'get', ip])).not.toMatch(/\bvia\b/);
    return (await udpFlood(host(), ip, port, { packets: PACKETS, ratePps: 1000 })).sent;
  };

  it('ends the old session NetnsChanged within seconds and captures the new netns in a new session', { timeout: 900_000 }, async () => {
    await createCapture(kc(), ns.name, 'watch', { target: { podName: 'web-0' } });
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    let session = await waitSession(kc(), ns.name, 'watch', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running for web-0');
    const sentIn = new Map<string, { port: number; sent: number }>();
    const toRunningMs: number[] = [];
    const toExitMs: number[] = [];

    for (let round = 0; ; round++) {
      const sandbox = node().podNetns(pod.uid)!;
      const tcpdump = await tcpdumpIn(sandbox.netnsPath);
      const port = 35000 + round;
      sentIn.set(session.id, { port, sent: await sendUdp(sandbox.ip, port) });
      if (round === ROUNDS) break;

      // at a random phase of the session's 1 s re-check, as a sandbox change would come in life
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1000));
      const changeAt = now();
      const exited = exitTime(tcpdump.pid);
      const recreated = await node().recreateSandbox(pod.uid);
      expect(recreated.ip).toBe(sandbox.ip);
      expect(await netnsInode(recreated.netnsPath)).not.toBe(tcpdump.netns);

      const ended = await waitSession(kc(), ns.name, 'watch', (s) => s.id === session.id && s.state === 'Ended', `${session.id} Ended`, EXIT_WITHIN_MS * 2);
      expect(ended).toMatchObject({ podUID: pod.uid, endReason: REASONS.NetnsChanged });
      expect(ended.message).toContain('its sandbox was recreated');
      const exitAt = await exited;
      toExitMs.push(exitAt - changeAt);
      expect(exitAt - changeAt).toBeLessThan(EXIT_WITHIN_MS);

      const next: SessionStatus = await waitSession(
        kc(),
        ns.name,
        'watch',
        (s) => s.podUID === pod.uid && s.state === 'Running' && !sentIn.has(s.id),
        'a new Running session of the same instance',
      );
      toRunningMs.push(Date.parse(next.startTime!) - changeAt);
      session = next;
    }

    await deleteCapture(kc(), ns.name, 'watch');
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir())).toEqual([]), WAIT);

    // one directory per session, all under the one UID; each holds the traffic sent while it ran
    const sessions = await sessionsOnDisk(dataDir(), ns.name, 'watch');
    expect(new Set(sessions.map((s) => s.podUID))).toEqual(new Set([pod.uid]));
    expect(new Set(sessions.map((s) => s.sessionId))).toEqual(new Set(sentIn.keys()));
    let sent = 0;
    let captured = 0;
    for (const onDisk of sessions) {
      const { port, sent: sentHere } = sentIn.get(onDisk.sessionId)!;
      const packets = (await Promise.all(onDisk.files.map(readPcap))).flat();
      expect(foreignPackets(packets, pod.ip), `foreign packets in ${onDisk.dir}`).toEqual([]);
      const ports = new Set(packets.flatMap((p) => p.udpDstPorts).filter((p) => p >= 35000 && p < 36000));
      expect([...ports], `UDP markers in ${onDisk.dir}`).toEqual([port]);
      sent += sentHere;
      captured += packets.filter((p) => !p.protocols.includes('icmp') && p.udpDstPorts.includes(port)).length;
    }
    console.log(
      [
        `netns watch: ${ROUNDS} sandbox recreations under one UID (same IP), re-check every 1000 ms`,
        `  sandbox recreation started -> old tcpdump exited: ${summary(toExitMs)}`,
        `  sandbox recreation started -> new session Running in the new netns: ${summary(toRunningMs)}`,
        `  UDP sent to the pod ${sent}, captured ${captured}, lost ${sent - captured}`,
      ].join('\n'),
    );
    expect(captured).toBeGreaterThan(0);
  });

  it('ends the session NetnsGone when the pod has no process left, before the Pod watch says anything, and the next one waits', async () => {
    await createCapture(kc(), ns.name, 'gone', { target: { podName: 'web-1' } });
    const pod = await createPod(kc(), ns.name, 'web-1', nodeName);
    const running = await waitSession(kc(), ns.name, 'gone', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running for web-1');
    const sandbox = node().podNetns(pod.uid)!;
    const tcpdump = await tcpdumpIn(sandbox.netnsPath);

    const killedAt = now();
    const exited = exitTime(tcpdump.pid);
    process.kill(sandbox.pid, 'SIGKILL');
    expect((await exited) - killedAt).toBeLessThan(EXIT_WITHIN_MS);
    const ended = await waitSession(kc(), ns.name, 'gone', (s) => s.id === running.id && s.state === 'Ended', 'the first session Ended');
    expect(ended.endReason).toBe(REASONS.NetnsGone);
    const waiting = await waitSession(
      kc(),
      ns.name,
      'gone',
      (s) => s.podUID === pod.uid && s.id !== running.id && s.state === 'Pending' && s.reason === REASONS.NetnsNotFound,
      'a new session waiting for the netns',
    );
    // the Pod object never changed: the agent noticed on its own
    await waitRunning(kc(), ns.name, 'web-1', pod.uid);

    await deletePod(kc(), ns.name, 'web-1', pod.uid);
    const last = await waitSession(kc(), ns.name, 'gone', (s) => s.id === waiting.id && s.state === 'Ended', 'the waiting session Ended');
    expect(last.endReason).toBe(REASONS.PodDeleted);
    expect(last.path).toBeUndefined();
    await deleteCapture(kc(), ns.name, 'gone');
  });

  it('costs little to re-check: measured on the real /proc, as 100 running sessions would each second', async () => {
    const pod = await createPod(kc(), ns.name, 'web-2', nodeName);
    const lookup = await findPodNetns(pod.uid);
    if (!lookup.found) throw new Error(lookup.message);
    const captured = { inode: lookup.inode, pids: lookup.pids };
    const SESSIONS = 100;
    const TICKS = 200;

    const cpu = process.cpuUsage();
    const t0 = now();
    for (let tick = 0; tick < TICKS; tick++) {
      const checks = await Promise.all(Array.from({ length: SESSIONS }, () => recheckPodNetns(pod.uid, captured)));
      expect(checks.every((c) => c.state === 'same')).toBe(true);
    }
    const used = process.cpuUsage(cpu);
    const wallMs = now() - t0;
    const cpuPerTickMs = (used.user + used.system) / 1000 / TICKS;

    // the fallback when no known pid is left: one full /proc scan
    const scanCpu = process.cpuUsage();
    const SCANS = 20;
    for (let i = 0; i < SCANS; i++) await findPodNetns(pod.uid);
    const scan = process.cpuUsage(scanCpu);
    console.log(
      [
        `netns re-check cost: ${SESSIONS} sessions x ${TICKS} ticks in ${wallMs.toFixed(0)} ms wall`,
        `  CPU per tick of ${SESSIONS} sessions (known pid still there): ${cpuPerTickMs.toFixed(2)} ms, i.e. ${(cpuPerTickMs / 10).toFixed(2)}% of one core at one tick a second`,
        `  a full /proc scan (no known pid left): ${((scan.user + scan.system) / 1000 / SCANS).toFixed(2)} ms CPU`,
      ].join('\n'),
    );
    await deletePod(kc(), ns.name, 'web-2', pod.uid);
  });
});
