// A simulated Kubernetes node that plays kubelet for the pods bound to it: each pod gets
// a real network namespace on the shared bridge (fabric.ts), an IP from the node's /24,
// a process (pod-server.ts) in a kubepods cgroup named with the pod UID (cgroups.ts), and
// a Running status. On deletion it tears all of that down and deletes the pod with grace
// 0, as a kubelet does. The agent meets exactly what it meets on a real node: a process
// whose /proc/<pid>/cgroup names the pod UID, and that process's network namespace.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { arch, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import { filter, firstValueFrom, Subject, type Observable, type Subscription } from 'rxjs';
import { APPLY_PATCH, isConflict, isNotFound, kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { createLogger, type Logger } from '../kube/log.ts';
import { watchSnapshots, type KubeObject, type Snapshot } from '../kube/watch.ts';
import {
  cgroupChain,
  containerCgroupSegments,
  placeInCgroup,
  resolveCgroupLayout,
  type CgroupLayout,
  type QosClass,
} from './cgroups.ts';
import {
  acquireFabric,
  attachToFabric,
  cleanupStale,
  createNetns,
  currentOwner,
  destroySandbox,
  inNetns,
  netnsPath,
  NETNS_PREFIX,
  releaseFabric,
  runnableScript,
  type SandboxRecord,
} from './fabric.ts';

const POD_SERVER = fileURLToPath(new URL('./pod-server.ts', import.meta.url));
export const FIELD_MANAGER = 'simulated-kubelet';
/** On every simulated Node, so tools (the demo) can tell them from real kubelets. */
export const SIMULATED_NODE_LABEL = 'packetcapture.dev/simulated-node';
const NODE_LEASE_NAMESPACE = 'kube-node-lease';
const NOT_READY_TAINT = 'node.kubernetes.io/not-ready';
const LEASE_DURATION_SECONDS = 40;
const LEASE_RENEW_MS = 10_000;
const RESYNC_MS = 10_000;
const RETRY_MS = 1_000;
/** how long a pod process may take to bind its ports */
const START_TIMEOUT_MS = 30_000;
/** SIGTERM, then SIGKILL after this long */
const STOP_GRACE_MS = 5_000;
/** a status write not yet echoed by the watch is repeated after this long */
const ECHO_WAIT_MS = 10_000;
/** the node subnets 10.244.0-249.0/24; 250 and up are for traffic hosts (netns-host.ts) */
export const MAX_SUBNET_INDEX = 249;

export interface Pod extends KubeObject {
  spec: {
    nodeName?: string;
    containers: { name: string; image?: string; ports?: { containerPort: number; protocol?: string }[] }[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    qosClass?: QosClass;
    conditions?: { type: string; status: string; lastTransitionTime?: string }[];
    containerStatuses?: { name: string; containerID?: string }[];
  };
}

export interface SimulatedNodeOptions {
  name: string;
  kubeConfig: KubeConfig;
  /** pods get addresses in 10.244.<subnetIndex>.0/24; unique among the nodes running at once */
  subnetIndex: number;
  log?: Logger;
  /** default: systemd-v2 when cgroup2 is writable, else cgroupfs-v1 */
  cgroupLayout?: CgroupLayout;
  /**
   * The Node's InternalIP and its pods' hostIP (default: the node's fabric address, which
   * only the bridge knows). The API server's nodes/proxy dials it, so the agent's files
   * are reachable through the API server only when this is an address of the host.
   */
  internalIP?: string;
  /**
   * How long a new sandbox runs before its pod is reported Running, as while init
   * containers run: the pod is Pending (without an IP in its status) but its netns and
   * process already exist. Default 0.
   */
  pendingMs?: number;
}

/** Where a pod instance lives on this node: what the agent must find on its own. */
export interface PodNetns {
  netnsName: string;
  netnsPath: string;
  ip: string;
  pid: number;
  /** the cgroup of the pod's (first) container, which holds `pid` */
  cgroupDir: string;
  /** epoch ms when the sandbox was complete: its netns wired, its process in the pod's cgroup and ready */
  createdAt: number;
}

/** Times are epoch milliseconds with sub-millisecond precision. */
export type SandboxEvent =
  | {
      type: 'Running';
      uid: string;
      namespace: string;
      name: string;
      ip: string;
      netnsName: string;
      /** when the pod first appeared bound to this node */
      seenAt: number;
      /** when the API server acknowledged the Running status */
      runningAt: number;
    }
  | { type: 'Removed'; uid: string; namespace: string; name: string; ip: string; at: number };

interface Sandbox {
  uid: string;
  namespace: string;
  name: string;
  record: SandboxRecord;
  ip: string;
  pid: number;
  child: ChildProcess;
  exited: Promise<void>;
  containerIds: string[];
  startTime: string;
  /** 0 for the pod's first sandbox, then one more for each recreation */
  generation: number;
  createdAt: number;
  statusWrittenAt?: number;
}

const now = () => performance.timeOrigin + performance.now();
/** RFC 3339 at second precision, as the API server stores metav1.Time */
const kubeTime = (ms = Date.now()) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
/** metav1.MicroTime */
const microTime = () => new Date().toISOString().replace(/Z$/, '000Z');

/** The lowest address of 10.244.<subnet>.2-254 not in use; .1 is the node's own. */
export function lowestFreeAddress(subnetIndex: number, inUse: ReadonlySet<string>): string | undefined {
  for (let host = 2; host <= 254; host++) {
    const address = `10.244.${subnetIndex}.${host}`;
    if (!inUse.has(address)) return address;
  }
  return undefined;
}

export const nodeAddress = (subnetIndex: number): string => `10.244.${subnetIndex}.1`;

/** The pod's TCP ports the pod process listens on: 80 and every declared TCP container port. */
export function podTcpPorts(pod: Pod): number[] {
  const declared = pod.spec.containers.flatMap((c) => c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  return [...new Set([80, ...declared.map((p) => p.containerPort)])].sort((a, b) => a - b);
}

/** What a kubelet reports for a pod whose containers all run: the body of a /status apply. */
export function runningPodStatus(pod: Pod, s: { ip: string; hostIP: string; containerIds: string[]; startTime: string }) {
  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'True');
  const condition = (type: string, since = s.startTime) => ({ type, status: 'True', lastTransitionTime: since });
  return {
    phase: 'Running',
    hostIP: s.hostIP,
    hostIPs: [{ ip: s.hostIP }],
    podIP: s.ip,
    podIPs: [{ ip: s.ip }],
    startTime: s.startTime,
    conditions: [
      condition('PodReadyToStartContainers'),
      condition('Initialized'),
      condition('Ready'),
      condition('ContainersReady'),
      condition('PodScheduled', scheduled?.lastTransitionTime ?? s.startTime),
    ],
    containerStatuses: pod.spec.containers.map((c, i) => ({
      name: c.name,
      image: c.image ?? '',
      imageID: '',
      containerID: `containerd://${s.containerIds[i]}`,
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt: s.startTime } },
    })),
  };
}

