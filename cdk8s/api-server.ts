// The packet-capture API (apiserver/): a Deployment serving the aggregated API group
// subresources.packetcapture.dev, its APIService and Service, and what it may do: review
// access (system:auth-delegator), read the front-proxy trust (extension-apiserver-
// authentication-reader in kube-system), and find the agents by their Leases.
//
// Its serving certificate comes from the Secret packet-capture-api-tls (tls.crt, tls.key);
// the APIService's caBundle must hold the CA that signed it. With cert-manager, a
// Certificate for the Service's name fills the Secret and its CA injector fills caBundle
// (the annotation below); either way caBundle is filled at run time (README: GitOps).

import { Size } from 'cdk8s';
import { Cpu, Deployment, EnvValue, ImagePullPolicy, k8s, Secret, ServiceAccount, Volume } from 'cdk8s-plus-28';
import { Construct } from 'constructs';
import { API_GROUP, API_VERSION, APISERVICE_NAME, DATA_CA_NAME } from '../apiserver/api.ts';
import { CONFIGMAPS, grantClusterWide, grantInNamespace, LEASES, PACKETCAPTURES, SECRETS } from './rbac.ts';
import { API_PORT, componentLabels } from './settings.ts';
import { restrictedContainer, selectByLabels } from './workload.ts';

export interface ApiServerProps {
  namespace: string;
  image: string;
}

const NAME = 'packet-capture-api';
export const API_TLS_SECRET = `${NAME}-tls`;
const NONROOT = 65532;
const TLS_DIR = '/var/run/packet-capture-api/tls';

export class ApiServer extends Construct {
  constructor(scope: Construct, id: string, { namespace, image }: ApiServerProps) {
    super(scope, id);
    const labels = componentLabels('api');
    const account = { name: NAME, namespace };
    const serviceAccount = new ServiceAccount(this, 'account', { metadata: account });
    const subject = [{ kind: 'ServiceAccount', name: NAME, namespace }];

    // SubjectAccessReviews (and TokenReviews) for every request, as any aggregated server
    new k8s.KubeClusterRoleBinding(this, 'auth-delegator', {
      metadata: { name: `${NAME}:system:auth-delegator` },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' },
      subjects: subject,
    });
    // the front-proxy CA and header names (kube-system/extension-apiserver-authentication)
    new k8s.KubeRoleBinding(this, 'auth-reader', {
      metadata: { name: `${NAME}:extension-apiserver-authentication-reader`, namespace: 'kube-system' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'extension-apiserver-authentication-reader' },
      subjects: subject,
    });
    grantClusterWide(this, NAME, account, [{ ...PACKETCAPTURES, verbs: ['get'] }]);
    // the agents' presence Leases: which nodes have an agent, its URL and certificate; the data
    // CA it makes and rotates (apiserver/data-ca.ts). `create` cannot be limited to a name.
    grantInNamespace(this, NAME, account, [
      { ...LEASES, verbs: ['get', 'list'] },
      { ...SECRETS, resourceNames: [DATA_CA_NAME], verbs: ['get', 'update'] },
      { ...CONFIGMAPS, resourceNames: [DATA_CA_NAME], verbs: ['get', 'update'] },
      { ...SECRETS, verbs: ['create'] },
      { ...CONFIGMAPS, verbs: ['create'] },
    ]);

    const deployment = new Deployment(this, 'deployment', {
      metadata: { name: NAME, namespace, labels },
      replicas: 1,
      select: false,
      podMetadata: { labels },
      serviceAccount,
      automountServiceAccountToken: true,
      securityContext: { ensureNonRoot: true, user: NONROOT, group: NONROOT },
    });
    selectByLabels(deployment, labels);
    const tls = Volume.fromSecret(this, 'tls', Secret.fromSecretName(this, 'tls-secret', API_TLS_SECRET), { name: 'tls' });
    deployment.addContainer({
      name: 'api',
      image,
      // as the other components: a tagged release, pulled once per node (side-loaded images work)
      imagePullPolicy: ImagePullPolicy.IF_NOT_PRESENT,
      ports: [{ name: 'https', number: API_PORT }],
      args: ['apiserver', '--tls-cert-file', `${TLS_DIR}/tls.crt`, '--tls-private-key-file', `${TLS_DIR}/tls.key`, '--port', String(API_PORT)],
      envVariables: { NODE_OPTIONS: EnvValue.fromValue('--max-old-space-size=256') },
      resources: {
        cpu: { request: Cpu.millis(50), limit: Cpu.millis(1000) },
        memory: { request: Size.mebibytes(128), limit: Size.mebibytes(512) },
      },
      securityContext: restrictedContainer(NONROOT),
      volumeMounts: [
        { volume: tls, path: TLS_DIR, readOnly: true },
        { volume: Volume.fromEmptyDir(this, 'tmp', 'tmp'), path: '/tmp' },
      ],
    });

    new k8s.KubeService(this, 'service', {
      metadata: { name: NAME, namespace, labels },
      spec: { selector: labels, ports: [{ name: 'https', port: 443, targetPort: k8s.IntOrString.fromString('https') }] },
    });

    new k8s.KubeApiService(this, 'apiservice', {
      metadata: {
        name: APISERVICE_NAME,
        // cert-manager's CA injector fills caBundle from the Certificate of the same name
        annotations: { 'cert-manager.io/inject-ca-from': `${namespace}/${NAME}` },
      },
      spec: {
        group: API_GROUP,
        version: API_VERSION,
        service: { namespace, name: NAME, port: 443 },
        // below the CRD's packetcapture.dev (1000), so `packetcaptures` still means the CRD's
        groupPriorityMinimum: 900,
        versionPriority: 15,
      },
    });
  }
}
