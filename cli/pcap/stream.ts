// `kubectl pcap stream NAME [-w FILE|-]`: the capture's live pcapng stream (the packet-capture
// API merges every node's agent), written as it arrives, until the capture ends or Ctrl-C.
// The API server ends any request it does not count as long-running after its request
// timeout (a minute by default), so the stream is asked for again whenever it ends while
// the capture goes on; each answer is one more section of interfaces, merged here into the
// one stream a reader sees (the instances live then are described again, packets of the
// moment between two answers are missed).

import { once } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { subresourcePath } from '../../apiserver/api.ts';
import { StreamMerger } from '../../apiserver/merge.ts';
import { BlockReader, sectionHeader } from '../../pcapng/blocks.ts';
import { kubeStream } from '../../kube/http.ts';
import { apiError, getCapture, PcapError, type Target } from './client.ts';

const over = (phase: string | undefined): boolean => phase === 'Completed' || phase === 'Failed';

export async function streamCapture(t: Target, name: string, out: Writable, signal: AbortSignal): Promise<{ interfaces: number }> {
  const first = await getCapture(t, name);
  const path = subresourcePath(t.namespace, name, 'stream');
  const merger = new StreamMerger();
  out.write(sectionHeader({ comments: [`packetcapture.dev/capture: ${t.namespace}/${name}`], os: 'Linux', userappl: 'kubectl-pcap' }));
  if (over(first.status?.phase)) return { interfaces: 0 };
  for (let answer = 0; !signal.aborted; answer++) {
    try {
      const res = await kubeStream(t.kc, path, { signal });
      const reader = new BlockReader();
      for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) {
        for (const block of reader.push(Buffer.from(chunk as Uint8Array))) {
          const bytes = merger.take(`answer ${answer}`, block);
          if (bytes && !out.write(bytes)) await once(out, 'drain');
        }
      }
    } catch (err) {
      if (signal.aborted) break;
      if ((err as Error).name !== 'TypeError' && !/terminated|other side closed/i.test((err as Error).message)) throw apiError(err, `streaming ${path}`);
    }
    const now = await getCapture(t, name).catch((err: unknown) => {
      if (err instanceof PcapError && /not found/.test(err.message)) return undefined;
      throw err;
    });
    if (!now || now.metadata.uid !== first.metadata.uid || over(now.status?.phase)) break;
  }
  return { interfaces: merger.interfaceCount };
}
