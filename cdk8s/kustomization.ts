// dist/kustomization.yaml makes dist/ of a tag a kustomize base: Argo CD and Flux sync it as
// it is (a folder without one is applied recursively, file by file), `kubectl apply -k dist/`
// installs it, and an overlay can patch it or swap the image without copying the manifests.

import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';

export const KUSTOMIZATION_FILE = 'kustomization.yaml';

/** kustomize's `images:` entry for an image reference: the name it matches, and a tag or digest. */
export interface ImageEntry {
  name: string;
  newTag?: string;
  digest?: string;
}

export function imageEntry(ref: string): ImageEntry {
  const at = ref.indexOf('@');
  const named = at >= 0 ? ref.slice(0, at) : ref;
  // a colon before the last slash belongs to a registry's port, not to a tag
  const colon = named.lastIndexOf(':');
  const name = colon > named.lastIndexOf('/') ? named.slice(0, colon) : named;
  if (at >= 0) return { name, digest: ref.slice(at + 1) };
  return name === named ? { name } : { name, newTag: named.slice(colon + 1) };
}

const HEADER = `# Written by npm run synth (cdk8s/kustomization.ts): every manifest in this folder, and
# the image they run, which an overlay (or Argo CD's kustomize.images, Flux's spec.images)
# can replace. kubectl apply -k dist/ installs the lot.
`;

/** The kustomization listing `manifests` (file names beside it), its images pinned to `image`. */
export function kustomization(manifests: readonly string[], image: string): string {
  return (
    HEADER +
    stringify({
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      resources: [...manifests],
      images: [imageEntry(image)],
    })
  );
}

/**
 * Writes the kustomization for what app.synth() just wrote to `outdir`. It lists the files
 * found rather than the charts, so it cannot name a file cdk8s did not write (its chart
 * namer adds index prefixes once charts depend on each other).
 */
export function writeKustomization(outdir: string, manifestExtension: string, image: string): void {
  const manifests = readdirSync(outdir)
    .filter((file) => file.endsWith(manifestExtension))
    .sort();
  writeFileSync(join(outdir, KUSTOMIZATION_FILE), kustomization(manifests, image));
}
