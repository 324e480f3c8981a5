// The controller against many captures on the real API server: N captures over 3N plain
// Pod objects on Node objects with live-looking agent Leases (no netns: only the controller
// is measured), the controller as a child process so its RSS and CPU are its own.

import type { KubeConfig } from '@kubernetes/client-node';
import { NODE_OPTIONS } from '../cdk8s/settings.ts';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture } from '../crds/packetcapture.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { createLogger } from '../kube/log.ts';
import { nodeCaptures } from '../agent/capture-scope.ts';
import { watchSnapshots } from '../kube/watch.ts';
import { Component, createNamespace, defer, fakeAgentLease, now, pool, podBody, sleep, SYSTEM_NAMESPACE, waitFor } from './harness.ts';
import { peakSinceLast, sample } from './proc.ts';
import { round1 } from './stats.ts';
import { changedParts, tally } from './diff.ts';
import type { BenchResults, ForeignNodeEvents } from './shape.ts';

/** Pods per Node object (kubelet's default limit is 110); each node has its own agent Lease. */
const PODS_PER_NODE = 100;
/** Captures (and so pods) per namespace. */
const PER_NAMESPACE = 100;
/** Requests in flight at once while filling the cluster, and while creating the captures. */
const SETUP_CONCURRENCY = 32;
const CONCURRENCY = 16;
/** Every capture targets one pod by name; the others are the rest of a cluster the controller watches too. */
export const PODS_PER_CAPTURE = 3;
export interface ScalePlan {
  captures: number;
  recreations: number;
  quietS: number;
}

interface Target {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  ip: string;
}

const podIP = (i: number) => `10.${64 + Math.floor(i / 62_500)}.${Math.floor(i / 250) % 250}.${(i % 250) + 2}`;
const nodeName = (i: number) => `bench-scale-node-${Math.floor(i / PODS_PER_NODE)}`;

async function runningPod(kc: KubeConfig, t: Omit<Target, 'uid'>): Promise<string> {
  const path = `/api/v1/namespaces/${t.namespace}/pods`;
  const pod = await kubeRequest<{ metadata: { uid: string } }>(kc, 'POST', path, { body: podBody({ name: t.name, node: t.node }) });
  await kubeRequest(kc, 'PATCH', `${path}/${t.name}/status`, {
    contentType: MERGE_PATCH,
    body: { metadata: { uid: pod.metadata.uid }, status: { phase: 'Running', podIP: t.ip, podIPs: [{ ip: t.ip }] } },
  });
  return pod.metadata.uid;
}

const resolved = (c: PacketCapture | undefined) => c?.status?.conditions?.some((x) => x.type === 'TargetResolved' && x.status === 'True') ?? false;
const captureKey = (c: PacketCapture) => `${c.metadata.namespace}/${c.metadata.name}`;

/**
 * When each capture first reached a state, from the bench's own watch of every
 * PacketCapture: exact event times, and a wait that polls counts rather than the cluster.
 */
class Progress {
  private readonly at = new Map<string, number>();
  constructor(private readonly reached: (c: PacketCapture) => boolean) {}

  observe(c: PacketCapture, t: number): void {
    const key = captureKey(c);
    if (!this.at.has(key) && this.reached(c)) this.at.set(key, t);
  }
  forget(key: string): void {
    this.at.delete(key);
  }
  when(key: string): number | undefined {
    return this.at.get(key);
  }
  /** when the last of `keys` got there, or undefined while one has not */
  allBy(keys: readonly string[]): number | undefined {
    let last = 0;
    for (const key of keys) {
      const t = this.at.get(key);
      if (t === undefined) return undefined;
      last = Math.max(last, t);
    }
    return last;
  }
}

