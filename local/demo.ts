// `npm run demo`: the one promise, shown end to end on the local cluster. It deploys the
// nginx StatefulSet and the web-http PacketCapture from examples/, sends HTTP to web-0,
// keeps sending to web-0's IP while the pod is deleted and the StatefulSet brings it back
// (same name, new UID, often the same IP), fetches every session's files through the API
// server as `kubectl pcap fetch` does, and reads them back with tshark. Each simulated pod
// answers HTTP with its own UID, so a packet of another instance in a file is visible in
// its payload even when both instances had the same IP.

import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import type { PacketCapture, SessionStatus } from '../crds/packetcapture.ts';
import { applyObjects, readManifests } from '../kube/apply.ts';
import { isNotFound, kubeRequest } from '../kube/http.ts';
import { capturesPath, type Target } from '../cli/pcap/client.ts';
import { fetchCapture, type FetchedFile } from '../cli/pcap/fetch.ts';
import { table } from '../cli/pcap/render.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { complete } from './fabric.ts';
import { createHost, tcpRequests, type Host } from './netns-host.ts';
import { SIMULATED_NODE_LABEL } from './node.ts';
import { isInstancePacket } from './packets.ts';
import { LOCAL_CLUSTER, onPath, REAL_NODE } from './provision.ts';
import { startRealCluster, webStatefulSet, type RealCluster } from './real-cluster.ts';
import { assertLocalRoute, REAL_NODE_LABEL, REAL_NODE_NETWORK } from './real-node.ts';
import {
  answeringKubeconfig,
  ensureProvisioned,
  LOCAL_KUBECONFIG,
  StartError,
  startLocalCluster,
  SYSTEM_NAMESPACE,
  type LocalCluster,
} from './start.ts';

const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url));
const NAMESPACE = 'demo';
const CAPTURE = 'web-http';
const POD = 'web-0';
const WAIT_MS = 120_000;
/** requests per burst; one TCP connection each */
const REQUESTS = 20;
const UID_IN_PAYLOAD = /"uid":"([0-9a-f-]{36})"/g;

// ---- reading capture files (pure parts first) ---------------------------------------------

export interface Packet {
  src: string;
  dst: string;
  /** the pod UIDs named in the packet's payload (the pod server's HTTP answers) */
  uids: string[];
}

const uidsIn = (text: string): string[] => [...text.matchAll(UID_IN_PAYLOAD)].map((m) => m[1]!);

/** `tshark -T fields -e ip.src -e ip.dst -e tcp.payload` output (tab-separated, payload in hex). */
export function parseTsharkFields(text: string): Packet[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [src = '', dst = '', payload = ''] = line.split('\t');
      return { src, dst, uids: uidsIn(Buffer.from(payload.replaceAll(':', ''), 'hex').toString('latin1')) };
    });
}

