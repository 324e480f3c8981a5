// How fast the controller follows a pod recreation, and what it costs in status writes.
// Each round deletes pod `web-0` (grace 0, as a kubelet confirming the stop) and starts a
// new instance, alternating nodes; the latency runs from the new instance being reported
// Running to the capture's status.targets showing its UID (seen through a watch).
//
//   npx tsx bench/controller-recreate.ts [--rounds 50] [--kubeconfig F]
//
// Without --kubeconfig it starts its own control plane (etcd + kube-apiserver).

import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { filter, firstValueFrom, map, startWith, Subject } from 'rxjs';
import { AGENT_LEASE_LABEL } from '../controller/agents.ts';
import { runController } from '../controller/main.ts';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture } from '../crds/packetcapture.ts';
import { applyObjects, readManifests } from '../kube/apply.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { microTime } from '../kube/lease.ts';
import { createLogger } from '../kube/log.ts';
import { watchSnapshots } from '../kube/watch.ts';
import { startControlPlane } from '../local/control-plane.ts';

interface Pod {
  metadata: { uid: string };
}

export interface RecreateResult {
  rounds: number;
  /** ms from the new instance reported Running to status.targets naming it */
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  statusWritesPerRecreation: number;
}

const CRDS = new URL('../dist/packet-capture-crds.k8s.yaml', import.meta.url);

function quantile(sorted: number[], q: number): number {
  // nearest rank: the smallest value with at least q of the samples at or below it
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

async function installCrds(kc: KubeConfig): Promise<void> {
  const crds = await readManifests(CRDS.pathname);
  await applyObjects(kc, crds, { fieldManager: 'bench' });
  for (const crd of crds) {
    for (;;) {
      const got = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(
        kc,
        'GET',
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata!.name}`,
      );
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function measureRecreations(kc: KubeConfig, rounds: number): Promise<RecreateResult> {
  const log = createLogger('bench-controller');
  log.level = process.env.LOG_LEVEL ?? 'warn';
  const ns = `bench-recreate-${randomBytes(3).toString('hex')}`;
  const nodes = [`${ns}-a`, `${ns}-b`];
  const pods = `/api/v1/namespaces/${ns}/pods`;

  await installCrds(kc);
  await kubeRequest(kc, 'POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } } });
  // pods need a ServiceAccount even when no controller-manager creates `default`
  await kubeRequest(kc, 'POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { body: { metadata: { name: 'default' } } }).catch(() => undefined);
  for (const node of nodes) {
    await kubeRequest(kc, 'POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name: node } } });
    await kubeRequest(kc, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`, {
      body: {
        metadata: { name: `agent-${node}`, labels: { [AGENT_LEASE_LABEL]: 'true' } },
        spec: { holderIdentity: node, leaseDurationSeconds: 3600, renewTime: microTime(Date.now()) },
      },
    });
  }

  const start = async (node: string, ip: string): Promise<{ uid: string; runningAt: number }> => {
    const pod = await kubeRequest<Pod>(kc, 'POST', pods, {
      body: { metadata: { name: 'web-0' }, spec: { nodeName: node, containers: [{ name: 'app', image: 'registry.invalid/app:1' }] } },
    });
    await kubeRequest(kc, 'PATCH', `${pods}/web-0/status`, {
      contentType: MERGE_PATCH,
      body: { metadata: { uid: pod.metadata.uid }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } },
    });
    return { uid: pod.metadata.uid, runningAt: performance.now() };
  };

  const ctl = await runController({ kubeConfig: kc, namespace: ns, watchNamespace: ns, leaderElect: false, log, resyncMs: 10_000 });
  // one watch for the whole run: the moment each pod UID first appears as the capture's target
  const firstTargeted = new Map<string, number>();
  const arrivals = new Subject<void>();
  const watching = watchSnapshots<PacketCapture>(kc, { path: `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`, log }).subscribe(
    (snapshot) => {
      const now = performance.now();
      for (const c of snapshot.values()) {
        const uid = c.status?.targets?.[0]?.podUID;
        if (uid && !firstTargeted.has(uid)) firstTargeted.set(uid, now);
      }
      arrivals.next();
    },
  );
  const targeted = (uid: string): Promise<number> =>
    firstValueFrom(arrivals.pipe(startWith(undefined), map(() => firstTargeted.get(uid)), filter((t) => t !== undefined)));

  try {
    await ctl.ready;
    const first = await start(nodes[0]!, '10.244.0.10');
    await kubeRequest(kc, 'POST', `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`, {
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'follow' }, spec: { target: { podName: 'web-0' } } },
    });
    await targeted(first.uid);

    const latencies: number[] = [];
    const writesBefore = ctl.statusWrites();
    for (let i = 0; i < rounds; i++) {
      await kubeRequest(kc, 'DELETE', `${pods}/web-0`, { query: { gracePeriodSeconds: 0 } });
      const node = nodes[(i + 1) % 2]!;
      // the same IP every time: a name and an IP reused, only the UID tells instances apart
      const next = await start(node, '10.244.0.10');
      latencies.push((await targeted(next.uid)) - next.runningAt);
    }
    const writes = ctl.statusWrites() - writesBefore;
    const sorted = [...latencies].sort((a, b) => a - b);
    return {
      rounds,
      medianMs: Math.round(quantile(sorted, 0.5) * 10) / 10,
      p99Ms: Math.round(quantile(sorted, 0.99) * 10) / 10,
      maxMs: Math.round(sorted.at(-1)! * 10) / 10,
      statusWritesPerRecreation: Math.round((writes / rounds) * 100) / 100,
    };
  } finally {
    watching.unsubscribe();
    await ctl.stop();
    await kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${ns}`).catch(() => undefined);
    for (const node of nodes) await kubeRequest(kc, 'DELETE', `/api/v1/nodes/${node}`).catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '50' }, kubeconfig: { type: 'string' } } });
  const rounds = Number(values.rounds);
  let stop = async () => {};
  let kc: KubeConfig;
  if (values.kubeconfig) {
    kc = new KubeConfig();
    kc.loadFromFile(values.kubeconfig);
  } else {
    const cp = await startControlPlane();
    kc = cp.kubeConfig;
    stop = () => cp.stop();
  }
  try {
    const result = await measureRecreations(kc, rounds);
    console.log(JSON.stringify(result, null, 2));
    await mkdir(new URL('./results/', import.meta.url), { recursive: true });
    await writeFile(new URL('./results/controller-recreate.json', import.meta.url), JSON.stringify(result, null, 2) + '\n');
  } finally {
    await stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
