import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_DATA_DIR } from '../crds/packetcapture.ts';
import { parseDuration, parseQuantity } from '../crds/units.ts';
import { createLogger } from '../kube/log.ts';
// Only light modules above: the components and @kubernetes/client-node (0.6 s to load) are
// imported by each command after it handles SIGTERM (see untilSignal).

const SYSTEM_NAMESPACE = process.env.POD_NAMESPACE ?? 'packet-capture-system';

const port = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number');
  return n;
};

/** A commander argument parser from one of the API's unit parsers, with its message on bad input. */
const parsed =
  (parse: (text: string) => number) =>
  (value: string): number => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };

/**
 * Resolves when the process is asked to stop; the component then tears its streams down.
 * Call it first, before any slow start-up work: as PID 1 in a container a SIGTERM that no
 * listener takes is lost (Node's native handler re-raises it, and PID 1 ignores signals left
 * at their default), so until this runs the pod could only be SIGKILLed.
 */
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
    const stopping = untilSignal();
    const { loadKubeConfig } = await import('../kube/client.ts');
    const { runController } = await import('../controller/main.ts');
    const log = createLogger('controller');
    const handle = await runController({
      kubeConfig: loadKubeConfig(opts.kubeconfig),
      namespace: opts.namespace,
      leaderElect: opts.leaderElect,
      metricsPort: opts.metricsPort,
      log,
    });
    log.info({ signal: await stopping }, 'stopping');
    await handle.stop();
  });

program
  .command('agent')
  .description('run the node agent: capture sessions for the pods on this node')
  .requiredOption('--node-name <name>', 'this node (NODE_NAME in the DaemonSet)', process.env.NODE_NAME)
  .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster, then KUBECONFIG / ~/.kube/config)')
  .option('--data-dir <dir>', 'where capture files are written', DEFAULT_DATA_DIR)
  .option('--namespace <ns>', 'namespace of the agent presence Lease', SYSTEM_NAMESPACE)
  .option('--metrics-port <port>', '/healthz, /readyz, /metrics', port, 8081)
  .option('--data-port <port>', 'capture files and streams, mutual TLS, for the packet-capture API only', port, 8444)
  .option('--trust-namespace <ns>', "namespace of the packet-capture API's data CA (default: --namespace)")
  .option('--proc-root <dir>', 'procfs to scan for pod processes', '/proc')
  .option('--retention <duration>', 'keep files of a deleted capture this long', parsed(parseDuration), parseDuration('24h'))
  .option('--disk-cap <quantity>', 'remove the oldest ended sessions beyond this much data (e.g. 20Gi)', parsed(parseQuantity))
  .action(
    async (opts: {
      nodeName: string;
      kubeconfig?: string;
      dataDir: string;
      namespace: string;
      metricsPort: number;
      dataPort: number;
      trustNamespace?: string;
      procRoot: string;
      retention: number;
      diskCap?: number;
    }) => {
      const stopping = untilSignal();
      const { loadKubeConfig } = await import('../kube/client.ts');
      const { runAgent } = await import('../agent/main.ts');
      const log = createLogger('agent', { node: opts.nodeName });
      const handle = await runAgent({
        kubeConfig: loadKubeConfig(opts.kubeconfig),
        nodeName: opts.nodeName,
        dataDir: opts.dataDir,
        namespace: opts.namespace,
        metricsPort: opts.metricsPort,
        dataPort: opts.dataPort,
        trustNamespace: opts.trustNamespace,
        procRoot: opts.procRoot,
        retentionMs: opts.retention,
        diskCapBytes: opts.diskCap,
        log,
      });
      log.info({ signal: await stopping }, 'stopping');
      await handle.stop();
    },
  );