/** Whether the pod's status already shows this sandbox running. */
export function statusShows(pod: Pod, s: { ip: string; containerIds: string[] }): boolean {
  return (
    pod.status?.phase === 'Running' &&
    pod.status.podIP === s.ip &&
    pod.status.containerStatuses?.[0]?.containerID === `containerd://${s.containerIds[0]}`
  );
}

/**
 * The node's netns and veth names for a pod's sandbox: `pc-` / `v` + the UID's first 12 hex
 * digits; a recreated sandbox (generation 1, 2, ...) runs next to the old one for a moment,
 * so it takes 12 hex digits of a hash of the UID and its generation.
 */
export function sandboxNames(uid: string, generation = 0): { netns: string; veth: string } {
  const hex = uid.replaceAll('-', '');
  const short = generation === 0 ? hex.slice(0, 12) : createHash('sha256').update(`${hex}/${generation}`).digest('hex').slice(0, 12);
  return { netns: `${NETNS_PREFIX}${short}`, veth: `v${short}` };
}

interface Worker {
  running?: Promise<void>;
  dirty: boolean;
}

export class SimulatedNode {
  readonly name: string;
  readonly subnetIndex: number;
  readonly address: string;
  readonly cgroupLayout: CgroupLayout;
  private readonly events$ = new Subject<SandboxEvent>();
  /** one value per pod sandbox that started (Running acknowledged) or was removed */
  readonly events: Observable<SandboxEvent> = this.events$.asObservable();

