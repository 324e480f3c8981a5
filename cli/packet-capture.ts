import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_DATA_DIR } from '../crds/packetcapture.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { createLogger } from '../kube/log.ts';

const SYSTEM_NAMESPACE = process.env.POD_NAMESPACE ?? 'packet-capture-system';

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number');
  return n;
};

/** Resolves when the process is asked to stop; the component then tears its streams down. */
const untilSignal = () =>
  new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });

const program = new Command('packet-capture')
  .description('capture packets from Kubernetes pod instances declared by PacketCapture resources')
  .showHelpAfterError();

program
  .command('controller')
  .description('run the cluster-wide reconciler')
  .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster, then KUBECONFIG / ~/.kube/config)')
  .option('--namespace <ns>', 'namespace of the leader-election Lease', SYSTEM_NAMESPACE)
  .option('--leader-elect', 'take a Lease before writing, so several replicas are safe', false)
  .option('--metrics-port <port>', '/healthz, /readyz, /metrics', port, 8080)
  .action(async (opts: { kubeconfig?: string; namespace: string; leaderElect: boolean; metricsPort: number }) => {
    const { runController } = await import('../controller/main.ts');
    const log = createLogger('controller');
    const handle = await runController({
      kubeConfig: loadKubeConfig(opts.kubeconfig),
      namespace: opts.namespace,
      leaderElect: opts.leaderElect,
      metricsPort: opts.metricsPort,
      log,
    });
    log.info({ signal: await untilSignal() }, 'stopping');
    await handle.stop();
  });

program
  .command('agent')
  .description('run the node agent: capture sessions for the pods on this node')
  .requiredOption('--node-name <name>', 'this node (NODE_NAME in the DaemonSet)', process.env.NODE_NAME)
  .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster, then KUBECONFIG / ~/.kube/config)')
  .option('--data-dir <dir>', 'where capture files are written', DEFAULT_DATA_DIR)
  .option('--namespace <ns>', 'namespace of the agent presence Lease', SYSTEM_NAMESPACE)
  .option('--metrics-port <port>', '/healthz, /metrics and capture files', port, 8081)
  .option('--proc-root <dir>', 'procfs to scan for pod processes', '/proc')
  .action(
    async (opts: {
      nodeName: string;
      kubeconfig?: string;
      dataDir: string;
      namespace: string;
      metricsPort: number;
      procRoot: string;
    }) => {
      const { runAgent } = await import('../agent/main.ts');
      const log = createLogger('agent', { node: opts.nodeName });
      const handle = await runAgent({
        kubeConfig: loadKubeConfig(opts.kubeconfig),
        nodeName: opts.nodeName,
        dataDir: opts.dataDir,
        namespace: opts.namespace,
        metricsPort: opts.metricsPort,
        procRoot: opts.procRoot,
        log,
      });
      log.info({ signal: await untilSignal() }, 'stopping');
      await handle.stop();
    },
  );

program
  .command('cluster')
  .description('run only the real control plane (etcd, kube-apiserver, controller-manager, scheduler)')
  .action(async () => {
    const { runCluster } = await import('../local/cluster.ts');
    await runCluster();
  });

await program.parseAsync();
