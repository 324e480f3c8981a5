// A real Kubernetes control plane on loopback: etcd, kube-apiserver and, optionally,
// kube-controller-manager and kube-scheduler, each a child process with its own log
// file in a temporary data dir. Integration tests, e2e tests and `npm run cluster` all
// run against this, never against a mock (see DESIGN.md "Real parts, everywhere").

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { kubeRequest } from '../kube/http.ts';
import { createPki, FRONT_PROXY_CLIENT, issueClientCert, issueServingCert, readBase64, type Identity, type Pki } from './pki.ts';

const run = promisify(execFile);

const BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl'] as const;
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const BINARIES_SCRIPT = join(REPO_ROOT, 'scripts', 'control-plane-binaries');
export const SERVICE_CIDR = '10.96.0.0/16';
const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';
const CLUSTER_NAME = 'packet-capture-local';
const STOP_GRACE_MS = 10_000;
const READY_TIMEOUT_MS = 180_000;
const DEATH_SETTLE_MS = 1_000;

/** The binaries could not be found or built; callers decide whether that skips or fails. */
export class BinariesUnavailable extends Error {
  override name = 'BinariesUnavailable';
}

/**
 * The directory a build script in scripts/ printed on its last stdout line, checked to hold
 * `required`. The scripts honour overrides (KUBEBUILDER_ASSETS, NODE_BINARIES_DIR, ...) and
 * otherwise build once into a cache; their progress goes to our stderr, as a first build
 * takes minutes.
 */
export async function scriptOutputDir(script: string, required: readonly string[]): Promise<string> {
  if (!existsSync(script)) throw new BinariesUnavailable(`${script} does not exist`);
  const child = spawn(script, [], { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  let out = '';
  let progress = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    process.stderr.write(chunk);
    progress += chunk;
  });
  const code = await new Promise<number | string>((resolve) => {
    child.on('error', (err) => resolve(err.message));
    child.on('close', (c, signal) => resolve(c ?? String(signal)));
  });
  if (code !== 0) {
    const why = progress.trim().split('\n').at(-1) ?? '';
    throw new BinariesUnavailable(`${script} failed (${code}): ${why}`);
  }
  const dir = out.trim().split('\n').at(-1)?.trim() ?? '';
  const missing = required.filter((b) => !existsSync(join(dir, b)));
  if (!dir || missing.length > 0) {
    throw new BinariesUnavailable(`${script} printed "${dir}", which lacks ${missing.join(', ')}`);
  }
  return dir;
}

/** etcd, kube-apiserver, ... from scripts/control-plane-binaries. */
export const controlPlaneBinaries = (): Promise<string> => scriptOutputDir(BINARIES_SCRIPT, BINARIES);

/** Everything needed to reach a running control plane; plain data, so it can cross processes. */
export interface ControlPlaneInfo {
  server: string;
  kubeconfigPath: string;
  dataDir: string;
  binDir: string;
  /** etcd's client URL (plain http on loopback) */
  etcdUrl: string;
  pkiDir: string;
}

export interface ControlPlaneClients {
  /** cluster-admin (O=system:masters) */
  kubeConfig: KubeConfig;
  /** A client certificate signed by the control plane's CA: CN=user, O=each group. */
  mintKubeconfig(identity: Identity): Promise<KubeConfig>;
  /** A token for an existing ServiceAccount from the TokenRequest API, as its pods would get. */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<KubeConfig>;
  /**
   * Compacts etcd up to its current revision and returns it. Reads that reach etcd at an
   * older resourceVersion then answer 410 Gone; the API server's watch cache keeps serving
   * its own window (lists and watches) until restartApiServer() drops it.
   */
  compactEtcd(): Promise<number>;
}

