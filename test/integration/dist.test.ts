// What ships in dist/ (synthesized by cdk8s) must be accepted by a real API server as is:
// an invalid schema, CEL rule or RBAC rule is caught here, not by Argo CD in a user's cluster.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNotFound, kubeRequest } from '../../kube/http.ts';
import { GROUP, KIND, PLURAL, SHORT_NAME, VERSION } from '../../crds/packetcapture.ts';
import {
  apply,
  cluster,
  controlPlaneAvailable,
  DIST_DIR,
  inApplyOrder,
  objectPath,
  readManifestDir,
  waitEstablished,
  WORKLOAD_KINDS,
  type KubeObject,
} from '../support/cluster.ts';

interface APIResourceList {
  resources: { name: string; kind: string; namespaced: boolean; shortNames?: string[] }[];
}

describe.runIf(controlPlaneAvailable)('dist/ manifests', () => {
  let objects: KubeObject[] = [];

  beforeAll(async () => {
    objects = inApplyOrder(await readManifestDir(DIST_DIR));
  });

  // The controller Deployment and agent DaemonSet would otherwise put pods onto the
  // simulated nodes of later files; the CRD and RBAC stay, other files use them.
  afterAll(async () => {
    const { kubeConfig } = cluster();
    for (const obj of objects.filter((o) => WORKLOAD_KINDS.has(o.kind))) {
      await kubeRequest(kubeConfig, 'DELETE', await objectPath(kubeConfig, obj), {
        query: { propagationPolicy: 'Background' },
      }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  });

  it('every object in dist/ is accepted by server-side apply', async () => {
    const { kubeConfig } = cluster();
    expect(objects.map((o) => o.kind)).toContain('CustomResourceDefinition');
    for (const obj of objects) {
      // validated but not stored: a registered APIService with no server behind it would make
      // discovery (and namespace deletion) of the shared control plane fail for every file;
      // test/integration/tenancy.test.ts registers one with its server
      const applied = await apply(kubeConfig, obj, { dryRun: obj.kind === 'APIService' });
      expect(applied.metadata, `${obj.kind} ${obj.metadata.name}`).toHaveProperty('uid');
    }
  });

  it('the PacketCapture CRD becomes Established and is served with its short name', async () => {
    const { kubeConfig } = cluster();
    await waitEstablished(kubeConfig, `${PLURAL}.${GROUP}`);
    const list = await kubeRequest<APIResourceList>(kubeConfig, 'GET', `/apis/${GROUP}/${VERSION}`);
    const served = list.resources.find((r) => r.name === PLURAL);
    expect(served).toMatchObject({ kind: KIND, namespaced: true, shortNames: expect.arrayContaining([SHORT_NAME]) });
  });
});
