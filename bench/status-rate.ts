// Status writes of one running session under steady traffic, as every watcher of
// PacketCaptures (the controller, Argo CD, Flux) receives them: the MODIFIED events of
// the capture in a window after its session runs, per minute.

import type { PacketCapture } from '../crds/packetcapture.ts';
import { kubeStream } from '../kube/http.ts';
import { udpFlood } from '../local/netns-host.ts';
import type { NetnsEnv, RunningPod } from './env.ts';
import { round1 } from './stats.ts';

const PORT = 9;
const RATE_PPS = 500;

export async function statusWritesPerSessionMinute(env: NetnsEnv, pod: RunningPod, windowS: number): Promise<number> {
  const name = 'status-rate';
  const from = env.agent.records.length;
  await env.createCapture(name, { target: { podName: pod.name }, filter: { protocol: 'UDP', port: PORT } });
  await env.sessionStarted(name, pod.uid, from);
  // the session's start is written at once; what follows is progress alone
  const running = async () => (await env.getCapture(name)).status?.sessions?.some((s) => s.podUID === pod.uid && s.state === 'Running');
  while (!(await running())) await new Promise((r) => setTimeout(r, 100));
  const abort = new AbortController();
  const start = await env.getCapture(name);
  const watch = await kubeStream(env.kc, `${env.capturesPath}?watch=1&fieldSelector=metadata.name%3D${name}&resourceVersion=${start.metadata.resourceVersion}`, { signal: abort.signal });
  let modified = 0;
  const counting = (async () => {
    let buffered = '';
    const decoder = new TextDecoder();
    for await (const chunk of watch.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const event = JSON.parse(buffered.slice(0, newline)) as { type: string; object: PacketCapture };
        buffered = buffered.slice(newline + 1);
        if (event.type === 'MODIFIED') modified++;
      }
    }
  })().catch(() => undefined);
  try {
    await udpFlood(env.host, pod.ip, PORT, { packets: RATE_PPS * windowS, ratePps: RATE_PPS });
  } finally {
    abort.abort();
    await counting;
    await env.deleteCapture(name);
  }
  return round1((modified / windowS) * 60);
}
