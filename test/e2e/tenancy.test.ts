// Captures are private to their namespace, end to end: the local cluster's nodes, agents and
// real tcpdumps, the packet-capture API behind the real API server, and the plugin as its own
// process, run as a namespace editor. The live stream follows web-0 across a recreation onto
// another node, each instance its own interface, and tshark reads the whole stream.

import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { subresourcePath } from '../../apiserver/api.ts';
import { kubeRequest, kubeStream } from '../../kube/http.ts';
import { HOST_FABRIC_ADDRESS } from '../../local/fabric.ts';
import { createHost, exec, tcpRequests, type Host } from '../../local/netns-host.ts';
import { startLocalCluster, type LocalCluster } from '../../local/start.ts';
import { cluster, useNamespace } from '../support/cluster.ts';
import { agentE2eAvailable, createCapture, createPod, deleteCapture, deletePod, randomHostAddress, waitSession, WAIT } from './support/agent-harness.ts';

const run = promisify(execFile);
const PCAPNG_MAGIC = '0a0d0d0a';
// Runs in a pod's network namespace: one GET per URL, TLS without a client certificate (and
// without checking the server's, to see whatever it would hand out); prints status and the
// first bytes of each answer, or the error.
const DIRECT_GETS = `
const get = (url) => new Promise((resolve) => {
  const mod = require(url.startsWith('https:') ? 'node:https' : 'node:http');
  const req = mod.get(url, { rejectUnauthorized: false, timeout: 5000 }, (res) => {
    const done = (head) => { res.destroy(); resolve({ url, status: res.statusCode, head }); };
    res.once('data', (chunk) => done(chunk.subarray(0, 4).toString('hex')));
    res.once('end', () => done(''));
    setTimeout(() => done(''), 2000);
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (err) => resolve({ url, error: err.code || err.message }));
});
(async () => {
  const out = [];
  for (const url of JSON.parse(process.argv[1])) out.push(await get(url));
  console.log(JSON.stringify(out));
})();
`;
const REPO = resolve(import.meta.dirname, '../..');
const PLUGIN = join(REPO, 'bin', 'kubectl-pcap.mjs');
// node subnets 10.244.71.0/24 and .72.0/24 are this file's
const SUBNET = 71;

