// The agent's process layer against the real thing: two network namespaces joined by a
// veth (10.244.251.0/24, no route out), "pod" processes placed in kubepods-shaped cgroups,
// tcpdump started through nsenter, files read back with tshark.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPodNetns, netnsInodeOfPid } from '../../agent/netns.ts';
import { CaptureError, compileFilter, startTcpdump, tcpdumpArgv, type TcpdumpProcess } from '../../agent/tcpdump.ts';
import type { PacketCaptureSpec } from '../../crds/packetcapture.ts';
import { createLogger } from '../../kube/log.ts';
import { missingRootOrTools, requireOrSkip } from '../support/require.ts';

const exec = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const TOOLS = ['ip', 'tcpdump', 'tshark', 'nsenter', 'setpriv'];

const CGROUP_V1 = ['/sys/fs/cgroup/pids'].find((dir) => existsSync(join(dir, 'cgroup.procs')));
const CGROUP_V2 = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((dir) => existsSync(join(dir, 'cgroup.controllers')));

const canRun = requireOrSkip('root with network namespaces, cgroups, tcpdump and tshark', () => {
  if (!CGROUP_V1 && !CGROUP_V2) return 'no cgroup v1 pids or cgroup v2 hierarchy';
  return missingRootOrTools(TOOLS, 'iproute2 tcpdump tshark util-linux');
});


const named = (suffix: string) => `pce2e-${suffix}`;
const ID = randomBytes(3).toString('hex');
const POD_NS = named(`${ID}-pod`);
const PEER_NS = named(`${ID}-peer`);
const POD_IP = '10.244.251.2';
const PEER_IP = '10.244.251.1';
const log = createLogger('tcpdump-e2e', { test: ID });

/** Everything made here, undone in afterAll whatever happened. */
const made = {
  netns: [] as string[],
  processes: [] as ChildProcess[],
  cgroups: [] as string[],
  captures: [] as TcpdumpProcess[],
  dirs: [] as string[],
};

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

async function addNetns(name: string): Promise<number> {
  await ip('netns', 'add', name);
  made.netns.push(name);
  await ip('-n', name, 'link', 'set', 'lo', 'up');
  // no IPv6 autoconfiguration chatter: every packet in these namespaces is one a test sent
  await exec('ip', ['netns', 'exec', name, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  return (await stat(`/run/netns/${name}`)).ino;
}

/** A process living in `netns`, placed in the cgroup `cgroupDir` as a container runtime would. */
async function podProcess(netns: string, cgroupDir: string): Promise<number> {
  const child = spawn('ip', ['netns', 'exec', netns, 'sleep', '3600'], { stdio: 'ignore' });
  made.processes.push(child);
  const pid = child.pid!;
  await writeFile(join(cgroupDir, 'cgroup.procs'), String(pid));
  const inode = (await stat(`/run/netns/${netns}`)).ino;
  await eventually(async () => expect(await netnsInodeOfPid(pid)).toBe(inode));
  return pid;
}

async function makeCgroup(root: string, ...path: string[]): Promise<string> {
  let dir = root;
  for (const segment of path) {
    dir = join(dir, segment);
    if (!existsSync(dir)) {
      await mkdir(dir);
      made.cgroups.push(dir);
    }
  }
  return dir;
}

/**
 * A pod's cgroup as a runtime makes it: cgroupfs layout (`kubepods/besteffort/pod<uid>`) on
 * cgroup v1, systemd layout (`kubepods-besteffort-pod<uid_>.slice`) on cgroup v2; each on
 * the other hierarchy when this machine lacks its own.
 */
function podCgroup(layout: 'cgroupfs' | 'systemd', top: string, uid: string): Promise<string> {
  const onV1 = layout === 'cgroupfs' ? CGROUP_V1 !== undefined : CGROUP_V2 === undefined;
  if (onV1) return makeCgroup(CGROUP_V1!, top, 'kubepods', 'besteffort', `pod${uid}`);
  const slice = `kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice`;
  return makeCgroup(CGROUP_V2!, `${top}.slice`, 'kubepods.slice', 'kubepods-besteffort.slice', slice);
}

async function eventually(check: () => Promise<void>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function captureDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `pce2e-${ID}-`));
  made.dirs.push(dir);
  return dir;
}

/** pids of live processes whose command line mentions `text` (our capture dirs are unique). */
async function processesMentioning(text: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((entry) => /^[0-9]+$/.test(entry));
  const found: number[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      const [cmdline, status] = await Promise.all([
        readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''),
        readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
      ]);
      const zombie = / Z /.test(status.slice(status.lastIndexOf(')')));
      if (!zombie && cmdline.includes(text)) found.push(Number(pid));
    }),
  );
  return found;
}

