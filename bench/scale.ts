// The controller against many captures on the real API server: plain Pod objects on a Node
// object with a live-looking agent Lease (no netns: only the controller is measured), the
// controller as a child process so its RSS and CPU are its own.

import type { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture } from '../crds/packetcapture.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { createLogger } from '../kube/log.ts';
import { watchSnapshots, type Snapshot } from '../kube/watch.ts';
import { Component, createNamespace, defer, fakeAgentLease, now, pool, podBody, sleep, SYSTEM_NAMESPACE, waitFor } from './harness.ts';
import { sample } from './proc.ts';
import { round1 } from './stats.ts';
import { changedParts, tally } from './diff.ts';
import type { BenchResults } from './shape.ts';

const NODE = 'bench-scale-node';
const CONCURRENCY = 16;

interface Target {
  namespace: string;
  name: string;
  uid: string;
}

const podIP = (i: number) => `10.245.${Math.floor(i / 250)}.${(i % 250) + 2}`;

async function runningPod(kc: KubeConfig, namespace: string, name: string, ip: string): Promise<string> {
  const path = `/api/v1/namespaces/${namespace}/pods`;
  const pod = await kubeRequest<{ metadata: { uid: string } }>(kc, 'POST', path, { body: podBody({ name, node: NODE }) });
  await kubeRequest(kc, 'PATCH', `${path}/${name}/status`, {
    contentType: MERGE_PATCH,
    body: { metadata: { uid: pod.metadata.uid }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } },
  });
  return pod.metadata.uid;
}

const resolved = (c: PacketCapture | undefined) => c?.status?.conditions?.some((x) => x.type === 'TargetResolved' && x.status === 'True') ?? false;

