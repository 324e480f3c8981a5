// `npm start`: the whole system on one machine. With no cluster configured it brings up
// the embedded cluster (the real control plane, simulated nodes whose pods are network
// namespaces, the controller and one agent per node) and keeps it until Ctrl-C. A
// configured cluster is never used unless asked for with --kubeconfig.

import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { networkInterfaces, hostname } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import pino from 'pino';
import { runAgent, type AgentHandle } from '../agent/main.ts';
import { runController, type ControllerHandle } from '../controller/main.ts';
import { CRD_NAME, packetCaptureCrd } from '../crds/crd.ts';
import { applyObjects } from '../kube/apply.ts';
import { configuredCluster, loadKubeConfig } from '../kube/client.ts';
import { isNotFound, kubeRequest } from '../kube/http.ts';
import { createLogger, type Logger } from '../kube/log.ts';
import { kubectlFor } from './cluster.ts';
import { LOCAL_TRUST_NAMESPACE, startControlPlane, type ControlPlane } from './control-plane.ts';
import { SimulatedNode } from './node.ts';
import { AGENT, LOCAL_CLUSTER, provision, REAL_NODE, systemIO, type Setup } from './provision.ts';

export const LOCAL_KUBECONFIG = '.local/kubeconfig';
export const LOCAL_DATA_DIR = '.local/data';
export const LOCAL_LOG_FILE = '.local/packet-capture.log';
export const SYSTEM_NAMESPACE = 'packet-capture-system';
/** how long one component may take to stop before the next is stopped anyway */
const STOP_TIMEOUT_MS = 20_000;

/** A problem the user can fix; printed without a stack trace. */
export class StartError extends Error {
  override name = 'StartError';
}

const ROOT_REASON = 'pods are network namespaces with veths and cgroups, and tcpdump runs inside them';

/**
 * Makes this machine ready for `what`: installs the Debian packages it lacks (as root, with
 * apt-get, saying what and why), or throws a StartError listing what to install or do.
 */
export async function ensureProvisioned(what: string, setup: Setup, rootHint: string): Promise<void> {
  const why = await provision(what, setup, { rootHint, rootReason: ROOT_REASON }, systemIO(setup, say));
  if (why) throw new StartError(why);
}

/**
 * An address of this machine other than loopback, for the simulated Nodes' InternalIP:
 * the API server's nodes/proxy refuses loopback, and the agents listen on every address.
 */
export function hostAddress(
  interfaces: Record<string, { address: string; family: string; internal: boolean }[] | undefined> = networkInterfaces(),
): string | undefined {
  const all = Object.values(interfaces).flatMap((list) => list ?? []);
  const usable = all.filter((a) => !a.internal && !(a.family === 'IPv6' && /^fe80:/i.test(a.address)));
  return (usable.find((a) => a.family === 'IPv4') ?? usable[0])?.address;
}

export interface LocalClusterOptions {
  /** simulated nodes, named node-1..node-N */
  nodes?: number;
  /** each agent writes under <dataDir>/<node>/ */
  dataDir: string;
  /** where the admin kubeconfig goes when a control plane is started here */
  kubeconfigPath?: string;
  /** run on this local control plane (local/control-plane.ts) instead of starting one; it must run a scheduler, controller-manager and the packet-capture API */
  kubeConfig?: KubeConfig;
  systemNamespace?: string;
  /** node i gets 10.244.<subnetBase + i>.0/24 */
  subnetBase?: number;
  nodeNamePrefix?: string;
  /** the controller watches captures and pods of this namespace only */
  watchNamespace?: string;
  progress?: (message: string) => void;
  /** where every component logs (default stdout) */
  logDestination?: pino.DestinationStream;
}

export interface LocalCluster {
  kubeConfig: KubeConfig;
  controlPlane?: ControlPlane;
  nodes: SimulatedNode[];
  agents: AgentHandle[];
  controller: ControllerHandle;
  systemNamespace: string;
  /** settles with a description if a control-plane component dies */
  died: Promise<string>;
  /** agents (their tcpdumps), controller, nodes (their pods), then the control plane */
  stop(): Promise<void>;
}

