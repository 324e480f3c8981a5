// Captures are private to their namespace: the packet-capture API (apiserver/), which the
// shared control plane serves and registers as its APIService (local/control-plane.ts), behind
// the real API server, which authenticates the user and forwards the identity; the API
// authorizes each request in the capture's namespace and reads the files from a real agent
// data port (agent/data-server.ts, mutual TLS) that announces itself on its presence Lease.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { API_GROUP, API_VERSION, APISERVICE_NAME, subresourcePath } from '../../apiserver/api.ts';
import { makeSessionDir } from '../../agent/files.ts';
import { API_VERSION as PC_API_VERSION, KIND, PLURAL } from '../../crds/packetcapture.ts';
import { serveCaptureFiles } from '../../local/files-agent.ts';
import { KubeError, kubeRequest, kubeStream } from '../../kube/http.ts';
import { cluster, controlPlaneAvailable, installCrds, useNamespace } from '../support/cluster.ts';

const run = promisify(execFile);
const WAIT = { timeout: 60_000, interval: 250 };
const POD_UID = '0b7d3c1e-5a9f-4e61-8c2d-7f4e9a1b2c3d';
const SESSION = 'g1-0b7d3c1e-tenancy';
const FILE = 'capture-1.pcapng';

const statusOf = (err: unknown): number | undefined => (err instanceof KubeError ? err.statusCode : undefined);

