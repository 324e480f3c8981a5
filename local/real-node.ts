// A real Kubernetes worker node on this machine: containerd + runc + bridge CNI + kubelet,
// registered with a local control plane, running images side-loaded from OCI archives (no
// registry is reachable). Where the simulated node (local/node.ts) is a stand-in written
// next to the product, this is the ground truth: sandbox recreation, container restarts
// and pod start-up happen as a real kubelet makes them happen.
//
// Everything it makes is private to it (state dirs, sockets, a cgroup root of its own, a
// bridge) except the paths that kubelet and containerd hard-code; those are removed on stop
// if it made them. The measured settings behind each choice are in shared/REAL-NODE.md.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { DEFAULT_DATA_DIR } from '../crds/packetcapture.ts';
import { kubeRequest } from '../kube/http.ts';
import { Component, scriptOutputDir, SERVICE_CIDR, type ControlPlaneInfo } from './control-plane.ts';
import { complete, currentOwner, processStartTime, run, type Owner } from './fabric.ts';
import { issueClientCert, issueServingCert, KUBERNETES_SERVICE_IP, readBase64 } from './pki.ts';
import { KubeConfig } from '@kubernetes/client-node';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const NODE_BINARIES = ['kubelet', 'containerd', 'containerd-shim-runc-v2', 'ctr', 'cni/bridge', 'cni/host-local', 'cni/loopback', 'cni/portmap'];
export const NODE_BINARIES_SCRIPT = join(REPO_ROOT, 'scripts', 'node-binaries');
export const NODE_IMAGES_SCRIPT = join(REPO_ROOT, 'scripts', 'node-images');

/** The node's own network: its IP is the bridge's, pods get the rest of the /24. */
export const REAL_NODE_NETWORK = {
  bridge: 'pcrn0',
  nodeIP: '10.88.0.1',
  podCIDR: '10.88.0.0/24',
  prefixLength: 24,
} as const;

/**
 * The kubelet's cgroup root: pods live under /realnode/kubepods/..., apart from the
 * simulated nodes' /kubepods, because a kubelet SIGKILLs every process in a pod cgroup under
 * its kubepods that it does not know.
 */
export const REAL_NODE_CGROUP_ROOT = '/realnode';

/** On the real node's Node object, set by its kubelet. */
export const REAL_NODE_LABEL = 'packetcapture.dev/real-node';

/** Our NAT chain: the `kubernetes` Service's address to the API server, as kube-proxy would. */
const NAT_CHAIN = 'PCAP-REALNODE';

/** Changed by the kubelet at start (protectKernelDefaults: false); restored on stop. */
const KUBELET_SYSCTLS = ['vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops'];

/**
 * Paths kubelet, containerd and the CNI plugins cannot be told to move, and the agent
 * DaemonSet's hostPath (dist/ is deployed unchanged): removed on stop if the node made them.
 */
const FIXED_PATHS = [
  '/run/containerd',
  '/run/containerd/s',
  '/var/log/containers',
  '/var/lib/kubelet',
  '/var/lib/kubelet/device-plugins',
  '/var/lib/cni',
  '/var/lib/cni/results',
  DEFAULT_DATA_DIR,
];

const READY_TIMEOUT_MS = 120_000;

export interface NodeImages {
  /** the sandbox image containerd pins (never pulled, never collected) */
  pause: string;
  /** OCI archives to import, by the image name they must carry */
  archives: { ref: string; path: string }[];
}

export interface RealNodeOptions {
  controlPlane: ControlPlaneInfo;
  /** default `real-node` */
  name?: string;
  /** default: scripts/node-binaries */
  binDir?: string;
  images: NodeImages;
  progress?: (message: string) => void;
}

/** kubelet, containerd, ctr and CNI plugins from scripts/node-binaries (built once, cached). */
export const nodeBinaries = (): Promise<string> => scriptOutputDir(NODE_BINARIES_SCRIPT, NODE_BINARIES);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * What a real node has made, written to RECORD_PATH before each thing is made, so that a
 * node whose process was killed (SIGKILL, a lost terminal) is taken apart by the next
 * start: its kubelet and containerd died with it (parent-death signal), but its pods, shims,
 * mounts, NAT rules, bridge and sysctls outlive it.
 */