const withTimeout = <T>(what: string, promise: Promise<T>, ms = STOP_TIMEOUT_MS): Promise<T> =>
  Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000}s`)), ms).unref()),
  ]);

async function ensureNamespace(kc: KubeConfig, name: string): Promise<void> {
  await applyObjects(kc, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }], { fieldManager: 'packet-capture-local' });
}

async function installCrd(kc: KubeConfig): Promise<void> {
  await applyObjects(kc, [packetCaptureCrd as KubernetesObject], { fieldManager: 'packet-capture-local' });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const crd = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(
      kc,
      'GET',
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${CRD_NAME}`,
    );
    if (crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) return;
    if (Date.now() > deadline) throw new Error(`CRD ${CRD_NAME} was not Established within 60s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The embedded cluster: nodes, controller and agents in this process, on a control plane
 * started here (or given). Whatever was started is stopped again if a later step fails.
 */
export async function startLocalCluster(opts: LocalClusterOptions): Promise<LocalCluster> {
  const progress = opts.progress ?? (() => {});
  const systemNamespace = opts.systemNamespace ?? SYSTEM_NAMESPACE;
  const log = (component: string, bindings: Record<string, unknown> = {}): Logger => createLogger(component, bindings, opts.logDestination);
  const internalIP = hostAddress();
  if (!internalIP) {
    throw new StartError('this machine has no address but loopback; the API server needs one to reach the agents (nodes/proxy refuses loopback)');
  }

  const started: { name: string; stop: () => Promise<void> }[] = [];
  const stopAll = async (): Promise<void> => {
    const failures: string[] = [];
    for (const { name, stop } of started.splice(0).reverse()) {
      await withTimeout(`stopping ${name}`, stop()).catch((err: unknown) => failures.push(String(err)));
    }
    if (failures.length > 0) throw new Error(failures.join('; '));
  };

  try {
    let kubeConfig = opts.kubeConfig;
    let controlPlane: ControlPlane | undefined;
    if (!kubeConfig) {
      progress('starting the control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler');
      controlPlane = await startControlPlane({ controllers: true, kubeconfigPath: opts.kubeconfigPath, packetCaptureApi: true });
      started.push({ name: 'the control plane', stop: () => controlPlane!.stop() });
      progress(`control plane up at ${controlPlane.server} (its files: ${controlPlane.dataDir})`);
      kubeConfig = controlPlane.kubeConfig;
    }
    const kc = kubeConfig;

    progress('installing the PacketCapture CRD');
    await Promise.all([installCrd(kc), ensureNamespace(kc, systemNamespace)]);

    const count = opts.nodes ?? 2;
    const prefix = opts.nodeNamePrefix ?? 'node-';
    const base = opts.subnetBase ?? 1;
    progress(`starting ${count} simulated node${count === 1 ? '' : 's'} (InternalIP ${internalIP})`);
    const starting = await Promise.allSettled(
      Array.from({ length: count }, (_, i) =>
        SimulatedNode.start({
          name: `${prefix}${i + 1}`,
          kubeConfig: kc,
          subnetIndex: base + i,
          internalIP,
          log: log('simulated-node', { node: `${prefix}${i + 1}` }),
        }),
      ),
    );
    const nodes = starting.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    for (const node of nodes) started.push({ name: `node ${node.name}`, stop: () => node.stop() });
    const failed = starting.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;

    progress('starting the controller and one agent per node');
    const controller = await runController({
      kubeConfig: kc,
      namespace: systemNamespace,
      leaderElect: false,
      watchNamespace: opts.watchNamespace,
      log: log('controller'),
    });
    started.push({ name: 'the controller', stop: () => controller.stop() });
    const agents: AgentHandle[] = [];
    for (const node of nodes) {
      const dataDir = join(resolve(opts.dataDir), node.name);
      await mkdir(dataDir, { recursive: true });
      const agent = await runAgent({
        kubeConfig: kc,
        nodeName: node.name,
        dataDir,
        namespace: systemNamespace,
        // the packet-capture API of a local control plane keeps its data CA there
        trustNamespace: LOCAL_TRUST_NAMESPACE,
        metricsPort: 0,
        log: log('agent', { node: node.name }),
      });
      agents.push(agent);
      started.push({ name: `the agent of ${node.name}`, stop: () => agent.stop('local cluster stopping') });
    }
    await Promise.all([controller.ready, ...agents.map((a) => a.ready)]);

    let stopping: Promise<void> | undefined;
    return {
      kubeConfig: kc,
      controlPlane,
      nodes,
      agents,
      controller,
      systemNamespace,
      died: controlPlane?.died ?? new Promise(() => {}),
      stop: () => (stopping ??= stopAll()),
    };
  } catch (err) {
    await stopAll().catch(() => undefined);
    throw err;
  }
}

// ---- the command ------------------------------------------------------------------------

export interface StartOptions {
  nodes: number;
  /** run controller + agent against this cluster instead of the embedded one */
  kubeconfig?: string;
  /** the embedded cluster even when one is configured */
  local: boolean;
  dataDir: string;
  /** with --kubeconfig: the node this machine is (default: its hostname) */
  nodeName?: string;
  /** one real node (kubelet + containerd) running dist/, instead of simulated nodes */
  realNode?: boolean;
}

const say = (line: string) => process.stderr.write(`packet-capture: ${line}\n`);

function timedProgress(): (message: string) => void {
  const t0 = Date.now();
  return (message) => say(`${message} [${((Date.now() - t0) / 1000).toFixed(1)}s]`);
}

/** Ctrl-C under `npm start` arrives several times at once: from the terminal, and relayed by npm and tsx. */
const SAME_SIGNAL_MS = 2_000;

/** Resolves with the signal that asked us to stop; another one, later, exits at once. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const first = (signal: NodeJS.Signals) => {
      process.off('SIGINT', first);
      process.off('SIGTERM', first);
      const firstAt = Date.now();
      const again = () => {
        if (Date.now() - firstAt < SAME_SIGNAL_MS) return;
        say('second signal: exiting now; the exit hooks remove what they can');
        process.exit(130);
      };
      process.on('SIGINT', again);
      process.on('SIGTERM', again);
      resolve(signal);
    };
    process.on('SIGINT', first);
    process.on('SIGTERM', first);
  });
}

/** The kubeconfig at `path` if its cluster answers (a running `npm start`), else undefined. */
export async function answeringKubeconfig(path: string): Promise<KubeConfig | undefined> {
  if (!existsSync(path)) return undefined;
  try {
    const kc = new KubeConfig();
    kc.loadFromString(await readFile(path, 'utf8'));
    await kubeRequest(kc, 'GET', '/version', { signal: AbortSignal.timeout(3_000) });
    return kc;
  } catch {
    return undefined;
  }
}

function describeConfigured(source: string): string {
  try {
    const kc = loadKubeConfig();
    return `${source}, context "${kc.getCurrentContext()}", server ${kc.getCurrentCluster()?.server}`;
  } catch (err) {
    return `${source} (${(err as Error).message})`;
  }
}

/** The `start` command; resolves with the process exit code. */
export async function runStart(opts: StartOptions): Promise<number> {
  const configured = configuredCluster();
  if (opts.kubeconfig && opts.local) throw new StartError('--kubeconfig and --local exclude each other');
  if (opts.kubeconfig) return runAgainstCluster(opts);
  if (configured && !opts.local && !opts.realNode) {
    say(`a cluster is configured (${describeConfigured(configured)}); npm start leaves it alone unless asked:`);
    say(`  npm start -- --kubeconfig <file>   run the controller and an agent for this machine against it`);
    say(`  npm start -- --local               start the embedded local cluster instead`);
    return 1;
  }
  await ensureProvisioned('the local cluster', opts.realNode ? REAL_NODE : LOCAL_CLUSTER, 'sudo npm start');

  const kubeconfigPath = resolve(LOCAL_KUBECONFIG);
  if (await answeringKubeconfig(kubeconfigPath)) {
    throw new StartError(`a local cluster is already running (${LOCAL_KUBECONFIG} answers); stop it with Ctrl-C where it runs`);
  }
  await mkdir(dirname(kubeconfigPath), { recursive: true });
  const logFile = resolve(LOCAL_LOG_FILE);
  const logDestination = pino.destination({ dest: logFile, sync: true, mkdir: true, append: false });
  const progress = timedProgress();
  const stopRequested = untilSignal();
  if (opts.realNode) return runRealNode(kubeconfigPath, progress, stopRequested);
  let cluster: LocalCluster;
  try {
    cluster = await Promise.race([
      startLocalCluster({ nodes: opts.nodes, dataDir: opts.dataDir, kubeconfigPath, progress, logDestination }),
      stopRequested.then(() => {
        // the exit hooks of the control plane and the fabric remove what was made so far
        throw new StartError('interrupted while starting');
      }),
    ]);
  } catch (err) {
    if (err instanceof StartError) throw err;
    throw new StartError(`the local cluster did not start: ${(err as Error).message} (logs: ${relative(process.cwd(), logFile)})`);
  }

  const kubeconfig = relative(process.cwd(), kubeconfigPath);
  const nodes = cluster.nodes.map((n) => n.name).join(', ');
  const kubectl = kubectlFor(cluster.controlPlane!.binDir);
  console.log(`packet-capture local cluster ready: ${kubectl} --kubeconfig ${kubeconfig} get pcap -A`);
  console.log(`  try it:  ${kubectl} --kubeconfig ${kubeconfig} apply -f examples/nginx.yaml -f examples/packetcapture.yaml`);
  console.log(`  files:   KUBECONFIG=${kubeconfig} bin/kubectl-pcap.mjs fetch web-http -n demo   (or kubectl pcap, with bin/ on PATH)`);
  console.log(`  nodes ${nodes}; captures under ${relative(process.cwd(), resolve(opts.dataDir)) || '.'}/<node>/; logs in ${relative(process.cwd(), logFile)}; Ctrl-C stops and cleans up`);

  const outcome = await Promise.race([
    stopRequested.then((signal) => ({ signal, death: undefined })),
    cluster.died.then((death) => ({ signal: undefined, death })),
  ]);
  if (outcome.death) say(`a control-plane component died: ${outcome.death}`);
  say(`stopping${outcome.signal ? ` (${outcome.signal})` : ''}: agents, controller, nodes, control plane`);
  try {
    await cluster.stop();
  } catch (err) {
    say(`not everything stopped cleanly: ${(err as Error).message}`);
    return 1;
  }
  say('stopped; every network namespace, cgroup and process it made is gone');
  return outcome.death ? 1 : 0;
}

/** --kubeconfig: the controller and an agent for this machine, against a cluster the user named. */
async function runAgainstCluster(opts: StartOptions): Promise<number> {
  const kc = loadKubeConfig(opts.kubeconfig);
  await ensureProvisioned('the agent', AGENT, 'sudo npm start');
  const nodeName = opts.nodeName ?? hostname();
  say(`using ${opts.kubeconfig}: context "${kc.getCurrentContext()}", server ${kc.getCurrentCluster()?.server}`);
  for (const [path, hint] of [
    [`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${CRD_NAME}`, 'install the CRD first: kubectl apply -f dist/packet-capture-crds.k8s.yaml'],
    [`/api/v1/namespaces/${SYSTEM_NAMESPACE}`, `create the namespace first: kubectl create namespace ${SYSTEM_NAMESPACE}`],
    [`/api/v1/nodes/${nodeName}`, `this machine is not node ${nodeName} of that cluster; pass --node-name`],
  ] as const) {
    await kubeRequest(kc, 'GET', path).catch((err: unknown) => {
      throw isNotFound(err) ? new StartError(`${path} not found: ${hint}`) : err;
    });
  }
  const stopRequested = untilSignal();
  const controller = await runController({ kubeConfig: kc, namespace: SYSTEM_NAMESPACE, leaderElect: true, log: createLogger('controller') });
  const agent = await runAgent({
    kubeConfig: kc,
    nodeName,
    dataDir: resolve(opts.dataDir),
    namespace: SYSTEM_NAMESPACE,
    metricsPort: 0,
    log: createLogger('agent', { node: nodeName }),
  });
  await Promise.all([controller.ready, agent.ready]);
  say(`controller and agent (node ${nodeName}) running against ${kc.getCurrentContext()}; Ctrl-C stops them`);
  await stopRequested;
  await withTimeout('stopping the agent', agent.stop('stop requested')).catch((err: unknown) => say(String(err)));
  await withTimeout('stopping the controller', controller.stop()).catch((err: unknown) => say(String(err)));
  return 0;
}

/**
 * --real-node: the control plane, one real node, and the controller and agent as pods from
 * dist/. Nothing of the product runs in this process: what runs is what a user deploys.
 */
async function runRealNode(kubeconfigPath: string, progress: (message: string) => void, stopRequested: Promise<NodeJS.Signals>): Promise<number> {
  const { startRealCluster } = await import('./real-cluster.ts');
  let controlPlane: ControlPlane | undefined;
  let real: Awaited<ReturnType<typeof startRealCluster>> | undefined;
  const stopAll = async () => {
    await real?.stop().catch((err: unknown) => say(String(err)));
    await controlPlane?.stop();
  };
  try {
    await Promise.race([
      (async () => {
        progress('starting the control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler');
        controlPlane = await startControlPlane({ controllers: true, nodeLifecycle: true, kubeconfigPath });
        real = await startRealCluster(controlPlane, controlPlane.kubeConfig, progress);
      })(),
      stopRequested.then(() => {
        throw new StartError('interrupted while starting');
      }),
    ]);
  } catch (err) {
    await stopAll();
    if (err instanceof StartError) throw err;
    throw new StartError(`the real node did not start: ${(err as Error).message}`);
  }
  const kubeconfig = relative(process.cwd(), kubeconfigPath);
  console.log(`packet-capture local cluster with a real node ready: ${kubectlFor(controlPlane!.binDir)} --kubeconfig ${kubeconfig} get pods -A`);
  console.log(`  node ${real!.node.name} (${real!.node.ip}): kubelet + containerd; controller and agent run as pods from dist/`);
  console.log(`  kubelet log ${real!.node.kubeletLog}; capture files under /var/lib/packet-capture on this machine; Ctrl-C stops and cleans up`);
  const outcome = await Promise.race([
    stopRequested.then((signal) => ({ signal, death: undefined })),
    controlPlane!.died.then((death) => ({ signal: undefined, death })),
  ]);
  if (outcome.death) say(`a control-plane component died: ${outcome.death}`);
  say(`stopping${outcome.signal ? ` (${outcome.signal})` : ''}: the real node (its pods, containerd, kubelet), then the control plane`);
  await stopAll();
  say('stopped; the node\'s processes, mounts, cgroups, bridge, NAT rules and paths are gone and its sysctls restored');
  return outcome.death ? 1 : 0;
}
