// GET .../packetcaptures/<name>/stream: the live pcapng stream of a capture, all nodes in one.
// Every live agent's /stream/<namespace>/<name> is read and merged (merge.ts): a pod
// recreated on another node shows up there as a new interface, named `<pod>/<uid>` by its
// agent. Agents are looked for again every FOLLOW_MS (a node that gets an agent, an agent that
// restarts), and the stream ends when the capture does (Completed, Failed or deleted), or when
// the client goes away. A client that cannot keep up is cut off; the agents are never slowed.

import type { ServerResponse } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { isNotFound, kubeRequest } from '../kube/http.ts';
import type { Logger } from '../kube/log.ts';
import { API_VERSION as PC_API_VERSION, PLURAL, type PacketCapture } from '../crds/packetcapture.ts';
import { BlockReader, sectionHeader } from '../pcapng/blocks.ts';
import { agentGet, listAgents, type Agent, type ClientCredentials } from './agents.ts';
import { StreamMerger } from './merge.ts';

const FOLLOW_MS = 2_000;
/** bytes a client may fall behind before it is cut off */
const BACKLOG_BYTES = 16 * 1024 * 1024;
const PCAPNG_TYPE = 'application/x-pcapng';

/** Whether the capture has ended for good, from its status (undefined: it is gone). */
const ended = (c: PacketCapture | undefined): boolean => !c || c.status?.phase === 'Completed' || c.status?.phase === 'Failed';

export async function serveMergedStream(opts: {
  kubeConfig: KubeConfig;
  systemNamespace: string | undefined;
  client: ClientCredentials;
  namespace: string;
  name: string;
  res: ServerResponse;
  log: Logger;
}): Promise<void> {
  const { namespace, name, res, log } = opts;
  const merger = new StreamMerger();
  const reading = new Map<string, AbortController>();
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    for (const abort of reading.values()) abort.abort();
    res.end();
  };
  res.on('close', finish);
  res.writeHead(200, { 'content-type': PCAPNG_TYPE, 'cache-control': 'no-store' });
  res.write(sectionHeader({ comments: [`packetcapture.dev/capture: ${namespace}/${name}`], os: 'Linux', userappl: 'packet-capture-api' }));

  const read = async (agent: Agent) => {
    const abort = new AbortController();
    reading.set(agent.node, abort);
    try {
      const upstream = await agentGet(agent, `/stream/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`, opts.client, { signal: abort.signal, timeoutMs: 0 });
      if (upstream.statusCode !== 200) throw new Error(`answered ${upstream.statusCode}`);
      const reader = new BlockReader();
      for await (const chunk of upstream) {
        for (const block of reader.push(chunk as Buffer)) {
          const out = merger.take(agent.node, block);
          if (!out || done) continue;
          if (res.writableLength > BACKLOG_BYTES) {
            log.warn({ namespace, name }, 'stream client cannot keep up; cut off');
            res.destroy();
            return;
          }
          res.write(out);
        }
      }
    } catch (err) {
      if (!done) log.info({ namespace, name, node: agent.node, err: String(err) }, 'agent stream ended; asking again');
    } finally {
      reading.delete(agent.node);
    }
  };

  while (!done) {
    const capture = await kubeRequest<PacketCapture>(opts.kubeConfig, 'GET', `/apis/${PC_API_VERSION}/namespaces/${namespace}/${PLURAL}/${name}`).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (ended(capture)) break;
    for (const agent of await listAgents(opts.kubeConfig, opts.systemNamespace)) if (!reading.has(agent.node)) void read(agent);
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_MS));
  }
  finish();
}