/** `tcpdump -r FILE -nn -A` output: a header line per packet, its payload as text below it. */
export function parseTcpdumpAscii(text: string): Packet[] {
  const packets: Packet[] = [];
  let body = '';
  const finish = () => {
    const last = packets.at(-1);
    if (last) last.uids = uidsIn(body);
    body = '';
  };
  for (const line of text.split('\n')) {
    const header = /^\d\d:\d\d:\d\d\.\d+ .*?\bIP (\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > (\d+\.\d+\.\d+\.\d+)(?:\.\d+)?:/.exec(line);
    if (header) {
      finish();
      packets.push({ src: header[1]!, dst: header[2]!, uids: [] });
    } else {
      body += line;
    }
  }
  finish();
  return packets;
}

export interface Instance {
  uid: string;
  name: string;
  node: string;
  ip: string;
}

export interface FileCheck {
  packets: number;
  /** every address seen, sorted */
  ips: string[];
  /** pod UID -> how many packets carried an answer of that instance */
  answeredBy: Record<string, number>;
  /** packets that name another instance, or that are not between the instance and a traffic source (local/packets.ts) */
  foreign: number;
}

/** What a file of `owner`'s holds, and how many of its packets belong to someone else. */
export function checkFile(packets: readonly Packet[], owner: Instance, sources: readonly string[]): FileCheck {
  const answeredBy: Record<string, number> = {};
  let foreign = 0;
  for (const p of packets) {
    for (const uid of new Set(p.uids)) answeredBy[uid] = (answeredBy[uid] ?? 0) + 1;
    if (p.uids.some((uid) => uid !== owner.uid) || !isInstancePacket(p.src, p.dst, [owner.ip], sources)) foreign++;
  }
  const ips = [...new Set(packets.flatMap((p) => [p.src, p.dst]))].sort();
  return { packets: packets.length, ips, answeredBy, foreign };
}

/** The packets of a pcap file, read by tshark, or by tcpdump -r where tshark is missing. */
export async function readPcap(path: string): Promise<Packet[]> {
  const [tool, args, parse] = onPath('tshark')
    ? // without reassembly every segment's bytes are its tcp.payload: a server that writes its
      // headers and its body apart (busybox httpd) would otherwise show the body as segment data
      (['tshark', ['-r', path, '-n', '-o', 'tcp.desegment_tcp_streams:FALSE', '-T', 'fields', '-E', 'separator=/t', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'tcp.payload'], parseTsharkFields] as const)
    : (['tcpdump', ['-r', path, '-nn', '-A'], parseTcpdumpAscii] as const);
  const { code, stdout, stderr } = await complete(tool, args);
  // a file fetched while tcpdump still writes may end inside a packet; the rest is good
  if (code !== 0 && !/cut short|truncated/i.test(stderr)) throw new Error(`${tool} -r ${path}: ${stderr.trim() || `exit ${code}`}`);
  return parse(stdout);
}

// ---- the scenario ---------------------------------------------------------------------

export interface FileReport extends FileCheck {
  sessionId: string;
  path: string;
  bytes: number;
}

export interface InstanceReport extends Instance {
  files: FileReport[];
}

export interface DemoResult {
  instances: InstanceReport[];
  /** packets of another instance, over all files */
  foreign: number;
  /** files checked */
  files: number;
  ok: boolean;
  /** the summary table and the verdict line */
  summary: string;
}

export interface DemoOptions {
  kubeConfig: KubeConfig;
  /** where the fetched files go: <outDir>/<podUID>/<sessionId>/<file> */
  outDir: string;
  systemNamespace?: string;
  progress?: (message: string) => void;
}

interface Pod {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  spec?: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = ` (last error: ${(err as Error).message})`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${last}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const getOrUndefined = <T>(kc: KubeConfig, path: string): Promise<T | undefined> =>
  kubeRequest<T>(kc, 'GET', path).catch((err: unknown) => {
    if (isNotFound(err)) return undefined;
    throw err;
  });

const podPath = `/api/v1/namespaces/${NAMESPACE}/pods/${POD}`;
const capturePath = `${capturesPath(NAMESPACE)}/${CAPTURE}`;

/** web-0 once it runs with an IP, as an instance other than `not`. */
const runningInstance = (kc: KubeConfig, not?: string) =>
  until(`${POD} to run${not ? ` as a new instance (not ${not})` : ''}`, async () => {
    const pod = await getOrUndefined<Pod>(kc, podPath);
    if (!pod || pod.metadata.uid === not || pod.metadata.deletionTimestamp) return undefined;
    if (pod.status?.phase !== 'Running' || !pod.status.podIP || !pod.spec?.nodeName) return undefined;
    return { uid: pod.metadata.uid, name: pod.metadata.name, node: pod.spec.nodeName, ip: pod.status.podIP };
  });

const sessionOf = (kc: KubeConfig, uid: string, state: SessionStatus['state']) =>
  until(`a ${state} capture session of pod UID ${uid}`, async () => {
    const capture = await kubeRequest<PacketCapture>(kc, 'GET', capturePath);
    return capture.status?.sessions?.find((s) => s.podUID === uid && s.state === state);
  });

/** Where the demo's HTTP requests come from; `ip` is their source address in the captures. */
interface TrafficSource {
  ip: string;
  /** `count` requests to `target`; resolves with how many each pod UID answered */
  send(target: string, count: number): Promise<Record<string, number>>;
  destroy(): Promise<void>;
}

function answeredBy(bodies: Record<string, number>): Record<string, number> {
  const answered: Record<string, number> = {};
  for (const [body, n] of Object.entries(bodies)) for (const uid of uidsIn(body)) answered[uid] = (answered[uid] ?? 0) + n;
  return answered;
}

/** A traffic host on the simulated nodes' bridge (a network namespace of its own). */
async function fabricHost(): Promise<TrafficSource> {
  const host: Host = await createHost(`demo-${randomBytes(3).toString('hex')}`, `10.244.250.${2 + Math.floor(Math.random() * 250)}`);
  return {
    ip: host.ip,
    send: async (target, count) => answeredBy((await tcpRequests(host, target, 80, count, { concurrency: 4, timeoutMs: 3_000 })).bodies),
    destroy: () => host.destroy(),
  };
}

/** This machine itself, on the real node's bridge: pod IPs route there, never off the machine. */
function realNodeHost(): TrafficSource {
  return {
    ip: REAL_NODE_NETWORK.nodeIP,
    async send(target, count) {
      await assertLocalRoute(target);
      const bodies: Record<string, number> = {};
      for (let i = 0; i < count; i++) {
        const body = await fetch(`http://${target}/`, { signal: AbortSignal.timeout(3_000) }).then((r) => r.text(), () => undefined);
        if (body !== undefined) bodies[body] = (bodies[body] ?? 0) + 1;
      }
      return answeredBy(bodies);
    },
    destroy: async () => undefined,
  };
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const kc = opts.kubeConfig;
  const progress = opts.progress ?? (() => {});
  const t: Target = { kc, namespace: NAMESPACE, systemNamespace: opts.systemNamespace ?? SYSTEM_NAMESPACE };

  const nodesLabelled = async (label: string) => (await kubeRequest<{ items: unknown[] }>(kc, 'GET', '/api/v1/nodes', { query: { labelSelector: `${label}=true` } })).items.length > 0;
  const real = !(await nodesLabelled(SIMULATED_NODE_LABEL)) && (await nodesLabelled(REAL_NODE_LABEL));
  if (!real && !(await nodesLabelled(SIMULATED_NODE_LABEL))) {
    throw new StartError('the demo needs the local cluster of npm start (simulated nodes, or --real-node, on this machine); this cluster has neither');
  }

  if (await getOrUndefined(kc, capturePath)) {
    progress(`deleting the ${CAPTURE} capture of an earlier run`);
    await kubeRequest(kc, 'DELETE', capturePath).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    await until(`${CAPTURE} to be deleted`, async () => ((await getOrUndefined(kc, capturePath)) ? undefined : true));
  }

  if (real) {
    // nginx cannot be pulled here: the same StatefulSet on the workload image, which answers with its pod UID
    progress(`applying namespace ${NAMESPACE} and StatefulSet web (the workload image, a real kubelet runs it)`);
    await applyObjects(kc, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE } }, webStatefulSet(NAMESPACE)], { fieldManager: 'packet-capture-demo' });
  } else {
    progress('applying examples/nginx.yaml (namespace demo, StatefulSet web)');
    await applyObjects(kc, await readManifests(join(EXAMPLES, 'nginx.yaml')), { fieldManager: 'packet-capture-demo' });
  }
  const first = await runningInstance(kc);
  progress(`${POD} runs: UID ${first.uid} on ${first.node}, IP ${first.ip}`);

  progress('applying examples/packetcapture.yaml (PacketCapture web-http: TCP port 80 of web-0)');
  await applyObjects(kc, await readManifests(join(EXAMPLES, 'packetcapture.yaml')), { fieldManager: 'packet-capture-demo' });
  await sessionOf(kc, first.uid, 'Running');
  progress(`capturing in ${POD}'s network namespace (UID ${first.uid})`);

  const host = real ? realNodeHost() : await fabricHost();
  let second: Instance;
  try {
    progress(`sending ${REQUESTS} HTTP requests from ${host.ip} to ${first.ip}`);
    await host.send(first.ip, REQUESTS);

    progress(`deleting ${POD} while requests keep going to ${first.ip}; the StatefulSet recreates it`);
    let sending = true;
    const during = (async () => {
      while (sending) await host.send(first.ip, 4).catch(() => undefined);
    })();
    await kubeRequest(kc, 'DELETE', podPath, { body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: first.uid } } });
    second = await runningInstance(kc, first.uid);
    progress(`${POD} is back: UID ${second.uid} on ${second.node}, IP ${second.ip}${second.ip === first.ip ? ' (the same IP as before)' : ''}`);
    await sessionOf(kc, first.uid, 'Ended');
    await sessionOf(kc, second.uid, 'Running');
    sending = false;
    await during;
    progress(`sending ${REQUESTS} HTTP requests to the new instance at ${second.ip}`);
    await host.send(second.ip, REQUESTS);
  } finally {
    await host.destroy();
  }

  const instances = [first, second];
  progress(`fetching the files of both instances through the API server into ${opts.outDir}`);
  // a capture of the same name deleted earlier (an earlier demo) left files of its own sessions
  const sessions = new Set(((await kubeRequest<PacketCapture>(kc, 'GET', capturePath)).status?.sessions ?? []).map((s) => s.id));
  const reports: InstanceReport[] = [];
  for (const instance of instances) {
    const fetched = await until(`the files of ${instance.uid}`, async () => {
      const { files, failures } = await fetchCapture(t, CAPTURE, { outDir: opts.outDir, podUID: instance.uid });
      if (failures.length > 0) throw new Error(failures.join('; '));
      const ours = files.filter((f) => sessions.has(f.sessionId));
      // a file holds its header from the start: wait for one that holds a packet
      const read = await Promise.all(ours.map((f) => readPcap(f.path).catch(() => [])));
      return read.some((packets) => packets.length > 0) ? ours : undefined;
    });
    reports.push({ ...instance, files: await Promise.all(fetched.map((f) => fileReport(f, instance, [host.ip]))) });
  }
  const foreign = reports.flatMap((r) => r.files).reduce((n, f) => n + f.foreign, 0);
  const files = reports.reduce((n, r) => n + r.files.length, 0);
  return { instances: reports, foreign, files, ok: foreign === 0 && files > 0, summary: summary(reports, foreign, first.ip === second.ip) };
}

