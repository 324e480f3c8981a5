// The agent's process layer against the real thing: two network namespaces joined by a
// veth (10.244.251.0/24, no route out), "pod" processes placed in kubepods-shaped cgroups,
// tcpdump started through nsenter, files read back with tshark.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, fstatSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaptureWriter } from '../../agent/capture-writer.ts';
import { findPodNetns, holdNetns, netnsInodeOfPid, type HeldNetns } from '../../agent/netns.ts';
import { sessionMark } from '../../agent/reaper.ts';
import { writerLimits } from '../../agent/sessions.ts';
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

/** pids of live processes whose command line or environment mentions `text` (our capture dirs are unique, and a session's mark names its dir). */
async function processesMentioning(text: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((entry) => /^[0-9]+$/.test(entry));
  const found: number[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      const [cmdline, environ, status] = await Promise.all([
        readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''),
        readFile(`/proc/${pid}/environ`, 'utf8').catch(() => ''),
        readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
      ]);
      const zombie = / Z /.test(status.slice(status.lastIndexOf(')')));
      if (!zombie && (cmdline.includes(text) || environ.includes(text))) found.push(Number(pid));
    }),
  );
  return found;
}

/** A handle on a named netns, claiming `inode` (by default its own): a wrong claim is what verification must catch. */
function held(netns: string, inode?: number): HeldNetns {
  const fd = openSync(`/run/netns/${netns}`, 'r');
  return { fd, pid: 0, inode: inode ?? fstatSync(fd).ino, close: () => closeSync(fd) };
}

const LABEL = {
  namespace: 'e2e',
  name: 'pc',
  captureUID: 'pc-uid',
  generation: 1,
  podName: 'pod-0',
  podUID: 'pod-uid',
  node: 'node-e2e',
  podIPs: [POD_IP],
  sessionId: 's',
  filter: '',
  snapLen: 262144,
  agentVersion: 'test',
};