describe.runIf(controlPlaneAvailable)('captures are private to their namespace', () => {
  const a = useNamespace('tenancy-a');
  const b = useNamespace('tenancy-b');
  const system = useNamespace('tenancy-system');
  let dataDir = '';
  let agent: Awaited<ReturnType<typeof serveCaptureFiles>> | undefined;
  let erin: KubeConfig;
  let victor: KubeConfig;
  const payload = randomBytes(3 * 1024 * 1024 + 17);
  const admin = () => cluster().kubeConfig;

  const bind = (namespace: string, clusterRole: string, user: string, kind: 'User' | 'Group' = 'User') =>
    kubeRequest(admin(), 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}/rolebindings`, {
      body: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: `${user}-${clusterRole}` },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind, name: user }],
      },
    });

  async function writeCapture(namespace: string): Promise<string> {
    const capture = await kubeRequest<{ metadata: { uid: string } }>(admin(), 'POST', `/apis/${PC_API_VERSION}/namespaces/${namespace}/${PLURAL}`, {
      body: { apiVersion: PC_API_VERSION, kind: KIND, metadata: { name: 'web' }, spec: { target: { podName: 'web-0' } } },
    });
    const dir = join(dataDir, namespace, 'web', POD_UID, SESSION);
    await makeSessionDir(dir, { captureUID: capture.metadata.uid, generation: 1, podUID: POD_UID, podName: 'web-0' });
    await writeFile(join(dir, FILE), payload);
    return capture.metadata.uid;
  }

  beforeAll(async () => {
    const kc = admin();
    await installCrds(kc);
    dataDir = await mkdtemp(join(tmpdir(), 'tenancy-data-'));
    await Promise.all([writeCapture(a.name), writeCapture(b.name)]);
    agent = await serveCaptureFiles(kc, { dataDir, leaseNamespace: system.name, node: `${system.name}-node`, log: pino({ level: 'silent' }) });
    await Promise.all([bind(a.name, 'edit', 'erin'), bind(a.name, 'view', 'victor'), bind(a.name, 'edit', `${a.name}-editors`, 'Group')]);
    [erin, victor] = await Promise.all([cluster().mintKubeconfig({ user: 'erin' }), cluster().mintKubeconfig({ user: 'victor' })]);
  });

  afterAll(async () => {
    await agent?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  /** Where the API's Service sends the aggregator: the address of the API itself. */
  async function apiAddress(): Promise<{ host: string; port: number }> {
    const apiService = await kubeRequest<{ spec: { service: { namespace: string; name: string } } }>(admin(), 'GET', `/apis/apiregistration.k8s.io/v1/apiservices/${APISERVICE_NAME}`);
    const { namespace, name } = apiService.spec.service;
    const endpoints = await kubeRequest<{ subsets: { addresses: { ip: string }[]; ports: { port: number }[] }[] }>(admin(), 'GET', `/api/v1/namespaces/${namespace}/endpoints/${name}`);
    return { host: endpoints.subsets[0]!.addresses[0]!.ip, port: endpoints.subsets[0]!.ports[0]!.port };
  }

  const listing = (kc: KubeConfig, namespace: string) => kubeRequest<{ nodes: { node: string; pods: { podUID: string; sessions: { id: string; files: { name: string; size: number }[] }[] }[] }[] }>(kc, 'GET', subresourcePath(namespace, 'web', 'files'));
  const download = async (kc: KubeConfig, namespace: string, range?: string) => {
    const res = await kubeStream(kc, subresourcePath(namespace, 'web', 'files', POD_UID, SESSION, FILE), { headers: range ? { range } : {} });
    return { status: res.status, headers: res.headers, body: Buffer.from(await new Response(res.body).arrayBuffer()) };
  };

  it('discovery lists the group, its subresources, and kubectl api-resources shows it', async () => {
    const resources = await kubeRequest<{ resources: { name: string; verbs: string[] }[] }>(admin(), 'GET', `/apis/${API_GROUP}/${API_VERSION}`);
    expect(resources.resources).toContainEqual(expect.objectContaining({ name: `${PLURAL}/files`, verbs: ['get'] }));
    const kubectl = join(cluster().info.binDir, 'kubectl');
    const { stdout } = await run(kubectl, ['--kubeconfig', cluster().info.kubeconfigPath, 'api-resources', `--api-group=${API_GROUP}`, '-o', 'name']);
    expect(stdout.split('\n')).toContain(`${PLURAL}.${API_GROUP}`);
    // the PacketCapture objects are still the CRD's
    const got = await run(kubectl, ['--kubeconfig', cluster().info.kubeconfigPath, 'get', PLURAL, '-n', a.name, '-o', 'name']);
    expect(got.stdout.trim()).toBe(`packetcapture.packetcapture.dev/web`);
  });

  it("an editor of namespace a lists a's capture files and downloads them byte for byte", async () => {
    const list = await vi.waitFor(() => listing(erin, a.name), WAIT);
    expect(list.nodes).toEqual([{ node: `${system.name}-node`, pods: [expect.objectContaining({ podUID: POD_UID, sessions: [expect.objectContaining({ id: SESSION, files: [{ name: FILE, size: payload.length }] })] })] }]);
    const whole = await download(erin, a.name);
    expect(whole.status).toBe(200);
    expect(whole.body.equals(payload)).toBe(true);
  });

  it('a member of a group bound to edit reads the files too, whatever other groups it is in', async () => {
    // every group reaches the API as its own X-Remote-Group line
    const gabe = await cluster().mintKubeconfig({ user: 'gabe', groups: ['some-team', `${a.name}-editors`, 'another-team'] });
    const list = await vi.waitFor(() => listing(gabe, a.name), WAIT);
    expect(list.nodes).toHaveLength(1);
  });

  it('a download cut off is resumed with Range where it stopped', async () => {
    const cut = 1_000_003;
    const rest = await download(erin, a.name, `bytes=${cut}-`);
    expect(rest.status).toBe(206);
    expect(rest.headers.get('content-range')).toBe(`bytes ${cut}-${payload.length - 1}/${payload.length}`);
    expect(Buffer.concat([payload.subarray(0, cut), rest.body]).equals(payload)).toBe(true);
    await expect(download(erin, a.name, `bytes=${payload.length}-`)).rejects.toSatisfy((err) => statusOf(err) === 416);
  });

  it("the same editor is forbidden b's capture, listing and file, with a Forbidden Status", async () => {
    await expect(listing(erin, b.name)).rejects.toSatisfy((err) => statusOf(err) === 403 && (err as KubeError).reason === 'Forbidden');
    await expect(download(erin, b.name)).rejects.toSatisfy((err) => statusOf(err) === 403);
  });

  it('a viewer of namespace a reads the capture but not its files or its stream', async () => {
    await vi.waitFor(() => kubeRequest(victor, 'GET', `/apis/${PC_API_VERSION}/namespaces/${a.name}/${PLURAL}/web`), WAIT);
    await expect(listing(victor, a.name)).rejects.toSatisfy((err) => statusOf(err) === 403);
    await expect(download(victor, a.name)).rejects.toSatisfy((err) => statusOf(err) === 403);
    await expect(kubeStream(victor, subresourcePath(a.name, 'web', 'stream'))).rejects.toSatisfy((err) => statusOf(err) === 403);
  });

  it("an editor opens a's live stream, a pcapng section, and is forbidden b's", async () => {
    const abort = new AbortController();
    const res = await kubeStream(erin, subresourcePath(a.name, 'web', 'stream'), { signal: abort.signal });
    expect(res.headers.get('content-type')).toBe('application/x-pcapng');
    const first = await res.body.getReader().read();
    abort.abort();
    expect(Buffer.from(first.value!).readUInt32LE(0)).toBe(0x0a0d0d0a);
    await expect(kubeStream(erin, subresourcePath(b.name, 'web', 'stream'))).rejects.toSatisfy((err) => statusOf(err) === 403);
  });

  it('an unauthenticated request gets 401, through the API server and straight at the API', async () => {
    const anonymous = await cluster().mintKubeconfig({ user: 'nobody' });
    anonymous.users[0] = { name: anonymous.users[0]!.name };
    await expect(listing(anonymous, a.name)).rejects.toSatisfy((err) => statusOf(err) === 401 || statusOf(err) === 403);
    // straight at the API with forged identity headers but no front-proxy certificate
    const { host, port } = await apiAddress();
    const direct = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host, port, path: subresourcePath(a.name, 'web', 'files'), rejectUnauthorized: false, headers: { 'x-remote-user': 'erin', 'x-remote-group': 'system:masters' } },
        (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(direct.status).toBe(401);
    expect(JSON.parse(direct.body)).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
  });
});
