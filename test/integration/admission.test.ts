// The CRD in dist/ rejects bad specs at admission, in the real API server with its CEL
// evaluator, and says which field is wrong; everything valid, the examples included, passes.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, KIND, PLURAL } from '../../crds/packetcapture.ts';
import { KubeError, kubeRequest } from '../../kube/http.ts';
import { INVALID_SPECS, VALID_SPECS, type RawSpec } from '../fixtures/specs.ts';
import { apply, cluster, controlPlaneAvailable, installCrds, readManifests, useNamespace } from '../support/cluster.ts';

const EXAMPLES_DIR = fileURLToPath(new URL('../../examples/', import.meta.url));

describe.runIf(controlPlaneAvailable)('admission of PacketCapture specs', () => {
  const ns = useNamespace('admission');

  beforeAll(async () => {
    await installCrds(cluster().kubeConfig);
  });

  // dry run: admission, schema and CEL all run, nothing is stored
  const create = (name: string, spec: RawSpec) =>
    kubeRequest(cluster().kubeConfig, 'POST', `/apis/${API_VERSION}/namespaces/${ns.name}/${PLURAL}`, {
      query: { dryRun: 'All' },
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name }, spec },
    });

  it.each(INVALID_SPECS)('rejects $name ($by), naming $field', async ({ spec, field }) => {
    const rejection = await create('invalid', spec).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(rejection).toBeInstanceOf(KubeError);
    expect(rejection).toMatchObject({ statusCode: 422, reason: 'Invalid' });
    expect((rejection as KubeError).message).toContain(`${field}:`);
  });

  it.each(VALID_SPECS)('accepts $name', async ({ spec }) => {
    const created = await create('valid', spec);
    expect(created).toMatchObject({ spec });
  });

  it('accepts every PacketCapture in examples/*.yaml', async () => {
    const files = (await readdir(EXAMPLES_DIR)).filter((f) => f.endsWith('.yaml'));
    const examples = (await Promise.all(files.map((f) => readManifests(join(EXAMPLES_DIR, f))))).flat();
    const captures = examples.filter((o) => o.kind === KIND);
    expect(captures.length).toBeGreaterThan(0);
    for (const capture of captures) {
      // the examples live in their demo namespace, which this cluster does not have
      const inTestNamespace = { ...capture, metadata: { ...capture.metadata, namespace: ns.name } };
      await expect(apply(cluster().kubeConfig, inTestNamespace, { dryRun: true })).resolves.toMatchObject({
        spec: capture['spec'],
      });
    }
  });
});
