// kubectl-pcap against the local cluster: the embedded nodes, controller and agents of
// `npm start` (startLocalCluster) on the shared control plane, the plugin as its own
// process, capture files fetched through the packet-capture API (aggregated by the API server)
// and read by tshark.

import { X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { parse, stringify } from 'yaml';
import { agentLeaseName } from '../../agent/lease.ts';
import { DATA_CERT_ANNOTATION, DATA_URL_ANNOTATION } from '../../agent/serve.ts';
import { pemCertificates } from '../../kube/certificates.ts';
import { kubeRequest } from '../../kube/http.ts';
import { checkFile, readPcap } from '../../local/demo.ts';
import { createHost, tcpRequests, type Host } from '../../local/netns-host.ts';
import { startLocalCluster, type LocalCluster } from '../../local/start.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  deletePod,
  getCapture,
  randomHostAddress,
  sessionsOnDisk,
  WAIT,
  waitSession,
  type PodInstance,
} from './support/agent-harness.ts';

const REPO = resolve(import.meta.dirname, '../..');
const PLUGIN = join(REPO, 'bin', 'kubectl-pcap.mjs');
// node subnets 10.244.61.0/24 and .62.0/24 are this file's
const SUBNET = 61;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The plugin as a user runs it: its own process, the bin launcher, any arguments. */
function plugin(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [PLUGIN, ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

describe.runIf(agentE2eAvailable)('kubectl-pcap on the local cluster', () => {
  const ns = useNamespace('pcap-plugin');
  let local: LocalCluster | undefined;
  let host: Host | undefined;
  let dataDir = '';
  let outDir = '';
  let first: PodInstance;
  let second: PodInstance;
  const kc = () => cluster().kubeConfig;
  const nodeNames = () => local!.nodes.map((n) => n.name);
  /** the global flags every call passes: the shared cluster, this file's namespace for captures and agent Leases */
  const flags = () => ['--kubeconfig', cluster().info.kubeconfigPath, '-n', ns.name, '--system-namespace', ns.name];
  const pcap = (...args: string[]) => plugin([...flags(), ...args]);

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'pcap-plugin-data-'));
    outDir = await mkdtemp(join(tmpdir(), 'pcap-plugin-out-'));
    local = await startLocalCluster({
      kubeConfig: kc(),
      nodes: 2,
      dataDir,
      systemNamespace: ns.name,
      subnetBase: SUBNET,
      nodeNamePrefix: `${ns.name}-n`,
      watchNamespace: ns.name,
      // the components' logs, for when a test here fails
      logDestination: pino.destination({ dest: join(dataDir, 'components.log'), sync: true }),
    });
    host = await createHost(`pcap-${ns.name.slice(-6)}`, randomHostAddress());
  });

  afterAll(async () => {
    await host?.destroy();
    await local?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(outDir, { recursive: true, force: true });
  });

  it('publishes each agent on its Lease with the URL and the certificate the packet-capture API reaches it by', async () => {
    for (const node of nodeNames()) {
      const lease = await kubeRequest<{ metadata: { annotations?: Record<string, string> } }>(
        kc(),
        'GET',
        `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${agentLeaseName(node)}`,
      );
      expect(lease.metadata.annotations?.[DATA_URL_ANNOTATION]).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const [cert] = pemCertificates(lease.metadata.annotations?.[DATA_CERT_ANNOTATION] ?? '');
      expect(new X509Certificate(cert!).checkIP('127.0.0.1')).toBe('127.0.0.1');
    }
  });

  it('lists a capture with its phase, current pod UID, node and packets', async () => {
    await createCapture(kc(), ns.name, 'web-http', { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 } });
    first = await createPod(kc(), ns.name, 'web-0', nodeNames()[0]!);
    await waitSession(kc(), ns.name, 'web-http', (s) => s.podUID === first.uid && s.state === 'Running', 'running for web-0');
    expect((await tcpRequests(host!, first.ip, 80, 10)).ok).toBe(10);
    await waitSession(kc(), ns.name, 'web-http', (s) => s.podUID === first.uid && (s.packets ?? 0) > 0, 'with packets');

    const run = await pcap('list');
    expect(run.code, run.stderr).toBe(0);
    const row = run.stdout.split('\n').find((l) => l.startsWith('web-http'));
    const [name, phase, uid, node, packets] = row!.split(/\s{2,}/);
    expect({ name, phase, uid, node }).toEqual({ name: 'web-http', phase: 'Capturing', uid: first.uid, node: nodeNames()[0] });
    expect(Number(packets)).toBeGreaterThan(0);

    const all = await plugin(['--kubeconfig', cluster().info.kubeconfigPath, 'list', '-A']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(new RegExp(`^NAMESPACE\\s+NAME\\s+PHASE`, 'm'));
    expect(all.stdout).toMatch(new RegExp(`^${ns.name}\\s+web-http\\s+Capturing\\s+${first.uid}`, 'm'));
  });

  it('describes targets, sessions, conditions and the recent events', async () => {
    const run = await pcap('describe', 'web-http');
    expect(run.code, run.stderr).toBe(0);
    const section = (title: string) => run.stdout.split(`\n${title}:\n`)[1]!.split(/\n[A-Z][a-z]+:\n/)[0]!;
    expect(section('Targets')).toMatch(new RegExp(`web-0\\s+${first.uid}\\s+${nodeNames()[0]}\\s+${first.ip.replaceAll('.', '\\.')}`));
    expect(section('Sessions')).toMatch(new RegExp(`${first.uid}\\s+${nodeNames()[0]}\\s+Running`));
    expect(section('Conditions')).toMatch(/^\s+Ready\s+True/m);
    expect(section('Events')).not.toContain('<none>');
    expect(section('Events')).toMatch(/Normal\s+\S+\s+packet-capture-controller/);
  });

  it('fetches the session files through the API server, and tshark reads only that instance in them', async () => {
    const run = await pcap('fetch', 'web-http', '-o', outDir);
    expect(run.code, run.stderr).toBe(0);
    const [onDisk] = await sessionsOnDisk(join(dataDir, nodeNames()[0]!), ns.name, 'web-http');
    expect(onDisk?.podUID).toBe(first.uid);
    for (const agentFile of onDisk!.files) {
      const copy = join(outDir, first.uid, onDisk!.sessionId, agentFile.split('/').at(-1)!);
      expect(run.stdout).toContain(`downloaded  ${copy}`);
      const fetched = await readFile(copy);
      // the agent's file may have grown since; what was fetched is its beginning, byte for byte
      expect(fetched.equals((await readFile(agentFile)).subarray(0, fetched.length))).toBe(true);
      const check = checkFile(await readPcap(copy), { uid: first.uid, name: 'web-0', node: nodeNames()[0]!, ip: first.ip }, [host!.ip]);
      expect(check.packets).toBeGreaterThan(0);
      expect(check.answeredBy).toEqual({ [first.uid]: 10 });
      expect(check.foreign).toBe(0);
    }
  });

  it('continues an interrupted download with a Range request and checks the size', async () => {
    await deletePod(kc(), ns.name, 'web-0', first.uid);
    second = await createPod(kc(), ns.name, 'web-0', nodeNames()[1]!);
    const ended = await waitSession(kc(), ns.name, 'web-http', (s) => s.podUID === first.uid && s.state === 'Ended', 'ended for the first web-0');
    await waitSession(kc(), ns.name, 'web-http', (s) => s.podUID === second.uid && s.state === 'Running', 'running for the second web-0');
    expect((await tcpRequests(host!, second.ip, 80, 5)).ok).toBe(5);

    const [onDisk] = await sessionsOnDisk(join(dataDir, nodeNames()[0]!), ns.name, 'web-http');
    const agentFile = onDisk!.files[0]!;
    const copy = join(outDir, first.uid, ended.id, agentFile.split('/').at(-1)!);
    const { size } = await stat(agentFile);
    await truncate(copy, Math.floor(size / 2));
    await rename(copy, `${copy}.part`);

    const run = await pcap('fetch', 'web-http', '-o', outDir, '--pod-uid', first.uid);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`resumed     ${copy}  ${size} bytes (from byte ${Math.floor(size / 2)})`);
    expect((await readFile(copy)).equals(await readFile(agentFile))).toBe(true);
    await expect(stat(`${copy}.part`)).rejects.toThrow();
    // --pod-uid kept the new instance's files out
    await expect(stat(join(outDir, second.uid))).rejects.toThrow();

    const again = await pcap('fetch', 'web-http', '-o', outDir, '--pod-uid', first.uid);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`up to date  ${copy}  ${size} bytes`);
  });

  it('watches the live status until Ctrl-C', async () => {
    // without the launcher, whose own death by SIGINT would hide the plugin's exit code; in
    // its own process group, which Ctrl-C in a terminal signals as a whole
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/kubectl-pcap.ts', ...flags(), 'watch', 'web-http'], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const exited = new Promise<number | null>((done) => child.on('close', done));
    try {
      await vi.waitFor(() => expect(out).toMatch(new RegExp(`target web-0 ${second.uid} on ${nodeNames()[1]}`)), WAIT);
      expect(out).toContain(`${ns.name}/web-http  phase Capturing`);
      // a change of status shows up without asking again
      expect((await tcpRequests(host!, second.ip, 80, 5)).ok).toBe(5);
      const packets = (await getCapture(kc(), ns.name, 'web-http')).status!.sessions!.find((s) => s.podUID === second.uid)!.packets ?? 0;
      await waitSession(kc(), ns.name, 'web-http', (s) => s.podUID === second.uid && (s.packets ?? 0) > packets, 'with more packets');
      await vi.waitFor(() => {
        const frames = out.trim().split('\n\n');
        expect(frames.length).toBeGreaterThan(1);
      }, WAIT);
    } finally {
      process.kill(-child.pid!, 'SIGINT');
    }
    expect(await exited).toBe(0);
  });

  it('says when a capture is not found, in every command', async () => {
    for (const args of [['describe', 'nope'], ['fetch', 'nope'], ['watch', 'nope']]) {
      const run = await pcap(...args);
      expect(run.code).toBe(1);
      expect(run.stderr.trim()).toBe(`kubectl-pcap: packetcapture "nope" not found in namespace "${ns.name}"`);
    }
  });

  it('says when a capture has no files yet, and why', async () => {
    await createCapture(kc(), ns.name, 'nobody', { target: { podName: 'absent-0' } });
    await vi.waitFor(async () => expect((await getCapture(kc(), ns.name, 'nobody')).status?.phase).toBe('Pending'), WAIT);
    const run = await pcap('fetch', 'nobody');
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^kubectl-pcap: no files yet: packetcapture \S+\/nobody has no capture files \(phase Pending; PodNotFound: /);
  });

  it('takes the namespace from the kubeconfig context, and refuses a context that is not there', async () => {
    const config = parse(await readFile(cluster().info.kubeconfigPath, 'utf8')) as {
      contexts: { name: string; context: Record<string, string> }[];
    };
    for (const c of config.contexts) c.context.namespace = ns.name;
    const dir = await mkdtemp(join(tmpdir(), 'pcap-kubeconfig-'));
    try {
      const file = join(dir, 'config');
      await writeFile(file, stringify(config), { mode: 0o600 });
      const run = await plugin(['list'], { ...process.env, KUBECONFIG: file });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/^web-http\s+Capturing/m);

      const wrong = await plugin(['--context', 'elsewhere', 'list'], { ...process.env, KUBECONFIG: file });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain('kubectl-pcap: context "elsewhere" is not in the kubeconfig');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs as `kubectl pcap` once kubectl-pcap is on PATH', async () => {
    const bin = await mkdtemp(join(tmpdir(), 'pcap-path-'));
    try {
      await mkdir(bin, { recursive: true });
      await symlink(PLUGIN, join(bin, 'kubectl-pcap'));
      const kubectl = join(cluster().info.binDir, 'kubectl');
      const run = await new Promise<Run>((done, fail) => {
        const child = spawn(kubectl, ['pcap', ...flags(), 'list'], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        child.on('error', fail);
        child.on('close', (code) => done({ code, stdout, stderr }));
      });
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/^web-http\s+Capturing/m);
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  });

  it('fetches only the files of the capture instance it names, not those of an earlier capture of the same name', async () => {
    const spec = { target: { podName: 'web-0' }, filter: { protocol: 'TCP' as const, port: 80 } };
    const earlier = await createCapture(kc(), ns.name, 'again', spec);
    await waitSession(kc(), ns.name, 'again', (s) => s.podUID === second.uid && s.state === 'Running', 'running for the earlier capture');
    expect((await tcpRequests(host!, second.ip, 80, 3)).ok).toBe(3);
    await waitSession(kc(), ns.name, 'again', (s) => (s.packets ?? 0) > 0, 'with packets for the earlier capture');
    await deleteCapture(kc(), ns.name, 'again');

    const later = await createCapture(kc(), ns.name, 'again', spec);
    expect(later.metadata.uid).not.toBe(earlier.metadata.uid);
    const running = await waitSession(kc(), ns.name, 'again', (s) => s.podUID === second.uid && s.state === 'Running', 'running for the later capture');
    expect((await tcpRequests(host!, second.ip, 80, 3)).ok).toBe(3);
    await waitSession(kc(), ns.name, 'again', (s) => (s.packets ?? 0) > 0, 'with packets for the later capture');
    // both captures' sessions are on the node, under the same <namespace>/<name>/<podUID>
    const onDisk = await sessionsOnDisk(join(dataDir, nodeNames()[1]!), ns.name, 'again');
    expect(onDisk.map((d) => d.sessionId)).toHaveLength(2);

    const dir = await mkdtemp(join(tmpdir(), 'pcap-again-'));
    try {
      const run = await pcap('fetch', 'again', '-o', dir);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('kubectl-pcap: 1 session(s) on the nodes were made by an earlier capture of the same name and are left out');
      expect(await readdir(join(dir, second.uid))).toEqual([running.id]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('says when the agent of a node does not answer, and when the node has no agent', async () => {
    // stopped, its Lease still names its URL until it expires: the packet-capture API finds nobody there
    await local!.agents[1]!.stop('test stops it');
    const run = await pcap('fetch', 'web-http', '-o', outDir, '--pod-uid', second.uid);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`kubectl-pcap: agent not reachable: node ${nodeNames()[1]}: `);

    await kubeRequest(kc(), 'DELETE', `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${agentLeaseName(nodeNames()[1]!)}`);
    const noLease = await pcap('fetch', 'web-http', '-o', outDir, '--pod-uid', second.uid);
    expect(noLease.code).toBe(1);
    expect(noLease.stderr).toContain(`kubectl-pcap: agent not reachable: node ${nodeNames()[1]} has no live agent that the packet-capture API can ask`);
  });
});
