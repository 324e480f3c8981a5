// The agent's watches on a connection that went silent: the agent reaches the API server
// through a proxy that black-holes (connections stay open, nothing comes back, and a
// connection black-holed stays dead after the proxy heals, as a forgotten flow does).
// Only the silent-watch detector can tell such a watch from a quiet one.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentHandle } from '../../agent/main.ts';
import { SimulatedNode } from '../../local/node.ts';
import { BlackholeProxy } from '../support/blackhole-proxy.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  installCrd,
  quietLog,
  randomSubnet,
  startAgent,
  tcpdumpsOf,
  waitSession,
} from './support/agent-harness.ts';

/** the shortened threshold: the API server's bookmarks come every minute, far too slow for a test */
const SILENT_MS = 10_000;
/** shorter than SILENT_MS, so the watches are still stuck on their dead connections after healing */
const HOLE_MS = 3_000;

describe.runIf(agentE2eAvailable)('agent: a watch stuck on a dead connection', () => {
  const ns = useNamespace('stuck');
  const nodeName = `${ns.name}-node`;
  const kc = () => cluster().kubeConfig;
  const proxy = new BlackholeProxy();
  let dataDir: string | undefined;
  let node: SimulatedNode | undefined;
  let agent: AgentHandle | undefined;

  beforeAll(async () => {
    await installCrd(kc());
    dataDir = await mkdtemp(join(tmpdir(), 'agent-stuck-'));
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: randomSubnet(), log: quietLog() });
    await proxy.start(new URL(cluster().info.server));
    agent = await startAgent({ kubeConfig: proxy.kubeConfig(kc()), nodeName, dataDir, namespace: ns.name, watchSilentMs: SILENT_MS });
    await agent.ready;
  });

  afterAll(async () => {
    proxy.heal();
    await agent?.stop();
    const leftover = dataDir ? await tcpdumpsOf(dataDir) : [];
    await node?.stop();
    await proxy.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  it('a capture deleted while the agent watch was stuck is stopped within 60 s of the proxy healing', { timeout: 180_000 }, async () => {
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    await createCapture(kc(), ns.name, 'stuck', { target: { podName: 'web-0' } });
    await waitSession(kc(), ns.name, 'stuck', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running for web-0');
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir!)).toHaveLength(1), { timeout: 30_000, interval: 50 });

    proxy.blackhole();
    const holedAt = Date.now();
    await deleteCapture(kc(), ns.name, 'stuck');
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, holedAt + HOLE_MS - Date.now())));
    // the agent heard nothing of the deletion: its tcpdump still runs
    expect(await tcpdumpsOf(dataDir!)).toHaveLength(1);
    proxy.heal();
    const healedAt = Date.now();

    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir!)).toEqual([]), { timeout: 60_000, interval: 50 });
    console.log(`stuck watch (silent threshold ${SILENT_MS} ms, black hole ${HOLE_MS} ms): tcpdump of the deleted capture stopped ${Date.now() - healedAt} ms after healing`);
  });
});