describe.runIf(agentE2eAvailable)('tenancy on the local cluster', () => {
  const a = useNamespace('tenancy-e2e-a');
  const b = useNamespace('tenancy-e2e-b');
  let local: LocalCluster | undefined;
  let host: Host | undefined;
  let dir = '';
  let erinConfig = '';
  const kc = () => cluster().kubeConfig;
  const nodes = () => local!.nodes.map((n) => n.name);

  const plugin = (args: string[]) =>
    run(process.execPath, [PLUGIN, '--kubeconfig', erinConfig, ...args], { cwd: REPO }).then(
      (r) => ({ code: 0, ...r }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tenancy-e2e-'));
    local = await startLocalCluster({
      kubeConfig: kc(),
      nodes: 2,
      dataDir: join(dir, 'data'),
      systemNamespace: a.name,
      subnetBase: SUBNET,
      nodeNamePrefix: `${a.name}-n`,
      watchNamespace: a.name,
      logDestination: pino.destination({ dest: join(dir, 'components.log'), sync: true }),
    });
    host = await createHost(`ten-${a.name.slice(-6)}`, randomHostAddress());
    await kubeRequest(kc(), 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${a.name}/rolebindings`, {
      body: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'erin-edit' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'erin' }],
      },
    });
    const erin = await cluster().mintKubeconfig({ user: 'erin' });
    erinConfig = join(dir, 'erin.kubeconfig');
    await writeFile(erinConfig, erin.exportConfig(), { mode: 0o600 });
  }, 180_000);

  afterAll(async () => {
    await host?.destroy();
    await local?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('an editor streams a capture across a recreation of its pod onto another node, each instance an interface', async () => {
    const first = await createPod(kc(), a.name, 'web-0', nodes()[0]!);
    await createCapture(kc(), a.name, 'web', { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 } });
    await waitSession(kc(), a.name, 'web', (s) => s.podUID === first.uid && s.state === 'Running', 'running on the first instance');
    // also one in namespace b, which erin may not read
    await createCapture(kc(), b.name, 'web', { target: { podName: 'web-0' } });

    const out = join(dir, 'stream.pcapng');
    const stream = spawn(process.execPath, [PLUGIN, '--kubeconfig', erinConfig, '-n', a.name, 'stream', 'web', '-w', out], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    stream.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((done) => stream.on('close', done));
    try {
      const size = async () => (await stat(out).catch(() => ({ size: 0 }))).size;
      // the section header, then the first instance's interface
      await vi.waitFor(async () => expect(await size()).toBeGreaterThan(100), WAIT);
      expect((await tcpRequests(host!, first.ip, 80, 3)).ok).toBe(3);
      const afterFirst = await vi.waitFor(async () => {
        const n = await size();
        expect(n).toBeGreaterThan(400);
        return n;
      }, WAIT);

      await deletePod(kc(), a.name, 'web-0', first.uid);
      const second = await createPod(kc(), a.name, 'web-0', nodes()[1]!);
      await waitSession(kc(), a.name, 'web', (s) => s.podUID === second.uid && s.state === 'Running', 'running on the second instance');
      expect((await tcpRequests(host!, second.ip, 80, 3)).ok).toBe(3);
      await vi.waitFor(async () => expect(await size()).toBeGreaterThan(afterFirst + 400), WAIT);

      await deleteCapture(kc(), a.name, 'web');
      expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 30_000))]), stderr).toBe(0);
      const { stdout } = await run('tshark', ['-r', out, '-T', 'fields', '-e', 'frame.interface_name']);
      const names = new Set(stdout.trim().split('\n'));
      expect(names).toEqual(new Set([`web-0/${first.uid}`, `web-0/${second.uid}`]));
    } finally {
      stream.kill('SIGINT');
      await exited;
    }
  }, 240_000);

  it("from a pod's network, the agents' ports give no capture data to anyone but the packet-capture API, on any route", async () => {
    const pod = await createPod(kc(), a.name, 'direct-0', nodes()[0]!);
    await createCapture(kc(), a.name, 'direct', { target: { podName: 'direct-0' }, filter: { protocol: 'TCP', port: 80 } });
    await waitSession(kc(), a.name, 'direct', (s) => s.podUID === pod.uid && s.state === 'Running', 'running');
    expect((await tcpRequests(host!, pod.ip, 80, 5)).ok).toBe(5);
    // what the API serves an editor: the routes below are real, with data behind them
    const erin = await cluster().mintKubeconfig({ user: 'erin' });
    const listing = await vi.waitFor(async () => {
      const got = await kubeRequest<{ nodes: { pods: { podUID: string; sessions: { id: string; files: { name: string; size: number }[] }[] }[] }[] }>(erin, 'GET', subresourcePath(a.name, 'direct', 'files'));
      const file = got.nodes[0]?.pods[0]?.sessions[0]?.files.find((f) => f.size > 200);
      expect(file).toBeDefined();
      return { session: got.nodes[0]!.pods[0]!.sessions[0]!.id, file: file!.name };
    }, WAIT);
    const viaApi = await kubeStream(erin, subresourcePath(a.name, 'direct', 'files', pod.uid, listing.session, listing.file));
    expect(Buffer.from(await new Response(viaApi.body).arrayBuffer()).subarray(0, 4).toString('hex')).toBe(PCAPNG_MAGIC);

    const routes = [
      `/files/${a.name}/direct`,
      `/files/${a.name}/direct/${pod.uid}`,
      `/files/${a.name}/direct/${pod.uid}/${listing.session}`,
      `/files/${a.name}/direct/${pod.uid}/${listing.session}/${listing.file}`,
      `/stream/${a.name}/direct`,
    ];
    // the agents listen on every address of the machine, so a pod reaches them at the machine's
    const targets = local!.agents.flatMap((agent) => [
      ...routes.flatMap((route) => [`https://${HOST_FABRIC_ADDRESS}:${agent.dataPort}${route}`, `http://${HOST_FABRIC_ADDRESS}:${agent.dataPort}${route}`]),
      ...routes.map((route) => `http://${HOST_FABRIC_ADDRESS}:${agent.port}${route}`),
      `http://${HOST_FABRIC_ADDRESS}:${agent.port}/healthz`,
    ]);
    const answers = JSON.parse(await exec(host!, [process.execPath, '-e', DIRECT_GETS, JSON.stringify(targets)])) as { url: string; status?: number; error?: string; head?: string }[];
    expect(answers).toHaveLength(targets.length);
    const agentPorts = local!.agents.map((agent) => agent.port);
    for (const answer of answers) {
      const { port, pathname } = new URL(answer.url);
      if (pathname === '/healthz') expect(answer, 'the ops port is reachable from the pod: the refusals below are not a routing failure').toMatchObject({ status: 200 });
      else if (agentPorts.includes(Number(port))) expect(answer, 'the ops port serves no data').toMatchObject({ status: 404 });
      // the data port: no certificate, no TLS session (and plain HTTP is no TLS at all)
      else expect(answer.status, JSON.stringify(answer)).toBeUndefined();
      expect(answer.head).not.toBe(PCAPNG_MAGIC);
    }
    await deleteCapture(kc(), a.name, 'direct');
  }, 120_000);

  it("the same editor is forbidden b's capture through the plugin, fetch and stream alike", async () => {
    for (const command of ['fetch', 'stream']) {
      const res = await plugin(['-n', b.name, command, 'web', ...(command === 'fetch' ? ['-o', join(dir, 'b')] : ['-w', join(dir, 'b.pcapng')])]);
      expect(res.code, `${command}: ${res.stderr}`).toBe(1);
      expect(res.stderr).toMatch(/forbidden/);
    }
  });
});

