// The cluster-wide reconciler: one replica at a time (it takes a Lease before writing),
// unprivileged, reading PacketCaptures and pods and writing status, finalizers and Events.

import { Size } from 'cdk8s';
import { Cpu, Deployment, EnvValue, ServiceAccount, Volume } from 'cdk8s-plus-28';
import { Construct } from 'constructs';
import {
  EVENTS,
  grantClusterWide,
  grantInNamespace,
  LEASES,
  PACKETCAPTURES,
  PACKETCAPTURES_FINALIZERS,
  PACKETCAPTURES_STATUS,
  PODS,
} from './rbac.ts';
import { componentLabels, NODE_OPTIONS, OPS_PORT } from './settings.ts';
import { containerBasics, opsService, restrictedContainer, selectByLabels } from './workload.ts';

export interface ControllerProps {
  namespace: string;
  image: string;
}

const NAME = 'packet-capture-controller';
/** any unprivileged id: the controller owns no file in the image */
const NONROOT = 65532;

export class Controller extends Construct {
  constructor(scope: Construct, id: string, { namespace, image }: ControllerProps) {
    super(scope, id);
    const labels = componentLabels('controller');
    const account = { name: NAME, namespace };

    const serviceAccount = new ServiceAccount(this, 'account', { metadata: account });
    grantClusterWide(this, NAME, account, [
      { ...PACKETCAPTURES, verbs: ['get', 'list', 'watch', 'patch', 'update'] },
      { ...PACKETCAPTURES_STATUS, verbs: ['get', 'patch', 'update'] },
      { ...PACKETCAPTURES_FINALIZERS, verbs: ['update'] },
      { ...PODS, verbs: ['get', 'list', 'watch'] },
      { ...EVENTS, verbs: ['create', 'patch'] },
    ]);
    // its own leader-election Lease, and the agents' presence Leases (which nodes have one)
    grantInNamespace(this, NAME, account, [{ ...LEASES, verbs: ['get', 'list', 'watch', 'create', 'update'] }]);

    const deployment = new Deployment(this, 'deployment', {
      metadata: { name: NAME, namespace, labels },
      // cdk8s-plus defaults to 2; a second replica would only wait for the Lease
      replicas: 1,
      select: false,
      podMetadata: { labels },
      serviceAccount,
      // cdk8s-plus defaults to false; the controller talks to the API server
      automountServiceAccountToken: true,
      securityContext: { ensureNonRoot: true, user: NONROOT, group: NONROOT },
    });
    selectByLabels(deployment, labels);
    deployment.addContainer({
      name: 'controller',
      ...containerBasics(image, OPS_PORT.controller),
      args: ['controller', '--leader-elect'],
      envVariables: { NODE_OPTIONS: EnvValue.fromValue(NODE_OPTIONS.controller) },
      // cdk8s-plus defaults to 1 CPU and 512Mi requested. Measured (bench/results/full.md):
      // 115-145 MB resident once synced (Node and the bundle, 3,000-30,000 pods); peak 144 MB
      // at 1,000 captures over 3,000 pods, 236 MB at 10,000 over 30,000.
      resources: {
        cpu: { request: Cpu.millis(50), limit: Cpu.millis(500) },
        memory: { request: Size.mebibytes(256), limit: Size.gibibytes(1) },
      },
      // the Pod Security "restricted" level
      securityContext: restrictedContainer(NONROOT),
      // the root filesystem is read-only: a writable /tmp for what expects one (a heap snapshot, a library's temp file)
      volumeMounts: [{ volume: Volume.fromEmptyDir(this, 'tmp', 'tmp'), path: '/tmp' }],
    });

    opsService(this, { name: `${NAME}-metrics`, namespace, labels, port: OPS_PORT.controller });
  }
}