program
  .command('apiserver')
  .description('serve the packet-capture API (capture files, authorized per namespace) behind the Kubernetes API server')
  .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster, then KUBECONFIG / ~/.kube/config)')
  .option('--namespace <ns>', "namespace of the agents' presence Leases", SYSTEM_NAMESPACE)
  .requiredOption('--tls-cert-file <file>', 'serving certificate (PEM), signed by the CA in the APIService caBundle')
  .requiredOption('--tls-private-key-file <file>', 'its key (PEM)')
  .option('--port <port>', 'HTTPS port', port, 8443)
  .action(async (opts: { kubeconfig?: string; namespace: string; tlsCertFile: string; tlsPrivateKeyFile: string; port: number }) => {
    const stopping = untilSignal();
    const { loadKubeConfig } = await import('../kube/client.ts');
    const { runApiComponent } = await import('../apiserver/main.ts');
    const log = createLogger('apiserver');
    const server = await runApiComponent({
      kubeConfig: loadKubeConfig(opts.kubeconfig),
      systemNamespace: opts.namespace,
      certFile: opts.tlsCertFile,
      keyFile: opts.tlsPrivateKeyFile,
      port: opts.port,
      log,
    });
    log.info({ signal: await stopping }, 'stopping');
    await server.close();
  });

program
  .command('cluster')
  .description('run only the real control plane (etcd, kube-apiserver, controller-manager, scheduler)')
  .action(async () => {
    const { runCluster } = await import('../local/cluster.ts');
    await runCluster();
  });

const count = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 20) throw new InvalidArgumentError('must be a whole number from 1 to 20');
  return n;
};

/** Runs a local-mode command: a StartError is the user's to fix, so it gets no stack trace. */
async function local(run: () => Promise<number>): Promise<never> {
  const { StartError } = await import('../local/start.ts');
  try {
    process.exit(await run());
  } catch (err) {
    if (!(err instanceof StartError)) throw err;
    console.error(`packet-capture: ${err.message}`);
    process.exit(1);
  }
}

program
  .command('start')
  .description('the embedded local cluster (control plane, simulated nodes, controller, agents) until Ctrl-C')
  .option('--nodes <n>', 'simulated nodes', count, 2)
  .option('--kubeconfig <file>', 'run the controller and an agent for this machine against that cluster instead')
  .option('--local', 'start the embedded cluster even when a cluster is configured', false)
  .option('--data-dir <dir>', "the agents' capture files, one directory per node", '.local/data')
  .option('--node-name <name>', 'with --kubeconfig: the node this machine is (default: its hostname)')
  .option('--real-node', 'one real node (kubelet + containerd, built once) running the shipped image and dist/, instead of simulated nodes', false)
  .action(async (opts: { nodes: number; kubeconfig?: string; local: boolean; dataDir: string; nodeName?: string; realNode: boolean }) => {
    const { runStart } = await import('../local/start.ts');
    await local(() => runStart(opts));
  });

program
  .command('demo')
  .description('on a local cluster: capture web-0, recreate it, and check every file holds only its own instance')
  .option('--kubeconfig <file>', 'a running local cluster (npm start); default: .local/kubeconfig if it answers, else a fresh one')
  .option('-o, --output <dir>', 'where the capture files are fetched to', '.local/demo')
  .option('--real-node', 'with no local cluster running: on a real node of its own (kubelet + containerd running dist/)', false)
  .action(async (opts: { kubeconfig?: string; output: string; realNode: boolean }) => {
    const { runDemoCommand } = await import('../local/demo.ts');
    await local(() => runDemoCommand(opts));
  });

program
  .command('provision')
  .description('install the system packages every test suite needs (apt-get, as root): npm test runs it first, and .ci/run')
  .action(async () => {
    const { provision, systemIO, TESTS } = await import('../local/provision.ts');
    const say = (line: string) => process.stderr.write(`packet-capture: ${line}\n`);
    const why = await provision('npm test', TESTS, { rootHint: 'sudo npm test' }, systemIO(TESTS, say));
    if (!why) return;
    // outside CI the suites that lack something skip and say why (test/support/require.ts)
    const inCI = process.env.CI === 'true';
    say(inCI ? `${why}; under CI=true nothing may be skipped` : `${why}; the suites that need them skip`);
    process.exitCode = inCI ? 1 : 0;
  });

await program.parseAsync();
