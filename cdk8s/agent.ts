// The node agent, one per node. It runs tcpdump inside pods' network namespaces, so it
// needs the host's process table (hostPID) and a few capabilities, but not privileged
// mode: NET_ADMIN and NET_RAW to capture, SYS_ADMIN to enter another network namespace,
// SYS_PTRACE to open /proc/<pid>/ns/net of processes it does not own, SETUID and SETGID
// for tcpdump's own change of ids (below). It runs as root
// because those checks are made against the pods' root-owned processes.

import { ApiObject, JsonPatch, Size } from 'cdk8s';
import {
  Capability,
  Cpu,
  DaemonSet,
  EnvFieldPaths,
  EnvValue,
  HostPathVolumeType,
  Node,
  NodeTaintQuery,
  ServiceAccount,
  Volume,
  k8s,
} from 'cdk8s-plus-28';
import { Construct } from 'constructs';
import { DATA_CA_NAME } from '../apiserver/api.ts';
import { DEFAULT_DATA_DIR } from '../crds/packetcapture.ts';
import { CONFIGMAPS, EVENTS, grantClusterWide, grantInNamespace, LEASES, PACKETCAPTURES, PACKETCAPTURES_STATUS, PODS } from './rbac.ts';
import { AGENT_DATA_PORT, componentLabels, NODE_OPTIONS, OPS_PORT } from './settings.ts';
import { containerBasics, opsService, selectByLabels } from './workload.ts';

export interface AgentProps {
  namespace: string;
  image: string;
}

const NAME = 'packet-capture-agent';

export class Agent extends Construct {
  constructor(scope: Construct, id: string, { namespace, image }: AgentProps) {
    super(scope, id);
    const labels = componentLabels('agent');
    const account = { name: NAME, namespace };

    const serviceAccount = new ServiceAccount(this, 'account', { metadata: account });
    // status but not spec, and no Secrets: a compromised agent can neither retarget
    // captures nor read credentials
    grantClusterWide(this, NAME, account, [
      { ...PACKETCAPTURES, verbs: ['get', 'list', 'watch'] },
      { ...PACKETCAPTURES_STATUS, verbs: ['get', 'patch'] },
      { ...PODS, verbs: ['get', 'list', 'watch'] },
      { ...EVENTS, verbs: ['create', 'patch'] },
    ]);
    // its presence Lease, by which the controller knows the node has an agent; the data CA's
    // certificates (never its key, which is a Secret of the API's), to know the API by
    grantInNamespace(this, NAME, account, [
      { ...LEASES, verbs: ['get', 'create', 'update', 'patch'] },
      { ...CONFIGMAPS, resourceNames: [DATA_CA_NAME], verbs: ['get'] },
    ]);

    const daemonSet = new DaemonSet(this, 'daemonset', {
      metadata: { name: NAME, namespace, labels },
      select: false,
      podMetadata: { labels },
      serviceAccount,
      // cdk8s-plus defaults to false; the agent talks to the API server
      automountServiceAccountToken: true,
      securityContext: { ensureNonRoot: false, user: 0, group: 0 },
    });
    selectByLabels(daemonSet, labels);
    // every node may run pods worth capturing, tainted or not
    daemonSet.scheduling.tolerate(Node.tainted(NodeTaintQuery.any()));
    // cdk8s-plus has no hostPID. Patches apply to the props before cdk8s renders them,
    // hence hostPid; synth.test.ts checks that hostPID comes out.
    ApiObject.of(daemonSet).addJsonPatch(JsonPatch.add('/spec/template/spec/hostPid', true));

    const data = Volume.fromHostPath(this, 'data', 'data', {
      path: DEFAULT_DATA_DIR,
      type: HostPathVolumeType.DIRECTORY_OR_CREATE,
    });
    daemonSet.addContainer({
      name: 'agent',
      ...containerBasics(image, OPS_PORT.agent),
      ports: [
        { name: 'http', number: OPS_PORT.agent },
        { name: 'data', number: AGENT_DATA_PORT },
      ],
      args: ['agent', '--metrics-port', String(OPS_PORT.agent), '--data-port', String(AGENT_DATA_PORT)],
      envVariables: {
        NODE_NAME: EnvValue.fromFieldRef(EnvFieldPaths.NODE_NAME),
        POD_NAMESPACE: EnvValue.fromFieldRef(EnvFieldPaths.POD_NAMESPACE),
        // the address the packet-capture API reaches the agent's files at (its presence Lease says it)
        POD_IP: EnvValue.fromFieldRef(EnvFieldPaths.POD_IP),
        NODE_OPTIONS: EnvValue.fromValue(NODE_OPTIONS.agent),
      },
      // cdk8s-plus defaults to 1 CPU and 512Mi requested, on every node. Measured (bench/results/full.md):
      // the agent alone is ~100 MB resident at rest and ~130 MB with 100 sessions, and every
      // tcpdump in its container adds up to ~14 MB (100 sessions: 1,365 MB, shared pages
      // counted in each), all under this one limit.
      resources: {
        cpu: { request: Cpu.millis(20), limit: Cpu.millis(500) },
        memory: { request: Size.mebibytes(256), limit: Size.gibibytes(1) },
      },
      securityContext: {
        ensureNonRoot: false,
        user: 0,
        group: 0,
        privileged: false,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: {
          drop: [Capability.ALL],
          // SETUID and SETGID: tcpdump built with a default user (Debian's) changes its ids
          // even when told to stay root (`-Z root` still calls initgroups and setuid), and
          // fails without them (measured on a real kubelet + containerd node)
          add: [Capability.NET_ADMIN, Capability.NET_RAW, Capability.SYS_ADMIN, Capability.SYS_PTRACE, Capability.SETUID, Capability.SETGID],
        },
      },
      volumeMounts: [
        // the same path inside and out, so paths in status are paths on the node
        { volume: data, path: DEFAULT_DATA_DIR },
        // the root filesystem is read-only: a writable /tmp for what expects one (a heap snapshot, a library's temp file)
        { volume: Volume.fromEmptyDir(this, 'tmp', 'tmp'), path: '/tmp' },
      ],
    });

    // headless: one address per agent, for Prometheus to scrape each one's metrics
    opsService(this, { name: NAME, namespace, labels, port: OPS_PORT.agent, headless: true });

    // Defence in depth where the CNI enforces policies: the data port admits the packet-capture
    // API's pods alone (it also demands the API's client certificate); metrics stay open to
    // whoever scrapes them, as they carry no capture data.
    new k8s.KubeNetworkPolicy(this, 'data-port-policy', {
      metadata: { name: `${NAME}-data`, namespace, labels },
      spec: {
        podSelector: { matchLabels: labels },
        policyTypes: ['Ingress'],
        ingress: [
          { from: [{ podSelector: { matchLabels: componentLabels('api') } }], ports: [{ protocol: 'TCP', port: k8s.IntOrString.fromNumber(AGENT_DATA_PORT) }] },
          { ports: [{ protocol: 'TCP', port: k8s.IntOrString.fromNumber(OPS_PORT.agent) }] },
        ],
      },
    });
  }
}