export interface ControlPlane extends ControlPlaneInfo, ControlPlaneClients {
  /**
   * Stops and starts kube-apiserver on the same port: open watches end, and a watch from a
   * resourceVersion before the restart is answered 410 Gone (the new watch cache starts now).
   */
  restartApiServer(): Promise<void>;
  /** Settles with a description if any component exits while not being stopped. */
  readonly died: Promise<string>;
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Also run kube-controller-manager and kube-scheduler. */
  controllers?: boolean;
  /**
   * Run the node lifecycle controller too: for real kubelets, whose heartbeats it watches
   * and whose `not-ready` taint it lifts. Simulated nodes post no heartbeats, so with it
   * their pods would be evicted as unreachable.
   */
  nodeLifecycle?: boolean;
  /** Where to write the admin kubeconfig; default: inside the data dir. */
  kubeconfigPath?: string;
  /** Directory with the binaries; default: controlPlaneBinaries(). */
  binDir?: string;
  /**
   * Also serve the packet-capture API (apiserver/) from this process, registered as its
   * APIService, for the agents of every namespace, and install the users' roles from dist/:
   * the whole tenancy model, as a cluster running dist/ has it.
   */
  packetCaptureApi?: boolean;
}

interface User {
  name: string;
  user: Record<string, string>;
}

function kubeconfigYaml(server: string, caData: string, user: User): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: CLUSTER_NAME, cluster: { server, 'certificate-authority-data': caData } }],
    users: [user],
    contexts: [{ name: CLUSTER_NAME, context: { cluster: CLUSTER_NAME, user: user.name } }],
    'current-context': CLUSTER_NAME,
  });
}

async function certUser(name: string, cert: { cert: string; key: string }): Promise<User> {
  return {
    name,
    user: {
      'client-certificate-data': await readBase64(cert.cert),
      'client-key-data': await readBase64(cert.key),
    },
  };
}

const kubeConfigFrom = (yaml: string): KubeConfig => {
  const kc = new KubeConfig();
  kc.loadFromString(yaml);
  return kc;
};

/** Clients for a control plane started elsewhere (e.g. by vitest's global setup). */
export function controlPlaneClients(info: ControlPlaneInfo): ControlPlaneClients {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(info.kubeconfigPath);
  const ca = { cert: join(info.pkiDir, 'ca.crt'), key: join(info.pkiDir, 'ca.key') };
  return {
    kubeConfig,
    async mintKubeconfig(identity) {
      const cert = await issueClientCert({ ca, dir: info.pkiDir }, identity);
      const user = await certUser(identity.user, cert);
      await Promise.all([rm(cert.cert), rm(cert.key)]);
      return kubeConfigFrom(kubeconfigYaml(info.server, await readBase64(ca.cert), user));
    },
    async serviceAccountKubeconfig(namespace, name) {
      const res = await kubeRequest<{ status: { token: string } }>(
        kubeConfig,
        'POST',
        `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`,
        { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3600 } } },
      );
      const user = { name: `system:serviceaccount:${namespace}:${name}`, user: { token: res.status.token } };
      return kubeConfigFrom(kubeconfigYaml(info.server, await readBase64(ca.cert), user));
    },
    async compactEtcd() {
      // etcd's gRPC gateway: any range answers with the store's current revision in its header
      const range = await etcdPost<{ header: { revision: string } }>(info.etcdUrl, '/v3/kv/range', {
        key: Buffer.from('/').toString('base64'),
      });
      const revision = Number(range.header.revision);
      await etcdPost(info.etcdUrl, '/v3/kv/compaction', { revision, physical: true });
      return revision;
    },
  };
}

