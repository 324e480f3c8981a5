// `npm start` as a user runs it on a fresh machine: no cluster configured, a child process
// that prints one ready line, a PacketCapture applied with the kubeconfig it wrote, files
// fetched with kubectl-pcap and read by tshark, and after Ctrl-C nothing left behind.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { DATA_URL_ANNOTATION } from '../../agent/serve.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import { kubeRequest } from '../../kube/http.ts';
import { checkFile, readPcap } from '../../local/demo.ts';
import { complete, HOST_FABRIC_ADDRESS, HOST_LINK, ourNetnsNames, run as runCommand } from '../../local/fabric.ts';
import { sandboxNames } from '../../local/node.ts';
import { hostAddress, LOCAL_LOG_FILE } from '../../local/start.ts';
import { cluster } from '../support/cluster.ts';
import { agentE2eAvailable, tcpdumpsOf } from './support/agent-harness.ts';

const REPO = resolve(import.meta.dirname, '../..');
const KUBECONFIG = join(REPO, '.local', 'kubeconfig');
// kubectl on PATH, or on a fresh machine the one built with the control plane
const READY = /^packet-capture local cluster ready: (?:\S*\/)?kubectl --kubeconfig (\S+) get pcap -A$/m;
const LONG = { timeout: 240_000, interval: 200 };
const WAIT = { timeout: 90_000, interval: 200 };

