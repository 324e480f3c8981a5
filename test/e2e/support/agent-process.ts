// An agent as its own process, for tests that kill it (kill -9) and start it again:
//   node --import tsx test/e2e/support/agent-process.ts
// configured by environment: KUBECONFIG, NODE_NAME, DATA_DIR, POD_NAMESPACE. Prints
// `{"port":N}` on stdout once it serves, and stops cleanly on SIGTERM.

import { runAgent } from '../../../agent/main.ts';
import { LOCAL_TRUST_NAMESPACE } from '../../../local/control-plane.ts';
import { loadKubeConfig } from '../../../kube/client.ts';
import { createLogger } from '../../../kube/log.ts';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set`);
  return value;
};

const nodeName = env('NODE_NAME');
const log = createLogger('agent', { node: nodeName });
const handle = await runAgent({
  kubeConfig: loadKubeConfig(env('KUBECONFIG')),
  nodeName,
  dataDir: env('DATA_DIR'),
  namespace: env('POD_NAMESPACE'),
  trustNamespace: LOCAL_TRUST_NAMESPACE,
  metricsPort: 0,
  log,
  statusThrottleMs: 500,
  timing: { pollMs: 500, retryMs: 200, maxRetryMs: 2000 },
});
await handle.ready;
process.stdout.write(`${JSON.stringify({ port: handle.port })}\n`);
process.once('SIGTERM', () => {
  void handle.stop('SIGTERM').then(() => process.exit(0));
});