export interface RealNodeRecord {
  owner: Owner;
  stateDir: string;
  containerdSocket: string;
  /** paths that did not exist before the node made them */
  created: string[];
  /** /proc/sys values before the kubelet changed them */
  sysctls: Record<string, string>;
  bridge?: string;
  natChain?: string;
  cgroupRoot?: string;
}

const RECORD_PATH = '/run/packet-capture-realnode.json';

export class RealNode {
  private readonly components = new Map<string, Component>();
  private stopped?: Promise<void>;

  private constructor(
    readonly name: string,
    readonly binDir: string,
    private readonly controlPlane: ControlPlaneInfo,
    private readonly record: RealNodeRecord,
  ) {}

  get stateDir(): string {
    return this.record.stateDir;
  }

  get ip(): string {
    return REAL_NODE_NETWORK.nodeIP;
  }

  get containerdSocket(): string {
    return this.record.containerdSocket;
  }

  get kubeletLog(): string {
    return join(this.stateDir, 'kubelet.log');
  }

  get containerdLog(): string {
    return join(this.stateDir, 'containerd.log');
  }

  /** ctr against this node's containerd, in the CRI namespace. */
  ctr(args: readonly string[]): Promise<string> {
    return run(join(this.binDir, 'ctr'), ['--address', this.containerdSocket, '--namespace', 'k8s.io', ...args]);
  }

  static async start(opts: RealNodeOptions): Promise<RealNode> {
    const progress = opts.progress ?? (() => {});
    const binDir = opts.binDir ?? (await nodeBinaries());
    await preflight();
    const stale = await removeStaleNode();
    if (stale) progress(`real node: removed what a killed real node left (${stale})`);
    if (existsSync(`/sys/class/net/${REAL_NODE_NETWORK.bridge}`)) {
      throw new Error(`bridge ${REAL_NODE_NETWORK.bridge} exists but no real node of ours made it (remove it with: ip link del ${REAL_NODE_NETWORK.bridge})`);
    }
    const stateDir = await mkdtemp(join(tmpdir(), 'packet-capture-realnode-'));
    const record: RealNodeRecord = {
      owner: currentOwner(),
      stateDir,
      containerdSocket: join(stateDir, 'containerd', 'containerd.sock'),
      created: FIXED_PATHS.filter((path) => !existsSync(path)),
      sysctls: await currentSysctls(),
    };
    const node = new RealNode(opts.name ?? 'real-node', binDir, opts.controlPlane, record);
    try {
      await node.save();
      progress(`real node ${node.name}: network ${REAL_NODE_NETWORK.podCIDR} on bridge ${REAL_NODE_NETWORK.bridge}`);
      await node.startNetwork();
      progress('real node: containerd');
      await node.startContainerd(opts.images.pause);
      progress(`real node: importing ${opts.images.archives.length} images`);
      for (const archive of opts.images.archives) await node.importImage(archive.ref, archive.path);
      progress('real node: kubelet');
      await node.startKubelet();
      await node.waitReady();
      progress(`real node ${node.name} Ready (kubelet log: ${node.kubeletLog})`);
      return node;
    } catch (err) {
      await node.stop().catch(() => undefined);
      throw err;
    }
  }

  private save(): Promise<void> {
    return writeFile(RECORD_PATH, JSON.stringify(this.record));
  }

  private async startNetwork(): Promise<void> {
    const { bridge, nodeIP, prefixLength } = REAL_NODE_NETWORK;
    this.record.bridge = bridge;
    this.record.natChain = NAT_CHAIN;
    await this.save();
    await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
    await run('ip', ['addr', 'add', `${nodeIP}/${prefixLength}`, 'dev', bridge]);
    await run('ip', ['link', 'set', bridge, 'up']);
    // Service addresses stay on this machine: on the bridge, where nothing answers them but
    // the NAT rule below; never the default route, which leaves the machine
    await run('ip', ['route', 'add', SERVICE_CIDR, 'dev', bridge]);
    // the NAT below hands pods' packets for the `kubernetes` Service to the API server on
    // 127.0.0.1; the kernel routes to loopback from this one interface only with this set
    await writeFile(`/proc/sys/net/ipv4/conf/${bridge}/route_localnet`, '1');

    const apiPort = new URL(this.controlPlane.server).port;
    await run('iptables', ['-w', '-t', 'nat', '-N', NAT_CHAIN]);
    await run('iptables', ['-w', '-t', 'nat', '-A', NAT_CHAIN, '-d', `${KUBERNETES_SERVICE_IP}/32`, '-p', 'tcp', '--dport', '443', '-j', 'DNAT', '--to-destination', `127.0.0.1:${apiPort}`]);
    for (const hook of ['PREROUTING', 'OUTPUT']) await run('iptables', ['-w', '-t', 'nat', '-I', hook, '-j', NAT_CHAIN]);
  }