  private readonly kc: KubeConfig;
  private readonly log: Logger;
  private readonly cgroupRoot: string;
  private snapshot: Snapshot<Pod> = new Map();
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly addresses = new Set<string>();
  private readonly seenAt = new Map<string, number>();
  private readonly deleteSentAt = new Map<string, number>();
  private readonly workers = new Map<string, Worker>();
  private readonly recreating = new Set<string>();
  private readonly pendingMs: number;
  private subscription?: Subscription;
  private leaseTimer?: NodeJS.Timeout;
  private stopping = false;
  private stopped?: Promise<void>;

  private constructor(opts: SimulatedNodeOptions, layout: { layout: CgroupLayout; root: string }) {
    this.name = opts.name;
    this.kc = opts.kubeConfig;
    this.subnetIndex = opts.subnetIndex;
    this.address = opts.internalIP ?? nodeAddress(opts.subnetIndex);
    this.log = opts.log ?? createLogger('simulated-node', { node: opts.name });
    this.cgroupLayout = layout.layout;
    this.cgroupRoot = layout.root;
    this.pendingMs = opts.pendingMs ?? 0;
  }

  /** Registers the Node and starts running the pods bound to it. */
  static async start(opts: SimulatedNodeOptions): Promise<SimulatedNode> {
    if (!Number.isInteger(opts.subnetIndex) || opts.subnetIndex < 0 || opts.subnetIndex > MAX_SUBNET_INDEX) {
      throw new Error(`subnetIndex ${opts.subnetIndex} must be an integer in 0-${MAX_SUBNET_INDEX}`);
    }
    const node = new SimulatedNode(opts, await resolveCgroupLayout(opts.cgroupLayout));
    // a crashed earlier run may still hold namespaces of the pods we are about to run
    const stale = await cleanupStale();
    if (stale.length > 0) node.log.info({ removed: stale }, 'removed sandboxes left by an earlier run');
    await acquireFabric();
    try {
      await node.register();
    } catch (err) {
      await releaseFabric();
      throw err;
    }
    node.subscription = watchSnapshots<Pod>(node.kc, {
      path: '/api/v1/pods',
      fieldSelector: `spec.nodeName=${node.name}`,
      resyncMs: RESYNC_MS,
      log: node.log,
    }).subscribe((snapshot) => {
      node.snapshot = snapshot;
      node.reconcile();
    });
    node.log.info({ subnet: `10.244.${node.subnetIndex}.0/24`, cgroupLayout: node.cgroupLayout }, 'node started');
    return node;
  }

  /** The sandbox of a pod instance running here, if any. */
  podNetns(uid: string): PodNetns | undefined {
    const s = this.sandboxes.get(uid);
    if (!s) return undefined;
    return {
      netnsName: s.record.netns,
      netnsPath: netnsPath(s.record.netns),
      ip: s.ip,
      pid: s.pid,
      cgroupDir: s.record.cgroups!.chain[0]!,
      createdAt: s.createdAt,
    };
  }