interface Child {
  process: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A command in its own process group, as a terminal runs it (Ctrl-C signals the whole group). */
function start(command: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(command, args, { cwd: REPO, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const run: Child = { process: child, stdout: '', stderr: '', exit: undefined! };
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (run.stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (run.stderr += c));
  run.exit = new Promise((done) => child.on('close', (code, signal) => done({ code, signal })));
  return run;
}

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

const portOpen = (host: string, port: number): Promise<boolean> =>
  new Promise((done) => {
    const socket = connect({ host, port, timeout: 2_000 });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
    socket.once('timeout', () => {
      socket.destroy();
      done(false);
    });
  });

/** `ip route get`'s first line: the device and source this machine would send to `ip` from. */
const routeOf = async (ip: string): Promise<string> => (await runCommand('ip', ['route', 'get', ip])).split('\n')[0]!;

/** Cgroup directories anywhere under the hierarchy whose name carries the pod UID (either form). */
async function cgroupsOf(uid: string, dir = '/sys/fs/cgroup', depth = 0): Promise<string[]> {
  if (depth > 6) return [];
  const forms = [uid, uid.replaceAll('-', '_')];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const found: string[] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const path = join(dir, e.name);
    if (forms.some((f) => e.name.includes(f))) found.push(path);
    else if (/kubepods|kubelet|besteffort|burstable|^pids$/.test(e.name) || depth === 0) found.push(...(await cgroupsOf(uid, path, depth + 1)));
  }
  return found;
}

describe.runIf(agentE2eAvailable)('npm start on a machine with no cluster configured', () => {
  let home = '';
  let dataDir = '';
  let fetchDir = '';
  let env: NodeJS.ProcessEnv = {};
  const children: Child[] = [];

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), 'local-home-'));
    dataDir = await mkdtemp(join(tmpdir(), 'local-data-'));
    fetchDir = await mkdtemp(join(tmpdir(), 'local-fetch-'));
    env = { ...process.env, HOME: home, KUBEBUILDER_ASSETS: cluster().info.binDir, npm_config_update_notifier: 'false' };
    // a fresh machine: nothing points at a cluster
    delete env.KUBECONFIG;
    delete env.KUBERNETES_SERVICE_HOST;
  });

  afterAll(async () => {
    for (const child of children) if (child.process.pid && groupAlive(child.process.pid)) process.kill(-child.process.pid, 'SIGKILL');
    await Promise.all([home, dataDir, fetchDir, join(REPO, LOCAL_LOG_FILE)].map((d) => rm(d, { recursive: true, force: true })));
  });

  it('with a cluster configured, names the context it would use and starts nothing', async () => {
    const file = join(home, 'elsewhere.yaml');
    await writeFile(
      file,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'prod', cluster: { server: 'https://prod.example.invalid:6443' } }],
        users: [{ name: 'me', user: { token: 'x' } }],
        contexts: [{ name: 'prod-admin', context: { cluster: 'prod', user: 'me' } }],
        'current-context': 'prod-admin',
      }),
    );
    const run = start('npm', ['start'], { ...env, KUBECONFIG: file });
    children.push(run);
    expect(await run.exit).toEqual({ code: 1, signal: null });
    expect(run.stderr).toContain(`a cluster is configured (KUBECONFIG=${file}, context "prod-admin", server https://prod.example.invalid:6443)`);
    expect(run.stderr).toContain('npm start -- --kubeconfig <file>');
    expect(run.stderr).toContain('npm start -- --local');
    expect(run.stdout).not.toMatch(READY);
  });

  it('without root, says that it needs root', async () => {
    const node = join(REPO, 'node_modules', 'node', 'bin', 'node');
    const tsx = join(REPO, 'node_modules', 'tsx', 'dist', 'cli.mjs');
    const run = start('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', node, tsx, 'cli/packet-capture.ts', 'start'], { ...env, HOME: '/tmp' });
    children.push(run);
    expect(await run.exit).toEqual({ code: 1, signal: null });
    expect(run.stderr).toContain('packet-capture: the local cluster needs root');
  });

  it('runs the local cluster until Ctrl-C: a capture applied with its kubeconfig is fetched and read back, then nothing is left', async () => {
    expect(existsSync(KUBECONFIG), `${KUBECONFIG} exists: is another npm start running?`).toBe(false);
    const run = start('npm', ['start', '--', '--data-dir', dataDir], env);
    children.push(run);
    const pgid = run.process.pid!;
    await vi.waitFor(() => {
      if (run.process.exitCode !== null) throw new Error(`npm start exited: ${run.stderr}`);
      expect(run.stdout).toMatch(READY);
    }, LONG);
    expect(READY.exec(run.stdout)![1]).toBe('.local/kubeconfig');
    // progress went to stderr while it started
    expect(run.stderr).toContain('packet-capture: starting the control plane');
    const cpDir = /\(its files: (\S+)\)/.exec(run.stderr)![1]!;

    const kubectl = join(cluster().info.binDir, 'kubectl');
    const applied = start(kubectl, ['--kubeconfig', '.local/kubeconfig', 'apply', '-f', 'examples/nginx.yaml', '-f', 'examples/packetcapture.yaml'], env);
    expect((await applied.exit).code, applied.stderr).toBe(0);

    const kc = new KubeConfig();
    kc.loadFromFile(KUBECONFIG);
    const pod = await vi.waitFor(async () => {
      const p = await kubeRequest<{ metadata: { uid: string }; status?: { phase?: string; podIP?: string } }>(kc, 'GET', '/api/v1/namespaces/demo/pods/web-0');
      if (p.status?.phase !== 'Running' || !p.status.podIP) throw new Error('web-0 is not running yet');
      return { uid: p.metadata.uid, ip: p.status.podIP };
    }, WAIT);
    const sessionOf = async () =>
      (await kubeRequest<PacketCapture>(kc, 'GET', '/apis/packetcapture.dev/v1alpha1/namespaces/demo/packetcaptures/web-http')).status?.sessions?.find(
        (s) => s.podUID === pod.uid,
      );
    await vi.waitFor(async () => expect((await sessionOf())?.state).toBe('Running'), WAIT);

    // every address the cluster handed out stays on this machine: pods and Services over the fabric's host link
    const pods = await kubeRequest<{ items: { status?: { podIPs?: { ip: string }[] } }[] }>(kc, 'GET', '/api/v1/pods');
    const podIPs = pods.items.flatMap((p) => p.status?.podIPs ?? []).map((a) => a.ip);
    expect(podIPs).toContain(pod.ip);
    for (const ip of podIPs) expect(await routeOf(ip)).toMatch(new RegExp(`^${ip.replaceAll('.', '\\.')} dev ${HOST_LINK} src ${HOST_FABRIC_ADDRESS} `));
    const service = await kubeRequest<{ spec: { clusterIP: string } }>(kc, 'GET', '/api/v1/namespaces/default/services/kubernetes');
    // a real node's bridge (pcrn0) carries Services before the fabric when one runs
    expect(await routeOf(service.spec.clusterIP)).toMatch(new RegExp(`dev (${HOST_LINK}|pcrn0) `));
    expect(await routeOf(service.spec.clusterIP)).not.toContain(' via ');

    // the README's next step: curl from this machine gets the pod's own answer, and the capture holds it
    for (let i = 0; i < 10; i++) {
      const { code, stdout, stderr } = await complete('curl', ['-sS', '--max-time', '5', `http://${pod.ip}/`]);
      expect(code, stderr).toBe(0);
      expect(JSON.parse(stdout)).toEqual({ namespace: 'demo', name: 'web-0', uid: pod.uid });
    }
    await vi.waitFor(async () => expect((await sessionOf())?.packets ?? 0).toBeGreaterThan(0), WAIT);

    const fetched = start(process.execPath, [join(REPO, 'bin', 'kubectl-pcap.mjs'), '--kubeconfig', '.local/kubeconfig', '-n', 'demo', 'fetch', 'web-http', '-o', fetchDir], env);
    expect((await fetched.exit).code, fetched.stderr).toBe(0);
    const sessionDirs = await readdir(join(fetchDir, pod.uid));
    expect(sessionDirs).toHaveLength(1);
    const files = await readdir(join(fetchDir, pod.uid, sessionDirs[0]!));
    expect(files.length).toBeGreaterThan(0);
    const checks = await Promise.all(
      files.map(async (f) => checkFile(await readPcap(join(fetchDir, pod.uid, sessionDirs[0]!, f)), { uid: pod.uid, name: 'web-0', node: '', ip: pod.ip }, [HOST_FABRIC_ADDRESS])),
    );
    expect(checks.reduce((n, c) => n + c.packets, 0)).toBeGreaterThan(0);
    expect(checks.map((c) => c.foreign)).toEqual(checks.map(() => 0));
    expect(checks.reduce((n, c) => n + (c.answeredBy[pod.uid] ?? 0), 0)).toBe(10);

    // what must be gone afterwards: its ports, the pod's namespace and cgroups, every process
    const apiPort = Number(new URL(kc.getCurrentCluster()!.server).port);
    const leases = await kubeRequest<{ items: { metadata: { annotations?: Record<string, string> } }[] }>(
      kc,
      'GET',
      '/apis/coordination.k8s.io/v1/namespaces/packet-capture-system/leases',
    );
    const agentPorts = leases.items.map((l) => Number(/:(\d+)$/.exec(l.metadata.annotations?.[DATA_URL_ANNOTATION] ?? '')?.[1]));
    expect(agentPorts).toHaveLength(2);
    expect(await portOpen('127.0.0.1', apiPort)).toBe(true);
    expect(await cgroupsOf(pod.uid)).not.toEqual([]);
    const netns = sandboxNames(pod.uid).netns;
    expect(ourNetnsNames()).toContain(netns);
    expect(await tcpdumpsOf(dataDir)).not.toEqual([]);

    process.kill(-pgid, 'SIGINT');
    // npm ends itself with the signal its script got, as a shell expects of Ctrl-C
    expect([{ code: 0, signal: null }, { code: null, signal: 'SIGINT' }]).toContainEqual(await run.exit);
    expect(run.stderr).toContain('packet-capture: stopped; every network namespace, cgroup and process it made is gone');
    expect(run.stderr).not.toContain('second signal');

    expect(groupAlive(pgid)).toBe(false);
    expect(await tcpdumpsOf(dataDir)).toEqual([]);
    expect(ourNetnsNames()).not.toContain(netns);
    expect(await cgroupsOf(pod.uid)).toEqual([]);
    expect(await portOpen('127.0.0.1', apiPort)).toBe(false);
    for (const port of agentPorts) expect(await portOpen(hostAddress()!, port)).toBe(false);
    expect(existsSync(cpDir)).toBe(false);
    expect(existsSync(KUBECONFIG)).toBe(false);
  });
});
