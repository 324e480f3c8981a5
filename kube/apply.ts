import { readFile } from 'node:fs/promises';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { APPLY_PATCH, kubeRequest } from './http.ts';

/** Every object in a multi-document YAML file, in file order; empty documents dropped. */
export async function readManifests(file: string): Promise<KubernetesObject[]> {
  const docs = parseAllDocuments(await readFile(file, 'utf8'));
  return docs.map((d) => d.toJS() as KubernetesObject | null).filter((o): o is KubernetesObject => !!o);
}

interface ApiResourceList {
  resources: { name: string; kind: string; namespaced: boolean }[];
}

/** The REST path of an object, from API discovery (so callers need not know if a kind is namespaced). */
async function objectPath(kc: KubeConfig, obj: KubernetesObject, cache: Map<string, ApiResourceList>): Promise<string> {
  const apiVersion = obj.apiVersion ?? 'v1';
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  let list = cache.get(base);
  if (!list) {
    list = await kubeRequest<ApiResourceList>(kc, 'GET', base);
    cache.set(base, list);
  }
  const resource = list.resources.find((r) => r.kind === obj.kind && !r.name.includes('/'));
  if (!resource) throw new Error(`the API server does not serve ${obj.kind} in ${apiVersion}`);
  const ns = resource.namespaced ? `/namespaces/${obj.metadata?.namespace ?? 'default'}` : '';
  return `${base}${ns}/${resource.name}/${obj.metadata?.name ?? ''}`;
}

/**
 * Server-side apply of whole objects (manifests, CRDs, test fixtures). The objects go to the
 * server as the JSON they are: client-node's typed serializer would drop the x-kubernetes-*
 * keys of a CRD schema (list-map keys, CEL rules).
 */
export async function applyObjects(
  kc: KubeConfig,
  objects: KubernetesObject[],
  opts: { fieldManager?: string; dryRun?: boolean } = {},
): Promise<KubernetesObject[]> {
  const discovery = new Map<string, ApiResourceList>();
  const applied: KubernetesObject[] = [];
  for (const obj of objects) {
    applied.push(
      await kubeRequest<KubernetesObject>(kc, 'PATCH', await objectPath(kc, obj, discovery), {
        query: { fieldManager: opts.fieldManager ?? 'packet-capture', force: true, dryRun: opts.dryRun ? 'All' : undefined },
        contentType: APPLY_PATCH,
        body: obj,
      }),
    );
  }
  return applied;
}