async function start(spec: Pick<PacketCaptureSpec, 'filter' | 'limits'>, dir: string, expectedInode: number) {
  const capture = await startTcpdump({
    netnsPath: `/run/netns/${POD_NS}`,
    expectedInode,
    argv: tcpdumpArgv(spec, { dir, podIPs: [POD_IP] }),
    log,
  });
  made.captures.push(capture);
  return capture;
}

/** Sends `count` UDP datagrams, one socket each, from inside `netns`. */
async function sendUdp(netns: string, to: string, port: number, count: number): Promise<void> {
  const script = `for i in $(seq ${count}); do echo packet-$i > /dev/udp/${to}/${port}; done`;
  await exec('ip', ['netns', 'exec', netns, 'bash', '-c', script]);
}

interface Packet {
  ipProto: string;
  ipSrc: string;
  ipDst: string;
  arpSrc: string;
  arpDst: string;
  udpDstPort: string;
}

async function readPackets(file: string): Promise<Packet[]> {
  const fields = ['ip.proto', 'ip.src', 'ip.dst', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4', 'udp.dstport'];
  const { stdout } = await exec('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f]), '-E', 'separator=/t', '-E', 'occurrence=f']);
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [ipProto = '', ipSrc = '', ipDst = '', arpSrc = '', arpDst = '', udpDstPort = ''] = line.split('\t');
      return { ipProto, ipSrc, ipDst, arpSrc, arpDst, udpDstPort };
    });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

describe.runIf(canRun)('tcpdump in a pod network namespace', () => {
  const podUID = randomUUID();
  let podInode: number;
  let peerInode: number;
  let podPids: number[];

  beforeAll(async () => {
    podInode = await addNetns(POD_NS);
    peerInode = await addNetns(PEER_NS);
    const [podVeth, peerVeth] = [`pc${ID}p`, `pc${ID}q`];
    await ip('link', 'add', podVeth, 'type', 'veth', 'peer', 'name', peerVeth);
    await ip('link', 'set', podVeth, 'netns', POD_NS);
    await ip('link', 'set', peerVeth, 'netns', PEER_NS);
    await ip('-n', POD_NS, 'addr', 'add', `${POD_IP}/24`, 'dev', podVeth);
    await ip('-n', PEER_NS, 'addr', 'add', `${PEER_IP}/24`, 'dev', peerVeth);
    await ip('-n', POD_NS, 'link', 'set', podVeth, 'up');
    await ip('-n', PEER_NS, 'link', 'set', peerVeth, 'up');
    // until the kernel's link watcher marks a new link up, its queue drops every packet
    await eventually(async () => {
      for (const [netns, veth] of [[POD_NS, podVeth], [PEER_NS, peerVeth]] as const) {
        expect((await exec('ip', ['-n', netns, 'link', 'show', 'dev', veth])).stdout).toMatch(/state UP/);
      }
    });

    // a "pause" and an "app" container of one pod, cgroupfs layout
    const cgroup = await podCgroup('cgroupfs', named(ID), podUID);
    podPids = [await podProcess(POD_NS, cgroup), await podProcess(POD_NS, cgroup)].sort((a, b) => a - b);
  });

  afterAll(async () => {
    await Promise.allSettled(made.captures.map((capture) => capture.stop(0)));
    for (const child of made.processes) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    }
    for (const dir of made.cgroups.reverse()) await rmdir(dir).catch(() => undefined);
    for (const name of made.netns) await ip('netns', 'del', name).catch(() => undefined);
    for (const dir of made.dirs) await rm(dir, { recursive: true, force: true });
  });

  describe('findPodNetns', () => {
    it("finds the pod's network namespace through its processes' cgroups", async () => {
      expect(await findPodNetns(podUID)).toEqual({
        found: true,
        pid: podPids[0],
        pids: podPids,
        netnsPath: `/proc/${podPids[0]}/ns/net`,
        inode: podInode,
      });
    });

    it('finds a pod in a systemd-shaped cgroup by its UID with underscores', async () => {
      const uid = randomUUID();
      const pid = await podProcess(PEER_NS, await podCgroup('systemd', named(`${ID}-sd`), uid));
      expect(await findPodNetns(uid)).toMatchObject({ found: true, pid, inode: peerInode });
    });

    it('reports NetnsNotFound for a pod with no process on this node', async () => {
      expect(await findPodNetns(randomUUID())).toMatchObject({ found: false, reason: 'NetnsNotFound' });
    });

    it('reports NetnsMismatch when processes of one pod are in different namespaces', async () => {
      const uid = randomUUID();
      const cgroup = await podCgroup('cgroupfs', named(`${ID}-mm`), uid);
      const pids = [await podProcess(POD_NS, cgroup), await podProcess(PEER_NS, cgroup)];

      const lookup = await findPodNetns(uid);

      expect(lookup).toMatchObject({ found: false, reason: 'NetnsMismatch' });
      if (lookup.found) throw new Error('unreachable');
      for (const pid of pids) expect(lookup.message).toContain(`${pid}:net:[`);
    });
  });

  describe('compileFilter', () => {
    it("accepts what buildFilter makes and returns tcpdump's message for a bad bpf", async () => {
      const netnsPath = `/proc/${podPids[0]}/ns/net`;
      const argv = tcpdumpArgv({ filter: { protocol: 'TCP', port: 80, peer: '10.0.0.0/8', direction: 'Ingress' } }, { dir: '/d', podIPs: [POD_IP] });

      expect(await compileFilter(argv.at(-1)!, { netnsPath })).toEqual({ ok: true });
      expect(await compileFilter('', { netnsPath })).toEqual({ ok: true });
      expect(await compileFilter('udp and (port 80', { netnsPath })).toEqual({ ok: false, message: "can't parse filter expression: syntax error" });
      expect(await compileFilter('net 10.0.0.1/8', { netnsPath })).toMatchObject({ ok: false, message: expect.stringMatching(/non-network bits/) });
    });

    it('throws NetnsNotFound when the namespace is gone', async () => {
      await expect(compileFilter('tcp', { netnsPath: `/run/netns/${named(`${ID}-gone`)}` })).rejects.toMatchObject({ reason: 'NetnsNotFound' });
    });
  });

  describe('startTcpdump', () => {
    it("captures exactly the filtered packets of the pod's namespace", async () => {
      const dir = await captureDir();
      const capture = await start({ filter: { protocol: 'UDP', direction: 'Ingress', dstPort: 5555 } }, dir, podInode);
      expect(capture.pid).toBeGreaterThan(0);

      await sendUdp(PEER_NS, POD_IP, 5555, 10); // matches
      await sendUdp(PEER_NS, POD_IP, 6666, 5); // another port
      await sendUdp(POD_NS, PEER_IP, 5555, 5); // egress
      const exit = await capture.stop();

      expect(exit.stats.captured).toBe(10);
      const packets = await readPackets(join(dir, 'capture.pcap'));
      expect(packets).toHaveLength(10);
      for (const packet of packets) expect(packet).toMatchObject({ ipProto: '17', ipSrc: PEER_IP, ipDst: POD_IP, udpDstPort: '5555' });
      expect(await processesMentioning(dir)).toEqual([]);
    });

    it("sees only the pod's namespace: traffic elsewhere never reaches the file", async () => {
      const dir = await captureDir();
      const capture = await start({}, dir, podInode);

      await sendUdp(PEER_NS, POD_IP, 7777, 5);
      await sendUdp(PEER_NS, '127.0.0.1', 7777, 5); // inside the peer namespace only
      await sendUdp(POD_NS, '127.0.0.1', 8888, 3); // the pod's own loopback is the pod's
      await capture.stop();

      const packets = await readPackets(join(dir, 'capture.pcap'));
      // ICMP errors quote the datagram they answer, so the UDP port of the quote counts too
      const podLoopback = (p: Packet) => p.ipSrc === '127.0.0.1' && p.ipDst === '127.0.0.1' && p.udpDstPort === '8888';
      const udp = packets.filter((p) => p.ipProto === '17');
      for (const packet of packets) {
        expect([packet.ipSrc, packet.ipDst, packet.arpSrc, packet.arpDst].includes(POD_IP) || podLoopback(packet), JSON.stringify(packet)).toBe(true);
      }
      expect(udp.filter((p) => p.ipDst === POD_IP && p.udpDstPort === '7777')).toHaveLength(5);
      expect(udp.filter((p) => p.udpDstPort === '8888')).toHaveLength(3);
    });

    it('keeps a burst whole, and counts it while running', async () => {
      const dir = await captureDir();
      const capture = await start({ filter: { protocol: 'UDP', dstPort: 5557 } }, dir, podInode);

      await sendUdp(PEER_NS, POD_IP, 5557, 300);
      await eventually(async () => expect(await capture.requestStats()).toEqual({ captured: 300, receivedByFilter: 300, droppedByKernel: 0 }));
      const exit = await capture.stop();

      expect(exit.stats).toEqual({ captured: 300, receivedByFilter: 300, droppedByKernel: 0 });
      expect(await readPackets(join(dir, 'capture.pcap'))).toHaveLength(300);
    });

    it('stops by itself after exactly maxPackets', async () => {
      const dir = await captureDir();
      const capture = await start({ filter: { protocol: 'UDP', dstPort: 5556 }, limits: { maxPackets: 5 } }, dir, podInode);

      await sendUdp(PEER_NS, POD_IP, 5556, 20);
      const exit = await capture.exited;

      expect(exit).toMatchObject({ code: 0, stats: { captured: 5 } });
      expect(await readPackets(join(dir, 'capture.pcap'))).toHaveLength(5);
    });

    it('refuses a namespace other than the expected one and leaves no process', async () => {
      const dir = await captureDir();
      const attempt = start({}, dir, peerInode);

      await expect(attempt).rejects.toBeInstanceOf(CaptureError);
      await expect(attempt).rejects.toMatchObject({ reason: 'NetnsMismatch', message: expect.stringContaining(`net:[${podInode}]`) });
      expect(await processesMentioning(dir)).toEqual([]);
    });

    it('reports NetnsNotFound when the namespace path is gone', async () => {
      const dir = await captureDir();
      const attempt = startTcpdump({
        netnsPath: `/run/netns/${named(`${ID}-gone`)}`,
        expectedInode: podInode,
        argv: tcpdumpArgv({}, { dir }),
        log,
      });
      await expect(attempt).rejects.toMatchObject({ reason: 'NetnsNotFound' });
      expect(await processesMentioning(dir)).toEqual([]);
    });

    it('reports TcpdumpMissing when tcpdump is not installed', async () => {
      const bin = await captureDir();
      for (const tool of ['setpriv', 'nsenter']) {
        const { stdout } = await exec('sh', ['-c', `command -v ${tool}`]);
        await symlink(stdout.trim(), join(bin, tool));
      }
      const path = process.env.PATH;
      process.env.PATH = bin;
      try {
        await expect(
          startTcpdump({ netnsPath: `/run/netns/${POD_NS}`, expectedInode: podInode, argv: tcpdumpArgv({}, { dir: bin }), log }),
        ).rejects.toMatchObject({ reason: 'TcpdumpMissing', message: expect.stringMatching(/^tcpdump is not installed/) });
      } finally {
        process.env.PATH = path;
      }
    });

    it('dies with the process that started it', async () => {
      const dir = await captureDir();
      const script = join(dir, 'parent.mts');
      await writeFile(
        script,
        [
          `import { startTcpdump } from ${JSON.stringify(join(REPO, 'agent/tcpdump.ts'))};`,
          `import { createLogger } from ${JSON.stringify(join(REPO, 'kube/log.ts'))};`,
          `const capture = await startTcpdump({ ...JSON.parse(process.env.START!), log: createLogger('parent') });`,
          'process.stdout.write(`${capture.pid}\\n`);',
          'setInterval(() => {}, 60_000);',
        ].join('\n'),
      );
      const start = { netnsPath: `/run/netns/${POD_NS}`, expectedInode: podInode, argv: tcpdumpArgv({}, { dir }) };
      const parent = spawn(process.execPath, ['--import', 'tsx', script], {
        cwd: REPO,
        env: { ...process.env, START: JSON.stringify(start) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      made.processes.push(parent);
      const pid = await new Promise<number>((resolve, reject) => {
        let out = '';
        parent.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
          out += chunk;
          if (out.includes('\n')) resolve(Number(out.trim()));
        });
        parent.once('exit', (code) => reject(new Error(`parent exited (${code}) before starting tcpdump`)));
      });
      expect(await processesMentioning(dir)).toContain(pid);
      expect((await readFile(`/proc/${pid}/comm`, 'utf8')).trim()).toBe('tcpdump');

      parent.kill('SIGKILL');

      await eventually(async () => expect(await processesMentioning(dir)).toEqual([]));
    });

    it('starts, is verified and stops cleanly, time after time', async () => {
      const startMs: number[] = [];
      for (let i = 0; i < 20; i++) {
        const dir = await captureDir();
        const capture = await start({}, dir, podInode);
        startMs.push(capture.verifiedAt.getTime() - capture.startedAt.getTime());
        const exit = await capture.stop();
        expect(exit.stats).toMatchObject({ captured: expect.any(Number), droppedByKernel: 0 });
        expect(await processesMentioning(dir)).toEqual([]);
      }
      console.log(`tcpdump start (spawn -> listening -> verified), 20 runs: median ${median(startMs)} ms, min ${Math.min(...startMs)}, max ${Math.max(...startMs)}`);
    });
  });
});
