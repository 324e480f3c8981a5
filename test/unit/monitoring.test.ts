// The Prometheus Operator objects (cdk8s/monitoring.ts): they scrape what the components
// really serve, their alerts name metrics that exist, and the alerts fire when they should
// and not otherwise, checked by Prometheus's own rule evaluator (`promtool test rules`).

import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Testing } from 'cdk8s';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { AgentMetrics } from '../../agent/metrics.ts';
import { Agent } from '../../cdk8s/agent.ts';
import { Controller } from '../../cdk8s/controller.ts';
import { ALERTS, JOBS, Monitoring } from '../../cdk8s/monitoring.ts';
import { ControllerMetrics } from '../../controller/metrics.ts';
import { requireOrSkip } from '../support/require.ts';

const NAMESPACE = 'packet-capture-system';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MONITORING_KINDS = ['ServiceMonitor', 'PodMonitor', 'PrometheusRule'];

// Loosely typed: the assertions say what they expect of each object.
type Obj = any;

function synthesized(): Obj[] {
  const chart = Testing.chart();
  new Controller(chart, 'controller', { namespace: NAMESPACE, image: 'img' });
  new Agent(chart, 'agent', { namespace: NAMESPACE, image: 'img' });
  new Monitoring(chart, 'monitoring', { namespace: NAMESPACE });
  return Testing.synth(chart);
}

const objects = synthesized();
const one = (kind: string): Obj => {
  const found = objects.filter((o) => o.kind === kind);
  expect(found).toHaveLength(1);
  return found[0];
};
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

describe('the monitoring setting', () => {
  const kindsIn = async (dir: string) =>
    (await Promise.all((await readdir(dir)).filter((f) => f.endsWith('.k8s.yaml')).map(async (f) => parseAllDocuments(await readFile(join(dir, f), 'utf8')))))
      .flat()
      .map((d) => (d.toJS() as Obj).kind);

  it('is off in dist/: no kind of the Prometheus Operator there', async () => {
    expect((await kindsIn(join(ROOT, 'dist'))).filter((k) => MONITORING_KINDS.includes(k))).toEqual([]);
  });

  it('PACKET_CAPTURE_MONITORING=true adds them in a file of their own, listed in the kustomization', async () => {
    const out = await mkdtemp(join(tmpdir(), 'synth-monitoring-'));
    try {
      await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), 'cdk8s/main.ts'], {
        cwd: ROOT,
        env: { ...process.env, CDK8S_OUTDIR: out, PACKET_CAPTURE_MONITORING: 'true' },
      });
      const file = 'packet-capture-monitoring.k8s.yaml';
      const kinds = parseAllDocuments(await readFile(join(out, file), 'utf8')).map((d) => (d.toJS() as Obj).kind);
      expect(kinds.sort()).toEqual([...MONITORING_KINDS].sort());
      expect((await kindsIn(out)).filter((k) => MONITORING_KINDS.includes(k))).toHaveLength(MONITORING_KINDS.length);
      expect(parse(await readFile(join(out, 'kustomization.yaml'), 'utf8')).resources).toContain(file);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
    // a whole synth in a child process: seconds on a quiet machine, more on a busy one
  }, 60_000);
});

