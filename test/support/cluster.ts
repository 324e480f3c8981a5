// The shared control plane as test files see it: clients from `inject`, a namespace per
// file, and server-side apply of plain manifests.

import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, inject, vi } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { APPLY_PATCH, isNotFound, kubeRequest } from '../../kube/http.ts';
import { controlPlaneClients, type ControlPlaneClients } from '../../local/control-plane.ts';
import type { SharedControlPlane } from './control-plane-setup.ts';
import { requireOrSkip } from './require.ts';

/** Whether the shared control plane runs; use as `describe.runIf(controlPlaneAvailable)`. */
export const controlPlaneAvailable = requireOrSkip('a Kubernetes control plane', () => {
  const provided = inject('controlPlane');
  return 'unavailable' in provided ? provided.unavailable : undefined;
});

export interface Cluster extends ControlPlaneClients {
  info: SharedControlPlane;
  /** Restarts the shared kube-apiserver: every open watch ends and clients must reconnect. */
  restartApiServer(): Promise<void>;
}

let connected: Cluster | undefined;

export function cluster(): Cluster {
  if (connected) return connected;
  const info = inject('controlPlane');
  if ('unavailable' in info) throw new Error(`no control plane: ${info.unavailable}`);
  connected = { ...controlPlaneClients(info), info, restartApiServer: () => restartApiServer(info.controlSocket) };
  return connected;
}

function restartApiServer(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/restart-apiserver', method: 'POST' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`restart failed: ${body}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A Kubernetes object as read from a manifest: enough to address it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

interface ResourceList {
  resources: { name: string; kind: string; namespaced: boolean }[];
}

interface Located {
  path: string;
  /** the namespace the object lives in; undefined for cluster-scoped kinds */
  namespace?: string;
}

// discovery, so CRDs resolve like built-ins
async function locate(kc: KubeConfig, obj: KubeObject, namespace?: string): Promise<Located> {
  const base = obj.apiVersion.includes('/') ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  const list = await kubeRequest<ResourceList>(kc, 'GET', base);
  const resource = list.resources.find((r) => r.kind === obj.kind && !r.name.includes('/'));
  if (!resource) throw new Error(`${obj.apiVersion} has no kind ${obj.kind}`);
  if (!resource.namespaced) return { path: `${base}/${resource.name}/${obj.metadata.name}` };
  const ns = obj.metadata.namespace ?? namespace;
  if (!ns) throw new Error(`${obj.kind} ${obj.metadata.name} is namespaced but has no namespace`);
  return { path: `${base}/namespaces/${ns}/${resource.name}/${obj.metadata.name}`, namespace: ns };
}

/** The REST path of an object; `namespace` is for namespaced objects whose manifest names none. */
export async function objectPath(kc: KubeConfig, obj: KubeObject, namespace?: string): Promise<string> {
  return (await locate(kc, obj, namespace)).path;
}

export interface ApplyOptions {
  /** for namespaced objects whose manifest names none */
  namespace?: string;
  dryRun?: boolean;
  fieldManager?: string;
}

/** Server-side apply, as `kubectl apply --server-side --force-conflicts` would send it. */
export async function apply<T = KubeObject>(kc: KubeConfig, obj: KubeObject, opts: ApplyOptions = {}): Promise<T> {
  const { path, namespace } = await locate(kc, obj, opts.namespace);
  return kubeRequest<T>(kc, 'PATCH', path, {
    body: namespace ? { ...obj, metadata: { ...obj.metadata, namespace } } : obj,
    contentType: APPLY_PATCH,
    query: {
      fieldManager: opts.fieldManager ?? 'packet-capture-tests',
      force: true,
      dryRun: opts.dryRun ? 'All' : undefined,
    },
  });
}

/** Every object in a multi-document YAML file; empty documents are skipped. */
export async function readManifests(file: string): Promise<KubeObject[]> {
  const docs = parseAllDocuments(await readFile(file, 'utf8'));
  for (const doc of docs) if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
  return docs.map((d) => d.toJS() as KubeObject | null).filter((o): o is KubeObject => !!o);
}

/**
 * The objects of every synthesized manifest (*.k8s.yaml) in a directory, in file-name order;
 * dist/kustomization.yaml is kustomize's, not an object for the API server.
 */
export async function readManifestDir(dir: string): Promise<KubeObject[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.k8s.yaml')).sort();
  return (await Promise.all(files.map((f) => readManifests(join(dir, f))))).flat();
}

export const DIST_DIR = fileURLToPath(new URL('../../dist/', import.meta.url));

/** Kinds that run pods: applying them makes controllers schedule pods onto simulated nodes. */
export const WORKLOAD_KINDS = new Set(['Deployment', 'DaemonSet', 'StatefulSet', 'ReplicaSet', 'Job', 'CronJob', 'Pod']);

// what `kubectl apply` and Argo CD order first: everything else may live in or refer to them
const applyRank = (o: KubeObject): number => (o.kind === 'Namespace' ? 0 : o.kind === 'CustomResourceDefinition' ? 1 : 2);

/** Namespaces, then CRDs, then the rest, each group in its original order. */
export const inApplyOrder = (objects: KubeObject[]): KubeObject[] =>
  objects.map((o, i) => ({ o, i })).sort((a, b) => applyRank(a.o) - applyRank(b.o) || a.i - b.i).map(({ o }) => o);

interface Crd {
  status?: { conditions?: { type: string; status: string }[] };
}

/** Until the API server serves the CRD's kind (condition Established=True). */
export async function waitEstablished(kc: KubeConfig, crdName: string): Promise<void> {
  await vi.waitFor(
    async () => {
      const crd = await kubeRequest<Crd>(kc, 'GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crdName}`);
      const established = crd.status?.conditions?.find((c) => c.type === 'Established');
      if (established?.status !== 'True') throw new Error(`CRD ${crdName} is not Established yet`);
    },
    { timeout: 60_000, interval: 100 },
  );
}

/** Applies the CRDs of dist/ and waits until each is served. */
export async function installCrds(kc: KubeConfig): Promise<void> {
  const crds = (await readManifestDir(DIST_DIR)).filter((o) => o.kind === 'CustomResourceDefinition');
  if (crds.length === 0) throw new Error(`no CustomResourceDefinition in ${DIST_DIR}; run npm run synth`);
  for (const crd of crds) await apply(kc, crd);
  for (const crd of crds) await waitEstablished(kc, crd.metadata.name);
}

export interface TestNamespace {
  /** exists from the file's beforeAll until its afterAll */
  readonly name: string;
}

/**
 * A uniquely named namespace for this test file, created before its tests and deleted
 * after them. Waits for the `default` ServiceAccount, without which pods are rejected.
 */
export function useNamespace(prefix: string): TestNamespace {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  beforeAll(async () => {
    const { kubeConfig } = cluster();
    await kubeRequest(kubeConfig, 'POST', '/api/v1/namespaces', {
      body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'packet-capture.dev/test': prefix } } },
    });
    await vi.waitFor(() => kubeRequest(kubeConfig, 'GET', `/api/v1/namespaces/${name}/serviceaccounts/default`), {
      timeout: 60_000,
      interval: 100,
    });
  });
  afterAll(async () => {
    await kubeRequest(cluster().kubeConfig, 'DELETE', `/api/v1/namespaces/${name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  });
  return { name };
}
