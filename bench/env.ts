// The netns part of the bench: one simulated node (pods as real network namespaces), a
// traffic host on the same bridge, and the agent for that node as a child process.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_OPTIONS } from '../cdk8s/settings.ts';
import type { KubeConfig } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type PacketCapture, type PacketCaptureSpec, API_VERSION, KIND } from '../crds/packetcapture.ts';
import { isNotFound, kubeRequest } from '../kube/http.ts';
import { createLogger } from '../kube/log.ts';
import { isAlive } from '../local/control-plane.ts';
import { createHost, type Host } from '../local/netns-host.ts';
import { SimulatedNode, type SandboxEvent } from '../local/node.ts';
import { Component, createNamespace, defer, podBody, SYSTEM_NAMESPACE, waitFor } from './harness.ts';

export const NAMESPACE = 'bench';
const DATA_DIR_PREFIX = 'pc-bench-data-';

/** A bench killed outright (SIGKILL, or a second Ctrl-C) cannot remove its data dir; the next one does. */
async function removeOrphanedDataDirs(): Promise<void> {
  for (const dir of await readdir(tmpdir())) {
    const pid = Number(/^pc-bench-data-(\d+)-/.exec(dir)?.[1]);
    if (pid > 0 && !isAlive(pid)) await rm(join(tmpdir(), dir), { recursive: true, force: true });
  }
}
/** far from the subnets tests use, so a bench beside a test run does not collide */
const SUBNET_INDEX = 201;
const HOST_IP = '10.244.250.201';

export interface RunningPod {
  uid: string;
  name: string;
  ip: string;
  netnsPath: string;
  /** epoch ms the simulated kubelet's Running status was acknowledged */
  runningAt: number;
  /** epoch ms the simulated kubelet first saw the pod bound to its node */
  seenAt: number;
}

export class NetnsEnv {
  private readonly running = new Map<string, Extract<SandboxEvent, { type: 'Running' }>>();
  private readonly removed = new Map<string, number>();

  private constructor(
    readonly kc: KubeConfig,
    readonly node: SimulatedNode,
    readonly host: Host,
    readonly agent: Component,
    readonly dataDir: string,
  ) {
    node.events.subscribe((e) => (e.type === 'Running' ? this.running.set(e.uid, e) : this.removed.set(e.uid, e.at)));
  }

  static async start(kc: KubeConfig, kubeconfigPath: string): Promise<NetnsEnv> {
    await createNamespace(kc, NAMESPACE);
    const log = createLogger('bench-node', { node: 'bench-node' });
    log.level = 'warn';
    const node = await SimulatedNode.start({ name: 'bench-node', kubeConfig: kc, subnetIndex: SUBNET_INDEX, log });
    defer('simulated node', () => node.stop());
    const host = await createHost('bench-src', HOST_IP);
    defer('traffic host', () => host.destroy());
    await removeOrphanedDataDirs();
    const dataDir = await mkdtemp(join(tmpdir(), `${DATA_DIR_PREFIX}${process.pid}-`));
    defer('agent data dir', () => rm(dataDir, { recursive: true, force: true }));
    const agent = Component.start('agent', [
      'agent',
      '--node-name',
      node.name,
      '--kubeconfig',
      kubeconfigPath,
      '--data-dir',
      dataDir,
      '--namespace',
      SYSTEM_NAMESPACE,
      '--metrics-port',
      '0',
      '--data-port',
      '0',
    ], { NODE_OPTIONS: NODE_OPTIONS.agent });
    await agent.waitLog((r) => r.msg === 'agent started');
    return new NetnsEnv(kc, node, host, agent, dataDir);
  }

  podsPath = `/api/v1/namespaces/${NAMESPACE}/pods`;

  /** Creates pod `name` on the node and waits until its sandbox runs. */
  async startPod(name: string, labels?: Record<string, string>): Promise<RunningPod> {
    const pod = await kubeRequest<{ metadata: { uid: string } }>(this.kc, 'POST', this.podsPath, { body: podBody({ name, node: this.node.name, labels }) });
    const uid = pod.metadata.uid;
    const ev = await waitFor(`pod ${name} Running`, () => this.running.get(uid), { timeoutMs: 60_000, everyMs: 5 });
    return { uid, name, ip: ev.ip, netnsPath: this.node.podNetns(uid)!.netnsPath, runningAt: ev.runningAt, seenAt: ev.seenAt };
  }

  /** Deletes pod `name` as a user would (the simulated kubelet finishes it) and waits until it is gone. */
  async deletePod(name: string): Promise<void> {
    await kubeRequest(this.kc, 'DELETE', `${this.podsPath}/${name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    await waitFor(`pod ${name} gone`, async () => {
      try {
        await kubeRequest(this.kc, 'GET', `${this.podsPath}/${name}`);
        return undefined;
      } catch (err) {
        if (isNotFound(err)) return true;
        throw err;
      }
    });
  }

  capturesPath = `/apis/${GROUP}/${VERSION}/namespaces/${NAMESPACE}/${PLURAL}`;

  async createCapture(name: string, spec: PacketCaptureSpec): Promise<void> {
    await kubeRequest(this.kc, 'POST', this.capturesPath, { body: { apiVersion: API_VERSION, kind: KIND, metadata: { name }, spec } });
  }

  getCapture(name: string): Promise<PacketCapture> {
    return kubeRequest<PacketCapture>(this.kc, 'GET', `${this.capturesPath}/${name}`);
  }

  /** No controller runs beside the agent here, so no finalizer holds a deleted capture. */
  async deleteCapture(name: string): Promise<void> {
    await kubeRequest(this.kc, 'DELETE', `${this.capturesPath}/${name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** The agent's `session started` line for capture `name` and pod instance `podUID`. */
  sessionStarted(name: string, podUID: string, from = 0) {
    return this.agent.waitLog((r) => r.msg === 'session started' && r.name === name && r.podUID === podUID, { from, timeoutMs: 60_000 });
  }
}
