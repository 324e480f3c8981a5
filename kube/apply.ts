import { readFile } from 'node:fs/promises';
import { KubeConfig, KubernetesObjectApi, PatchStrategy, type KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

/** Every object in a multi-document YAML file, in file order; empty documents dropped. */
export async function readManifests(file: string): Promise<KubernetesObject[]> {
  const docs = parseAllDocuments(await readFile(file, 'utf8'));
  return docs.map((d) => d.toJS() as KubernetesObject | null).filter((o): o is KubernetesObject => !!o);
}

/**
 * Server-side apply of whole objects (manifests, CRDs, test fixtures), resolving each kind's
 * path by discovery, so callers need not know whether a kind is namespaced.
 */
export async function applyObjects(
  kc: KubeConfig,
  objects: KubernetesObject[],
  opts: { fieldManager?: string; dryRun?: boolean } = {},
): Promise<KubernetesObject[]> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const applied: KubernetesObject[] = [];
  for (const obj of objects) {
    applied.push(
      await api.patch(
        obj,
        undefined,
        opts.dryRun ? 'All' : undefined,
        opts.fieldManager ?? 'packet-capture',
        true,
        PatchStrategy.ServerSideApply,
      ),
    );
  }
  return applied;
}
