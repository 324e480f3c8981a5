// kubectl-pcap: the kubectl plugin for PacketCaptures (`kubectl pcap ...` once bin/ is on
// PATH). It talks only to the API server: capture files come from the agent of each node
// through the API server's proxy, at the path the agent publishes on its presence Lease.

import { resolve } from 'node:path';
import { Command } from 'commander';
import { distinctUntilChanged, map } from 'rxjs';
import type { PacketCapture } from '../crds/packetcapture.ts';
import { watchSnapshots } from '../kube/watch.ts';
import { captureEvents, capturesPath, connect, getCapture, listCaptures, PcapError, type GlobalOptions } from './pcap/client.ts';
import { fetchCapture, otherLeftOut } from './pcap/fetch.ts';
import { describeText, listTable, watchText } from './pcap/render.ts';

const program = new Command('kubectl-pcap')
  .description('PacketCaptures: list, describe, watch, and fetch their files from the node agents')
  .option('--kubeconfig <file>', 'kubeconfig (default: KUBECONFIG, then ~/.kube/config, or in-cluster)')
  .option('--context <name>', 'kubeconfig context to use')
  .option('-n, --namespace <ns>', "the capture's namespace (default: the context's, else 'default')")
  .option('--system-namespace <ns>', 'where the agents keep their Leases', 'packet-capture-system')
  .showHelpAfterError();

const target = () => connect(program.opts<GlobalOptions>());

program
  .command('list')
  .alias('ls')
  .description('captures with phase, current pod UID, node and packets')
  .option('-A, --all-namespaces', 'captures of every namespace', false)
  .action(async (opts: { allNamespaces: boolean }) => {
    const t = target();
    const captures = await listCaptures(t, opts.allNamespaces);
    if (captures.length === 0) {
      console.error(opts.allNamespaces ? 'No packetcaptures found.' : `No packetcaptures found in ${t.namespace} namespace.`);
      return;
    }
    console.log(listTable(captures, Date.now(), opts.allNamespaces));
  });

program
  .command('describe')
  .description('targets, sessions, conditions and recent events of one capture')
  .argument('<name>')
  .action(async (name: string) => {
    const t = target();
    const capture = await getCapture(t, name);
    console.log(describeText(capture, await captureEvents(t, capture), Date.now()));
  });

program
  .command('fetch')
  .description("download the capture's session files to DIR/<podUID>/<sessionId>/<file>, continuing interrupted downloads")
  .argument('<name>')
  .option('-o, --output <dir>', 'where to put them (default: ./<name>)')
  .option('--pod-uid <uid>', 'only the files of this pod instance')
  .action(async (name: string, opts: { output?: string; podUid?: string }) => {
    const outDir = resolve(opts.output ?? name);
    const result = await fetchCapture(target(), name, {
      outDir,
      podUID: opts.podUid,
      onFile: (f) => console.log(`${f.action.padEnd(10)}  ${f.path}  ${f.bytes} bytes${f.action === 'resumed' ? ` (from byte ${f.from})` : ''}  [node ${f.node}]`),
    });
    for (const failure of result.failures) console.error(`kubectl-pcap: ${failure}`);
    if (result.otherInstances > 0) console.error(`kubectl-pcap: ${otherLeftOut(result.otherInstances)}`);
    console.error(`${result.files.length} file${result.files.length === 1 ? '' : 's'} in ${outDir}`);
    if (result.failures.length > 0) process.exitCode = 1;
  });

program
  .command('watch')
  .description("the capture's live status until Ctrl-C")
  .argument('<name>')
  .action(async (name: string) => {
    const t = target();
    await getCapture(t, name); // not found is an error now, not an empty screen
    const redraw = process.stdout.isTTY ? '\x1b[H\x1b[2J' : '';
    await new Promise<void>((done) => {
      const sub = watchSnapshots<PacketCapture & { metadata: { uid: string } }>(t.kc, {
        path: capturesPath(t.namespace),
        fieldSelector: `metadata.name=${name}`,
      })
        .pipe(
          map((snapshot) => [...snapshot.values()][0]),
          map((c) => (c ? watchText(c) : undefined)),
          distinctUntilChanged(),
        )
        .subscribe((text) => {
          if (text === undefined) {
            console.log(`packetcapture ${t.namespace}/${name} was deleted`);
            stop();
            return;
          }
          console.log(`${redraw}${new Date().toISOString()}\n${text}\n`);
        });
      // stays installed: Ctrl-C reaches a launcher and its child alike, and a second signal must not kill us mid-exit
      const stop = () => {
        queueMicrotask(() => sub.unsubscribe());
        done();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  });

try {
  await program.parseAsync();
} catch (err) {
  if (!(err instanceof PcapError)) throw err;
  console.error(`kubectl-pcap: ${err.message}`);
  process.exitCode = 1;
}
// open watches and keep-alive sockets must not keep a finished command waiting
process.exit();