  private async startContainerd(pauseImage: string): Promise<void> {
    const dir = join(this.stateDir, 'containerd');
    const cni = { bin: join(this.binDir, 'cni'), conf: join(this.stateDir, 'cni', 'net.d') };
    await mkdir(cni.conf, { recursive: true });
    await writeFile(join(cni.conf, '10-packet-capture.conflist'), JSON.stringify(cniConfig(join(this.stateDir, 'cni', 'ipam')), null, 2));
    const config = join(dir, 'config.toml');
    await mkdir(dir, { recursive: true });
    await writeFile(config, containerdConfig({ dir, socket: this.containerdSocket, cniBin: cni.bin, cniConf: cni.conf, pauseImage }));
    const env = { ...process.env, PATH: `${this.binDir}:${process.env.PATH ?? ''}` };
    const containerd = Component.start('containerd', join(this.binDir, 'containerd'), ['--config', config], this.containerdLog, env);
    this.components.set('containerd', containerd);
    await this.until('containerd', containerd, async () => (await complete(join(this.binDir, 'ctr'), ['--address', this.containerdSocket, 'version'])).code === 0);
  }

  async importImage(ref: string, archive: string): Promise<void> {
    await this.ctr(['images', 'import', archive]);
    // ctr names the image by the archive index's annotation, which the image scripts set to `ref`
    const names = (await this.ctr(['images', 'ls', '-q'])).split('\n').filter(Boolean);
    if (!names.includes(ref)) throw new Error(`imported ${archive} into ${this.name}, but it is not named ${ref} (there are: ${names.join(', ')})`);
  }

  private async startKubelet(): Promise<void> {
    const dir = join(this.stateDir, 'kubelet');
    const pki = { ca: { cert: join(this.controlPlane.pkiDir, 'ca.crt'), key: join(this.controlPlane.pkiDir, 'ca.key') }, dir: join(this.stateDir, 'pki') };
    await mkdir(pki.dir, { recursive: true });
    const [client, serving] = await Promise.all([
      issueClientCert(pki, { user: `system:node:${this.name}`, groups: ['system:nodes'] }),
      issueServingCert(pki, `kubelet-${this.name}`, [`IP:${this.ip}`, `DNS:${this.name}`]),
    ]);
    const kubeconfig = join(dir, 'kubeconfig');
    await mkdir(dir, { recursive: true });
    await writeFile(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'local', cluster: { server: this.controlPlane.server, 'certificate-authority-data': await readBase64(pki.ca.cert) } }],
        users: [{ name: this.name, user: { 'client-certificate': client.cert, 'client-key': client.key } }],
        contexts: [{ name: 'local', context: { cluster: 'local', user: this.name } }],
        'current-context': 'local',
      }),
      { mode: 0o600 },
    );
    const config = join(dir, 'config.yaml');
    await writeFile(
      config,
      stringify(
        kubeletConfig({
          caFile: pki.ca.cert,
          serving,
          runtimeEndpoint: `unix://${this.containerdSocket}`,
          podLogsDir: join(this.stateDir, 'pod-logs'),
          address: this.ip,
        }),
      ),
    );
    // the kubelet refuses a cgroup root that does not exist; it makes everything below it
    this.record.cgroupRoot = REAL_NODE_CGROUP_ROOT;
    await this.save();
    await makeCgroupRoot(REAL_NODE_CGROUP_ROOT);
    const kubelet = Component.start(
      'kubelet',
      join(this.binDir, 'kubelet'),
      [`--config=${config}`, `--kubeconfig=${kubeconfig}`, `--root-dir=${join(dir, 'root')}`, `--hostname-override=${this.name}`, `--node-ip=${this.ip}`, `--node-labels=${REAL_NODE_LABEL}=true`, '--v=1'],
      this.kubeletLog,
    );
    this.components.set('kubelet', kubelet);
  }

  private async waitReady(): Promise<void> {
    const kc = new KubeConfig();
    kc.loadFromFile(this.controlPlane.kubeconfigPath);
    await this.until('kubelet', this.components.get('kubelet')!, async () => {
      const node = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(kc, 'GET', `/api/v1/nodes/${this.name}`).catch(() => undefined);
      return node?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    });
  }

  /** Polls `probe`; fails with the component's log when it exits or the time runs out. */
  private async until(what: string, component: Component, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (component.exited) throw new Error(`${what} ${component.exitDescription}:\n${await component.failure()}`);
      if (await probe().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`${what} was not ready within ${READY_TIMEOUT_MS / 1000}s:\n${await component.failure()}`);
      await sleep(200);
    }
  }

  /**
   * The kubelet first (it would restart what we kill), then containerd, then whatever else
   * the record names, as after a crash.
   */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      const failures: string[] = [];
      for (const name of ['kubelet', 'containerd']) {
        if (name === 'containerd') await killCgroupTree(REAL_NODE_CGROUP_ROOT).catch((err: Error) => failures.push(err.message));
        await this.components.get(name)?.stop().catch((err: Error) => failures.push(`${name}: ${err.message}`));
      }
      failures.push(...(await teardown(this.record)));
      if (failures.length > 0) throw new Error(`real node ${this.name} did not stop cleanly: ${failures.join('; ')}`);
    })();
    return this.stopped;
  }
}

