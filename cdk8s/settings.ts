// What every construct of the app agrees on: where it runs, what it runs, how it is labelled.

/** The image runs both components; its entrypoint is the packet-capture CLI. */
export const DEFAULT_IMAGE = 'ghcr.io/packet-capture/packet-capture:0.1.0';

/**
 * PACKET_CAPTURE_IMAGE overrides the image for a custom build. dist/ is synthesized
 * without it, so the committed manifests do not depend on who ran the synth.
 */
export const image = (): string => process.env.PACKET_CAPTURE_IMAGE ?? DEFAULT_IMAGE;

export const NAMESPACE = 'packet-capture-system';

export const PART_OF = { 'app.kubernetes.io/part-of': 'packet-capture' };

/** The labels that select one component's pods (and its Service's endpoints). */
export const componentLabels = (component: 'controller' | 'agent' | 'api') => ({
  'app.kubernetes.io/name': 'packet-capture',
  'app.kubernetes.io/component': component,
});

/**
 * The V8 bounds of each component's container (NODE_OPTIONS), which the bench runs them
 * with too, so its memory figures are the Deployment's and the DaemonSet's. An old-space
 * bound makes V8 collect before the heap nears the container's limit (the agent's limit
 * also holds its tcpdumps). A small young generation keeps garbage from sitting resident:
 * left to itself V8 grows the semi-spaces to 64 MB each under a large cluster's event rate;
 * 4 MB rather than 16 took 24 MB off the controller at 10,000 captures for the same CPU
 * (bench/results/full-scale.md).
 */
export const NODE_OPTIONS = {
  controller: '--max-old-space-size=512 --max-semi-space-size=4',
  agent: '--max-old-space-size=256 --max-semi-space-size=4',
} as const;

/** The port of /healthz, /readyz and /metrics. */
export const OPS_PORT = { controller: 8080, agent: 8081 } as const;

/** The agent's data port: capture files and streams, mutual TLS, for the packet-capture API only. */
export const AGENT_DATA_PORT = 8444;

/** The packet-capture API's HTTPS port (apiserver/), which the Kubernetes API server forwards to. */
export const API_PORT = 8443;

/**
 * PACKET_CAPTURE_MONITORING=true adds the Prometheus Operator's ServiceMonitor, PodMonitor and
 * PrometheusRule (cdk8s/monitoring.ts). Off by default: those kinds exist only where the
 * Operator's CRDs are installed, and dist/ must apply on any cluster.
 */
export const monitoring = (): boolean => process.env.PACKET_CAPTURE_MONITORING === 'true';
