// `npm run bench:real-node [-- --rounds N] [--json FILE]`: the product on a real node
// (kubelet + containerd, dist/ as shipped), timed over many rounds. Prints numbers and
// writes bench/results/real-node.md; asserts nothing. Needs root.
//
// Clocks: "delete -> new session" runs from the DELETE sent to the new instance's session
// startTime (the agent writes it right after verifying the new netns); "sandbox -> new
// session" from the SIGKILL of the pause process to the next session's startTime. Both are
// wall clocks of this one machine. Memory is VmRSS of each component's processes.

import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, KIND, PLURAL, GROUP, VERSION, type PacketCapture, type SessionStatus } from '../crds/packetcapture.ts';
import { applyObjects } from '../kube/apply.ts';
import { kubeRequest } from '../kube/http.ts';
import { startControlPlane } from '../local/control-plane.ts';
import { clientPod, startRealCluster, webStatefulSet } from '../local/real-cluster.ts';
import { pauseOf, podProcesses } from '../local/real-node.ts';
import { defer, sleep, teardownAll, waitFor } from './harness.ts';
import { summarize, type Summary } from './stats.ts';

const RESULTS = fileURLToPath(new URL('./results/real-node.md', import.meta.url));
const NS = 'bench-real';

interface Pod {
  metadata: { uid: string; name: string; deletionTimestamp?: string };
  status?: { podIP?: string; conditions?: { type: string; status: string }[] };
}

const podPath = (name: string) => `/api/v1/namespaces/${NS}/pods/${name}`;
const capturePath = (name: string) => `/apis/${GROUP}/${VERSION}/namespaces/${NS}/${PLURAL}/${name}`;

async function readyPod(kc: KubeConfig, name: string, notUID?: string): Promise<Pod> {
  return waitFor(
    `${name} Ready`,
    async () => {
      const pod = await kubeRequest<Pod>(kc, 'GET', podPath(name)).catch(() => undefined);
      const ready = pod && pod.metadata.uid !== notUID && !pod.metadata.deletionTimestamp && pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      return ready ? pod : undefined;
    },
    { timeoutMs: 120_000, everyMs: 20 },
  );
}

async function session(kc: KubeConfig, match: (s: SessionStatus) => boolean, what: string): Promise<SessionStatus> {
  return waitFor(
    what,
    async () => ((await kubeRequest<PacketCapture>(kc, 'GET', capturePath('web'))).status?.sessions ?? []).find(match),
    { timeoutMs: 120_000, everyMs: 20 },
  );
}

/** VmRSS of every process of a pod, in MB. */
async function podRssMb(uid: string): Promise<number> {
  let kb = 0;
  for (const p of await podProcesses(uid)) {
    const status = await readFile(`/proc/${p.pid}/status`, 'utf8').catch(() => '');
    kb += Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return Math.round(kb / 102.4) / 10;
}

const row = (name: string, s: Summary) => `| ${name} | ${s.n} | ${s.p50} | ${s.p90} | ${s.p99} | ${s.max} |`;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '20' }, json: { type: 'string' } } });
  const rounds = Number(values.rounds);
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (a real kubelet and containerd)');
    return 2;
  }
  const say = (m: string) => console.error(`bench real-node: ${m}`);
  const cp = await startControlPlane({ controllers: true, nodeLifecycle: true });
  defer('control plane', () => cp.stop());
  const kc = cp.kubeConfig;
  const real = await startRealCluster(cp, kc, say);
  defer('real node', () => real.stop());
  await kubeRequest(kc, 'POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } });
  await waitFor('default ServiceAccount', () => kubeRequest(kc, 'GET', `/api/v1/namespaces/${NS}/serviceaccounts/default`).catch(() => undefined));
  await applyObjects(kc, [webStatefulSet(NS), clientPod(NS)]);
  await readyPod(kc, 'client');
  let pod = await readyPod(kc, 'web-0');
  await kubeRequest(kc, 'POST', `/apis/${GROUP}/${VERSION}/namespaces/${NS}/${PLURAL}`, {
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'web', namespace: NS }, spec: { target: { podName: 'web-0' } } },
  });
  let current = await session(kc, (s) => s.podUID === pod.metadata.uid && s.state === 'Running', 'first session');

  const deleteMs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const old = pod;
    const t0 = Date.now();
    await kubeRequest(kc, 'DELETE', podPath('web-0'));
    pod = await readyPod(kc, 'web-0', old.metadata.uid);
    current = await session(kc, (s) => s.podUID === pod.metadata.uid && s.state === 'Running', `session of web-0 instance ${i + 2}`);
    deleteMs.push(Date.parse(current.startTime!) - t0);
    say(`delete round ${i + 1}/${rounds}: ${deleteMs.at(-1)} ms`);
  }

  const sandboxMs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const pause = await pauseOf(pod.metadata.uid);
    const before = current.id;
    const t0 = Date.now();
    process.kill(pause.pid, 'SIGKILL');
    current = await session(kc, (s) => s.podUID === pod.metadata.uid && s.state === 'Running' && s.id !== before, `session after sandbox ${i + 1}`);
    sandboxMs.push(Date.parse(current.startTime!) - t0);
    say(`sandbox round ${i + 1}/${rounds}: ${sandboxMs.at(-1)} ms`);
    // the next round kills the new sandbox, not its predecessor; the app container need not be
    // back (each kill adds to the kubelet's restart backoff, the sandbox is made at once)
    await waitFor('the new sandbox', async () => {
      const next = await pauseOf(pod.metadata.uid).catch(() => undefined);
      return next && next.pid !== pause.pid ? next : undefined;
    });
    await sleep(500);
  }

  const agent = (await kubeRequest<{ items: Pod[] }>(kc, 'GET', `/api/v1/namespaces/${real.deployed.agent.namespace}/pods?labelSelector=app.kubernetes.io%2Fcomponent%3Dagent`)).items[0]!;
  const controller = (await kubeRequest<{ items: Pod[] }>(kc, 'GET', `/api/v1/namespaces/${real.deployed.controller.namespace}/pods?labelSelector=app.kubernetes.io%2Fcomponent%3Dcontroller`)).items[0]!;
  const memory = { agentMb: await podRssMb(agent.metadata.uid), controllerMb: await podRssMb(controller.metadata.uid) };
  const results = { rounds, deleteToNewSessionMs: summarize(deleteMs), sandboxToNewSessionMs: summarize(sandboxMs), memory, at: new Date().toISOString() };
  const report = [
    '# Real node: kubelet + containerd running dist/',
    '',
    `${new Date().toISOString().slice(0, 10)}, ${rounds} rounds each, one node, web-0 a StatefulSet pod of the workload image, capture with no filter.`,
    '',
    '| ms | n | p50 | p90 | p99 | max |',
    '|---|---|---|---|---|---|',
    row('pod DELETE -> new instance session Running', results.deleteToNewSessionMs),
    row('pause SIGKILL -> session in the new sandbox Running', results.sandboxToNewSessionMs),
    '',
    `Memory (VmRSS of the pod's processes, tcpdump included for the agent): agent ${memory.agentMb} MB, controller ${memory.controllerMb} MB.`,
    '',
  ].join('\n');
  console.log(report);
  await writeFile(RESULTS, report);
  if (values.json) await writeFile(values.json, JSON.stringify(results, null, 2));
  return 0;
}

let code = 1;
try {
  code = await main();
} finally {
  await teardownAll();
}
process.exit(code);