async function fileReport(f: FetchedFile, owner: Instance, sources: string[]): Promise<FileReport> {
  return { sessionId: f.sessionId, path: f.path, bytes: f.bytes, ...checkFile(await readPcap(f.path), owner, sources) };
}

const short = (uid: string) => uid.slice(0, 8);

/** The table and the verdict line, as printed at the end of the demo. */
export function summary(reports: readonly InstanceReport[], foreign: number, sameIp: boolean): string {
  const rows = reports.flatMap((r) =>
    r.files.map((f) => [
      r.uid,
      r.node,
      r.ip,
      f.sessionId,
      relative(process.cwd(), f.path) || f.path,
      String(f.packets),
      f.ips.join(' '),
      Object.entries(f.answeredBy)
        .map(([uid, n]) => `${short(uid)}${uid === r.uid ? '' : ' (FOREIGN)'} x${n}`)
        .join(', ') || '-',
    ]),
  );
  const lines = [table(['POD UID', 'NODE', 'POD IP', 'SESSION', 'FILE', 'PACKETS', 'IPS SEEN', 'HTTP ANSWERS FROM'], rows)];
  if (sameIp) lines.push(`both instances of ${POD} had the same IP: only the pod UID tells their packets apart`);
  const files = reports.reduce((n, r) => n + r.files.length, 0);
  lines.push(
    foreign === 0 && files > 0
      ? 'no foreign packets: OK'
      : files === 0
        ? 'no capture files to check: FAIL'
        : `foreign packets: FAIL (${foreign} packet${foreign === 1 ? '' : 's'} of another instance)`,
  );
  return lines.join('\n');
}

