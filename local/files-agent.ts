// A node agent's data port over a directory of capture files, announced on its presence
// Lease as an agent announces itself: for tests and benchmarks of the packet-capture API
// that need files to read, not captures running. Same server, same mutual TLS, same Lease
// annotations as agent/main.ts.

import type { KubeConfig } from '@kubernetes/client-node';
import { readDataCaBundle } from '../apiserver/data-ca.ts';
import { AGENT_LEASE_LABEL } from '../controller/agents.ts';
import { startDataServer } from '../agent/data-server.ts';
import { agentLeaseName } from '../agent/lease.ts';
import { DATA_CERT_ANNOTATION, DATA_URL_ANNOTATION, filesRoute } from '../agent/serve.ts';
import { kubeRequest } from '../kube/http.ts';
import { microTime } from '../kube/lease.ts';
import type { Logger } from '../kube/log.ts';
import { LOCAL_TRUST_NAMESPACE } from './control-plane.ts';

export async function serveCaptureFiles(
  kc: KubeConfig,
  opts: { dataDir: string; leaseNamespace: string; node: string; log: Logger },
): Promise<{ url: string; close(): Promise<void> }> {
  const data = await startDataServer({
    port: 0,
    host: '127.0.0.1',
    advertiseAddress: '127.0.0.1',
    node: opts.node,
    routes: [filesRoute(opts.dataDir)],
    trust: () => readDataCaBundle(kc, LOCAL_TRUST_NAMESPACE),
    publish: () => Promise.reject(new Error('a files agent does not renew its certificate')),
    log: opts.log,
  });
  await kubeRequest(kc, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${opts.leaseNamespace}/leases`, {
    body: {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: agentLeaseName(opts.node), labels: { [AGENT_LEASE_LABEL]: 'true' }, annotations: { [DATA_URL_ANNOTATION]: data.url, [DATA_CERT_ANNOTATION]: data.pinned() } },
      spec: { holderIdentity: opts.node, leaseDurationSeconds: 3600, renewTime: microTime(Date.now()) },
    },
  });
  return { url: data.url, close: () => data.close() };
}
