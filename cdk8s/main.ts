// The cdk8s app behind dist/ (`npm run synth`): the CRD in one file, so it can be applied
// before anything that uses it, and the installation in another; beside them the
// kustomization that lists both (cdk8s/kustomization.ts).

import { App, Chart, YamlOutputType } from 'cdk8s';
import { Namespace } from 'cdk8s-plus-28';
import { Agent } from './agent.ts';
import { ApiServer } from './api-server.ts';
import { Controller } from './controller.ts';
import { PacketCaptureCrd } from './crd.ts';
import { writeKustomization } from './kustomization.ts';
import { Monitoring } from './monitoring.ts';
import { UserRoles } from './rbac.ts';
import { image, monitoring, NAMESPACE, PART_OF } from './settings.ts';

const app = new App({ yamlOutputType: YamlOutputType.FILE_PER_CHART });

const crds = new Chart(app, 'packet-capture-crds', { labels: PART_OF });
new PacketCaptureCrd(crds, 'packetcapture');

const install = new Chart(app, 'packet-capture', { labels: PART_OF });
new Namespace(install, 'namespace', {
  metadata: {
    name: NAMESPACE,
    // the agent's hostPID, hostPath and capabilities are beyond the baseline Pod Security level
    labels: { 'pod-security.kubernetes.io/enforce': 'privileged' },
  },
});
new Controller(install, 'controller', { namespace: NAMESPACE, image: image() });
new Agent(install, 'agent', { namespace: NAMESPACE, image: image() });
new ApiServer(install, 'api', { namespace: NAMESPACE, image: image() });
new UserRoles(install, 'users');

// a file of its own, so the installation applies where the Prometheus Operator is not installed
if (monitoring()) {
  const monitors = new Chart(app, 'packet-capture-monitoring', { labels: PART_OF });
  new Monitoring(monitors, 'monitoring', { namespace: NAMESPACE });
}

app.synth();
writeKustomization(app.outdir, app.outputFileExtension, image());
