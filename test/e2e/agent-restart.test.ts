// The agent killed with SIGKILL mid-capture: no tcpdump survives it, and the restarted
// agent resumes with new sessions while the earlier files stay on disk, listed, and
// reported Ended with AgentRestart.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { subresourcePath } from '../../apiserver/api.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { kubeRequest } from '../../kube/http.ts';
import { createHost, udpFlood, type Host } from '../../local/netns-host.ts';
import { SimulatedNode } from '../../local/node.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  installCrd,
  netnsInode,
  packetCount,
  quietLog,
  randomHostAddress,
  randomSubnet,
  sessionsOnDisk,
  tcpdumpsOf,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

const REPO = resolve(import.meta.dirname, '../..');
const ENTRY = join(REPO, 'test/e2e/support/agent-process.ts');

interface AgentProcess {
  child: ChildProcess;
  port: number;
  exited: Promise<unknown>;
}

describe.runIf(agentE2eAvailable)('agent process killed and restarted', () => {
  const ns = useNamespace('agent-restart');
  const nodeName = `${ns.name}-node`;
  let dataDir: string;
  let node: SimulatedNode | undefined;
  let host: Host | undefined;
  const children: ChildProcess[] = [];
  const kc = () => cluster().kubeConfig;

  /** The agent as its own process (node + tsx), serving on the port it prints. */
  const spawnAgent = async (): Promise<AgentProcess> => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: {
        ...process.env,
        KUBECONFIG: cluster().info.kubeconfigPath,
        NODE_NAME: nodeName,
        DATA_DIR: dataDir,
        POD_NAMESPACE: ns.name,
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
      },
    });
    children.push(child);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
        for (const line of out.split('\n')) {
          try {
            const parsed = JSON.parse(line) as { port?: number; msg?: string };
            if (parsed.port !== undefined && parsed.msg === undefined) resolve(parsed.port);
          } catch {
            // a partial line or a log line
          }
        }
      });
      void exited.then(() => reject(new Error('the agent process exited before it was ready')));
    });
    return { child, port, exited };
  };

  beforeAll(async () => {
    await installCrd(kc());
    dataDir = await mkdtemp(join(tmpdir(), 'agent-restart-'));
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: randomSubnet(), log: quietLog() });
    host = await createHost(`rs${randomBytes(3).toString('hex')}`, randomHostAddress());
  });

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    const leftover = dataDir ? await vi.waitFor(async () => {
      const now = await tcpdumpsOf(dataDir);
      if (now.length > 0) throw new Error('tcpdumps still running');
      return now;
    }, WAIT).catch(() => tcpdumpsOf(dataDir)) : [];
    await node?.stop();
    await host?.destroy();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  it('kill -9 leaves no tcpdump; the restarted agent resumes and keeps the earlier files', async () => {
    const first = await spawnAgent();
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    await createCapture(kc(), ns.name, 'restart', { target: { podName: 'web-0' } });
    const before = await waitSession(kc(), ns.name, 'restart', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running');
    await udpFlood(host!, pod.ip, 31500, { packets: 500, ratePps: 1000 });
    // tcpdump has read (and, with -U, written) every datagram before the agent is killed
    await waitSession(kc(), ns.name, 'restart', (s) => s.id === before.id && (s.packets ?? 0) >= 500, 'with all packets');
    const inode = await netnsInode(node!.podNetns(pod.uid)!.netnsPath);
    expect((await tcpdumpsOf(dataDir)).map((t) => t.netns)).toEqual([inode]);

    first.child.kill('SIGKILL');
    await first.exited;
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir)).toEqual([]), WAIT);
    const [file] = (await sessionsOnDisk(dataDir, ns.name, 'restart')).flatMap((s) => s.files);
    const size = (await stat(file!)).size;
    const packets = await packetCount(file!);
    expect(packets).toBeGreaterThanOrEqual(500);

    const second = await spawnAgent();
    const after = await waitSession(kc(), ns.name, 'restart', (s) => s.podUID === pod.uid && s.state === 'Running' && s.id !== before.id, 'resumed');
    const old = await waitSession(kc(), ns.name, 'restart', (s) => s.id === before.id && s.state === 'Ended', 'the old one ended');
    expect(old.endReason).toBe(REASONS.AgentRestart);
    await vi.waitFor(async () => expect((await tcpdumpsOf(dataDir)).map((t) => t.netns)).toEqual([inode]), WAIT);

    // the earlier file is intact, and the restarted agent lists it next to the new session's
    // (through the packet-capture API, the only client its data port admits)
    expect((await stat(file!)).size).toBe(size);
    expect(await packetCount(file!)).toBe(packets);
    const listing = await vi.waitFor(async () => {
      const got = await kubeRequest<{ nodes: { node: string; pods: { podUID: string; sessions: { id: string; bytes: number }[] }[] }[] }>(kc(), 'GET', subresourcePath(ns.name, 'restart', 'files'));
      const instance = got.nodes.find((n) => n.node === nodeName)?.pods.find((p) => p.podUID === pod.uid);
      expect(instance?.sessions.map((s) => s.id).sort()).toEqual([before.id, after.id].sort());
      return instance!;
    }, WAIT);
    expect(listing.sessions.find((s) => s.id === before.id)!.bytes).toBe(size);

    await deleteCapture(kc(), ns.name, 'restart');
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir)).toEqual([]), WAIT);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });
});
