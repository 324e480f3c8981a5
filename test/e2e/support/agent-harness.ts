// What the agent's e2e tests share: the CRD, pods on simulated nodes, captures, the
// tcpdump processes of one data dir, and capture files read back with tshark.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, beforeAll, expect, vi } from 'vitest';
import { runAgent, type AgentHandle, type AgentOptions } from '../../../agent/main.ts';
import { SESSION_MARK } from '../../../agent/tcpdump.ts';
import { CRD_NAME, packetCaptureCrd } from '../../../crds/crd.ts';
import { isNotFound, kubeRequest, MERGE_PATCH } from '../../../kube/http.ts';
import { LOCAL_TRUST_NAMESPACE } from '../../../local/control-plane.ts';
import { createHost, type Host } from '../../../local/netns-host.ts';
import { SimulatedNode, type SimulatedNodeOptions } from '../../../local/node.ts';
import { foreignFrames, namesNoHost, type Frame } from '../../../local/packets.ts';
import { apply, cluster, controlPlaneAvailable, useNamespace, waitEstablished, type KubeObject, type TestNamespace } from '../../support/cluster.ts';
import { missingRootOrTools, requireOrSkip } from '../../support/require.ts';

const exec = promisify(execFile);
const TOOLS = ['ip', 'tcpdump', 'tshark', 'nsenter', 'setpriv', 'ping'];

/** Whether the agent e2e suites can run here: a control plane, root, and the tools. */
export const agentE2eAvailable =
  controlPlaneAvailable &&
  requireOrSkip('root with network namespaces, tcpdump and tshark', () => missingRootOrTools(TOOLS, 'iproute2 iputils-ping tcpdump tshark util-linux'));


export const WAIT = { timeout: 60_000, interval: 50 };
export const quietLog = () => pino({ level: process.env.LOG_LEVEL ?? 'warn' }, process.stderr);

// All test runs and benchmarks on a machine share one bridge, so two of them using one
// address would see each other's packets. Others use fixed numbers (local mode from 1,
// node.test.ts 41-44, the benchmark 201); these suites draw from 150-198.
/** A /24 (and the next one) for simulated nodes, unlikely to be in use by another run at the same time. */
export const randomSubnet = (): number => 150 + Math.floor(Math.random() * 48);
/** A traffic-host address in 10.244.250.0/24 (netns-host.ts), from the same range. */
export const randomHostAddress = (): string => `10.244.250.${150 + Math.floor(Math.random() * 49)}`;

export async function installCrd(kc: KubeConfig): Promise<void> {
  await apply(kc, packetCaptureCrd as unknown as KubeObject);
  await waitEstablished(kc, CRD_NAME);
}

// ---- pods --------------------------------------------------------------------------

export interface PodInstance {
  name: string;
  uid: string;
  ip: string;
}

interface PodObject {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  status?: { phase?: string; podIP?: string };
}

export const podPath = (ns: string, name: string) => `/api/v1/namespaces/${ns}/pods/${name}`;

/** Creates a pod bound to `node` (no scheduler) and waits until it runs with an IP. */
export async function createPod(
  kc: KubeConfig,
  ns: string,
  name: string,
  node: string,
  labels: Record<string, string> = { app: 'web' },
): Promise<PodInstance> {
  return waitRunning(kc, ns, name, await postPod(kc, ns, name, node, labels));
}

/** Creates a pod bound to `node` (no scheduler) and returns its UID at once, while it is Pending. */
export async function postPod(kc: KubeConfig, ns: string, name: string, node: string, labels: Record<string, string> = { app: 'web' }): Promise<string> {
  const created = await kubeRequest<PodObject>(kc, 'POST', `/api/v1/namespaces/${ns}/pods`, {
    body: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns, labels },
      spec: {
        nodeName: node,
        containers: [{ name: 'app', image: 'simulated', ports: [{ containerPort: 80 }] }],
        terminationGracePeriodSeconds: 5,
      },
    },
  });
  return created.metadata.uid;
}

export async function waitRunning(kc: KubeConfig, ns: string, name: string, uid: string): Promise<PodInstance> {
  return vi.waitFor(async () => {
    const pod = await kubeRequest<PodObject>(kc, 'GET', podPath(ns, name));
    if (pod.metadata.uid !== uid) throw new Error(`${name} is another instance now`);
    if (pod.status?.phase !== 'Running' || !pod.status.podIP) throw new Error(`${name} is not Running yet`);
    return { name, uid, ip: pod.status.podIP };
  }, WAIT);
}

