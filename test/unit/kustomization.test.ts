// dist/kustomization.yaml is what Argo CD, Flux and `kubectl apply -k dist/` read instead of
// the files themselves, so it must name every manifest synth writes, pin the image the
// manifests run at the package's version, and render to exactly the objects of the files.
// (That it is what synth writes is synth.test.ts's check of the whole of dist/.)

import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { imageEntry, kustomization, KUSTOMIZATION_FILE } from '../../cdk8s/kustomization.ts';
import { isExecutable, requireOrSkip } from '../support/require.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST = join(ROOT, 'dist');
const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

// Loosely typed: the assertions below say what they expect of each object.
type Obj = any;

const manifestFiles = (): string[] => readdirSync(DIST).filter((f) => f.endsWith('.k8s.yaml'));
const objectsOf = (text: string): Obj[] => parseAllDocuments(text).map((d) => d.toJS() as Obj);
const key = (o: Obj): string => `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byKey = (objects: Obj[]): Obj[] => [...objects].sort((a, b) => key(a).localeCompare(key(b)));

/**
 * kubectl for `kubectl kustomize`: the one scripts/control-plane-binaries caches (any
 * version; kustomize is built into each), else one on PATH.
 */
function findKubectl(): string | undefined {
  const cache = process.env.PACKET_CAPTURE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'packet-capture');
  const cached = (() => {
    try {
      return readdirSync(join(cache, 'control-plane'))
        .sort()
        .reverse()
        .map((v) => join(cache, 'control-plane', v, 'kubectl'));
    } catch {
      return [];
    }
  })();
  const onPath = (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, 'kubectl'));
  return [process.env.TEST_ASSET_KUBECTL, ...cached, ...onPath].find((p): p is string => !!p && isExecutable(p));
}

describe('dist/kustomization.yaml', () => {
  const spec: Obj = parse(readFileSync(join(DIST, KUSTOMIZATION_FILE), 'utf8'));
  const objects = manifestFiles().flatMap((f) => objectsOf(readFileSync(join(DIST, f), 'utf8')));

  it('lists every manifest in dist/, and nothing else', () => {
    expect(spec).toMatchObject({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization' });
    expect([...spec.resources].sort()).toEqual(manifestFiles().sort());
    expect(manifestFiles()).toEqual(expect.arrayContaining(['packet-capture-crds.k8s.yaml', 'packet-capture.k8s.yaml']));
  });

  it("pins the image every container runs, tagged with package.json's version", () => {
    const containers = objects
      .filter((o) => o.spec?.template?.spec)
      .flatMap((o) => [...o.spec.template.spec.containers, ...(o.spec.template.spec.initContainers ?? [])]);
    expect(containers.length).toBeGreaterThan(0);
    expect(spec.images).toEqual([{ name: 'ghcr.io/packet-capture/packet-capture', newTag: version }]);
    for (const c of containers) expect(c.image, c.name).toBe(`${spec.images[0].name}:${version}`);
  });

  describe.runIf(
    requireOrSkip('kubectl (for kubectl kustomize)', () =>
      findKubectl() ? undefined : 'none cached by scripts/control-plane-binaries and none on PATH',
    ),
  )('kubectl kustomize dist/', () => {
    it('renders exactly the objects of the manifests, offline and without a cluster', async () => {
      const { stdout } = await promisify(execFile)(findKubectl()!, ['kustomize', DIST], {
        env: { ...process.env, KUBECONFIG: '/dev/null' },
        maxBuffer: 64 * 1024 * 1024,
      });
      expect(byKey(objectsOf(stdout))).toEqual(byKey(objects));
    }, 60_000);
  });
});

describe('the kustomization of a synth', () => {
  it('names the files it is given, in order, and the image by name and tag', () => {
    const spec: Obj = parse(kustomization(['a.k8s.yaml', 'b.k8s.yaml'], 'registry.example/pcap:dev'));
    expect(spec.resources).toEqual(['a.k8s.yaml', 'b.k8s.yaml']);
    expect(spec.images).toEqual([{ name: 'registry.example/pcap', newTag: 'dev' }]);
  });

  it("reads a registry's port as part of the image name, not as its tag", () => {
    expect(imageEntry('localhost:5000/pcap')).toEqual({ name: 'localhost:5000/pcap' });
    expect(imageEntry('localhost:5000/pcap:1.2.0')).toEqual({ name: 'localhost:5000/pcap', newTag: '1.2.0' });
  });

  it('pins an image given by digest to that digest, dropping any tag beside it', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(imageEntry(`ghcr.io/p/pcap@${digest}`)).toEqual({ name: 'ghcr.io/p/pcap', digest });
    expect(imageEntry(`ghcr.io/p/pcap:0.1.0@${digest}`)).toEqual({ name: 'ghcr.io/p/pcap', digest });
  });

  it('quotes a version YAML would otherwise read as a number', () => {
    const spec: Obj = parse(kustomization(['a.k8s.yaml'], 'ghcr.io/p/pcap:1.10'));
    expect(spec.images[0].newTag).toBe('1.10');
  });
});
