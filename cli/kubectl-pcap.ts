// kubectl-pcap: the kubectl plugin for PacketCaptures (`kubectl pcap ...` once bin/ is on
// PATH). It talks only to the API server: capture files come from the agent of each node
// through the API server's proxy, at the path the agent publishes on its presence Lease.

import { createWriteStream } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { distinctUntilChanged, map } from 'rxjs';
import type { PacketCapture } from '../crds/packetcapture.ts';
import { watchSnapshots } from '../kube/watch.ts';
import { captureEvents, capturesPath, connect, getCapture, listCaptures, PcapError, type GlobalOptions } from './pcap/client.ts';
import { fetchCapture, otherLeftOut } from './pcap/fetch.ts';
import { streamCapture } from './pcap/stream.ts';
import { mergeInto } from './pcap/merge.ts';
import type { MergeFormat } from '../pcapng/merge.ts';
import { fetchProgress } from './pcap/progress.ts';
import { describeText, listTable, watchText } from './pcap/render.ts';
import { buildInfo, versionText } from './pcap/version.ts';

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
  .option('--merge <file>', 'also write every fetched packet to FILE, all instances on one timeline, one interface per instance')
  .addOption(new Option('--format <format>', 'the --merge file: pcapng, or classic pcap for tools that read nothing newer').choices(['pcapng', 'pcap']).default('pcapng'))
  .action(async (name: string, opts: { output?: string; podUid?: string; merge?: string; format: MergeFormat }) => {
    const outDir = resolve(opts.output ?? name);
    const progress = fetchProgress();
    const result = await fetchCapture(target(), name, {
      outDir,
      podUID: opts.podUid,
      onFile: (f) => progress.say(`${f.action.padEnd(10)}  ${f.path}  ${f.bytes} bytes${f.action === 'resumed' ? ` (from byte ${f.from})` : ''}  [node ${f.node}]`),
      onProgress: progress.update,
    }).finally(progress.stop);
    for (const failure of result.failures) console.error(`kubectl-pcap: ${failure}`);
    if (result.otherInstances > 0) console.error(`kubectl-pcap: ${otherLeftOut(result.otherInstances)}`);
    console.error(`${result.files.length} file${result.files.length === 1 ? '' : 's'} in ${outDir}`);
    if (opts.merge) {
      const merged = await mergeInto(resolve(opts.merge), result.files.map((f) => f.path), opts.format, [`packetcapture.dev/capture: ${target().namespace}/${name}`]);
      console.error(`${merged.packets} packets of ${merged.interfaces.length} instance${merged.interfaces.length === 1 ? '' : 's'} merged into ${opts.merge} (${opts.format})`);
    }
    if (result.failures.length > 0) process.exitCode = 1;
  });

program
  .command('stream')
  .description("the capture's live packets as one pcapng stream (every node, every pod instance an interface) until it ends or Ctrl-C")
  .argument('<name>')
  .option('-w, --write <file>', "where to write it; '-' for stdout (| wireshark -k -i -)", '-')
  .action(async (name: string, opts: { write: string }) => {
    const out = opts.write === '-' ? process.stdout : createWriteStream(opts.write, { mode: 0o600 });
    const abort = new AbortController();
    // stays installed: a second Ctrl-C must not kill us while the file is closed
    const stop = () => abort.abort();
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    const { interfaces } = await streamCapture(target(), name, out, abort.signal);
    if (out !== process.stdout) await new Promise<void>((done) => out.end(() => done()));
    console.error(`kubectl-pcap: stream of ${name} ended (${interfaces} pod instance${interfaces === 1 ? '' : 's'} seen)`);
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

program
  .command('version')
  .description('the version of this plugin and the git commit it was built from')
  .action(() => console.log(versionText(buildInfo())));

// No top-level await: the single-file plugin (scripts/build-plugin) is CommonJS, the only
// module format Node 24's single executable applications run.
program
  .parseAsync()
  .catch((err: unknown) => {
    if (!(err instanceof PcapError)) throw err;
    console.error(`kubectl-pcap: ${err.message}`);
    process.exitCode = 1;
  })
  // open watches and keep-alive sockets must not keep a finished command waiting
  .then(() => process.exit());