/** Deletes one instance (precondition on its UID) and waits until the object is gone. */
export async function deletePod(kc: KubeConfig, ns: string, name: string, uid: string): Promise<void> {
  await kubeRequest(kc, 'DELETE', podPath(ns, name), { body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid } } }).catch(
    (err: unknown) => {
      if (!isNotFound(err)) throw err;
    },
  );
  await vi.waitFor(async () => {
    const pod = await kubeRequest<PodObject>(kc, 'GET', podPath(ns, name)).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (pod?.metadata.uid === uid) throw new Error(`${name} (${uid}) still exists`);
  }, WAIT);
}

/** A pod object bound to `node` and reported Running by the test, with no sandbox behind it. */
export async function createPodWithoutSandbox(kc: KubeConfig, ns: string, name: string, node: string, ip: string): Promise<PodInstance> {
  const created = await kubeRequest<PodObject>(kc, 'POST', `/api/v1/namespaces/${ns}/pods`, {
    body: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns, labels: { app: 'ghost' } },
      spec: { nodeName: node, containers: [{ name: 'app', image: 'simulated' }] },
    },
  });
  await kubeRequest(kc, 'PATCH', `${podPath(ns, name)}/status`, {
    contentType: MERGE_PATCH,
    body: { metadata: { uid: created.metadata.uid }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } },
  });
  return { name, uid: created.metadata.uid, ip };
}

