// `node --import tsx bench/api-download.ts [--mib N] [--rounds R]`: download throughput of one
// capture file straight from an agent's file server vs. through the Kubernetes API server and
// the packet-capture API (authn, SubjectAccessReview, proxy), same file, same run. Prints MB/s
// (10^6 bytes per second) per path, median of the rounds; asserts nothing.

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { subresourcePath } from '../apiserver/api.ts';
import { makeSessionDir } from '../agent/files.ts';
import { agentLeaseName } from '../agent/lease.ts';
import { DATA_CERT_ANNOTATION } from '../agent/serve.ts';
import { agentGet } from '../apiserver/agents.ts';
import { DataCredentials } from '../apiserver/data-ca.ts';
import { API_VERSION, KIND, PLURAL } from '../crds/packetcapture.ts';
import { kubeRequest, kubeStream } from '../kube/http.ts';
import { LOCAL_TRUST_NAMESPACE, startControlPlane } from '../local/control-plane.ts';
import { serveCaptureFiles } from '../local/files-agent.ts';
import { createNamespace, installCrds } from './harness.ts';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, rounds: { type: 'string', default: '5' } } });
const bytes = Number(values.mib) * 1024 * 1024;
const rounds = Number(values.rounds);
const POD_UID = '5d1c0b7e-0000-4000-8000-000000000001';
const SESSION = 'g1-bench';
const FILE = 'capture-1.pcapng';
const NS = 'bench-download';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function drain(body: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of body) n += chunk.length;
  return n;
}


async function timed(what: string, get: () => Promise<number>): Promise<number> {
  const t0 = performance.now();
  const got = await get();
  if (got !== bytes) throw new Error(`${what}: got ${got} of ${bytes} bytes`);
  return bytes / 1e6 / ((performance.now() - t0) / 1000);
}

const cp = await startControlPlane({ controllers: true, packetCaptureApi: true });
const dataDir = await mkdtemp(join(tmpdir(), 'bench-download-'));
try {
  const kc = cp.kubeConfig;
  await installCrds(kc);
  await createNamespace(kc, NS);
  const capture = await kubeRequest<{ metadata: { uid: string } }>(kc, 'POST', `/apis/${API_VERSION}/namespaces/${NS}/${PLURAL}`, {
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'web' }, spec: { target: { podName: 'web-0' } } },
  });
  const dir = join(dataDir, NS, 'web', POD_UID, SESSION);
  await makeSessionDir(dir, { captureUID: capture.metadata.uid, generation: 1, podUID: POD_UID, podName: 'web-0' });
  await writeFile(join(dir, FILE), randomBytes(bytes));
  const log = pino({ level: 'silent' });
  const agent = await serveCaptureFiles(kc, { dataDir, leaseNamespace: NS, node: 'bench-node', log });
  const agentUrl = agent.url;
  // straight from the agent: with the API component's own credentials (mutual TLS), as it connects
  const credentials = await DataCredentials.start({ kubeConfig: kc, namespace: LOCAL_TRUST_NAMESPACE, log });
  const pinned = (await kubeRequest<{ metadata: { annotations: Record<string, string> } }>(kc, 'GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${agentLeaseName('bench-node')}`)).metadata.annotations[DATA_CERT_ANNOTATION]!;
  const direct = async (path: string) => drain(await agentGet({ node: 'bench-node', url: agentUrl, cert: pinned }, path, () => credentials.current()));
  await kubeRequest(kc, 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
    body: { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'erin-edit' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' }, subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'erin' }] },
  });
  const erin = await cp.mintKubeconfig({ user: 'erin' });
  const path = subresourcePath(NS, 'web', 'files', POD_UID, SESSION, FILE);
  const viaApi = async () => drain((await kubeStream(erin, path)).body as unknown as AsyncIterable<Uint8Array>);
  // the first through the API waits for aggregation of edit; neither path's first round is counted
  for (let i = 0; ; i++) {
    try {
      await viaApi();
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await direct(`/files/${NS}/web/${POD_UID}/${SESSION}/${FILE}`);
  const straight: number[] = [];
  const through: number[] = [];
  for (let i = 0; i < rounds; i++) {
    straight.push(await timed('straight', () => direct(`/files/${NS}/web/${POD_UID}/${SESSION}/${FILE}`)));
    through.push(await timed('through the API', viaApi));
  }
  console.log(`file ${values.mib} MiB, ${rounds} rounds (median MB/s, min-max)`);
  console.log(`straight from the agent:                ${median(straight).toFixed(0)} MB/s (${Math.min(...straight).toFixed(0)}-${Math.max(...straight).toFixed(0)})`);
  console.log(`kube-apiserver -> packet-capture API -> agent: ${median(through).toFixed(0)} MB/s (${Math.min(...through).toFixed(0)}-${Math.max(...through).toFixed(0)})`);
  credentials.close();
  await agent.close();
} finally {
  await cp.stop();
  await rm(dataDir, { recursive: true, force: true });
}
