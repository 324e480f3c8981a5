// Same traffic, two observers: an agent-managed session and a raw tcpdump started by hand
// in the same pod netns with the same arguments, running at the same time.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStats, tcpdumpArgv } from '../agent/tcpdump.ts';
import { sample } from './proc.ts';
import type { PacketCaptureSpec } from '../crds/packetcapture.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { udpFlood } from '../local/netns-host.ts';
import type { NetnsEnv, RunningPod } from './env.ts';
import { sleep, waitFor } from './harness.ts';
import type { FidelityStep } from './shape.ts';
import { ratio } from './stats.ts';

const PORT = 9999;
const SENDER_MAX_PPS = 40_000;

/** tcpdump as an operator would run it by hand: nsenter into the pod's netns, the agent's argv writing to a file of its own. */
async function rawTcpdump(netnsPath: string, argv: string[]) {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'nsenter', `--net=${netnsPath}`, '--', 'tcpdump', ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  await waitFor('raw tcpdump listening', () => (/listening on/.test(stderr) ? true : child.exitCode !== null ? Promise.reject(new Error(stderr)) : undefined), {
    timeoutMs: 15_000,
    everyMs: 5,
  });
  return {
    async stop() {
      child.kill('SIGTERM');
      await exited;
      return parseStats(stderr);
    },
  };
}

export async function fidelityStep(env: NetnsEnv, pod: RunningPod, ratePps: number, seconds: number): Promise<FidelityStep & { achievedPps: number }> {
  const name = `fidelity-${ratePps}`;
  const spec: PacketCaptureSpec = { target: { podName: pod.name }, filter: { protocol: 'UDP', port: PORT } };
  const from = env.agent.records.length;
  await env.createCapture(name, spec);
  await env.sessionStarted(name, pod.uid, from);
  const dir = await mkdtemp(join(tmpdir(), 'pc-bench-raw-'));
  try {
    const argv = tcpdumpArgv(spec, { podIPs: [pod.ip] });
    argv[argv.indexOf('-w') + 1] = join(dir, 'raw.pcap');
    const raw = await rawTcpdump(pod.netnsPath, argv);
    const cpuBefore = await sample(env.agent.pid);
    // one sender process tops out near 50k pps here; above that the rate is split over several
    const senders = Math.ceil(ratePps / SENDER_MAX_PPS);
    const floods = await Promise.all(
      Array.from({ length: senders }, () => udpFlood(env.host, pod.ip, PORT, { packets: Math.round((ratePps * seconds) / senders), ratePps: ratePps / senders })),
    );
    const flood = {
      sent: floods.reduce((n, f) => n + f.sent, 0),
      failed: floods.reduce((n, f) => n + f.failed, 0),
      durationMs: Math.max(...floods.map((f) => f.durationMs)),
    };
    const cpuAfter = await sample(env.agent.pid);
    // packets in the ring reach tcpdump when a block fills or after 1 s
    await sleep(1500);
    const rawStats = await raw.stop();
    // a spec change ends the session (SpecChanged); its Ended entry carries tcpdump's exit counters
    await kubeRequest(env.kc, 'PATCH', `${env.capturesPath}/${name}`, { contentType: MERGE_PATCH, body: { spec: { filter: { port: PORT - 1 } } } });
    const ended = await waitFor(
      `the ${name} session to end`,
      async () => (await env.getCapture(name)).status?.sessions?.find((s) => s.podUID === pod.uid && s.generation === 1 && s.state === 'Ended'),
      { timeoutMs: 30_000, everyMs: 200 },
    );
    await env.deleteCapture(name);
    const agent = ended.packets ?? 0;
    const writtenPps = (agent / flood.durationMs) * 1000;
    const cpuPct = cpuBefore && cpuAfter ? ((cpuAfter.cpuS - cpuBefore.cpuS) / (flood.durationMs / 1000)) * 100 : undefined;
    const rawCaptured = rawStats.captured ?? 0;
    return {
      ratePps,
      sent: flood.sent - flood.failed,
      agent,
      raw: rawCaptured,
      agentDrops: ended.droppedByKernel ?? 0,
      rawDrops: rawStats.droppedByKernel ?? 0,
      ratio: ratio(agent, rawCaptured),
      agentCpuPctPer10kpps: cpuPct !== undefined && writtenPps > 0 ? Math.round((cpuPct / (writtenPps / 10_000)) * 10) / 10 : null,
      achievedPps: Math.round((flood.sent / flood.durationMs) * 1000),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
