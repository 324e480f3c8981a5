// Prometheus Operator objects for the metrics both components serve on their ops port:
// a ServiceMonitor for the controller, a PodMonitor for the agents (one target per node,
// labelled with it) and a PrometheusRule with the alerts an operator acts on. They need the
// Operator's CRDs, so the app adds them only when asked (settings.ts, `monitoring`).

import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import { componentLabels } from './settings.ts';

export interface MonitoringProps {
  namespace: string;
}

const API_VERSION = 'monitoring.coreos.com/v1';
/** The job labels of the two scrape targets, as the alerts select them. */
export const JOBS = { controller: 'packet-capture-controller', agent: 'packet-capture-agent' } as const;
/** The port name both components' containers and the controller's Service give /metrics. */
const PORT = 'http';

/** Prometheus alerting rules, as a PrometheusRule's spec.groups[].rules holds them. */
export interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: 'warning' | 'critical' };
  annotations: { summary: string; description: string };
}

const agentUp = `up{job="${JOBS.agent}"}`;

export const ALERTS: readonly AlertRule[] = [
  {
    // the phase is Failed exactly when Stalled=True: a spec only an edit can fix
    alert: 'PacketCaptureStalled',
    expr: 'max(packet_capture_controller_captures{phase="Failed"}) > 0',
    for: '5m',
    labels: { severity: 'warning' },
    annotations: {
      summary: 'PacketCaptures are Failed (Stalled)',
      description:
        '{{ $value }} PacketCapture(s) have been Failed (Stalled=True) for 5 minutes: the agent or the controller refused the spec. ' +
        'kubectl get pcap -A shows which; kubectl describe pcap names the reason; edit the spec to fix it.',
    },
  },
  {
    alert: 'PacketCaptureSessionsFailing',
    expr: `sum by (node, reason) (increase(packetcapture_agent_sessions_failed_total{job="${JOBS.agent}"}[10m])) > 0`,
    for: '5m',
    labels: { severity: 'warning' },
    annotations: {
      summary: 'Capture sessions fail on node {{ $labels.node }} ({{ $labels.reason }})',
      description:
        'The agent on {{ $labels.node }} has had sessions fail with {{ $labels.reason }} for 5 minutes; ' +
        'see "Troubleshooting by reason" in the README (DiskFull: free space or set --disk-cap).',
    },
  },
  {
    // drops are events, not a state: any in the last 5 minutes means a capture file lacks packets
    alert: 'PacketCaptureKernelDrops',
    expr:
      `sum by (node, capture_namespace, capture_name) ` +
      `(increase(packetcapture_agent_packets_dropped_by_kernel_total{job="${JOBS.agent}"}[5m])) > 0`,
    for: '0m',
    labels: { severity: 'warning' },
    annotations: {
      summary: 'The kernel drops packets of capture {{ $labels.capture_namespace }}/{{ $labels.capture_name }} on node {{ $labels.node }}',
      description:
        'In the last 5 minutes tcpdump on {{ $labels.node }} did not read packets of {{ $labels.capture_namespace }}/{{ $labels.capture_name }} ' +
        'in time and the kernel dropped them: the capture files lack them (droppedByKernel in its sessions). ' +
        'Narrow spec.filter, lower spec.limits.snapLen, or give the agent more CPU.',
    },
  },
  {
    // PacketCaptureAgentDown needs an agent pod that stopped answering; this also catches a node no agent pod runs on
    alert: 'PacketCaptureNodeWithoutAgent',
    expr: `max by (namespace, target_node) (packet_capture_controller_targeted_pods_without_agent{job="${JOBS.controller}"}) > 0`,
    for: '5m',
    labels: { severity: 'critical' },
    annotations: {
      summary: 'Pods on node {{ $labels.target_node }} are targeted by PacketCaptures, and it has no agent',
      description:
        'For 5 minutes {{ $value }} targeted pod(s) have run on {{ $labels.target_node }}, which has no live agent (NoNodeAgent): ' +
        'their captures neither start nor stop. Is an agent pod scheduled there (taints, nodeSelector)? ' +
        'kubectl -n {{ $labels.namespace }} get pods -o wide --field-selector spec.nodeName={{ $labels.target_node }}.',
    },
  },
  {
    alert: 'PacketCaptureAgentDown',
    expr: `${agentUp} == 0`,
    for: '5m',
    labels: { severity: 'critical' },
    annotations: {
      summary: 'No working packet-capture agent on node {{ $labels.node }}',
      description:
        'The agent pod {{ $labels.pod }} on {{ $labels.node }} has not answered for 5 minutes: captures of pods on that node ' +
        'neither start nor stop (NoNodeAgent). kubectl -n {{ $labels.namespace }} describe pod {{ $labels.pod }}.',
    },
  },
  {
    alert: 'PacketCaptureControllerNoLeader',
    expr: `max(packet_capture_controller_leader{job="${JOBS.controller}"}) < 1 or absent(packet_capture_controller_leader{job="${JOBS.controller}"})`,
    for: '5m',
    labels: { severity: 'critical' },
    annotations: {
      summary: 'No packet-capture controller holds the leader Lease',
      description:
        'For 5 minutes no controller replica has been leader: no PacketCapture status, finalizer or Event is written, ' +
        'and deleted captures wait for their finalizer.',
    },
  },
];

/** Scrape relabelings: a fixed job name for the rules, and the node the target runs on. */
const relabelings = (job: string) => [
  { targetLabel: 'job', replacement: job },
  { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' },
];

export class Monitoring extends Construct {
  constructor(scope: Construct, id: string, { namespace }: MonitoringProps) {
    super(scope, id);
    const controller = componentLabels('controller');
    const agent = componentLabels('agent');

    new ApiObject(this, 'controller', {
      apiVersion: API_VERSION,
      kind: 'ServiceMonitor',
      metadata: { name: JOBS.controller, namespace, labels: controller },
      spec: {
        selector: { matchLabels: controller },
        endpoints: [{ port: PORT, path: '/metrics', relabelings: relabelings(JOBS.controller) }],
      },
    });

    // the agents' Service is headless and also serves files; scraping the pods says which node each is
    new ApiObject(this, 'agent', {
      apiVersion: API_VERSION,
      kind: 'PodMonitor',
      metadata: { name: JOBS.agent, namespace, labels: agent },
      spec: {
        selector: { matchLabels: agent },
        podMetricsEndpoints: [{ port: PORT, path: '/metrics', relabelings: relabelings(JOBS.agent) }],
      },
    });

    new ApiObject(this, 'rules', {
      apiVersion: API_VERSION,
      kind: 'PrometheusRule',
      metadata: { name: 'packet-capture', namespace, labels: { 'app.kubernetes.io/name': 'packet-capture' } },
      spec: { groups: [{ name: 'packet-capture', rules: ALERTS }] },
    });
  }
}