// ---- the command ------------------------------------------------------------------------

/**
 * The demo on a local cluster of its own (2 nodes, temporary data dir), which it removes
 * afterwards, also when it fails. The fetched files stay in `outDir`.
 */
export async function demoOnOwnCluster(opts: { outDir: string; realNode?: boolean; progress?: (message: string) => void }): Promise<DemoResult> {
  const progress = opts.progress ?? (() => {});
  if (opts.realNode) return demoOnOwnRealNode(opts.outDir, progress);
  const scratch = await mkdtemp(join(tmpdir(), 'packet-capture-demo-'));
  // an interrupted demo exits at once: the fabric's and the control plane's exit hooks remove their part
  const removeScratch = () => rmSync(scratch, { recursive: true, force: true });
  process.once('exit', removeScratch);
  let cluster: LocalCluster | undefined;
  try {
    cluster = await startLocalCluster({
      nodes: 2,
      dataDir: join(scratch, 'data'),
      kubeconfigPath: join(scratch, 'kubeconfig'),
      // clear of the subnets of `npm start` (1, 2, ...)
      subnetBase: 21,
      progress,
      logDestination: pino.destination({ dest: join(scratch, 'demo.log'), sync: true }),
    });
    return await runDemo({ kubeConfig: cluster.kubeConfig, outDir: opts.outDir, progress });
  } finally {
    if (cluster) progress('removing the demo cluster');
    await cluster?.stop();
    await rm(scratch, { recursive: true, force: true });
    if (cluster) progress('demo cluster removed');
    process.off('exit', removeScratch);
  }
}

