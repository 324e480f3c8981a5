// The soak's cluster and what it knows about it: a control plane, one simulated node with
// pod slots, a traffic host flooding every pod address, one agent and two leader-electing
// controllers as child processes (so they can be killed -9), and a record of every pod
// instance, every capture's lifetime and every disruption, which the invariants read.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import { CONTROLLER_LEASE } from '../controller/main.ts';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture, type PacketCaptureSpec } from '../crds/packetcapture.ts';
import { isNotFound, kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { createLogger } from '../kube/log.ts';
import { LOCAL_TRUST_NAMESPACE, startControlPlane, type ControlPlane } from '../local/control-plane.ts';
import { inNetns, runnableScript } from '../local/fabric.ts';
import { createHost, type Host } from '../local/netns-host.ts';
import { SimulatedNode } from '../local/node.ts';
import { Component, createNamespace, defer, installCrds, now, podBody, SYSTEM_NAMESPACE, waitFor } from '../bench/harness.ts';
import { sample } from '../bench/proc.ts';
import type { ExpectedState, InstanceLife, Interval, MemorySample, TargetedInstance } from './invariants.ts';

export const NAMESPACE = 'soak';
/** far from the tests' subnets (150-198) and the bench's (201), so a soak beside them does not collide */
const SUBNET_INDEX = 202;
const HOST_IP = '10.244.250.202';
export const SLOTS = 4;
/** pods get the lowest free address: the slots, a squatter and sandboxes being replaced fit in these */
const FLOOD_ADDRESSES = 10;
const FLOOD_PPS = 25;
const FLOOD_PORT = 9999;
/**
 * After an agent restart or an API server restart, watches come back with a backoff that
 * doubles from 500 ms while the API server is away: that long on, the components are not
 * yet expected to have caught up.
 */
export const RECOVERY_MS = 10_000;
const TRAFFIC = fileURLToPath(new URL('../local/traffic.ts', import.meta.url));
const LEASE_PATH = `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/${CONTROLLER_LEASE}`;
const podsPath = `/api/v1/namespaces/${NAMESPACE}/pods`;
const capturesPath = `/apis/${GROUP}/${VERSION}/namespaces/${NAMESPACE}/${PLURAL}`;

export const slotPod = (slot: number) => `soak-${slot}`;
const SLOT_LABELS = { app: 'soak' };

type CaptureKind = 'follow' | 'selector' | 'once' | 'duration';

export interface CaptureModel {
  name: string;
  kind: CaptureKind;
  /** the pod slot a podName capture targets */
  slot?: number;
  spec: PacketCaptureSpec;
  uid?: string;
  /** from each create to its DELETE; the current one open (to: Infinity) */
  lives: Interval[];
}

/** The captures the soak keeps: one per slot by name, one over every slot, a Once with a packet limit and one with a duration. */
function initialCaptures(): CaptureModel[] {
  const selector = { podSelector: { matchLabels: SLOT_LABELS } };
  return [
    ...Array.from({ length: SLOTS }, (_, slot): CaptureModel => ({ name: `follow-${slot}`, kind: 'follow', slot, spec: { target: { podName: slotPod(slot) } }, lives: [] })),
    { name: 'every-slot', kind: 'selector', spec: { target: selector }, lives: [] },
    { name: 'once', kind: 'once', slot: 0, spec: { target: { podName: slotPod(0) }, lifecycle: 'Once', limits: { maxPackets: 50 } }, lives: [] },
    { name: 'timed', kind: 'duration', spec: { target: selector, limits: { duration: '15s' } }, lives: [] },
  ];
}

/** A spec edit that changes the generation but keeps the capture's kind (and so what it must reach). */
export function editedSpec(c: CaptureModel): PacketCaptureSpec {
  const s = c.spec;
  if (c.kind === 'once') return { ...s, limits: { maxPackets: s.limits?.maxPackets === 50 ? 60 : 50 } };
  if (c.kind === 'duration') return { ...s, limits: { duration: s.limits?.duration === '15s' ? '16s' : '15s' } };
  // the traffic is UDP: both filters capture it
  const { filter, ...rest } = s;
  return filter ? rest : { ...rest, filter: { protocol: 'UDP' } };
}

interface Instance extends InstanceLife {
  slot?: number;
  /** when the DELETE was sent: the end of its targeted life */
  deleteSentAt?: number;
  runningAt?: number;
}

export class SoakCluster {
  readonly instances = new Map<string, Instance>();
  /** the running instance of each slot */
  readonly slots: (string | undefined)[] = new Array(SLOTS).fill(undefined);
  readonly captures = initialCaptures();
  /** agent or API server away, with RECOVERY_MS after; an open one ends at Infinity */
  readonly disruptions: Interval[] = [];
  /** every incarnation of every component, for logs and memory */
  readonly components: Component[] = [];
  readonly memory = new Map<Component, MemorySample[]>();
  /** killed: its pid may be another process's by now */
  private readonly dead = new Set<Component>();
  agent!: Component;
  readonly controllers = new Map<Component, string>();
  private squatter?: string;
  private squatters = 0;
  private incarnations = 0;

  private constructor(
    readonly cp: ControlPlane,
    readonly node: SimulatedNode,
    readonly host: Host,
    readonly dataDir: string,
  ) {
    node.events.subscribe((e) => {
      const i = this.instances.get(e.uid);
      if (!i) return;
      if (e.type === 'Running') {
        i.ip = e.ip;
        i.runningAt ??= e.runningAt;
      } else i.to = e.at;
    });
  }

  get kc(): KubeConfig {
    return this.cp.kubeConfig;
  }

  static async start(): Promise<SoakCluster> {
    const cp = await startControlPlane();
    defer('control plane', () => cp.stop());
    await installCrds(cp.kubeConfig);
    await createNamespace(cp.kubeConfig, SYSTEM_NAMESPACE);
    await createNamespace(cp.kubeConfig, NAMESPACE);
    const log = createLogger('soak-node', { node: 'soak-node' });
    // its watch fails on every API server restart, which is one of the faults
    log.level = 'error';
    const node = await SimulatedNode.start({ name: 'soak-node', kubeConfig: cp.kubeConfig, subnetIndex: SUBNET_INDEX, log });
    defer('simulated node', () => node.stop());
    const host = await createHost('soak-src', HOST_IP);
    defer('traffic host', () => host.destroy());
    const dataDir = await mkdtemp(join(tmpdir(), 'pc-soak-data-'));
    defer('agent data dir', () => rm(dataDir, { recursive: true, force: true }));
    const cluster = new SoakCluster(cp, node, host, dataDir);
    await cluster.startAgent();
    await Promise.all([cluster.startController(), cluster.startController()]);
    return cluster;
  }

  // ---- components ------------------------------------------------------------------

  private track(c: Component): Component {
    this.components.push(c);
    this.memory.set(c, []);
    return c;
  }

  async startAgent(): Promise<void> {
    const agent = this.track(
      Component.start(`agent-${++this.incarnations}`, ['agent', '--node-name', this.node.name, '--kubeconfig', this.cp.kubeconfigPath, '--data-dir', this.dataDir, '--namespace', SYSTEM_NAMESPACE, '--trust-namespace', LOCAL_TRUST_NAMESPACE, '--metrics-port', '0', '--data-port', '0']),
    );
    await agent.waitLog((r) => r.msg === 'agent started');
    this.agent = agent;
  }

  async startController(): Promise<void> {
    const c = this.track(
      Component.start(`controller-${++this.incarnations}`, ['controller', '--kubeconfig', this.cp.kubeconfigPath, '--namespace', SYSTEM_NAMESPACE, '--leader-elect', '--metrics-port', '0']),
    );
    const synced = await c.waitLog((r) => r.msg === 'watches synced');
    this.controllers.set(c, String(synced.identity));
  }

  /** The controller holding the leader Lease, once one does. */
  async leader(): Promise<Component> {
    return waitFor(
      'a controller leader',
      async () => {
        const lease = await kubeRequest<{ spec: { holderIdentity?: string } }>(this.kc, 'GET', LEASE_PATH).catch(() => undefined);
        return [...this.controllers].find(([, identity]) => identity === lease?.spec.holderIdentity)?.[0];
      },
      { timeoutMs: 90_000, everyMs: 200 },
    );
  }

  /** kill -9 and wait for the process to be gone. */
  async kill(c: Component): Promise<void> {
    process.kill(c.pid, 'SIGKILL');
    await c.exited;
    this.dead.add(c);
    this.controllers.delete(c);
  }

  /** Marks the start of a disruption; the returned function ends it (plus RECOVERY_MS). */
  disrupt(): () => void {
    const d = { from: now(), to: Infinity };
    this.disruptions.push(d);
    return () => (d.to = now() + RECOVERY_MS);
  }

  /** When the components were last expected to be caught up with the cluster. */
  quietSince(at = now()): number {
    return Math.max(0, ...this.disruptions.map((d) => (d.to === Infinity ? at : d.to)));
  }

  async sampleMemory(): Promise<void> {
    for (const [c, samples] of this.memory) {
      if (this.dead.has(c)) continue;
      const s = await sample(c.pid);
      if (s) samples.push({ at: now(), rssMb: s.rssMb });
    }
  }

  // ---- traffic ---------------------------------------------------------------------

  /** UDP at FLOOD_PPS to every address a pod of the node can have, for `ms`. */
  async flood(ms: number): Promise<void> {
    const script = await runnableScript(TRAFFIC);
    const packets = Math.ceil((FLOOD_PPS * ms) / 1000);
    for (let k = 0; k < FLOOD_ADDRESSES; k++) {
      const ip = `10.244.${SUBNET_INDEX}.${2 + k}`;
      const child = spawn('setpriv', inNetns(this.host.netnsName, [process.execPath, script, 'udp', ip, String(FLOOD_PORT), String(packets), String(FLOOD_PPS), '64']), {
        stdio: 'ignore',
      });
      const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
      defer(`traffic to ${ip}`, async () => {
        child.kill('SIGKILL');
        await exited;
      });
    }
  }

  // ---- pods ------------------------------------------------------------------------

  /** Creates pod `name` and waits until its sandbox runs. */
  async createPod(name: string, labels: Record<string, string>, slot?: number): Promise<Instance> {
    const before = now();
    const pod = await kubeRequest<{ metadata: { uid: string } }>(this.kc, 'POST', podsPath, { body: podBody({ name, node: this.node.name, labels }) });
    const instance: Instance = { uid: pod.metadata.uid, name, ip: '', from: before, slot };
    this.instances.set(instance.uid, instance);
    await waitFor(`pod ${name} Running`, () => (instance.runningAt !== undefined ? true : undefined), { timeoutMs: 90_000, everyMs: 10 });
    if (slot !== undefined) this.slots[slot] = instance.uid;
    return instance;
  }

  createSlotPod(slot: number): Promise<Instance> {
    return this.createPod(slotPod(slot), { ...SLOT_LABELS, slot: String(slot) }, slot);
  }

  /** Deletes an instance (precondition on its UID) and waits until the node removed its sandbox. */
  async deleteInstance(uid: string): Promise<void> {
    const i = this.instances.get(uid)!;
    i.deleteSentAt = now();
    if (i.slot !== undefined && this.slots[i.slot] === uid) this.slots[i.slot] = undefined;
    await kubeRequest(this.kc, 'DELETE', `${podsPath}/${i.name}`, { body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid } } }).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    await waitFor(`pod ${i.name} (${uid}) removed`, () => (i.to !== undefined ? true : undefined), { timeoutMs: 90_000, everyMs: 10 });
    // the node deletes the object once the sandbox is gone; until then the name is taken
    await waitFor(
      `pod ${i.name} (${uid}) deleted`,
      () =>
        kubeRequest<{ metadata: { uid: string } }>(this.kc, 'GET', `${podsPath}/${i.name}`).then(
          (pod) => (pod.metadata.uid === uid ? undefined : true),
          (err: unknown) => (isNotFound(err) ? true : undefined),
        ),
      { timeoutMs: 90_000, everyMs: 20 },
    );
  }

  /**
   * The slot's pod deleted and created again under its name; with `squatted`, another pod
   * is created in between, which takes the lowest free address, often the old one.
   * Returns who took the old IP, if anyone.
   */
  async recreateSlotPod(slot: number, squatted: boolean): Promise<'same name' | 'another pod' | undefined> {
    const old = this.instances.get(this.slots[slot]!)!;
    await this.deleteInstance(old.uid);
    let taker: 'another pod' | undefined;
    if (squatted) {
      const previous = this.squatter;
      const squatter = await this.createPod(`squatter-${++this.squatters}`, { app: 'squatter' });
      this.squatter = squatter.uid;
      if (squatter.ip === old.ip) taker = 'another pod';
      if (previous) await this.deleteInstance(previous);
    }
    const next = await this.createSlotPod(slot);
    return taker ?? (next.ip === old.ip ? 'same name' : undefined);
  }

  async recreateSandbox(slot: number): Promise<void> {
    await this.node.recreateSandbox(this.slots[slot]!);
  }

  // ---- captures --------------------------------------------------------------------

  async createCapture(c: CaptureModel): Promise<void> {
    const created = await kubeRequest<PacketCapture>(this.kc, 'POST', capturesPath, {
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: c.name }, spec: c.spec },
    });
    c.uid = created.metadata.uid;
    c.lives.push({ from: now(), to: Infinity });
  }

  /** Deletes the capture and waits until it is gone (the controller releases its finalizer). */
  async deleteCapture(c: CaptureModel): Promise<void> {
    const life = c.lives.at(-1);
    if (life) life.to = now();
    await kubeRequest(this.kc, 'DELETE', `${capturesPath}/${c.name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    await waitFor(
      `capture ${c.name} gone`,
      () =>
        kubeRequest(this.kc, 'GET', `${capturesPath}/${c.name}`).then(
          () => undefined,
          (err: unknown) => (isNotFound(err) ? true : undefined),
        ),
      { timeoutMs: 120_000, everyMs: 100 },
    );
  }

  async editCapture(c: CaptureModel): Promise<void> {
    const spec = editedSpec(c);
    // a merge patch removes a field only when it is named as null
    const removed = Object.fromEntries(Object.keys(c.spec).filter((k) => !(k in spec)).map((k) => [k, null]));
    await kubeRequest(this.kc, 'PATCH', `${capturesPath}/${c.name}`, { contentType: MERGE_PATCH, body: { spec: { ...removed, ...spec } } });
    c.spec = spec;
  }

  listCaptures(): Promise<PacketCapture[]> {
    return kubeRequest<{ items: PacketCapture[] }>(this.kc, 'GET', capturesPath).then((l) => l.items);
  }

  /** What each capture's spec implies once the cluster is quiet. */
  expectedState(c: CaptureModel): ExpectedState {
    if (c.kind === 'once' || c.kind === 'duration') return { phase: 'Completed' };
    const uids = c.kind === 'follow' ? [this.slots[c.slot!]!] : this.slots.filter((u): u is string => u !== undefined);
    return { phase: 'Capturing', targets: uids };
  }

  // ---- what the invariants read ------------------------------------------------------

  /** Slot instances with when a capture without limits (follow, selector) selected them. */
  targetedInstances(end: number): TargetedInstance[] {
    return [...this.instances.values()]
      .filter((i) => i.slot !== undefined && i.runningAt !== undefined)
      .map((i) => ({
        uid: i.uid,
        life: { from: i.runningAt!, to: i.deleteSentAt ?? end },
        targeted: this.captures
          .filter((c) => c.kind === 'selector' || (c.kind === 'follow' && c.slot === i.slot))
          .flatMap((c) => c.lives.map((l) => ({ from: l.from, to: Math.min(l.to, end) }))),
      }));
  }
}