/** tcpdump in the pod's netns (or `netns`), its packets written by the agent's writer into <dir>/s. */
async function start(spec: Pick<PacketCaptureSpec, 'filter' | 'limits'>, dir: string, netns: HeldNetns = held(POD_NS)) {
  let capture: TcpdumpProcess | undefined;
  const writer = new CaptureWriter(join(dir, 's'), LABEL, writerLimits({ target: { podName: 'pod-0' }, ...spec }), { onLimit: () => void capture?.stop() });
  try {
    capture = await startTcpdump({ netns, argv: tcpdumpArgv(spec, { podIPs: [POD_IP] }), sink: writer, mark: sessionMark(dir, 's'), log });
  } finally {
    netns.close();
  }
  made.captures.push(capture);
  return { capture, writer, file: join(dir, 's', 'capture-1.pcapng') };
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
    await Promise.allSettled(made.captures.map((capture) => capture.stop({ graceMs: 0 })));
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
      const netns = holdNetns(podUID, { pid: podPids[0]!, inode: podInode });
      try {
        const argv = tcpdumpArgv({ filter: { protocol: 'TCP', port: 80, peer: '10.0.0.0/8', direction: 'Ingress' } }, { podIPs: [POD_IP] });
        expect(await compileFilter(argv.at(-1)!, { netns })).toEqual({ ok: true });
        expect(await compileFilter('', { netns })).toEqual({ ok: true });
        expect(await compileFilter('udp and (port 80', { netns })).toEqual({ ok: false, message: "can't parse filter expression: syntax error" });
        expect(await compileFilter('net 10.0.0.1/8', { netns })).toMatchObject({ ok: false, message: expect.stringMatching(/non-network bits/) });
      } finally {
        netns.close();
      }
    });
  });

  describe('holdNetns', () => {
    it("holds the pod's netns open once its process still proves it", () => {
      const netns = holdNetns(podUID, { pid: podPids[0]!, inode: podInode });
      expect(fstatSync(netns.fd).ino).toBe(podInode);
      netns.close();
    });

    it('refuses a lookup whose process is no longer the pod\'s (a reused PID) or whose netns is another', () => {
      // the pid of a process of another pod: its cgroup does not name this pod
      expect(() => holdNetns(randomUUID(), { pid: podPids[0]!, inode: podInode })).toThrow(expect.objectContaining({ reason: 'NetnsMismatch' }));
      expect(() => holdNetns(podUID, { pid: podPids[0]!, inode: peerInode })).toThrow(expect.objectContaining({ reason: 'NetnsMismatch' }));
      expect(() => holdNetns(podUID, { pid: 2 ** 22 + 11, inode: podInode })).toThrow(expect.objectContaining({ reason: 'NetnsNotFound' }));
    });
  });

  describe('startTcpdump', () => {
    it("captures exactly the filtered packets of the pod's namespace", async () => {
      const dir = await captureDir();
      const { capture, writer, file } = await start({ filter: { protocol: 'UDP', direction: 'Ingress', dstPort: 5555 } }, dir);
      expect(capture.pid).toBeGreaterThan(0);

      await sendUdp(PEER_NS, POD_IP, 5555, 10); // matches
      await sendUdp(PEER_NS, POD_IP, 6666, 5); // another port
      await sendUdp(POD_NS, PEER_IP, 5555, 5); // egress
      const exit = await capture.stop();

      expect(exit.stats.captured).toBe(10);
      expect(writer.close().packets).toBe(10);
      const packets = await readPackets(file);
      expect(packets).toHaveLength(10);
      for (const packet of packets) expect(packet).toMatchObject({ ipProto: '17', ipSrc: PEER_IP, ipDst: POD_IP, udpDstPort: '5555' });
      expect(await processesMentioning(dir)).toEqual([]);
    });

    it("sees only the pod's namespace: traffic elsewhere never reaches the file", async () => {
      const dir = await captureDir();
      const { capture, file } = await start({}, dir);

      await sendUdp(PEER_NS, POD_IP, 7777, 5);
      await sendUdp(PEER_NS, '127.0.0.1', 7777, 5); // inside the peer namespace only
      await sendUdp(POD_NS, '127.0.0.1', 8888, 3); // the pod's own loopback is the pod's
      await capture.stop();

      const packets = await readPackets(file);
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
      const { capture, writer, file } = await start({ filter: { protocol: 'UDP', dstPort: 5557 } }, dir);

      await sendUdp(PEER_NS, POD_IP, 5557, 300);
      await eventually(async () => expect(await capture.requestStats()).toEqual({ captured: 300, receivedByFilter: 300, droppedByKernel: 0 }));
      await eventually(async () => expect(writer.counts.packets).toBe(300));
      const exit = await capture.stop();

      expect(exit.stats).toEqual({ captured: 300, receivedByFilter: 300, droppedByKernel: 0 });
      expect(await readPackets(file)).toHaveLength(300);
    });

    it("keeps exactly maxPackets: the agent's writer counts them and stops tcpdump", async () => {
      const dir = await captureDir();
      const { capture, writer, file } = await start({ filter: { protocol: 'UDP', dstPort: 5556 }, limits: { maxPackets: 5 } }, dir);

      await sendUdp(PEER_NS, POD_IP, 5556, 20);
      await capture.exited;

      expect(writer.close().packets).toBe(5);
      expect(await readPackets(file)).toHaveLength(5);
    });

    it('a tcpdump that is not in the pod netns keeps nothing, even with traffic flowing, and leaves no process', async () => {
      const dir = await captureDir();
      // the handle is the peer's netns while the session believes it is the pod's: traffic flows in the peer netns throughout
      const flowing = sendUdp(PEER_NS, '127.0.0.1', 7001, 400);
      const attempt = start({}, dir, held(PEER_NS, podInode));

      await expect(attempt).rejects.toBeInstanceOf(CaptureError);
      await expect(attempt).rejects.toMatchObject({ reason: 'NetnsMismatch', message: expect.stringContaining(`net:[${podInode}]`) });
      await flowing;
      expect(await processesMentioning(dir)).toEqual([]);
      // no session directory, no file: nothing of the wrong netns exists anywhere to be fetched or counted
      expect(await readdir(dir)).toEqual([]);
    });

    it('the stop instant cuts exactly: every packet up to it is kept, none after it, checked against a raw tcpdump of the same netns', async () => {
      const dir = await captureDir();
      const { capture, writer, file } = await start({ filter: { protocol: 'UDP', dstPort: 5560 } }, dir);
      const raw = join(dir, 'raw.pcap');
      const reference = spawn('ip', ['netns', 'exec', POD_NS, 'tcpdump', '-i', 'any', '-y', 'LINUX_SLL2', '-n', '-U', '-Z', 'root', '--time-stamp-precision=nano', '-w', raw, 'udp dst port 5560'], { stdio: ['ignore', 'ignore', 'pipe'] });
      made.processes.push(reference);
      await new Promise<void>((resolve) => reference.stderr!.on('data', (c: Buffer) => /listening on/.test(String(c)) && resolve()));
      // steady traffic across the stop: 600 datagrams over about 1.5 s
      const flowing = exec('ip', ['netns', 'exec', PEER_NS, 'bash', '-c', `for i in $(seq 600); do echo steady-$i > /dev/udp/${POD_IP}/5560; sleep 0.0025; done`]);
      await new Promise((r) => setTimeout(r, 600));
      const cutNs = BigInt(Date.now()) * 1_000_000n;
      await capture.stop({ cutNs });
      const stoppedAt = Date.now();
      await flowing;
      reference.kill('SIGTERM');
      await new Promise((r) => reference.once('exit', r));
      writer.close();

      const times = async (path: string) =>
        (await exec('tshark', ['-r', path, '-T', 'fields', '-e', 'frame.time_epoch'])).stdout.split('\n').filter(Boolean).map((t) => BigInt(t.replace('.', '').padEnd(19, '0').slice(0, 19)));
      const kept = await times(file);
      const rawBefore = (await times(raw)).filter((t) => t <= cutNs);
      const after = kept.filter((t) => t > cutNs);
      console.log(`stop cut: ${kept.length} packets kept, ${rawBefore.length} before the cut in the raw capture, ${after.length} after it kept; stop took ${stoppedAt - Number(cutNs / 1_000_000n)} ms`);
      expect(after).toEqual([]);
      expect(kept).toEqual(rawBefore);
      // enough on both sides of the cut to mean something, however busy the machine
      expect(kept.length).toBeGreaterThan(10);
      expect(after.length + (await times(raw)).filter((t) => t > cutNs).length).toBeGreaterThan(0);
    });

    it('reports NetnsNotFound when the held namespace cannot be entered', async () => {
      const dir = await captureDir();
      // a handle on something that is not a network namespace: nsenter refuses it
      const notNetns = openSync(dir, 'r');
      const attempt = start({}, dir, { fd: notNetns, pid: 0, inode: podInode, close: () => closeSync(notNetns) });
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
        await expect(start({}, bin)).rejects.toMatchObject({ reason: 'TcpdumpMissing', message: expect.stringMatching(/^tcpdump is not installed/) });
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
          `import { openSync, fstatSync } from 'node:fs';`,
          `import { startTcpdump } from ${JSON.stringify(join(REPO, 'agent/tcpdump.ts'))};`,
          `import { CaptureWriter } from ${JSON.stringify(join(REPO, 'agent/capture-writer.ts'))};`,
          `import { createLogger } from ${JSON.stringify(join(REPO, 'kube/log.ts'))};`,
          `const { netnsPath, argv, mark, label, dir } = JSON.parse(process.env.START!);`,
          'const fd = openSync(netnsPath, "r");',
          'const netns = { fd, pid: 0, inode: fstatSync(fd).ino, close() {} };',
          `const capture = await startTcpdump({ netns, argv, mark, sink: new CaptureWriter(dir, label, {}), log: createLogger('parent') });`,
          'process.stdout.write(`${capture.pid}\\n`);',
          'setInterval(() => {}, 60_000);',
        ].join('\n'),
      );
      const start = { netnsPath: `/run/netns/${POD_NS}`, argv: tcpdumpArgv({}, {}), mark: sessionMark(dir, 's'), label: LABEL, dir: join(dir, 's') };
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
        const { capture } = await start({}, dir);
        startMs.push(capture.verifiedAt.getTime() - capture.startedAt.getTime());
        const exit = await capture.stop();
        expect(exit.stats).toMatchObject({ captured: expect.any(Number), droppedByKernel: 0 });
        expect(await processesMentioning(dir)).toEqual([]);
      }
      console.log(`tcpdump start (spawn -> listening -> verified), 20 runs: median ${median(startMs)} ms, min ${Math.min(...startMs)}, max ${Math.max(...startMs)}`);
    });
  });
});