export async function controllerScale(
  kc: KubeConfig,
  kubeconfigPath: string,
  { captures, recreations, quietS }: ScalePlan,
): Promise<BenchResults['scale'] & { controllerCpuAfterSyncS: number | null; controllerRssAtSyncMb: number | null; writesChanged: Record<string, number>; quietWritesChanged: Record<string, number>; foreignNode: ForeignNodeEvents }> {
  const pods = captures * PODS_PER_CAPTURE;
  const namespaces = Array.from({ length: Math.max(1, Math.ceil(captures / PER_NAMESPACE)) }, (_, i) => `bench-scale-${i}`);
  const nodes = [...new Set(Array.from({ length: pods }, (_, i) => nodeName(i)))];
  await Promise.all(namespaces.map((ns) => createNamespace(kc, ns)));
  defer('scale namespaces', () => Promise.all(namespaces.map((ns) => kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${ns}`).catch(() => undefined))));
  await pool(nodes, SETUP_CONCURRENCY, async (node) => {
    await kubeRequest(kc, 'POST', '/api/v1/nodes', { body: { apiVersion: 'v1', kind: 'Node', metadata: { name: node } } }).catch(() => undefined);
    await fakeAgentLease(kc, node);
  });
  defer('scale nodes', () => pool(nodes, SETUP_CONCURRENCY, (node) => kubeRequest(kc, 'DELETE', `/api/v1/nodes/${node}`).catch(() => undefined)));

  // pod i is in namespace i mod n, so the first `captures` pods (the targets) spread over every namespace and node
  const all: Target[] = Array.from({ length: pods }, (_, i) => ({ namespace: namespaces[i % namespaces.length]!, name: `web-${i}`, uid: '', node: nodeName(i), ip: podIP(i) }));
  const fillStart = now();
  await pool(all, SETUP_CONCURRENCY, async (t) => {
    t.uid = await runningPod(kc, t);
  });
  const fillS = (now() - fillStart) / 1000;
  const targets = all.slice(0, captures);
  const key = (t: Target) => `${t.namespace}/pcap-${t.name}`;
  const keys = targets.map(key);
  const uidOf = new Map(targets.map((t) => [key(t), t]));

  // every resourceVersion change of a PacketCapture is one write (the controller is the only writer here)
  let writes = 0;
  // what each write changed, for the whole run and for the quiet window
  const lastSeen = new Map<string, PacketCapture>();
  const byKey = new Map<string, PacketCapture>();
  const changed: Record<string, number> = {};
  let quietChanged: Record<string, number> | undefined;
  const targetUID = (c: PacketCapture) => c.status?.targets?.[0]?.podUID;
  const resolvedAt = new Progress(resolved);
  const readyAt = new Progress(
    (c) => resolved(c) && c.status?.observedGeneration === c.metadata.generation && !!c.status?.phase && targetUID(c) === uidOf.get(captureKey(c))?.uid,
  );
  const recreatedAt = new Progress((c) => targetUID(c) === uidOf.get(captureKey(c))?.uid);
  const log = createLogger('bench-scale');
  log.level = 'warn';
  const watching = watchSnapshots<PacketCapture>(kc, {
    path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
    log,
    onEvent: (type, obj) => {
      const c = obj as PacketCapture;
      if (!c?.metadata?.uid) return;
      const t = now();
      const prev = lastSeen.get(c.metadata.uid);
      if (type === 'MODIFIED') {
        writes++;
        if (prev) {
          const parts = changedParts(prev, c);
          tally(changed, parts);
          if (quietChanged) tally(quietChanged, parts);
        }
      }
      if (type === 'DELETED') {
        lastSeen.delete(c.metadata.uid);
        byKey.delete(captureKey(c));
      } else {
        lastSeen.set(c.metadata.uid, c);
        byKey.set(captureKey(c), c);
      }
      for (const p of [resolvedAt, readyAt, recreatedAt]) p.observe(c, t);
    },
  }).subscribe();
  defer('scale watch', async () => watching.unsubscribe());

  // An agent on a node with no pod, watching what the agent watches (agent/capture-scope.ts):
  // every capture here is foreign to it, so whatever it hears of their writes is fan-out.
  const foreign = { modified: 0, added: 0, deleted: 0 };
  const foreignWatch = nodeCaptures(kc, {
    node: 'bench-scale-node-without-pods',
    log,
    onEvent: (type) => {
      if (type === 'MODIFIED') foreign.modified++;
      else if (type === 'ADDED') foreign.added++;
      else if (type === 'DELETED') foreign.deleted++;
    },
  }).subscribe();
  defer('scale foreign-node watch', async () => foreignWatch.unsubscribe());

  const controller = Component.start('controller', ['controller', '--kubeconfig', kubeconfigPath, '--namespace', SYSTEM_NAMESPACE, '--metrics-port', '0'], {
    NODE_OPTIONS: NODE_OPTIONS.controller,
  });
  await controller.waitLog((r) => r.msg === 'watches synced', { timeoutMs: 300_000 });
  // start-up (loading the bundle, listing 3N pods) is counted apart from the work
  const atSync = await sample(controller.pid);
  // where the peak is: each phase's own high-water mark
  const peaks: Record<string, number | null> = {};
  const phaseEnded = async (phase: string) => (peaks[phase] = round1((await peakSinceLast(controller.pid)) ?? NaN) || null);
  await phaseEnded('startAndList');

  const t0 = now();
  await pool(targets, CONCURRENCY, (t) =>
    kubeRequest(kc, 'POST', `/apis/${GROUP}/${VERSION}/namespaces/${t.namespace}/${PLURAL}`, {
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: `pcap-${t.name}` }, spec: { target: { podName: t.name } } },
    }),
  );
  const lastCreate = now();
  const readyBy = await waitFor('every capture reconciled', () => readyAt.allBy(keys), { timeoutMs: 900_000, everyMs: 200 });
  const resolvedBy = resolvedAt.allBy(keys) ?? readyBy;
  // writes still in flight for the last captures
  await sleep(2000);
  const writesPerCapture = writes / captures;
  await phaseEnded('createAndResolve');

  const quietStart = writes;
  quietChanged = {};
  await sleep(quietS * 1000);
  const quietWrites = writes - quietStart;
  const quietParts = quietChanged;
  await phaseEnded('quiet');
  quietChanged = undefined;

  // Simultaneous recreations: same names, new UIDs, same IPs. The bench's own requests (a
  // DELETE, a POST and a status PATCH per pod) take the API server a while on a small
  // machine: the same recreations of pods no capture targets, first, are what they cost
  // with nothing of the product's added (the controller still hears them).
  const recreate = async (list: Target[], onRunning: (t: Target) => void = () => undefined) => {
    const start = now();
    await pool(list, CONCURRENCY, (t) => kubeRequest(kc, 'DELETE', `/api/v1/namespaces/${t.namespace}/pods/${t.name}`, { query: { gracePeriodSeconds: 0 } }));
    const deleted = now();
    await pool(list, CONCURRENCY, async (t) => {
      t.uid = await runningPod(kc, t);
      onRunning(t);
    });
    return { start, deletedMs: deleted - start, runningMs: now() - start };
  };
  const untargeted = await recreate(all.slice(captures, captures + recreations));

  const chosen = targets.slice(0, recreations);
  for (const t of chosen) {
    t.uid = '';
    recreatedAt.forget(key(t));
  }
  // when the bench had each new pod Running: the controller's part of a recreation starts there
  const runningAt = new Map<string, number>();
  const { start: r0, deletedMs, runningMs } = await recreate(chosen, (t) => {
    runningAt.set(key(t), now());
    // the controller's write may have come before the bench learned the new UID
    const c = byKey.get(key(t));
    if (c) recreatedAt.observe(c, now());
  });
  const recreatedBy = await waitFor('every recreated target to show its new UID', () => recreatedAt.allBy(chosen.map(key)), { timeoutMs: 300_000, everyMs: 100 });
  const recreateMs = round1(recreatedBy - r0);
  const controllerPart = Math.max(0, ...chosen.map((t) => (recreatedAt.when(key(t)) ?? recreatedBy) - runningAt.get(key(t))!));

  await phaseEnded('recreate');
  const usage = await sample(controller.pid);
  await controller.stop();
  foreignWatch.unsubscribe();
  return {
    captures,
    pods,
    nodes: nodes.length,
    fillClusterS: round1(fillS),
    createAllMs: round1(lastCreate - t0),
    resolveAllMs: round1(resolvedBy - t0),
    resolveAfterLastCreateMs: round1(Math.max(0, resolvedBy - lastCreate)),
    readyAllMs: round1(readyBy - t0),
    writesPerCapture: Math.round(writesPerCapture * 100) / 100,
    quietMinuteWrites: quietWrites,
    quietWindowS: quietS,
    controllerPeakRssMb: Object.values(peaks).some((p) => p !== null) ? Math.max(...Object.values(peaks).map((p) => p ?? 0)) : null,
    controllerPeakRssByPhaseMb: peaks,
    controllerCpuS: usage ? round1(usage.cpuS) : null,
    controllerCpuAfterSyncS: usage && atSync ? round1(usage.cpuS - atSync.cpuS) : null,
    controllerRssAtSyncMb: atSync ? round1(atSync.rssMb) : null,
    recreations,
    recreateMs,
    recreate1000Ms: recreations >= 1000 ? recreateMs : null,
    recreateAfterRunningMaxMs: round1(controllerPart),
    recreateDeletesMs: round1(deletedMs),
    recreateRunningMs: round1(runningMs),
    recreateUntargetedMs: round1(untargeted.runningMs),
    writesChanged: changed,
    quietWritesChanged: quietParts,
    foreignNode: { writes, ...foreign },
  };
}