export async function controllerScale(
  kc: KubeConfig,
  kubeconfigPath: string,
  captures: number,
  recreations: number,
  quietS: number,
): Promise<BenchResults['scale'] & { createAllMs: number; controllerCpuAfterSyncS: number | null; controllerRssAtSyncMb: number | null; writesChanged: Record<string, number>; quietWritesChanged: Record<string, number> }> {
  const namespaces = Array.from({ length: Math.max(1, Math.ceil(captures / 100)) }, (_, i) => `bench-scale-${i}`);
  await Promise.all(namespaces.map((ns) => createNamespace(kc, ns)));
  defer('scale namespaces', () => Promise.all(namespaces.map((ns) => kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${ns}`).catch(() => undefined))));
  await kubeRequest(kc, 'POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } } }).catch(() => undefined);
  defer('scale node', () => kubeRequest(kc, 'DELETE', `/api/v1/nodes/${NODE}`).catch(() => undefined));
  await fakeAgentLease(kc, NODE);

  const targets: Target[] = Array.from({ length: captures }, (_, i) => ({ namespace: namespaces[i % namespaces.length]!, name: `web-${i}`, uid: '' }));
  await pool(targets, CONCURRENCY, async (t, i) => {
    t.uid = await runningPod(kc, t.namespace, t.name, podIP(i));
  });

  // every resourceVersion change of a PacketCapture is one write (the controller is the only writer here)
  let writes = 0;
  let latest: Snapshot<PacketCapture> = new Map();
  // what each write changed, for the whole run and for the quiet window
  const lastSeen = new Map<string, PacketCapture>();
  const changed: Record<string, number> = {};
  let quietChanged: Record<string, number> | undefined;
  const log = createLogger('bench-scale');
  log.level = 'warn';
  const watching = watchSnapshots<PacketCapture>(kc, {
    path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
    log,
    onEvent: (type, obj) => {
      const c = obj as PacketCapture;
      if (!c?.metadata?.uid) return;
      const prev = lastSeen.get(c.metadata.uid);
      if (type === 'MODIFIED') {
        writes++;
        if (prev) {
          const parts = changedParts(prev, c);
          tally(changed, parts);
          if (quietChanged) tally(quietChanged, parts);
        }
      }
      if (type === 'DELETED') lastSeen.delete(c.metadata.uid);
      else lastSeen.set(c.metadata.uid, c);
    },
  }).subscribe((s) => (latest = s));
  defer('scale watch', async () => watching.unsubscribe());

  const controller = Component.start('controller', ['controller', '--kubeconfig', kubeconfigPath, '--namespace', SYSTEM_NAMESPACE, '--metrics-port', '0']);
  await controller.waitLog((r) => r.msg === 'watches synced');
  // start-up (loading and transpiling the TypeScript) is counted apart from the work
  const atSync = await sample(controller.pid);

  const byKey = () => new Map([...latest.values()].map((c) => [`${c.metadata.namespace}/${c.metadata.name}`, c]));
  const key = (t: Target) => `${t.namespace}/pcap-${t.name}`;
  const t0 = now();
  await pool(targets, CONCURRENCY, (t) =>
    kubeRequest(kc, 'POST', `/apis/${GROUP}/${VERSION}/namespaces/${t.namespace}/${PLURAL}`, {
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: `pcap-${t.name}` }, spec: { target: { podName: t.name } } },
    }),
  );
  const createdMs = now() - t0;
  let resolveAllMs: number | undefined;
  const readyAllMs = await waitFor(
    'every capture reconciled',
    () => {
      const all = byKey();
      if (resolveAllMs === undefined && targets.every((t) => resolved(all.get(key(t))))) resolveAllMs = now() - t0;
      const done = targets.every((t) => {
        const c = all.get(key(t));
        return resolved(c) && c?.status?.observedGeneration === c?.metadata.generation && !!c?.status?.phase && c?.status?.targets?.[0]?.podUID === t.uid;
      });
      return done ? now() - t0 : undefined;
    },
    { timeoutMs: 600_000, everyMs: 50 },
  );
  resolveAllMs ??= readyAllMs;
  // writes still in flight for the last captures
  await sleep(2000);
  const writesPerCapture = writes / captures;

  const quietStart = writes;
  quietChanged = {};
  await sleep(quietS * 1000);
  const quietWrites = writes - quietStart;
  const quietParts = quietChanged;
  quietChanged = undefined;

  // simultaneous recreations: same names, new UIDs, same IPs
  const chosen = targets.slice(0, recreations);
  const r0 = now();
  await pool(chosen, CONCURRENCY, (t) => kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${t.namespace}/pods/${t.name}`, { query: { gracePeriodSeconds: 0 } }));
  await pool(chosen, CONCURRENCY, async (t) => {
    t.uid = await runningPod(kc, t.namespace, t.name, podIP(targets.indexOf(t)));
  });
  const recreateMs = await waitFor(
    'every recreated target to show its new UID',
    () => {
      const all = byKey();
      return chosen.every((t) => all.get(key(t))?.status?.targets?.[0]?.podUID === t.uid) ? now() - r0 : undefined;
    },
    { timeoutMs: 300_000, everyMs: 20 },
  );

  const usage = await sample(controller.pid);
  await controller.stop();
  return {
    captures,
    pods: captures,
    createAllMs: round1(createdMs),
    resolveAllMs: round1(resolveAllMs),
    readyAllMs: round1(readyAllMs),
    writesPerCapture: Math.round(writesPerCapture * 100) / 100,
    quietMinuteWrites: quietWrites,
    quietWindowS: quietS,
    controllerPeakRssMb: usage ? round1(usage.peakRssMb) : null,
    controllerCpuS: usage ? round1(usage.cpuS) : null,
    controllerCpuAfterSyncS: usage && atSync ? round1(usage.cpuS - atSync.cpuS) : null,
    controllerRssAtSyncMb: atSync ? round1(atSync.rssMb) : null,
    recreations,
    recreate100Ms: round1(recreateMs),
    writesChanged: changed,
    quietWritesChanged: quietParts,
  };
}