/** Everything `record` says was made, undone; returns what could not be. Idempotent. */
async function teardown(record: RealNodeRecord): Promise<string[]> {
  const failures: string[] = [];
  const attempt = async (what: string, step: () => Promise<unknown>) => {
    await step().catch((err: unknown) => failures.push(`${what}: ${(err as Error).message}`));
  };
  if (record.cgroupRoot) await attempt('pod processes', () => killCgroupTree(record.cgroupRoot!));
  await attempt('shims', () => killShims(record.containerdSocket));
  await attempt('mounts', () => unmountUnder(record.stateDir));
  if (record.cgroupRoot) await attempt('cgroups', () => removeCgroupTree(record.cgroupRoot!));
  if (record.natChain) {
    const chain = record.natChain;
    await attempt('NAT rules', async () => {
      for (const hook of ['PREROUTING', 'OUTPUT']) await run('iptables', ['-w', '-t', 'nat', '-D', hook, '-j', chain]).catch(() => undefined);
      await run('iptables', ['-w', '-t', 'nat', '-F', chain]).catch(() => undefined);
      await run('iptables', ['-w', '-t', 'nat', '-X', chain]).catch(() => undefined);
    });
  }
  // its routes and addresses go with it
  if (record.bridge && existsSync(`/sys/class/net/${record.bridge}`)) await attempt('bridge', () => run('ip', ['link', 'del', record.bridge!]));
  for (const path of [...record.created].reverse()) await attempt(path, () => rm(path, { recursive: true, force: true }));
  for (const [key, value] of Object.entries(record.sysctls)) await attempt(`sysctl ${key}`, () => writeFile(join('/proc/sys', key), value));
  await attempt('state dir', () => rm(record.stateDir, { recursive: true, force: true }));
  if (failures.length === 0) await rm(RECORD_PATH, { force: true });
  return failures;
}

/**
 * Takes apart a real node whose owner is gone, from its record; refuses while the owner
 * lives (one real node per machine: the bridge, the cgroup root and the fixed paths are
 * the machine's). Returns the removed node's state dir, if there was one.
 */
