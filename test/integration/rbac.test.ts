// The synthesized RBAC, exercised with real identities against a real authorizer: users
// get PacketCaptures through the built-in edit/view roles (aggregation), capture files
// through edit and admin only, and each
// component's ServiceAccount can do its job and nothing a compromise would want.

import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { API_GROUP, DATA_CA_NAME, SUBRESOURCES } from '../../apiserver/api.ts';
import { DataCredentials, readDataCaBundle } from '../../apiserver/data-ca.ts';
import { pemCertificates } from '../../kube/certificates.ts';
import { API_VERSION, GROUP, KIND, PLURAL, agentFieldManager } from '../../crds/packetcapture.ts';
import { APPLY_PATCH, KubeError, kubeRequest, MERGE_PATCH } from '../../kube/http.ts';
import {
  apply,
  cluster,
  controlPlaneAvailable,
  DIST_DIR,
  inApplyOrder,
  installCrds,
  readManifestDir,
  useNamespace,
  WORKLOAD_KINDS,
  type KubeObject,
} from '../support/cluster.ts';

const WAIT = { timeout: 60_000, interval: 200 };

interface PodTemplateOwner extends KubeObject {
  metadata: { name: string; namespace: string };
  spec: { template: { spec: { serviceAccountName?: string } } };
}

/** The ServiceAccount the pods of a dist/ workload run as. */
function serviceAccountOf(objects: KubeObject[], kind: string): { namespace: string; name: string } {
  const owner = objects.find((o) => o.kind === kind) as PodTemplateOwner | undefined;
  const name = owner?.spec.template.spec.serviceAccountName;
  if (!owner || !name) throw new Error(`dist/ has no ${kind} with a serviceAccountName`);
  return { namespace: owner.metadata.namespace, name };
}

const forbidden = (err: unknown): boolean => err instanceof KubeError && err.statusCode === 403;

async function expectForbidden(request: Promise<unknown>): Promise<void> {
  await expect(request).rejects.toSatisfy(forbidden);
}

interface AccessReview {
  status: { allowed: boolean };
}

/** Asks the authorizer as `kc`'s own identity, without needing the object to exist. */
async function can(kc: KubeConfig, attributes: Record<string, string>): Promise<boolean> {
  const review = await kubeRequest<AccessReview>(kc, 'POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
    body: {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: attributes },
    },
  });
  return review.status.allowed;
}

