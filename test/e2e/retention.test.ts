// Retention on a real node: files outlive their capture for the retention time, keyed by
// the capture instance (UID), so a capture deleted and created again under its name loses
// its predecessor's files on time and never its own.

import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentHandle } from '../../agent/main.ts';
import { SimulatedNode } from '../../local/node.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  installCrd,
  quietLog,
  randomSubnet,
  sessionsOnDisk,
  startAgent,
  tcpdumpsOf,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

// long enough that "still there" checks right after a deletion hold on a loaded machine
const RETENTION_MS = 5000;

describe.runIf(agentE2eAvailable)('retention of capture files, by capture instance', () => {
  const ns = useNamespace('retention');
  const nodeName = `${ns.name}-node`;
  let dataDir = '';
  let node: SimulatedNode | undefined;
  let agent: AgentHandle | undefined;
  const kc = () => cluster().kubeConfig;
  const exists = (path: string) => stat(path).then(() => true, () => false);

  beforeAll(async () => {
    await installCrd(kc());
    dataDir = await mkdtemp(join(tmpdir(), 'agent-e2e-retention-'));
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: randomSubnet(), log: quietLog() });
    agent = await startAgent({ kubeConfig: kc(), nodeName, dataDir, namespace: ns.name, retentionMs: RETENTION_MS, housekeepingMs: 250 });
    await agent.ready;
  });

  afterAll(async () => {
    await agent?.stop();
    const leftover = dataDir ? await tcpdumpsOf(dataDir) : [];
    await node?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  it("removes an earlier capture's files after the retention time, then the name's whole directory once no capture has it", async () => {
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    const spec = { target: { podName: 'web-0' } };
    await createCapture(kc(), ns.name, 'kept', spec);
    const earlier = await waitSession(kc(), ns.name, 'kept', (s) => s.podUID === pod.uid && s.state === 'Running', 'running for the earlier capture');
    await deleteCapture(kc(), ns.name, 'kept');
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir)).toEqual([]), WAIT);
    expect(await exists(earlier.path!)).toBe(true);

    await createCapture(kc(), ns.name, 'kept', spec);
    const later = await waitSession(kc(), ns.name, 'kept', (s) => s.podUID === pod.uid && s.state === 'Running', 'running for the later capture');
    expect(later.id).not.toBe(earlier.id);
    await vi.waitFor(async () => expect(await exists(earlier.path!)).toBe(false), WAIT);
    // the running session of the capture that has the name now is not touched
    expect((await sessionsOnDisk(dataDir, ns.name, 'kept')).map((s) => s.sessionId)).toEqual([later.id]);

    await deleteCapture(kc(), ns.name, 'kept');
    const captureDir = join(dataDir, ns.name, 'kept');
    // kept for the retention time after the deletion, then removed with everything in it
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir)).toEqual([]), WAIT);
    expect(await exists(later.path!)).toBe(true);
    await vi.waitFor(async () => expect(await exists(captureDir)).toBe(false), WAIT);
  });
});