async function removeStaleNode(): Promise<string | undefined> {
  const text = await readFile(RECORD_PATH, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const record = JSON.parse(text) as RealNodeRecord;
  if (processStartTime(record.owner.pid) === record.owner.startTime) {
    throw new Error(`a real node runs on this machine already (process ${record.owner.pid}, ${record.stateDir}); stop it first`);
  }
  const failures = await teardown(record);
  if (failures.length > 0) throw new Error(`cannot remove the real node a killed process left (${RECORD_PATH}): ${failures.join('; ')}`);
  return record.stateDir;
}

async function currentSysctls(): Promise<Record<string, string>> {
  const values: Record<string, string> = {};
  for (const key of KUBELET_SYSCTLS) {
    const value = await readFile(join('/proc/sys', key), 'utf8').catch(() => undefined);
    if (value !== undefined) values[key] = value;
  }
  return values;
}

async function preflight(): Promise<void> {
  const missing: string[] = [];
  for (const [tool, pkg] of [
    ['runc', 'runc'],
    ['iptables', 'iptables'],
    ['ip', 'iproute2'],
    ['openssl', 'openssl'],
  ] as const) {
    if ((await complete('sh', ['-c', `command -v ${tool}`])).code !== 0) missing.push(pkg);
  }
  if (missing.length > 0) throw new Error(`the real node needs ${missing.join(', ')} (apt-get install -y ${missing.join(' ')})`);
}

/** One bridge network, no gateway and no NAT: nothing a pod sends can leave the machine. */
export function cniConfig(ipamDataDir: string): Record<string, unknown> {
  const { bridge, podCIDR, nodeIP } = REAL_NODE_NETWORK;
  return {
    cniVersion: '1.0.0',
    name: 'packet-capture',
    plugins: [
      {
        type: 'bridge',
        bridge,
        // the node's address is on the bridge already; as a gateway the plugin would make
        // pods route everything through the host, and ip_forward stays 0 here
        isGateway: false,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          dataDir: ipamDataDir,
          ranges: [[{ subnet: podCIDR, rangeStart: '10.88.0.10', gateway: nodeIP }]],
          // only the Service range goes via the node, where NAT hands it to the API server
          routes: [{ dst: SERVICE_CIDR, gw: nodeIP }],
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

/** containerd 2.x (config version 3) with everything private to one directory. */
export function containerdConfig(o: { dir: string; socket: string; cniBin: string; cniConf: string; pauseImage: string }): string {
  const q = JSON.stringify;
  return `version = 3
root = ${q(join(o.dir, 'root'))}
state = ${q(join(o.dir, 'state'))}

[plugins.'io.containerd.server.v1.grpc']
  address = ${q(o.socket)}

[plugins.'io.containerd.server.v1.ttrpc']
  address = ${q(`${o.socket}.ttrpc`)}

# NRI's socket would be the machine's /var/run/nri: no plugin of ours needs it
[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = ${q(o.pauseImage)}

[plugins.'io.containerd.cri.v1.runtime']
  # these machines withhold CAP_SYS_RESOURCE: without this every sandbox fails in runc init
  # writing /proc/self/oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [${q(o.cniBin)}]
  conf_dir = ${q(o.cniConf)}

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins.'io.containerd.internal.v1.opt']
  path = ${q(join(o.dir, 'opt'))}
`;
}

/** The settings that mattered on these machines (shared/REAL-NODE.md), and private paths. */
export function kubeletConfig(o: {
  caFile: string;
  serving: { cert: string; key: string };
  runtimeEndpoint: string;
  podLogsDir: string;
  address: string;
}): Record<string, unknown> {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: o.address,
    readOnlyPort: 0,
    healthzPort: 0,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: o.caFile } },
    authorization: { mode: 'Webhook' },
    tlsCertFile: o.serving.cert,
    tlsPrivateKeyFile: o.serving.key,
    containerRuntimeEndpoint: o.runtimeEndpoint,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: REAL_NODE_CGROUP_ROOT,
    // 1.35+ refuses cgroup v1 unless told; these machines have only v1 hierarchies
    failCgroupV1: false,
    failSwapOn: false,
    // a shared build machine's disk and memory are not the node's to guard
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'nodefs.inodesFree': '1%', 'imagefs.available': '1%' },
    // side-loaded images cannot be pulled again: never collect them
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    makeIPTablesUtilChains: false,
    podLogsDir: o.podLogsDir,
    serializeImagePulls: false,
  };
}

/** The mounted hierarchies: cgroup v2 at /sys/fs/cgroup itself, or the v1 ones below it. */
async function hierarchies(): Promise<string[]> {
  if (existsSync('/sys/fs/cgroup/cgroup.procs')) return ['/sys/fs/cgroup'];
  const entries = await readdir('/sys/fs/cgroup', { withFileTypes: true }).catch(() => []);
  return entries.filter((d) => d.isDirectory() && !d.isSymbolicLink()).map((d) => join('/sys/fs/cgroup', d.name));
}

async function makeCgroupRoot(root: string): Promise<void> {
  for (const base of await hierarchies()) {
    const dir = join(base, root);
    await mkdir(dir, { recursive: true });
    // a new v1 cpuset has no CPUs and no memory nodes: no task could join it or its children
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      if (!existsSync(join(dir, file))) continue;
      const current = (await readFile(join(dir, file), 'utf8')).trim();
      if (current === '') await writeFile(join(dir, file), await readFile(join(base, file), 'utf8'));
    }
  }
}