describe.runIf(controlPlaneAvailable)('RBAC from dist/', () => {
  const ns = useNamespace('rbac');
  const collection = () => `/apis/${API_VERSION}/namespaces/${ns.name}/${PLURAL}`;
  const capture = (name: string) => ({
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name },
    spec: { target: { podName: 'web-0' } },
  });
  let objects: KubeObject[] = [];

  const bind = (clusterRole: string, user: string) =>
    kubeRequest(cluster().kubeConfig, 'POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns.name}/rolebindings`, {
      body: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: `${user}-${clusterRole}` },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
      },
    });

  beforeAll(async () => {
    const { kubeConfig } = cluster();
    objects = inApplyOrder(await readManifestDir(DIST_DIR));
    await installCrds(kubeConfig);
    // everything but the workloads: their pods are not needed to judge what their accounts may do
    // nor the APIService: without its server it would fail discovery for every file (tenancy.test.ts registers one)
    for (const obj of objects.filter((o) => !WORKLOAD_KINDS.has(o.kind) && o.kind !== 'APIService')) await apply(kubeConfig, obj);
    await kubeRequest(kubeConfig, 'POST', collection(), { body: capture('existing') });
  });

  it('a user bound to edit in a namespace can create PacketCaptures there and nowhere else', async () => {
    await bind('edit', 'erin');
    const erin = await cluster().mintKubeconfig({ user: 'erin' });
    // the controller-manager aggregates our ClusterRole into edit shortly after it appears
    await vi.waitFor(() => kubeRequest(erin, 'POST', collection(), { body: capture('by-erin') }), WAIT);
    await expectForbidden(
      kubeRequest(erin, 'POST', `/apis/${API_VERSION}/namespaces/default/${PLURAL}`, { body: capture('by-erin') }),
    );
  });

  it('a user bound to view can read PacketCaptures but not create them', async () => {
    await bind('view', 'victor');
    const victor = await cluster().mintKubeconfig({ user: 'victor' });
    await vi.waitFor(() => kubeRequest(victor, 'GET', `${collection()}/existing`), WAIT);
    await expectForbidden(kubeRequest(victor, 'POST', collection(), { body: capture('by-victor') }));
  });

  it('reading capture files and streams (packetcaptures/files, /stream) comes with admin and edit in that namespace, not with view', async () => {
    await Promise.all([bind('admin', 'ada'), bind('edit', 'edna'), bind('view', 'vera')]);
    const [ada, edna, vera] = await Promise.all([cluster().mintKubeconfig({ user: 'ada' }), cluster().mintKubeconfig({ user: 'edna' }), cluster().mintKubeconfig({ user: 'vera' })]);
    const files = { namespace: ns.name, verb: 'get', group: API_GROUP, resource: PLURAL, subresource: SUBRESOURCES.files, name: 'existing' };
    await vi.waitFor(async () => {
      expect(await can(ada, files)).toBe(true);
      expect(await can(edna, files)).toBe(true);
    }, WAIT);
    // the view role has aggregated packet-capture-view by now: viewers read the capture, not its files
    await vi.waitFor(async () => expect(await can(vera, { ...files, group: GROUP, subresource: '' })).toBe(true), WAIT);
    expect(await can(vera, files)).toBe(false);
    // and the live stream likewise
    expect(await can(edna, { ...files, subresource: SUBRESOURCES.stream })).toBe(true);
    expect(await can(vera, { ...files, subresource: SUBRESOURCES.stream })).toBe(false);
    expect(await can(edna, { ...files, namespace: 'default' })).toBe(false);
    // the role that once opened pods/proxy to the agents' namespace is gone
    expect(objects.some((o) => o.metadata.name === 'packet-capture-fetch')).toBe(false);
  });

  it("the agent's ServiceAccount can patch status but not write spec or read Secrets", async () => {
    const account = serviceAccountOf(objects, 'DaemonSet');
    const agent = await cluster().serviceAccountKubeconfig(account.namespace, account.name);
    const existing = `${collection()}/existing`;

    await kubeRequest(agent, 'PATCH', `${existing}/status`, {
      contentType: APPLY_PATCH,
      query: { fieldManager: agentFieldManager('node-a'), force: true },
      body: {
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: 'existing' },
        status: {
          sessions: [
            {
              id: 'rbac-test',
              podUID: '00000000-0000-0000-0000-000000000001',
              podName: 'web-0',
              nodeName: 'node-a',
              generation: 1,
              state: 'Pending',
            },
          ],
        },
      },
    });
    await expectForbidden(
      kubeRequest(agent, 'PATCH', existing, {
        contentType: MERGE_PATCH,
        body: { spec: { target: { podName: 'someone-else' } } },
      }),
    );
    await expectForbidden(kubeRequest(agent, 'GET', `/api/v1/namespaces/${ns.name}/secrets`));
    await expectForbidden(kubeRequest(agent, 'GET', '/api/v1/secrets'));
  });

  it("the API's ServiceAccount makes the data CA; the agent's reads its certificates, never its key", async () => {
    const deployment = objects.find((o) => o.kind === 'Deployment' && o.metadata?.name === 'packet-capture-api') as PodTemplateOwner;
    const api = { namespace: deployment.metadata.namespace, name: deployment.spec.template.spec.serviceAccountName! };
    const apiKc = await cluster().serviceAccountKubeconfig(api.namespace, api.name);
    const agentAccount = serviceAccountOf(objects, 'DaemonSet');
    const agentKc = await cluster().serviceAccountKubeconfig(agentAccount.namespace, agentAccount.name);
    const log = pino({ level: 'silent' });
    const made = await DataCredentials.start({ kubeConfig: apiKc, namespace: api.namespace, log });
    try {
      const bundle = await readDataCaBundle(agentKc, api.namespace);
      expect(bundle).toBeDefined();
      expect(new X509Certificate(made.current().cert).checkIssued(new X509Certificate(pemCertificates(bundle!)[0]!))).toBe(true);
      // a second start (a restart, another replica) keeps the CA: agents trust it already
      const again = await DataCredentials.start({ kubeConfig: apiKc, namespace: api.namespace, log });
      again.close();
      expect(await readDataCaBundle(agentKc, api.namespace)).toBe(bundle);
      await expectForbidden(kubeRequest(agentKc, 'GET', `/api/v1/namespaces/${api.namespace}/secrets/${DATA_CA_NAME}`));
      await expectForbidden(kubeRequest(apiKc, 'GET', `/api/v1/namespaces/${api.namespace}/secrets`));
      await expectForbidden(kubeRequest(apiKc, 'GET', `/api/v1/namespaces/${api.namespace}/configmaps`));
    } finally {
      made.close();
      for (const kind of ['secrets', 'configmaps']) await kubeRequest(cluster().kubeConfig, 'DELETE', `/api/v1/namespaces/${api.namespace}/${kind}/${DATA_CA_NAME}`).catch(() => undefined);
    }
  });

  it("the controller's ServiceAccount can read pods but neither create them nor exec into them", async () => {
    const account = serviceAccountOf(objects, 'Deployment');
    const controller = await cluster().serviceAccountKubeconfig(account.namespace, account.name);
    expect(await can(controller, { verb: 'list', resource: 'pods' })).toBe(true);
    expect(await can(controller, { verb: 'patch', group: GROUP, resource: PLURAL, subresource: 'status' })).toBe(true);
    expect(await can(controller, { verb: 'create', resource: 'pods', subresource: 'exec', namespace: ns.name })).toBe(
      false,
    );
    await expectForbidden(
      kubeRequest(controller, 'POST', `/api/v1/namespaces/${ns.name}/pods`, {
        body: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'not-allowed' },
          spec: { containers: [{ name: 'c', image: 'busybox' }] },
        },
      }),
    );
  });
});