/** The demo on a control plane and a real node of its own, both removed afterwards. */
async function demoOnOwnRealNode(outDir: string, progress: (message: string) => void): Promise<DemoResult> {
  const scratch = await mkdtemp(join(tmpdir(), 'packet-capture-demo-'));
  let controlPlane: ControlPlane | undefined;
  let real: RealCluster | undefined;
  try {
    progress('starting a control plane and a real node (kubelet + containerd) running dist/');
    controlPlane = await startControlPlane({ controllers: true, nodeLifecycle: true, kubeconfigPath: join(scratch, 'kubeconfig') });
    real = await startRealCluster(controlPlane, controlPlane.kubeConfig, progress);
    return await runDemo({ kubeConfig: controlPlane.kubeConfig, outDir, progress });
  } finally {
    if (controlPlane) progress('removing the demo cluster');
    await real?.stop();
    await controlPlane?.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * The `demo` command: on the cluster of --kubeconfig, else on the running `npm start`
 * cluster, else on a local cluster of its own. Resolves with the exit code: 1 when any
 * file holds a packet of another instance.
 */
export async function runDemoCommand(opts: { kubeconfig?: string; output: string; realNode?: boolean }): Promise<number> {
  await ensureProvisioned('the demo', opts.realNode ? REAL_NODE : LOCAL_CLUSTER, 'sudo npm run demo');
  const t0 = Date.now();
  const progress = (message: string) => process.stderr.write(`demo: ${message} [${((Date.now() - t0) / 1000).toFixed(1)}s]\n`);
  const outDir = resolve(opts.output);
  const interrupted = (signal: NodeJS.Signals) => {
    progress(`${signal}: stopping; the exit hooks remove the pods, captures and control plane it made`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  let kubeConfig: KubeConfig | undefined;
  if (opts.kubeconfig) {
    kubeConfig = await answeringKubeconfig(resolve(opts.kubeconfig));
    if (!kubeConfig) throw new StartError(`the cluster of ${opts.kubeconfig} does not answer`);
  } else {
    kubeConfig = await answeringKubeconfig(resolve(LOCAL_KUBECONFIG));
    if (kubeConfig) progress(`using the running local cluster (${LOCAL_KUBECONFIG})`);
    else progress('no local cluster is running (npm start keeps one): starting one for the demo');
  }
  const result = kubeConfig ? await runDemo({ kubeConfig, outDir, progress }) : await demoOnOwnCluster({ outDir, progress, realNode: opts.realNode });
  console.log(result.summary);
  return result.ok ? 0 : 1;
}