async function etcdPost<T = unknown>(etcdUrl: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(etcdUrl + path, { method: 'POST', body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

interface TlsProbe {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** One HTTPS GET; resolves with the status code and body, or rejects on a transport error. */
function httpsGet(url: string, tls: TlsProbe): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      // kcm and the scheduler serve with self-signed certificates; /healthz carries no secrets
      { ...tls, rejectUnauthorized: !!tls.ca, agent: false, timeout: 5_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 5s`)));
    req.on('error', reject);
    req.end();
  });
}

export async function logTail(path: string, lines = 30): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

// setpriv makes the kernel SIGKILL each child when we die, even by SIGKILL; the exit and
// signal hooks below cannot run then. It execs the binary, so the pid stays the binary's.
const DEATH_SIGNAL_PREFIX = process.platform === 'linux' && existsSync('/usr/bin/setpriv')
  ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--']
  : [];

/** A long-running child process with its own log file, killed by the kernel if we die. */
export class Component {
  readonly exit: Promise<void>;
  exited = false;
  exitDescription = '';
  stopping = false;

  private constructor(
    readonly name: string,
    readonly logPath: string,
    readonly child: ChildProcess,
  ) {
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = true;
        this.exitDescription = `exited with ${signal ?? `code ${code}`}`;
        resolve();
      });
      child.once('error', (err) => {
        this.exited = true;
        this.exitDescription = `could not start: ${err.message}`;
        resolve();
      });
    });
  }

  static start(name: string, binary: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): Component {
    const [command, ...prefix] = [...DEATH_SIGNAL_PREFIX, binary];
    const log = openSync(logPath, 'a');
    try {
      const child = spawn(command!, [...prefix, ...args], { stdio: ['ignore', log, log], detached: false, env: env ?? process.env });
      return new Component(name, logPath, child);
    } finally {
      closeSync(log);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS);
    await this.exit;
    clearTimeout(timer);
  }

  async failure(): Promise<string> {
    return `${this.name} ${this.exitDescription}; last lines of ${this.logPath}:\n${await logTail(this.logPath)}`;
  }
}

// Control planes of this process, so a dying process takes its children and temp dirs along.
const running = new Set<LocalControlPlane>();

function killAllNow(): void {
  for (const cp of running) cp.killNow();
}

function onSignal(signal: NodeJS.Signals): void {
  const others = process.listenerCount(signal) - 1;
  void Promise.allSettled([...running].map((cp) => cp.stop())).then(() => {
    // alone, we replaced the default "exit on signal" and must restore it; otherwise the
    // other listener (vitest, runCluster) decides how the process ends
    if (others === 0) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.kill(process.pid, signal);
    }
  });
}

function track(cp: LocalControlPlane): void {
  if (running.size === 0) {
    process.on('exit', killAllNow);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  running.add(cp);
}

function untrack(cp: LocalControlPlane): void {
  running.delete(cp);
  if (running.size === 0) {
    process.off('exit', killAllNow);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

class LocalControlPlane implements ControlPlane {
  readonly components = new Map<string, Component>();
  readonly died: Promise<string>;
  private reportDeath: (description: string) => void = () => {};
  private stopped?: Promise<void>;
  private clients!: ControlPlaneClients;

  constructor(
    readonly server: string,
    readonly kubeconfigPath: string,
    readonly dataDir: string,
    readonly binDir: string,
    readonly etcdUrl: string,
    readonly pki: Pki,
    private readonly writtenOutsideDataDir: string | undefined,
  ) {
    this.died = new Promise((resolve) => (this.reportDeath = resolve));
  }

  get pkiDir(): string {
    return this.pki.dir;
  }
  get kubeConfig(): KubeConfig {
    return this.clients.kubeConfig;
  }
  mintKubeconfig(identity: Identity): Promise<KubeConfig> {
    return this.clients.mintKubeconfig(identity);
  }
  serviceAccountKubeconfig(namespace: string, name: string): Promise<KubeConfig> {
    return this.clients.serviceAccountKubeconfig(namespace, name);
  }
  compactEtcd(): Promise<number> {
    return this.clients.compactEtcd();
  }

  connect(): void {
    this.clients = controlPlaneClients(this);
  }

  apiServerArgs: string[] = [];
  /** what runs in this process beside the components (the packet-capture API), closed first */
  readonly closers: (() => Promise<void>)[] = [];

  start(name: string, args: string[]): Component {
    const component = Component.start(name, join(this.binDir, name), args, join(this.dataDir, `${name}.log`));
    this.components.set(name, component);
    void component.exit.then(async () => {
      // A Ctrl-C reaches our children (same process group) together with us, and their
      // exit can be seen before our own SIGINT handler has called stop(): give it a moment.
      await new Promise((resolve) => setTimeout(resolve, DEATH_SETTLE_MS).unref());
      if (!component.stopping) this.reportDeath(await component.failure());
    });
    return component;
  }

  /**
   * Polls until `probe` resolves true. Fails early, with the component's log, when any
   * component has exited, and with the last probe error after READY_TIMEOUT_MS.
   */
  async waitReady(component: Component, what: string, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = 'no answer yet';
    for (;;) {
      const dead = [...this.components.values()].find((c) => c.exited);
      if (dead) throw new Error(`${what} did not come up: ${await dead.failure()}`);
      try {
        if (await probe()) return;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${what} was not ready within ${READY_TIMEOUT_MS / 1000}s (last probe: ${last}); ` +
            `last lines of ${component.logPath}:\n${await logTail(component.logPath)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async startApiServer(): Promise<void> {
    const apiserver = this.start('kube-apiserver', this.apiServerArgs);
    const tls = {
      ca: await readFile(this.pki.ca.cert),
      cert: await readFile(this.pki.admin.cert),
      key: await readFile(this.pki.admin.key),
    };
    await this.waitReady(apiserver, 'kube-apiserver', async () => {
      const res = await httpsGet(`${this.server}/readyz`, tls);
      if (res.status !== 200) throw new Error(`/readyz ${res.status}: ${res.body.slice(0, 500)}`);
      return true;
    });
  }

  async restartApiServer(): Promise<void> {
    await this.components.get('kube-apiserver')?.stop();
    await this.startApiServer();
  }

  killNow(): void {
    for (const c of this.components.values()) {
      c.stopping = true;
      if (!c.exited) c.child.kill('SIGKILL');
    }
    rmSync(this.dataDir, { recursive: true, force: true });
    if (this.writtenOutsideDataDir) rmSync(this.writtenOutsideDataDir, { force: true });
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      // clients of the API server first, etcd last, so nothing logs a dead upstream
      for (const c of this.components.values()) c.stopping = true;
      await Promise.allSettled(this.closers.splice(0).map((close) => close()));
      const order = ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'];
      for (const name of order) await this.components.get(name)?.stop();
      await rm(this.dataDir, { recursive: true, force: true });
      if (this.writtenOutsideDataDir) await rm(this.writtenOutsideDataDir, { force: true });
      untrack(this);
    })();
    return this.stopped;
  }
}

const DATA_DIR_PREFIX = 'packet-capture-cp-';
const OWNER_FILE = 'owner.pid';

/** Whether a process exists (EPERM: it does, and is someone else's). */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

// A process killed with SIGKILL takes its children along (pdeathsig) but cannot remove its
// data dir; the next start does, for every dir whose owner is gone.
async function removeOrphanedDataDirs(): Promise<void> {
  const dirs = (await readdir(tmpdir())).filter((d) => d.startsWith(DATA_DIR_PREFIX)).map((d) => join(tmpdir(), d));
  await Promise.all(
    dirs.map(async (dir) => {
      const owner = Number(await readFile(join(dir, OWNER_FILE), 'utf8').catch(() => ''));
      if (owner > 0 && !isAlive(owner)) await rm(dir, { recursive: true, force: true });
    }),
  );
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const binDir = opts.binDir ?? (await controlPlaneBinaries());
  await removeOrphanedDataDirs();
  const dataDir = await mkdtemp(join(tmpdir(), DATA_DIR_PREFIX));
  await writeFile(join(dataDir, OWNER_FILE), String(process.pid));
  const [pki, etcdPort, etcdPeerPort, apiPort, kcmPort, schedulerPort] = await Promise.all([
    createPki(join(dataDir, 'pki')),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const server = `https://127.0.0.1:${apiPort}`;
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const kubeconfigPath = opts.kubeconfigPath ?? join(dataDir, 'kubeconfig');
  const cp = new LocalControlPlane(
    server,
    kubeconfigPath,
    dataDir,
    binDir,
    etcdUrl,
    pki,
    opts.kubeconfigPath,
  );
  track(cp);
  try {
    const etcdPeer = `http://127.0.0.1:${etcdPeerPort}`;
    cp.start('etcd', [
      `--name=${CLUSTER_NAME}`,
      `--data-dir=${join(dataDir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${etcdPeer}`,
      `--initial-advertise-peer-urls=${etcdPeer}`,
      `--initial-cluster=${CLUSTER_NAME}=${etcdPeer}`,
      // the data is thrown away with the dir; fsync only makes a shared machine slower
      '--unsafe-no-fsync',
    ]);
    // the API server retries etcd until it answers, so both start at once; waitReady
    // reports etcd's log if etcd is the one that died
    cp.apiServerArgs = [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      '--advertise-address=127.0.0.1',
      `--cert-dir=${join(dataDir, 'apiserver')}`,
      `--tls-cert-file=${pki.serving.cert}`,
      `--tls-private-key-file=${pki.serving.key}`,
      `--client-ca-file=${pki.ca.cert}`,
      `--service-account-key-file=${pki.serviceAccount.publicKey}`,
      `--service-account-signing-key-file=${pki.serviceAccount.privateKey}`,
      `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
      // Node: a real kubelet (local/real-node.ts) reads its pods' secrets and writes its
      // Node with its node identity; RBAC alone forbids it (simulated nodes write as admin)
      '--authorization-mode=Node,RBAC',
      // logs, exec and nodes/proxy of a real kubelet: it serves with a certificate of our CA
      // and authorizes us by webhook, so the admin identity is what it sees
      `--kubelet-client-certificate=${pki.admin.cert}`,
      `--kubelet-client-key=${pki.admin.key}`,
      `--kubelet-certificate-authority=${pki.ca.cert}`,
      // simulated nodes route no service IP; a real node routes the `kubernetes` Service
      // (the range's first address) to this API server (local/real-node.ts)
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      // the agent DaemonSet is privileged with hostPID; without this its manifest is rejected
      '--allow-privileged=true',
      // the reconciler would publish 127.0.0.1 as the `kubernetes` Service's endpoint,
      // which endpoint validation rejects as loopback, and retry forever into the log
      '--endpoint-reconciler-type=none',
      // on SIGTERM, end open watches (the controllers' and the tests') instead of waiting
      // for them until we give up and SIGKILL: restartApiServer() is then a clean restart
      '--shutdown-watch-termination-grace-period=2s',
      // as kubeadm sets it: nodes/proxy (kubectl-pcap reaching an agent) dials the Node's
      // InternalIP; the default tries its Hostname first, which no resolver knows here
      '--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname',
      // the aggregation layer (the packet-capture API, apiserver/): requests to an APIService
      // are forwarded with the user in these headers, over a client certificate of the
      // front-proxy CA; the API server publishes these settings in kube-system's
      // extension-apiserver-authentication ConfigMap for the aggregated server to trust
      `--requestheader-client-ca-file=${pki.frontProxyCa.cert}`,
      `--requestheader-allowed-names=${FRONT_PROXY_CLIENT}`,
      '--requestheader-username-headers=X-Remote-User',
      '--requestheader-group-headers=X-Remote-Group',
      '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      `--proxy-client-cert-file=${pki.frontProxyClient.cert}`,
      `--proxy-client-key-file=${pki.frontProxyClient.key}`,
      // to the Service's endpoints, not its cluster IP: nothing here routes service IPs
      '--enable-aggregator-routing=true',
    ];
    await cp.startApiServer();
    await writeFile(kubeconfigPath, kubeconfigYaml(server, await readBase64(pki.ca.cert), await certUser('admin', pki.admin)), {
      mode: 0o600,
    });
    cp.connect();
    if (opts.controllers) await startControllers(cp, kcmPort, schedulerPort, opts.nodeLifecycle ?? false);
    if (opts.packetCaptureApi) cp.closers.push(await servePacketCaptureApi(cp));
    return cp;
  } catch (err) {
    await cp.stop();
    throw err;
  }
}

async function startControllers(cp: LocalControlPlane, kcmPort: number, schedulerPort: number, nodeLifecycle: boolean): Promise<void> {
  const { pki, dataDir, kubeconfigPath } = cp;
  const clientArgs = [
    // no --authentication/authorization-kubeconfig: delegated authentication wants the
    // front-proxy CA, which this API server does not have, and only /healthz (always
    // allowed) is asked of these ports
    `--kubeconfig=${kubeconfigPath}`,
    '--bind-address=127.0.0.1',
    // one instance each: electing a leader only delays start-up by a lease period
    '--leader-elect=false',
  ];
  await mkdir(join(dataDir, 'kcm'), { recursive: true });
  const kcm = cp.start('kube-controller-manager', [
    ...clientArgs,
    `--secure-port=${kcmPort}`,
    `--cert-dir=${join(dataDir, 'kcm')}`,
    '--use-service-account-credentials=false',
    `--service-account-private-key-file=${pki.serviceAccount.privateKey}`,
    `--root-ca-file=${pki.ca.cert}`,
    `--cluster-signing-cert-file=${pki.ca.cert}`,
    `--cluster-signing-key-file=${pki.ca.key}`,
    // Simulated nodes here have no kubelet posting heartbeats, so node lifecycle would
    // taint them unreachable and evict their pods (a real node needs it: see nodeLifecycle);
    // node IPAM needs a cluster CIDR to hand out. (The cloud controllers left
    // kube-controller-manager and need no switch.)
    `--controllers=*,${nodeLifecycle ? '' : '-node-lifecycle-controller,'}-node-ipam-controller`,
  ]);
  const scheduler = cp.start('kube-scheduler', [
    ...clientArgs,
    `--secure-port=${schedulerPort}`,
    `--cert-dir=${join(dataDir, 'scheduler')}`,
  ]);
  const healthz = (port: number) => httpsGet(`https://127.0.0.1:${port}/healthz?verbose`, {});
  await Promise.all([
    // kcm answers ok before its controllers are built, and exits if the API server goes
    // away during that build; the per-controller checks appear once it is done
    cp.waitReady(kcm, 'kube-controller-manager', async () => {
      const res = await healthz(kcmPort);
      return res.status === 200 && /^\[\+\]\S+-controller ok$/m.test(res.body);
    }),
    cp.waitReady(scheduler, 'kube-scheduler', async () => (await healthz(schedulerPort)).status === 200),
  ]);
}

/** The namespace of the packet-capture API's Service on a local control plane. */
const LOCAL_API_NAMESPACE = 'kube-system';
/**
 * Where the local packet-capture API keeps its data CA (apiserver/data-ca.ts): agents of a
 * local cluster, whatever namespace their Lease is in, read their trust from here.
 */
export const LOCAL_TRUST_NAMESPACE = LOCAL_API_NAMESPACE;

/**
 * The packet-capture API on the machine's address (the aggregator refuses loopback
 * endpoints), with a serving certificate of the cluster CA, behind a Service whose
 * endpoints name it, and the users' roles (packet-capture-edit, -view) from dist/.
 */
async function servePacketCaptureApi(cp: LocalControlPlane): Promise<() => Promise<void>> {
  const [{ hostAddress }, { startApiServer }, { loadRequestHeaderConfig }, { DataCredentials }, { APISERVICE_NAME }, { applyObjects, readManifests }, { createLogger }] = await Promise.all([
    import('./start.ts'),
    import('../apiserver/server.ts'),
    import('../apiserver/main.ts'),
    import('../apiserver/data-ca.ts'),
    import('../apiserver/api.ts'),
    import('../kube/apply.ts'),
    import('../kube/log.ts'),
  ]);
  const address = hostAddress();
  if (!address) throw new Error('this machine has no address but loopback; the API server refuses to aggregate an API there');
  const kc = cp.kubeConfig;
  const installed = await readManifests(join(REPO_ROOT, 'dist', 'packet-capture.k8s.yaml'));
  const isUserRole = (o: { kind?: string; metadata?: { labels?: Record<string, string> } }) =>
    o.kind === 'ClusterRole' && Object.keys(o.metadata?.labels ?? {}).some((l) => l.startsWith('rbac.authorization.k8s.io/aggregate-to-'));
  const apiService = installed.find((o) => o.kind === 'APIService');
  const service = (apiService as { spec?: { service?: { name: string } } } | undefined)?.spec?.service?.name;
  if (!apiService || !service) throw new Error('dist/ has no APIService; run npm run synth');
  const serving = await issueServingCert(cp.pki, `${service}.${LOCAL_API_NAMESPACE}.svc`, [`DNS:${service}.${LOCAL_API_NAMESPACE}.svc`]);
  const log = createLogger('apiserver', {}, await logDestination(join(cp.dataDir, 'packet-capture-api.log')));
  const data = await DataCredentials.start({ kubeConfig: kc, namespace: LOCAL_TRUST_NAMESPACE, log });
  const api = await startApiServer({
    kubeConfig: kc,
    systemNamespace: undefined,
    dataClient: () => data.current(),
    cert: await readFile(serving.cert, 'utf8'),
    key: await readFile(serving.key, 'utf8'),
    requestHeader: await loadRequestHeaderConfig(kc),
    port: 0,
    host: address,
    log,
  });
  const ports = [{ name: 'https', port: api.port, protocol: 'TCP' }];
  const meta = { name: service, namespace: LOCAL_API_NAMESPACE };
  await applyObjects(
    kc,
    [
      ...installed.filter(isUserRole),
      { apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { ports: [{ name: 'https', port: 443, targetPort: api.port }] } } as never,
      { apiVersion: 'v1', kind: 'Endpoints', metadata: meta, subsets: [{ addresses: [{ ip: address }], ports }] } as never,
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { ...meta, labels: { 'kubernetes.io/service-name': service } },
        addressType: address.includes(':') ? 'IPv6' : 'IPv4',
        endpoints: [{ addresses: [address], conditions: { ready: true } }],
        ports,
      } as never,
      {
        ...apiService,
        spec: { ...(apiService as { spec: object }).spec, service: { namespace: LOCAL_API_NAMESPACE, name: service, port: 443 }, caBundle: await readBase64(cp.pki.ca.cert) },
      } as never,
    ],
    { fieldManager: 'packet-capture-local' },
  );
  await cp.waitReady(cp.components.get('kube-apiserver')!, `APIService ${APISERVICE_NAME}`, async () => {
    const got = await kubeRequest<{ status?: { conditions?: { type: string; status: string; message?: string }[] } }>(
      kc,
      'GET',
      `/apis/apiregistration.k8s.io/v1/apiservices/${APISERVICE_NAME}`,
    );
    const available = got.status?.conditions?.find((c) => c.type === 'Available');
    if (available?.status !== 'True') throw new Error(`not Available: ${available?.message ?? 'no condition yet'}`);
    return true;
  });
  return async () => {
    data.close();
    await api.close();
  };
}

const logDestination = async (path: string) => (await import('pino')).default.destination({ dest: path, sync: false });

/** The control plane's component version, e.g. "v1.34.1", as the binary reports it. */
export async function apiServerVersion(binDir: string): Promise<string> {
  const { stdout } = await run(join(binDir, 'kube-apiserver'), ['--version']);
  return stdout.trim().replace(/^Kubernetes\s+/, '');
}