  /**
   * What a kubelet does on SandboxChanged (the pause container died, the runtime lost the
   * sandbox): the pod keeps its UID and gets a new sandbox, with a new netns, its process
   * in a new container cgroup of the same pod, and the old sandbox's IP. The new process
   * is in the pod's cgroup before the old one is killed, so a process of the pod exists at
   * every instant and it is seen to move from one netns to the other (a real kubelet kills
   * the old sandbox first: an agent that looks in between finds no process, NetnsGone, and
   * then the new netns). Resolves with the new sandbox once its Running status is written.
   */
  async recreateSandbox(uid: string): Promise<PodNetns> {
    if (!this.sandboxes.has(uid)) throw new Error(`no sandbox of pod ${uid} runs on node ${this.name}`);
    const running = firstValueFrom(this.events$.pipe(filter((e) => e.type === 'Running' && e.uid === uid)));
    this.recreating.add(uid);
    this.sync(uid);
    await running;
    return this.podNetns(uid)!;
  }

  /** Tears down every sandbox, then deletes the Node; the pods stay bound to it, as with a dead kubelet. */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.subscription?.unsubscribe();
    clearInterval(this.leaseTimer);
    await Promise.all([...this.workers.values()].map((w) => w.running));
    const results = await Promise.allSettled([...this.sandboxes.values()].map((s) => this.teardown(s)));
    for (const r of results) if (r.status === 'rejected') this.log.error({ err: String(r.reason) }, 'sandbox teardown failed');
    for (const path of [`/apis/coordination.k8s.io/v1/namespaces/${NODE_LEASE_NAMESPACE}/leases/${this.name}`, `/api/v1/nodes/${this.name}`]) {
      await kubeRequest(this.kc, 'DELETE', path).catch((err: unknown) => {
        if (!isNotFound(err)) this.log.warn({ path, err: String(err) }, 'could not delete');
      });
    }
    await releaseFabric();
    this.events$.complete();
    this.log.info('node stopped');
  }

  // ---- the Node object ---------------------------------------------------------------

  private async register(): Promise<void> {
    const path = `/api/v1/nodes/${this.name}`;
    const query = { fieldManager: FIELD_MANAGER, force: true };
    const labels = {
      'kubernetes.io/hostname': this.name,
      'kubernetes.io/os': 'linux',
      'kubernetes.io/arch': arch() === 'x64' ? 'amd64' : arch(),
      [SIMULATED_NODE_LABEL]: 'true',
    };
    const node = await kubeRequest<{ metadata: { uid: string } }>(this.kc, 'PATCH', path, {
      query,
      contentType: APPLY_PATCH,
      body: { apiVersion: 'v1', kind: 'Node', metadata: { name: this.name, labels } },
    });
    const since = kubeTime();
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: since,
      lastTransitionTime: since,
    });
    const resources = { cpu: '8', memory: '32Gi', pods: '110', 'ephemeral-storage': '100Gi' };
    await kubeRequest(this.kc, 'PATCH', `${path}/status`, {
      query,
      contentType: APPLY_PATCH,
      body: {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: this.name },
        status: {
          conditions: [
            condition('Ready', 'True', 'KubeletReady', 'simulated kubelet is posting ready status'),
            condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'simulated'),
            condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'simulated'),
            condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'simulated'),
          ],
          capacity: resources,
          allocatable: resources,
          addresses: [
            { type: 'InternalIP', address: this.address },
            { type: 'Hostname', address: this.name },
          ],
          nodeInfo: {
            kernelVersion: release(),
            osImage: 'packet-capture simulated node',
            operatingSystem: 'linux',
            architecture: labels['kubernetes.io/arch'],
            containerRuntimeVersion: 'containerd://simulated',
            kubeletVersion: 'simulated',
          },
        },
      },
    });
    await this.removeNotReadyTaint(path);
    // The node lifecycle controller takes a node without a fresh lease for dead and evicts its pods.
    await this.renewLease(node.metadata.uid);
    this.leaseTimer = setInterval(() => {
      this.renewLease(node.metadata.uid).catch((err: unknown) => this.log.warn({ err: String(err) }, 'node lease renewal failed'));
    }, LEASE_RENEW_MS);
  }

  /**
   * The API server taints every new Node not-ready; the node lifecycle controller lifts
   * that once the node reports Ready. Local control planes may not run that controller,
   * so the node lifts it itself, or the scheduler would never place a pod here.
   */
  private async removeNotReadyTaint(path: string): Promise<void> {
    // The node lifecycle controller edits the taints of a node that just turned Ready at the
    // same time: the write is conditional on what was read, and read again when it lost.
    for (let attempt = 1; ; attempt++) {
      const node = await kubeRequest<{ metadata: { resourceVersion: string }; spec?: { taints?: { key: string }[] } }>(this.kc, 'GET', path);
      const taints = node.spec?.taints ?? [];
      const kept = taints.filter((t) => t.key !== NOT_READY_TAINT);
      if (kept.length === taints.length) return;
      try {
        await kubeRequest(this.kc, 'PATCH', path, {
          contentType: MERGE_PATCH,
          body: { metadata: { resourceVersion: node.metadata.resourceVersion }, spec: { taints: kept } },
        });
        return;
      } catch (err) {
        if (!isConflict(err) || attempt >= 10) throw err;
      }
    }
  }

  private async renewLease(nodeUid: string): Promise<void> {
    await kubeRequest(this.kc, 'PATCH', `/apis/coordination.k8s.io/v1/namespaces/${NODE_LEASE_NAMESPACE}/leases/${this.name}`, {
      query: { fieldManager: FIELD_MANAGER, force: true },
      contentType: APPLY_PATCH,
      body: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: {
          name: this.name,
          namespace: NODE_LEASE_NAMESPACE,
          ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: this.name, uid: nodeUid }],
        },
        spec: { holderIdentity: this.name, leaseDurationSeconds: LEASE_DURATION_SECONDS, renewTime: microTime() },
      },
    });
  }

  // ---- pods: one worker per UID, driven by the latest snapshot -------------------------

  private reconcile(): void {
    const t = now();
    for (const uid of this.snapshot.keys()) if (!this.seenAt.has(uid)) this.seenAt.set(uid, t);
    for (const uid of this.seenAt.keys()) if (!this.snapshot.has(uid) && !this.sandboxes.has(uid)) this.seenAt.delete(uid);
    for (const uid of this.deleteSentAt.keys()) if (!this.snapshot.has(uid)) this.deleteSentAt.delete(uid);
    for (const uid of new Set([...this.snapshot.keys(), ...this.sandboxes.keys()])) {
      if (this.needsSync(uid)) this.sync(uid);
    }
  }

  private needsSync(uid: string): boolean {
    const pod = this.snapshot.get(uid);
    const sandbox = this.sandboxes.get(uid);
    if (!pod) return !!sandbox;
    if (pod.metadata.deletionTimestamp) return !!sandbox || now() - (this.deleteSentAt.get(uid) ?? 0) > ECHO_WAIT_MS;
    if (!sandbox) return true;
    return !statusShows(pod, sandbox) && now() - (sandbox.statusWrittenAt ?? 0) > ECHO_WAIT_MS;
  }

  /** Runs syncPod for `uid`, once more if asked again meanwhile; never two at once for one pod. */
  private sync(uid: string): void {
    if (this.stopping) return;
    let worker = this.workers.get(uid);
    if (!worker) this.workers.set(uid, (worker = { dirty: false }));
    if (worker.running) {
      worker.dirty = true;
      return;
    }
    const w = worker;
    w.running = (async () => {
      do {
        w.dirty = false;
        try {
          await this.syncPod(uid);
        } catch (err) {
          this.podLog(uid).warn({ err: String(err) }, 'pod sync failed, retrying');
          setTimeout(() => this.sync(uid), RETRY_MS).unref();
          break;
        }
      } while (w.dirty && !this.stopping);
      w.running = undefined;
      if (!w.dirty) this.workers.delete(uid);
    })();
  }

  private async syncPod(uid: string): Promise<void> {
    const pod = this.snapshot.get(uid);
    let sandbox = this.sandboxes.get(uid);
    if (!pod || pod.metadata.deletionTimestamp) {
      if (sandbox) await this.teardown(sandbox);
      if (pod) await this.finishDeletion(pod);
      return;
    }
    if (this.stopping) return;
    const recreate = this.recreating.delete(uid);
    if (!sandbox || recreate) {
      sandbox = await this.createSandbox(pod, sandbox);
      // init containers run in the new sandbox before the pod is Running
      if (this.pendingMs > 0) await new Promise((resolve) => setTimeout(resolve, this.pendingMs));
    }
    const latest = this.snapshot.get(uid);
    if (!latest || latest.metadata.deletionTimestamp) {
      // deleted while the sandbox was being made: go round again to tear it down
      this.workers.get(uid)!.dirty = true;
      return;
    }
    if (!statusShows(latest, sandbox)) await this.reportRunning(latest, sandbox);
  }

  private podLog(uid: string): Logger {
    const meta = this.snapshot.get(uid)?.metadata ?? this.sandboxes.get(uid);
    return this.log.child({ namespace: meta?.namespace, name: meta?.name, podUID: uid });
  }

  /** A new sandbox for `pod`; with `replacing`, that sandbox's successor, which retires it. */
  private async createSandbox(pod: Pod, replacing?: Sandbox): Promise<Sandbox> {
    const { uid, namespace = '', name } = pod.metadata;
    const ip = replacing?.ip ?? lowestFreeAddress(this.subnetIndex, this.addresses);
    if (!ip) throw new Error(`node ${this.name} has no free pod address in 10.244.${this.subnetIndex}.0/24`);
    this.addresses.add(ip);
    const generation = replacing ? replacing.generation + 1 : 0;
    const containerIds = pod.spec.containers.map(() => randomBytes(32).toString('hex'));
    const segments = containerCgroupSegments(this.cgroupLayout, uid, pod.status?.qosClass ?? 'BestEffort', containerIds[0]!);
    const record: SandboxRecord = {
      ...sandboxNames(uid, generation),
      cgroups: { chain: cgroupChain(this.cgroupRoot, segments), own: 2 },
      owner: currentOwner(),
    };
    let child: ChildProcess | undefined;
    try {
      await createNetns(record);
      // the process binds 0.0.0.0, so it can start while the namespace is being wired
      child = spawn('setpriv', inNetns(record.netns, [process.execPath, await runnableScript(POD_SERVER)]), {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH,
          POD_NAMESPACE: namespace,
          POD_NAME: name,
          POD_UID: uid,
          TCP_PORTS: podTcpPorts(pod).join(','),
        },
      });
      const started = child;
      const exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
      const placed = placeInCgroup(record.cgroups!.chain, started.pid!);
      // the old sandbox holds the address until the new process is the pod's
      const wired = replacing ? placed.then(() => this.retire(replacing)).then(() => attachToFabric(record, ip)) : attachToFabric(record, ip);
      const steps = [wired, placed, untilReady(started)];
      await Promise.all(steps).catch(async (err: unknown) => {
        // let every step finish before the clean-up below undoes what they made
        started.kill('SIGKILL');
        await Promise.allSettled(steps);
        throw err;
      });
      const sandbox: Sandbox = { uid, namespace, name, record, ip, pid: child.pid!, child, exited, containerIds, startTime: kubeTime(), generation, createdAt: now() };
      this.sandboxes.set(uid, sandbox);
      exited.then(() => {
        if (this.sandboxes.get(uid) === sandbox) this.podLog(uid).error({ pid: sandbox.pid }, 'pod process exited unexpectedly');
      });
      this.podLog(uid).info({ ip, netns: record.netns, pid: child.pid, cgroup: record.cgroups!.chain[0], generation }, 'pod sandbox created');
      return sandbox;
    } catch (err) {
      child?.kill('SIGKILL');
      await destroySandbox(record).catch((cleanupErr: unknown) =>
        this.podLog(uid).error({ err: String(cleanupErr) }, 'could not clean up a failed sandbox'),
      );
      // a sandbox being replaced still holds the address until it is retired
      if (!replacing || !this.sandboxes.has(uid)) this.addresses.delete(ip);
      throw err;
    }
  }

  /** Removes a sandbox its successor replaces: its process, veth, netns and container cgroup; the pod cgroup is the successor's now. */
  private async retire(old: Sandbox): Promise<void> {
    this.sandboxes.delete(old.uid);
    old.child.kill('SIGKILL');
    await old.exited;
    await destroySandbox({ ...old.record, cgroups: { ...old.record.cgroups!, own: 1 } });
    this.podLog(old.uid).info({ ip: old.ip, netns: old.record.netns, generation: old.generation }, 'pod sandbox retired');
  }

  private async reportRunning(pod: Pod, sandbox: Sandbox): Promise<void> {
    const { uid, namespace, name } = pod.metadata;
    const status = runningPodStatus(pod, { ...sandbox, hostIP: this.address });
    try {
      await kubeRequest(this.kc, 'PATCH', `/api/v1/namespaces/${namespace}/pods/${name}/status`, {
        query: { fieldManager: FIELD_MANAGER, force: true },
        contentType: APPLY_PATCH,
        // the uid makes the write fail if the name now belongs to another instance
        body: { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, uid }, status },
      });
    } catch (err) {
      if (isNotFound(err) || isConflict(err)) return;
      throw err;
    }
    const first = sandbox.statusWrittenAt === undefined;
    sandbox.statusWrittenAt = now();
    if (first) {
      this.events$.next({
        type: 'Running',
        uid,
        namespace: sandbox.namespace,
        name,
        ip: sandbox.ip,
        netnsName: sandbox.record.netns,
        seenAt: this.seenAt.get(uid) ?? sandbox.statusWrittenAt,
        runningAt: sandbox.statusWrittenAt,
      });
    }
  }

  private async teardown(sandbox: Sandbox): Promise<void> {
    const { child } = sandbox;
    this.sandboxes.delete(sandbox.uid);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await sandbox.exited;
      clearTimeout(timer);
    }
    try {
      await destroySandbox(sandbox.record);
    } catch (err) {
      // keep the address reserved and the sandbox known, so the next sync tries again
      this.sandboxes.set(sandbox.uid, sandbox);
      throw err;
    }
    this.addresses.delete(sandbox.ip);
    this.podLog(sandbox.uid).info({ ip: sandbox.ip, netns: sandbox.record.netns }, 'pod sandbox removed');
    this.events$.next({ type: 'Removed', uid: sandbox.uid, namespace: sandbox.namespace, name: sandbox.name, ip: sandbox.ip, at: now() });
  }

  /** What a kubelet does once the pod's containers are gone: remove the object for good. */
  private async finishDeletion(pod: Pod): Promise<void> {
    const { uid, namespace, name } = pod.metadata;
    this.deleteSentAt.set(uid, now());
    await kubeRequest(this.kc, 'DELETE', `/api/v1/namespaces/${namespace}/pods/${name}`, {
      body: { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } },
    }).catch((err: unknown) => {
      if (!isNotFound(err) && !isConflict(err)) throw err;
    });
  }
}

/** Resolves when the pod process says it has bound its ports; rejects if it exits first. */
function untilReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-2000)));
    const timer = setTimeout(() => reject(new Error(`pod process did not start within ${START_TIMEOUT_MS}ms`)), START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`pod process exited (${code ?? signal}) before it was ready: ${stderr.trim()}`));
    });
  });
}
