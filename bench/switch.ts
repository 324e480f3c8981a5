// Pod recreation with traffic flowing: how long the agent takes to capture in the new pod
// instance after it runs, and to stop the old tcpdump after the old pod is deleted.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inNetns, runnableScript } from '../local/fabric.ts';
import type { NetnsEnv } from './env.ts';
import { isTcpdump } from './proc.ts';
import { defer, now, waitFor } from './harness.ts';
import { summarize, type Summary } from './stats.ts';

const TRAFFIC = fileURLToPath(new URL('../local/traffic.ts', import.meta.url));
const POD = 'switch-0';
const CAPTURE = 'switch';
const PORT = 9999;
const TRAFFIC_PPS = 200;

/**
 * UDP at a steady rate to the pod's IP for as long as the rounds take; each new instance
 * gets the same IP (the lowest free one), so traffic reaches whichever instance holds it.
 */
async function backgroundTraffic(env: NetnsEnv, ip: string) {
  const script = await runnableScript(TRAFFIC);
  const packets = TRAFFIC_PPS * 3600;
  const child = spawn('setpriv', inNetns(env.host.netnsName, [process.execPath, script, 'udp', ip, String(PORT), String(packets), String(TRAFFIC_PPS), '64']), {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return defer('background traffic', async () => {
    child.kill('SIGKILL');
    await exited;
  });
}

export interface SwitchResult {
  switch: Summary;
  oldExit: Summary;
  /** the part of `switch` the agent spent starting and verifying tcpdump (its verifyMs) */
  tcpdumpStart: Summary;
}

export async function switchLatency(env: NetnsEnv, rounds: number): Promise<SwitchResult> {
  let from = env.agent.records.length;
  let pod = await env.startPod(POD);
  await env.createCapture(CAPTURE, { target: { podName: POD } });
  let started = await env.sessionStarted(CAPTURE, pod.uid, from);
  const stopTraffic = await backgroundTraffic(env, pod.ip);
  const switches: number[] = [];
  const exits: number[] = [];
  const starts: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const oldPid = Number(started.pid);
      from = env.agent.records.length;
      const deletedAt = now();
      const oldExit = waitFor('the old tcpdump to exit', async () => ((await isTcpdump(oldPid)) ? undefined : now()), { timeoutMs: 60_000, everyMs: 2 });
      await env.deletePod(POD);
      pod = await env.startPod(POD);
      started = await env.sessionStarted(CAPTURE, pod.uid, from);
      // from the pod bound to the node: the agent starts a session while the pod is still
      // Pending (its sandbox's first packets), so Running would come after the start
      switches.push(started.at - pod.seenAt);
      starts.push(Number(started.verifyMs));
      exits.push((await oldExit) - deletedAt);
    }
  } finally {
    await stopTraffic();
    await env.deleteCapture(CAPTURE);
    await env.deletePod(POD);
  }
  return { switch: summarize(switches), oldExit: summarize(exits), tcpdumpStart: summarize(starts) };
}
