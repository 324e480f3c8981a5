// Two simulated nodes, an agent on each: a pod recreated on the other node is followed
// there, and the first node's tcpdump stops.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentHandle } from '../../agent/main.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { SimulatedNode } from '../../local/node.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  deletePod,
  installCrd,
  netnsInode,
  quietLog,
  randomSubnet,
  sessionsOnDisk,
  startAgent,
  tcpdumpsOf,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

describe.runIf(agentE2eAvailable)('agents on two nodes', () => {
  const ns = useNamespace('agent-nodes');
  const names = [`${ns.name}-a`, `${ns.name}-b`] as const;
  const dataDirs: string[] = [];
  const nodes: SimulatedNode[] = [];
  const agents: AgentHandle[] = [];
  const kc = () => cluster().kubeConfig;

  beforeAll(async () => {
    await installCrd(kc());
    const subnet = randomSubnet();
    for (const [i, nodeName] of names.entries()) {
      const dataDir = await mkdtemp(join(tmpdir(), `agent-node-${i}-`));
      dataDirs.push(dataDir);
      nodes.push(await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: subnet + i, log: quietLog() }));
      agents.push(await startAgent({ kubeConfig: kc(), nodeName, dataDir, namespace: ns.name }));
    }
    await Promise.all(agents.map((a) => a.ready));
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    const leftover = (await Promise.all(dataDirs.map(tcpdumpsOf))).flat();
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all(dataDirs.map((d) => rm(d, { recursive: true, force: true })));
    expect(leftover).toEqual([]);
  });

  it('follows a pod recreated on the other node, and the first node stops capturing', async () => {
    const [a, b] = [0, 1] as const;
    await createCapture(kc(), ns.name, 'follow', { target: { podName: 'web-0' } });
    const first = await createPod(kc(), ns.name, 'web-0', names[a]);
    const onA = await waitSession(kc(), ns.name, 'follow', (s) => s.podUID === first.uid && s.state === 'Running', 'Running on node a');
    expect(onA.nodeName).toBe(names[a]);
    const inodeA = await netnsInode(nodes[a]!.podNetns(first.uid)!.netnsPath);
    await vi.waitFor(async () => expect((await tcpdumpsOf(dataDirs[a]!)).map((t) => t.netns)).toEqual([inodeA]), WAIT);

    await deletePod(kc(), ns.name, 'web-0', first.uid);
    const second = await createPod(kc(), ns.name, 'web-0', names[b]);
    const onB = await waitSession(kc(), ns.name, 'follow', (s) => s.podUID === second.uid && s.state === 'Running', 'Running on node b');
    expect(onB.nodeName).toBe(names[b]);
    const inodeB = await netnsInode(nodes[b]!.podNetns(second.uid)!.netnsPath);
    await vi.waitFor(async () => {
      expect((await tcpdumpsOf(dataDirs[b]!)).map((t) => t.netns)).toEqual([inodeB]);
      expect(await tcpdumpsOf(dataDirs[a]!)).toEqual([]);
    }, WAIT);
    const endedOnA = await waitSession(kc(), ns.name, 'follow', (s) => s.id === onA.id && s.state === 'Ended', 'ended on node a');
    expect(endedOnA.endReason).toBe(REASONS.PodDeleted);

    // each node's files are under the instance it captured, and only there
    expect((await sessionsOnDisk(dataDirs[a]!, ns.name, 'follow')).map((s) => s.podUID)).toEqual([first.uid]);
    expect((await sessionsOnDisk(dataDirs[b]!, ns.name, 'follow')).map((s) => s.podUID)).toEqual([second.uid]);

    await deleteCapture(kc(), ns.name, 'follow');
    await vi.waitFor(async () => expect((await Promise.all(dataDirs.map(tcpdumpsOf))).flat()).toEqual([]), WAIT);
  });
});
