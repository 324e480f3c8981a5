// `node --import tsx bench/stream-latency.ts [--rounds R]` (root; run under the e2e lock): how
// long a packet takes from the pod's network namespace to the output of `kubectl pcap stream`,
// on the embedded local cluster (real tcpdump, agent, packet-capture API behind the real API
// server). Per packet: the time its block is read from the stream minus the timestamp the
// kernel gave it in the pod's netns (same machine, same clock). Prints median and p99 in ms.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { streamCapture } from '../cli/pcap/stream.ts';
import { API_VERSION, KIND, PLURAL } from '../crds/packetcapture.ts';
import { kubeRequest } from '../kube/http.ts';
import { createHost, tcpRequests } from '../local/netns-host.ts';
import { startLocalCluster } from '../local/start.ts';
import { BlockReader } from '../pcapng/blocks.ts';
import { podBody, sleep, waitFor } from './harness.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '20' } } });
const NS = 'default';
const dir = await mkdtemp(join(tmpdir(), 'bench-stream-'));
const local = await startLocalCluster({ nodes: 1, dataDir: join(dir, 'data'), subnetBase: 91, nodeNamePrefix: 'stream-n', logDestination: pino.destination(join(dir, 'components.log')) });
const host = await createHost('bench-stream', '10.244.250.201');
const abort = new AbortController();
try {
  const kc = local.kubeConfig;
  await kubeRequest(kc, 'POST', `/api/v1/namespaces/${NS}/pods`, { body: podBody({ name: 'web-0', node: local.nodes[0]!.name }) });
  const ip = await waitFor('web-0 running', async () => (await kubeRequest<{ status?: { phase?: string; podIP?: string } }>(kc, 'GET', `/api/v1/namespaces/${NS}/pods/web-0`)).status?.podIP);
  await kubeRequest(kc, 'POST', `/apis/${API_VERSION}/namespaces/${NS}/${PLURAL}`, {
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'web' }, spec: { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 } } },
  });
  const latencies: number[] = [];
  const reader = new BlockReader();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const at = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
      for (const block of reader.push(chunk)) if (block.type === 'packet') latencies.push(Number(at - block.packet.timestampNs) / 1e6);
      done();
    },
  });
  const streaming = streamCapture({ kc, namespace: NS, systemNamespace: local.systemNamespace }, 'web', sink, abort.signal);
  // the capture runs when the first packets come through
  await waitFor('first packets on the stream', async () => {
    await tcpRequests(host, ip, 80, 1);
    return latencies.length > 0 || undefined;
  }, { timeoutMs: 60_000, everyMs: 500 });
  latencies.length = 0;
  for (let i = 0; i < Number(values.rounds); i++) {
    await tcpRequests(host, ip, 80, 5);
    await sleep(200);
  }
  await sleep(1000);
  abort.abort();
  await streaming.catch(() => undefined);
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  console.log(`${sorted.length} packets: netns -> kubectl pcap stream output, median ${at(0.5).toFixed(1)} ms, p99 ${at(0.99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`);
} finally {
  abort.abort();
  await host.destroy();
  await local.stop();
  await rm(dir, { recursive: true, force: true });
}
