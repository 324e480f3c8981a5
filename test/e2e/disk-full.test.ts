// A data dir that fills up, for real: the agent's files on a small tmpfs, traffic until it
// is full. The agent writes the files, so the write the disk refuses is what stops the
// session as DiskFull; the file written so far stays whole, and the agent keeps running.

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentHandle } from '../../agent/main.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { complete, run } from '../../local/fabric.ts';
import { createHost, udpFlood, type Host } from '../../local/netns-host.ts';
import { SimulatedNode } from '../../local/node.ts';
import { sessionsOnDisk } from '../support/captures.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  installCrd,
  quietLog,
  randomHostAddress,
  randomSubnet,
  startAgent,
  tcpdumpsOf,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

const TMPFS_BYTES = 3 * 1024 * 1024;

describe.runIf(agentE2eAvailable)('a full data dir', () => {
  const ns = useNamespace('diskfull');
  const nodeName = `${ns.name}-node`;
  let dataDir = '';
  let mounted = false;
  let node: SimulatedNode | undefined;
  let agent: AgentHandle | undefined;
  let host: Host | undefined;
  const kc = () => cluster().kubeConfig;

  beforeAll(async () => {
    await installCrd(kc());
    dataDir = await mkdtemp(join(tmpdir(), 'agent-e2e-diskfull-'));
    await run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES}`, 'tmpfs', dataDir]);
    mounted = true;
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: randomSubnet(), log: quietLog() });
    host = await createHost(`df${randomBytes(3).toString('hex')}`, randomHostAddress());
    agent = await startAgent({ kubeConfig: kc(), nodeName, dataDir, namespace: ns.name });
    await agent.ready;
  });

  afterAll(async () => {
    await agent?.stop();
    const leftover = dataDir ? await tcpdumpsOf(dataDir) : [];
    await node?.stop();
    await host?.destroy();
    if (mounted) await run('umount', [dataDir]);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  it('stops the session as DiskFull with how much space is left, and the agent keeps serving', async () => {
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    await createCapture(kc(), ns.name, 'big', { target: { podName: 'web-0' }, filter: { protocol: 'UDP', port: 31000 } });
    await waitSession(kc(), ns.name, 'big', (s) => s.podUID === pod.uid && s.state === 'Running', 'running');

    // twice the tmpfs in packets the filter keeps
    const sent = await udpFlood(host!, pod.ip, 31000, { packets: 6000, ratePps: 3000, payloadBytes: 1000 });
    expect(sent.sent).toBe(6000);
    const failed = await waitSession(kc(), ns.name, 'big', (s) => s.podUID === pod.uid && s.state === 'Failed', 'Failed');
    expect(failed.reason).toBe(REASONS.DiskFull);
    expect(failed.message).toMatch(/^writing \S+ failed \(ENOSPC\)/);
    expect(failed.endTime).toBeDefined();
    // what was written before the disk filled up reads to its end, no block cut short
    const files = (await sessionsOnDisk(dataDir, ns.name, 'big')).flatMap((s) => s.files);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect((await complete('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number'])).code).toBe(0);
    expect(failed.packets).toBeGreaterThan(1000);
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir)).toEqual([]), WAIT);

    // the process that saw the disk fill up still answers
    const health = await fetch(`http://127.0.0.1:${agent!.port}/healthz`);
    expect(health.status).toBe(200);
    await deleteCapture(kc(), ns.name, 'big');
  });
});
