// The OCI archives a real node imports, checked without containerd: each is unpacked with
// skopeo and umoci as containerd would, and its entrypoint run as root with chroot, as PID 1
// of a fresh PID namespace and, for network traffic, in a fresh network namespace whose
// loopback is the only address anything is sent to.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DEFAULT_IMAGE } from '../../cdk8s/settings.ts';
import { CRD_NAME, packetCaptureCrd } from '../../crds/crd.ts';
import { apply, cluster, controlPlaneAvailable, waitEstablished, type KubeObject } from '../support/cluster.ts';
import { isExecutable, missingRootOrTools, requireOrSkip } from '../support/require.ts';

const exec = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const TOOLS = ['ip', 'tcpdump', 'tshark', 'unshare', 'nsenter', 'chroot', 'mknod'];

const canRun = requireOrSkip('root with network namespaces, tcpdump and tshark', () => missingRootOrTools(TOOLS, 'iproute2 tcpdump tshark util-linux coreutils'));


const NETNS = `pcimg-${randomBytes(3).toString('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs one of the image scripts; returns its stdout lines (the last is its output directory). */
async function script(name: string): Promise<string[]> {
  const { stdout } = await exec(join(REPO, 'scripts', name), [], { cwd: REPO, maxBuffer: 1 << 20 });
  return stdout.trim().split('\n');
}

interface Unpacked {
  rootfs: string;
  config: { Entrypoint?: string[]; User?: string; WorkingDir?: string; Env?: string[] };
  refName: string | undefined;
}

describe.runIf(canRun)('the OCI archives of scripts/image and scripts/node-images', () => {
  let work: string;
  const running: ChildProcess[] = [];

  /** skopeo copies the archive into a layout, umoci unpacks it into a bundle. */
  async function unpack(archive: string, name: string): Promise<Unpacked> {
    const index = JSON.parse((await exec('tar', ['-xOf', archive, 'index.json'])).stdout) as { manifests: { annotations?: Record<string, string> }[] };
    await exec('skopeo', ['copy', '--quiet', `oci-archive:${archive}`, `oci:${join(work, 'layout')}:${name}`]);
    const bundle = join(work, name);
    await exec('umoci', ['unpack', '--image', `${join(work, 'layout')}:${name}`, bundle]);
    const { stdout } = await exec('skopeo', ['inspect', '--config', `oci-archive:${archive}`]);
    return {
      rootfs: join(bundle, 'rootfs'),
      config: (JSON.parse(stdout) as { config: Unpacked['config'] }).config,
      refName: index.manifests[0]?.annotations?.['org.opencontainers.image.ref.name'],
    };
  }

  /** `argv` as PID 1 of a new PID namespace (in the test's network namespace if `netns`). */
  function asPid1(argv: string[], opts: { env?: Record<string, string>; netns?: boolean } = {}) {
    const command = [...(opts.netns ? ['ip', 'netns', 'exec', NETNS] : []), 'unshare', '--pid', '--fork', '--kill-child', ...argv];
    const child = spawn(command[0]!, command.slice(1), { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    running.push(child);
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | string>((done) => child.on('exit', (code, signal) => done(code ?? signal ?? 'unknown')));
    return { child, exited, output: () => output };
  }

  /**
   * The host PID of PID 1 in the namespace `unshare` (pid `parent`) made, once it runs the
   * program `binary` (and so may have installed its signal handlers).
   */
  async function pid1Of(parent: number, binary: string): Promise<number> {
    for (let i = 0; i < 100; i++) {
      for (const entry of await readdir('/proc')) {
        if (!/^\d+$/.test(entry)) continue;
        try {
          const status = await readFile(`/proc/${entry}/status`, 'utf8');
          const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/);
          if (/^PPid:\s+(\d+)$/m.exec(status)?.[1] === String(parent) && nspid?.at(-1) === '1' && basename(await readlink(`/proc/${entry}/exe`)) === binary) return Number(entry);
        } catch {
          // gone meanwhile
        }
      }
      await sleep(50);
    }
    throw new Error(`no ${binary} as PID 1 under ${parent}`);
  }

  const childrenOf = async (pid: number) => {
    const { stdout } = await exec('ps', ['-o', 'pid=,stat=,comm=', '--ppid', String(pid)]).catch(() => ({ stdout: '' }));
    return stdout.trim().split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/));
  };

  const inNetns = (argv: string[]) => exec('ip', ['netns', 'exec', NETNS, ...argv]);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'images-e2e-'));
    await exec('ip', ['netns', 'add', NETNS]);
    await exec('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  });

  afterAll(async () => {
    for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exec('ip', ['netns', 'del', NETNS]).catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('scripts/node-images', () => {
    let dir: string;
    const refs: Record<string, string> = {};
    let pause: Unpacked;
    let workload: Unpacked;

    beforeAll(async () => {
      const lines = await script('node-images');
      dir = lines.at(-1)!;
      for (const line of lines.slice(0, -1)) {
        const [name, ref] = line.split('=');
        refs[name!] = ref!;
      }
      pause = await unpack(join(dir, 'pause.oci.tar'), 'pause');
      workload = await unpack(join(dir, 'workload.oci.tar'), 'workload');
      // what a container runtime provides, and busybox sh needs for `cmd &`
      await exec('mknod', ['-m', '666', join(workload.rootfs, 'dev/null'), 'c', '1', '3']);
    });

    it('names each archive by the image ref it prints, which ctr import takes as the name', () => {
      expect(refs).toEqual({ PAUSE_IMAGE: 'localhost/packet-capture-pause:local', WORKLOAD_IMAGE: 'localhost/packet-capture-workload:local' });
      expect(pause.refName).toBe(refs.PAUSE_IMAGE);
      expect(workload.refName).toBe(refs.WORKLOAD_IMAGE);
    });

    it('pause, PID 1 of its namespace, reaps orphans reparented to it and exits 0 on SIGTERM and on SIGINT', async () => {
      expect(pause.config.Entrypoint).toEqual(['/pause']);
      for (const signal of ['SIGTERM', 'SIGINT'] as const) {
        const run = asPid1(['chroot', pause.rootfs, '/pause']);
        const pid = await pid1Of(run.child.pid!, 'pause');
        if (signal === 'SIGTERM') {
          // a process whose parent exits is reparented to the namespace's init: pause
          await exec('nsenter', ['--target', String(pid), '--pid', '--', 'sh', '-c', 'sleep 1 </dev/null >/dev/null 2>&1 & exit 0']);
          expect((await childrenOf(pid)).map(([, , comm]) => comm)).toEqual(['sleep']);
          await sleep(1500);
          expect(await childrenOf(pid)).toEqual([]); // ended and reaped: no zombie left
        }
        process.kill(pid, signal);
        expect(await run.exited).toBe(0);
      }
    });

    it('the workload answers its pod UID over HTTP, every path, and exits 0 on SIGTERM as PID 1', async () => {
      expect(workload.config.Entrypoint).toEqual(['/bin/serve']);
      const uid = randomUUID();
      const run = asPid1(['chroot', workload.rootfs, '/bin/serve'], { netns: true, env: { POD_UID: uid } });
      // not `wget -T 2`: Debian's busybox 1.35 is built without wget's -T, and crashes on it
      const wget = ['chroot', workload.rootfs, '/bin/busybox', 'timeout', '2', '/bin/busybox', 'wget', '-q', '-O', '-', 'http://127.0.0.1/'];
      let body = '';
      for (let i = 0; i < 50 && !body; i++) body = await inNetns(wget).then((r) => r.stdout, () => sleep(100).then(() => ''));
      expect(body, run.output()).toBe(`{"uid":"${uid}"}\n`);

      const { stdout: other } = await inNetns(['chroot', workload.rootfs, '/bin/sh', '-c', 'printf "GET /any/path HTTP/1.0\\r\\n\\r\\n" | nc 127.0.0.1 80']);
      expect(other.split('\r\n')[0]).toBe('HTTP/1.1 404 Not Found');
      expect(other.endsWith(`{"uid":"${uid}"}\n`)).toBe(true);

      process.kill(await pid1Of(run.child.pid!, 'busybox'), 'SIGTERM'); // /bin/serve's interpreter
      expect(await run.exited).toBe(0);
    });

    it('the workload without POD_UID refuses to start, saying how to set it', async () => {
      const run = asPid1(['chroot', workload.rootfs, '/bin/serve'], { netns: true });
      expect(await run.exited).toBe(1);
      expect(run.output()).toContain('POD_UID is not set');
    });

    it('udp-send sends each line of a shell loop as one numbered datagram', async () => {
      const pcap = join(work, 'udp.pcap');
      const tcpdump = spawn('ip', ['netns', 'exec', NETNS, 'tcpdump', '-i', 'lo', '-n', '-c', '5', '-w', pcap, 'udp dst port 9'], { stdio: ['ignore', 'ignore', 'pipe'] });
      running.push(tcpdump);
      const done = new Promise<number | null>((ok) => tcpdump.on('exit', ok));
      await new Promise<void>((ok) => tcpdump.stderr.on('data', (d: Buffer) => d.toString().includes('listening on') && ok()));
      await inNetns(['chroot', workload.rootfs, '/bin/sh', '-c', 'i=1; while [ $i -le 5 ]; do echo "seq-$i"; i=$((i+1)); done | /bin/udp-send 127.0.0.1 9']);
      expect(await done).toBe(0);
      const { stdout } = await exec('tshark', ['-r', pcap, '-T', 'fields', '-e', 'data.data']);
      const payloads = stdout.trim().split('\n').map((hex) => Buffer.from(hex.replaceAll(':', ''), 'hex').toString());
      expect(payloads).toEqual(['seq-1\n', 'seq-2\n', 'seq-3\n', 'seq-4\n', 'seq-5\n']);
    });
  });

  describe('scripts/image', () => {
    let image: Unpacked;

    beforeAll(async () => {
      const dir = (await script('image')).at(-1)!;
      image = await unpack(join(dir, 'packet-capture.oci.tar'), 'packet-capture');
    }, 900_000);

    it('is named DEFAULT_IMAGE, so dist/ runs it unchanged', () => {
      expect(image.refName).toBe(DEFAULT_IMAGE);
    });

    it('runs the bundled CLI on the pinned Node as user 65532 from /app, with no node_modules and no TypeScript', async () => {
      expect(image.config).toMatchObject({ Entrypoint: ['/usr/local/bin/node', '/app/build/cli/packet-capture.js'], User: '65532:65532', WorkingDir: '/app' });
      const { stdout } = await exec('chroot', ['--userspec=65532:65532', image.rootfs, ...image.config.Entrypoint!, '--help'], { cwd: '/' });
      expect(stdout).toMatch(/^\s+controller \[options\]/m);
      expect(stdout).toMatch(/^\s+agent \[options\]/m);
      const { stdout: version } = await exec('chroot', [image.rootfs, '/usr/local/bin/node', '--version']);
      const pinned = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies.node;
      expect(version.trim()).toBe(`v${pinned}`);
      for (const absent of ['app/node_modules', 'app/cli', 'app/controller']) expect(existsSync(join(image.rootfs, absent)), absent).toBe(false);
    });

    it('loads every chunk of the bundle without node_modules (nothing left out that a component imports)', async () => {
      const chunks = readdirSync(join(image.rootfs, 'app/build/cli')).filter((f) => f.endsWith('.js') && f !== 'packet-capture.js');
      expect(chunks.length).toBeGreaterThan(0);
      const load = `for (const f of ${JSON.stringify(chunks)}) await import("/app/build/cli/" + f); console.log("loaded")`;
      const { stdout } = await exec('chroot', ['--userspec=65532:65532', image.rootfs, '/usr/local/bin/node', '--input-type=module', '-e', load], { cwd: '/' });
      expect(stdout.trim()).toBe('loaded');
    });

    // As PID 1 a process that has no SIGTERM handler ignores SIGTERM (Node's own native
    // handler only re-raises it), and the kubelet would wait out the grace period and SIGKILL
    // it; the CLI listens for it before the slow part of start-up (loading the component).
    it.runIf(controlPlaneAvailable)('controller and agent, PID 1 of their namespace, stop at once on SIGTERM, just started or synced', async () => {
      await apply(cluster().kubeConfig, packetCaptureCrd as unknown as KubeObject);
      await waitEstablished(cluster().kubeConfig, CRD_NAME);
      await mkdir(join(image.rootfs, 'proc'), { recursive: true });
      await copyFile(cluster().info.kubeconfigPath, join(image.rootfs, 'tmp/kubeconfig'));
      await exec('chmod', ['0644', join(image.rootfs, 'tmp/kubeconfig')]);
      const help = Date.now();
      await exec('chroot', [image.rootfs, ...image.config.Entrypoint!, '--help']);
      const helpMs = Date.now() - help;
      const components = {
        controller: { user: '65532:65532', args: ['controller'], ready: 'watches synced' },
        agent: { user: '0:0', args: ['agent', '--node-name', 'images-e2e', '--data-dir', '/tmp/data', '--namespace', 'default'], ready: 'agent started' },
      };
      for (const [name, c] of Object.entries(components)) {
        for (const when of ['at start-up', 'once ready'] as const) {
          const argv = [...image.config.Entrypoint!, ...c.args, '--kubeconfig', '/tmp/kubeconfig', '--metrics-port', '0'];
          const run = asPid1(['--mount', `--mount-proc=${join(image.rootfs, 'proc')}`, 'chroot', `--userspec=${c.user}`, image.rootfs, ...argv]);
          const pid = await pid1Of(run.child.pid!, 'node');
          if (when === 'at start-up') {
            // once the CLI's own modules are loaded (as long as --help takes, twice over), while
            // the component's are still loading: a SIGTERM it had no handler for would be lost
            await sleep(2 * helpMs);
            expect(run.output(), `${name} started before the SIGTERM`).not.toContain(c.ready);
          } else {
            await vi.waitFor(() => expect(run.output()).toContain(c.ready), { timeout: 30_000, interval: 50 });
          }
          process.kill(pid, 'SIGTERM');
          const exited = await Promise.race([run.exited, sleep(5_000).then(() => 'still running 5 s after SIGTERM')]);
          expect(exited, `${name} ${when}: ${run.output()}`).toBe(0);
          expect(run.output()).toContain('"msg":"stopping"');
        }
      }
    });

    it('has what the agent runs: tcpdump, nsenter, setpriv', () => {
      for (const tool of ['usr/bin/tcpdump', 'usr/bin/nsenter', 'usr/bin/setpriv', 'usr/sbin/ip']) expect(isExecutable(join(image.rootfs, tool)), tool).toBe(true);
    });
  });
});