/** Every cgroup directory of `root` in every mounted hierarchy, deepest first. */
async function cgroupDirs(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name));
    found.push(dir);
  };
  for (const base of await hierarchies()) {
    if (existsSync(join(base, root))) await walk(join(base, root));
  }
  return found;
}

async function killCgroupTree(root: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const pids = new Set<number>();
    for (const dir of await cgroupDirs(root)) {
      const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const pid of text.split('\n').filter(Boolean)) pids.add(Number(pid));
    }
    if (pids.size === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await sleep(100);
  }
  throw new Error(`processes under the cgroup ${root} survive SIGKILL`);
}

async function removeCgroupTree(root: string): Promise<void> {
  await killCgroupTree(root);
  for (const dir of await cgroupDirs(root)) await rmdir(dir).catch(() => undefined);
}

/** containerd's shims outlive containerd by design; ours are the ones talking to our socket. */
async function killShims(socket: string): Promise<void> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const argv = cmdline.split('\0');
    if (argv[0]?.endsWith('containerd-shim-runc-v2') && argv.includes(socket)) {
      try {
        process.kill(Number(entry), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

/** Overlay roots, netns and shm mounts containerd and the kubelet left under `dir`, deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const point of points) await run('umount', ['-l', point]).catch(() => undefined);
}

// ---- the host's view of the node's pods ------------------------------------------------

export interface HostProcess {
  pid: number;
  comm: string;
  argv: string[];
  /** inode of its network namespace */
  netns: number;
  cgroup: string;
}

async function hostProcess(entry: string): Promise<HostProcess | undefined> {
  try {
    const pid = Number(entry);
    const [comm, cmdline, cgroup, stat, link] = await Promise.all([
      readFile(`/proc/${pid}/comm`, 'utf8'),
      readFile(`/proc/${pid}/cmdline`, 'utf8'),
      readFile(`/proc/${pid}/cgroup`, 'utf8'),
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readlink(`/proc/${pid}/ns/net`),
    ]);
    if (/\) Z /.test(stat)) return undefined;
    return { pid, comm: comm.trim(), argv: cmdline.split('\0').filter(Boolean), cgroup, netns: Number(/\[(\d+)\]/.exec(link)![1]) };
  } catch {
    return undefined;
  }
}

/** Every live process of the real node's pods (their cgroups are under its cgroup root). */
export async function nodeProcesses(): Promise<HostProcess[]> {
  const entries = (await readdir('/proc')).filter((e) => /^\d+$/.test(e));
  const all = await Promise.all(entries.map(hostProcess));
  return all.filter((p): p is HostProcess => !!p && p.cgroup.includes(`:${REAL_NODE_CGROUP_ROOT}/`));
}

/** The processes of one pod instance, by the UID in their cgroup path. */
export const podProcesses = async (uid: string): Promise<HostProcess[]> => (await nodeProcesses()).filter((p) => p.cgroup.includes(`/pod${uid}/`));

/** The tcpdumps the agent runs on the real node (they live in the agent container's cgroup). */
export const nodeTcpdumps = async (): Promise<HostProcess[]> => (await nodeProcesses()).filter((p) => p.comm === 'tcpdump');

/** The sandbox process of a pod instance: pause, alone in its own container cgroup. */
export async function pauseOf(uid: string): Promise<HostProcess> {
  const pause = (await podProcesses(uid)).filter((p) => p.comm === 'pause');
  if (pause.length !== 1) throw new Error(`pod ${uid} has ${pause.length} pause processes`);
  return pause[0]!;
}

/** A pod IP of the node routes over its bridge, never by the default route off this machine. */
export async function assertLocalRoute(ip: string): Promise<void> {
  const route = await run('ip', ['route', 'get', ip]);
  if (!route.includes(`dev ${REAL_NODE_NETWORK.bridge}`)) throw new Error(`${ip} does not route over ${REAL_NODE_NETWORK.bridge}, not sending to it: ${route.trim()}`);
}