/** A Node object without a kubelet behind it. */
export async function createBareNode(kc: KubeConfig, name: string): Promise<void> {
  await kubeRequest(kc, 'POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name } } });
}

export async function deleteNode(kc: KubeConfig, name: string): Promise<void> {
  await kubeRequest(kc, 'DELETE', `/api/v1/nodes/${name}`).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
}

// ---- captures (test/support/captures.ts, shared with the real-node tests) ------------

export { createCapture, deleteCapture, getCapture, patchCaptureSpec, waitSession } from '../../support/captures.ts';

// ---- agents ------------------------------------------------------------------------

/** An agent in this process with short timings, so tests wait on conditions, not on periods. */
export function startAgent(opts: Pick<AgentOptions, 'kubeConfig' | 'nodeName' | 'dataDir' | 'namespace'> & Partial<AgentOptions>): Promise<AgentHandle> {
  return runAgent({
    metricsPort: 0,
    // the local control plane's packet-capture API keeps its data CA there, whatever the test namespace
    trustNamespace: LOCAL_TRUST_NAMESPACE,
    log: quietLog(),
    statusThrottleMs: 500,
    timing: { pollMs: 500, retryMs: 200, maxRetryMs: 2000 },
    ...opts,
  });
}

export interface AgentOnNode {
  ns: TestNamespace;
  nodeName: string;
  kc(): KubeConfig;
  /** the agent's data dir */
  dataDir(): string;
  node(): SimulatedNode;
  host(): Host;
  agent(): AgentHandle;
}

/**
 * For one test file: its namespace, a simulated node, a traffic host on the bridge and an
 * agent (startAgent) for that node, made in beforeAll; afterAll removes them all and fails
 * the file if a tcpdump of the agent's data dir outlived the agent.
 */
export function useAgentOnNode(prefix: string, nodeOptions: Pick<SimulatedNodeOptions, 'pendingMs'> = {}): AgentOnNode {
  const ns = useNamespace(prefix);
  const nodeName = `${ns.name}-node`;
  const kc = () => cluster().kubeConfig;
  let dataDir: string | undefined;
  let node: SimulatedNode | undefined;
  let host: Host | undefined;
  let agent: AgentHandle | undefined;

  beforeAll(async () => {
    await installCrd(kc());
    dataDir = await mkdtemp(join(tmpdir(), `agent-${prefix}-`));
    node = await SimulatedNode.start({ name: nodeName, kubeConfig: kc(), subnetIndex: randomSubnet(), log: quietLog(), ...nodeOptions });
    host = await createHost(`${prefix.slice(0, 2)}${randomBytes(3).toString('hex')}`, randomHostAddress());
    agent = await startAgent({ kubeConfig: kc(), nodeName, dataDir, namespace: ns.name });
    await agent.ready;
  });

  afterAll(async () => {
    await agent?.stop();
    const leftover = dataDir ? await tcpdumpsOf(dataDir) : [];
    await node?.stop();
    await host?.destroy();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  return { ns, nodeName, kc, dataDir: () => dataDir!, node: () => node!, host: () => host!, agent: () => agent! };
}

// ---- processes ---------------------------------------------------------------------

export interface TcpdumpOnNode {
  pid: number;
  /** inode of its network namespace */
  netns: number;
  argv: string[];
  /** the session it captures for, from its SESSION_MARK */
  session: string;
}

/** The running tcpdumps of the agent whose data dir is `dataDir` (other test runs' tcpdumps are not ours). */
export async function tcpdumpsOf(dataDir: string): Promise<TcpdumpOnNode[]> {
  const found: TcpdumpOnNode[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if ((await readFile(`/proc/${entry}/comm`, 'utf8')).trim() !== 'tcpdump') continue;
      const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').filter(Boolean);
      // the mark names the agent's data dir: this one, or one under it (a local cluster's agent per node)
      const marks = (await readFile(`/proc/${entry}/environ`, 'utf8')).split('\0').filter((v) => v.startsWith(`${SESSION_MARK}=`));
      const mark = marks.map((v) => v.slice(SESSION_MARK.length + 1)).find((v) => v.startsWith(`${dataDir}|`) || v.startsWith(`${dataDir}/`));
      if (!mark) continue;
      const link = await readlink(`/proc/${entry}/ns/net`);
      const stats = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (/\) Z /.test(stats)) continue;
      found.push({ pid: Number(entry), netns: Number(/\[(\d+)\]/.exec(link)![1]), argv, session: mark.slice(mark.indexOf('|') + 1) });
    } catch {
      // exited while we looked
    }
  }
  return found;
}

export const netnsInode = async (path: string): Promise<number> => (await stat(path)).ino;

/** Epoch milliseconds with sub-millisecond precision, on the clock of Date. */
export const now = (): number => performance.timeOrigin + performance.now();

/** Resolves with the time `pid` stopped running, polling /proc every 2 ms. */
export function exitTime(pid: number): Promise<number> {
  return new Promise((resolve) => {
    const poll = () => (alive(pid) ? setTimeout(poll, 2) : resolve(now()));
    poll();
  });
}

/** Whether `pid` runs (a zombie does not). */
export const alive = (pid: number): boolean => {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

// ---- files -------------------------------------------------------------------------

export { sessionsOnDisk, type SessionOnDisk } from '../../support/captures.ts';

export interface Packet extends Frame {
  /** every IPv4 address in the frame, outer and quoted (ICMP errors quote the datagram) */
  ips: string[];
  /** destination ports of every UDP header in the frame, outer and quoted */
  udpDstPorts: number[];
  ipv6: string[];
  protocols: string;
  time: number;
}

/** A capture file as tshark reads it; a file tcpdump is still writing may end mid-packet. */
export async function readPcap(file: string): Promise<Packet[]> {
  const fields = ['frame.time_epoch', 'frame.protocols', 'ip.src', 'ip.dst', 'udp.dstport', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4', 'ipv6.src', 'ipv6.dst', 'arp.opcode'];
  const { stdout } = await exec('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f]), '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,'], {
    maxBuffer: 256 * 1024 * 1024,
  });
  const list = (value: string | undefined) => (value ? value.split(',').filter(Boolean) : []);
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [time, protocols, src, dst, dport, arpSrc, arpDst, src6, dst6, opcode] = line.split('\t');
      // the first occurrence of a field is the outer header's
      const outer = list(src).length > 0 ? { src: list(src)[0], dst: list(dst)[0] } : { src: list(src6)[0], dst: list(dst6)[0] };
      return {
        time: Number(time),
        protocols: protocols ?? '',
        ...(outer.src !== undefined && outer.dst !== undefined ? { src: outer.src, dst: outer.dst } : {}),
        ips: [...list(src), ...list(dst)],
        udpDstPorts: list(dport).map(Number),
        arpIps: [...list(arpSrc), ...list(arpDst)],
        ipv6: [...list(src6), ...list(dst6)],
        ...(opcode ? { arpOpcode: Number(opcode) } : {}),
      };
    });
}

export async function packetCount(file: string): Promise<number> {
  const { stdout } = await exec('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number'], { maxBuffer: 64 * 1024 * 1024 });
  return stdout.split('\n').filter(Boolean).length;
}

/**
 * IPv6 link-local control traffic (MLD reports, neighbour discovery: from :: or fe80::/10
 * to a multicast group). The simulated pods have IPv4 addresses only, but their kernels
 * still join multicast groups; such a frame names no pod and never leaves the link.
 */
export const isLinkLocalControl = (p: Packet): boolean =>
  p.ips.length === 0 && p.src !== undefined && p.dst !== undefined && namesNoHost(p.src, p.dst);

/** The packets of a file that do not belong to the instance with `ip` (local/packets.ts has the rule). */
export const foreignPackets = (packets: Packet[], ip: string): Packet[] => foreignFrames(packets, ip);

// ---- numbers -----------------------------------------------------------------------

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export const summary = (values: number[]): string =>
  `n=${values.length} median=${percentile(values, 50).toFixed(0)}ms p99=${percentile(values, 99).toFixed(0)}ms max=${Math.max(...values).toFixed(0)}ms`;