describe('scrape targets', () => {
  it("the ServiceMonitor selects the controller's metrics Service, by a port name it has", () => {
    const monitor = one('ServiceMonitor');
    const services = objects.filter((o) => o.kind === 'Service' && matches(monitor.spec.selector.matchLabels, o.metadata.labels));
    expect(services.map((s) => s.metadata.name)).toEqual(['packet-capture-controller-metrics']);
    expect(services[0].spec.ports.map((p: Obj) => p.name)).toContain(monitor.spec.endpoints[0].port);
    expect(monitor.metadata.namespace).toBe(services[0].metadata.namespace);
  });

  it("the PodMonitor selects the agent DaemonSet's pods, by their container's port name", () => {
    const monitor = one('PodMonitor');
    const workloads = objects.filter((o) => o.spec?.template && matches(monitor.spec.selector.matchLabels, o.spec.template.metadata.labels));
    expect(workloads.map((w) => `${w.kind}/${w.metadata.name}`)).toEqual(['DaemonSet/packet-capture-agent']);
    const ports = workloads[0].spec.template.spec.containers.flatMap((c: Obj) => c.ports.map((p: Obj) => p.name));
    expect(ports).toContain(monitor.spec.podMetricsEndpoints[0].port);
  });

  it('each target gets the job label the alerts select and its node', () => {
    const endpoints = [...one('ServiceMonitor').spec.endpoints, ...one('PodMonitor').spec.podMetricsEndpoints];
    expect(endpoints.map((e: Obj) => e.relabelings.find((r: Obj) => r.targetLabel === 'job').replacement)).toEqual([JOBS.controller, JOBS.agent]);
    for (const e of endpoints) {
      expect(e.relabelings).toContainEqual({ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' });
    }
  });
});

describe('alert rules', () => {
  it('name only metrics the controller and the agent export', async () => {
    const exported = new Set(
      [...(await new ControllerMetrics().registry.getMetricsAsJSON()), ...(await new AgentMetrics({ statusWrites: () => 0 }).registry.getMetricsAsJSON())].map(
        (m) => m.name,
      ),
    );
    const named = ALERTS.flatMap((a) => a.expr.match(/\bpacket_?capture_\w+/g) ?? []);
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((n) => !exported.has(n))).toEqual([]);
  });

  it('are what the PrometheusRule carries', () => {
    expect(one('PrometheusRule').spec.groups.flatMap((g: Obj) => g.rules)).toEqual(ALERTS);
  });
});

const promtoolAvailable = requireOrSkip('promtool', () => {
  const run = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return run.error ? `promtool --version failed: ${run.error.message} (apt-get install prometheus)` : undefined;
});

/** An alert as promtool expects it at an evaluation time: its labels, beyond alertname, and annotations. */
interface Expected {
  exp_labels: Record<string, string>;
  exp_annotations: Record<string, string>;
}

/** An alert that fired with `labels`; its annotations as written when they use no template. */
const fired = (alert: string, labels: Record<string, string>, annotations?: Record<string, string>): Expected => ({
  exp_labels: labels,
  exp_annotations: annotations ?? { ...ALERTS.find((a) => a.alert === alert)!.annotations },
});

describe.runIf(promtoolAvailable)('alerts, evaluated by promtool', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'promtool-'));
    await writeFile(join(work, 'rules.yaml'), stringify({ groups: one('PrometheusRule').spec.groups }));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** Runs one promtool unit test: `series` sampled every minute, alerts checked at minutes. */
  async function promtool(series: Record<string, string>, checks: [minute: number, alert: string, alerts: Expected[]][]): Promise<string> {
    const test = {
      rule_files: ['rules.yaml'],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: Object.entries(series).map(([s, values]) => ({ series: s, values })),
          alert_rule_test: checks.map(([minute, alertname, exp_alerts]) => ({ eval_time: `${minute}m`, alertname, exp_alerts })),
        },
      ],
    };
    await writeFile(join(work, 'test.yaml'), stringify(test));
    const run = spawnSync('promtool', ['test', 'rules', 'test.yaml'], { cwd: work, encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`promtool test rules failed:\n${run.stdout}${run.stderr}`);
    return run.stdout;
  }

  const controller = `job="${JOBS.controller}",namespace="${NAMESPACE}",pod="packet-capture-controller-0"`;
  const agentOn = (node: string) => `job="${JOBS.agent}",namespace="${NAMESPACE}",pod="packet-capture-agent-${node}",node="${node}"`;

  it('fires PacketCaptureStalled once a capture has been Failed for 5 minutes, not for other phases', async () => {
    await promtool(
      {
        [`packet_capture_controller_captures{${controller},phase="Failed"}`]: '0 0 1x20',
        [`packet_capture_controller_captures{${controller},phase="Pending"}`]: '3x20',
        [`packet_capture_controller_leader{${controller}}`]: '1x20',
      },
      [
        [5, 'PacketCaptureStalled', []],
        [
          8,
          'PacketCaptureStalled',
          [
            fired('PacketCaptureStalled', { severity: 'warning' }, {
              summary: 'PacketCaptures are Failed (Stalled)',
              description:
                '1 PacketCapture(s) have been Failed (Stalled=True) for 5 minutes: the agent or the controller refused the spec. ' +
                'kubectl get pcap -A shows which; kubectl describe pcap names the reason; edit the spec to fix it.',
            }),
          ],
        ],
      ],
    );
  });

  it('fires PacketCaptureSessionsFailing per node and reason while sessions keep failing', async () => {
    await promtool(
      {
        [`packetcapture_agent_sessions_failed_total{${agentOn('node-a')},reason="DiskFull"}`]: '0 0 1 2 3 4 5 6 7 8 9 10 11 12',
        [`packetcapture_agent_sessions_failed_total{${agentOn('node-b')},reason="DiskFull"}`]: '0x13',
      },
      [
        [3, 'PacketCaptureSessionsFailing', []],
        [
          9,
          'PacketCaptureSessionsFailing',
          [
            fired('PacketCaptureSessionsFailing', { severity: 'warning', node: 'node-a', reason: 'DiskFull' }, {
              summary: 'Capture sessions fail on node node-a (DiskFull)',
              description:
                'The agent on node-a has had sessions fail with DiskFull for 5 minutes; ' +
                'see "Troubleshooting by reason" in the README (DiskFull: free space or set --disk-cap).',
            }),
          ],
        ],
      ],
    );
  });

  it('fires PacketCaptureKernelDrops per node and capture within 5 minutes of drops, not for a count that does not grow', async () => {
    const capture = (ns: string, name: string) => `capture_namespace="${ns}",capture_name="${name}"`;
    await promtool(
      {
        [`packetcapture_agent_packets_dropped_by_kernel_total{${agentOn('node-a')},${capture('shop', 'web')}}`]: '0 0 0 5x12',
        // an agent that restarted into sessions which had dropped before
        [`packetcapture_agent_packets_dropped_by_kernel_total{${agentOn('node-b')},${capture('shop', 'db')}}`]: '3x15',
      },
      [
        [2, 'PacketCaptureKernelDrops', []],
        [
          3,
          'PacketCaptureKernelDrops',
          [
            fired('PacketCaptureKernelDrops', { severity: 'warning', node: 'node-a', capture_namespace: 'shop', capture_name: 'web' }, {
              summary: 'The kernel drops packets of capture shop/web on node node-a',
              description:
                'In the last 5 minutes tcpdump on node-a did not read packets of shop/web in time and the kernel dropped them: ' +
                'the capture files lack them (droppedByKernel in its sessions). ' +
                'Narrow spec.filter, lower spec.limits.snapLen, or give the agent more CPU.',
            }),
          ],
        ],
        [10, 'PacketCaptureKernelDrops', []],
      ],
    );
  });

  it('fires PacketCaptureNodeWithoutAgent once per node whose targeted pods have had no agent for 5 minutes, whichever replica reports it', async () => {
    const replica = (i: number) => `job="${JOBS.controller}",namespace="${NAMESPACE}",pod="packet-capture-controller-${i}"`;
    await promtool(
      {
        [`packet_capture_controller_targeted_pods_without_agent{${replica(0)},target_node="node-c"}`]: '_ _ 2x20',
        [`packet_capture_controller_targeted_pods_without_agent{${replica(1)},target_node="node-c"}`]: '_ _ 2x20',
        // its agent came back within 5 minutes: the series went
        [`packet_capture_controller_targeted_pods_without_agent{${replica(0)},target_node="node-d"}`]: '_ _ 1 1 stale',
      },
      [
        [5, 'PacketCaptureNodeWithoutAgent', []],
        [
          8,
          'PacketCaptureNodeWithoutAgent',
          [
            fired('PacketCaptureNodeWithoutAgent', { severity: 'critical', namespace: NAMESPACE, target_node: 'node-c' }, {
              summary: 'Pods on node node-c are targeted by PacketCaptures, and it has no agent',
              description:
                'For 5 minutes 2 targeted pod(s) have run on node-c, which has no live agent (NoNodeAgent): ' +
                'their captures neither start nor stop. Is an agent pod scheduled there (taints, nodeSelector)? ' +
                `kubectl -n ${NAMESPACE} get pods -o wide --field-selector spec.nodeName=node-c.`,
            }),
          ],
        ],
      ],
    );
  });

  it('fires PacketCaptureAgentDown for the node whose agent stopped answering, with its name', async () => {
    await promtool(
      {
        [`up{${agentOn('node-a')}}`]: '1x20',
        [`up{${agentOn('node-b')}}`]: '1 1 0x20',
      },
      [
        [5, 'PacketCaptureAgentDown', []],
        [
          8,
          'PacketCaptureAgentDown',
          [
            fired(
              'PacketCaptureAgentDown',
              { severity: 'critical', job: JOBS.agent, namespace: NAMESPACE, pod: 'packet-capture-agent-node-b', node: 'node-b' },
              {
                summary: 'No working packet-capture agent on node node-b',
                description:
                  'The agent pod packet-capture-agent-node-b on node-b has not answered for 5 minutes: captures of pods on that node ' +
                  `neither start nor stop (NoNodeAgent). kubectl -n ${NAMESPACE} describe pod packet-capture-agent-node-b.`,
              },
            ),
          ],
        ],
      ],
    );
  });

  it('fires PacketCaptureControllerNoLeader when no replica has led for 5 minutes, also when none is scraped', async () => {
    await promtool({ [`packet_capture_controller_leader{${controller}}`]: '1 1 0x20' }, [
      [5, 'PacketCaptureControllerNoLeader', []],
      [8, 'PacketCaptureControllerNoLeader', [fired('PacketCaptureControllerNoLeader', { severity: 'critical' })]],
    ]);
    await promtool({ [`up{${controller}}`]: '1x20' }, [
      [8, 'PacketCaptureControllerNoLeader', [fired('PacketCaptureControllerNoLeader', { severity: 'critical', job: JOBS.controller })]],
    ]);
  });
});
