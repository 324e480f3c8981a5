// One tcpdump process: spec -> argv (pure), then start it inside a pod's network
// namespace, prove it runs there, and stop it. No shell anywhere: the filter is one argv
// element, and user input can only ever be a tcpdump expression.

import { spawn } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { delimiter, join } from 'node:path';
import {
  DEFAULTS,
  REASONS,
  type Filter,
  type PacketCaptureSpec,
  type Protocol,
} from '../crds/packetcapture.ts';
import type { Logger } from '../kube/log.ts';
import { PcapStreamReader } from '../pcapng/pcap.ts';
import type { Packet } from '../pcapng/blocks.ts';
import { CaptureError } from './capture-error.ts';
import { netnsInodeOfPid, type HeldNetns } from './netns.ts';

export { CaptureError };

const PROTOCOL_PRIMITIVES: Record<Protocol, string> = {
  TCP: 'tcp',
  UDP: 'udp',
  ICMP: 'icmp',
  ICMPv6: 'icmp6',
  SCTP: 'sctp',
};

/** Whether the filter names the pod's own IPs (direction Ingress or Egress), so it waits for the pod to have them. */
export const filterNeedsPodIPs = (filter: Filter | undefined): boolean => (filter?.direction ?? DEFAULTS.direction) !== 'Both';

/**
 * The spec's filter as one BPF expression; '' captures everything. Direction is relative
 * to the pod: Ingress is what reaches one of the pod's IPs (a dual-stack pod has two),
 * Egress what leaves from one, so both need `podIPs`. `port` matches either side; `peer`
 * is the other side's IP or CIDR. Throws CaptureError(InvalidFilter) for anything that is
 * not what the schema allows.
 */
export function buildFilter(filter: Filter | undefined, podIPs: readonly string[]): string {
  if (!filter) return '';
  const direction = filter.direction ?? DEFAULTS.direction;
  const parts: string[] = [];
  if (filter.protocol !== undefined) {
    const primitive = PROTOCOL_PRIMITIVES[filter.protocol];
    if (!primitive) throw invalidFilter(`filter.protocol "${filter.protocol}" is not one of ${Object.keys(PROTOCOL_PRIMITIVES).join(', ')}`);
    parts.push(primitive);
  }
  if (filterNeedsPodIPs(filter)) {
    if (podIPs.length === 0) throw invalidFilter(`filter.direction ${direction} is relative to the pod's IP, and the pod has no IP yet`);
    const bad = podIPs.find((ip) => !isIP(ip));
    if (bad !== undefined) throw invalidFilter(`pod IP "${bad}" is not an IP address`);
    const hosts = podIPs.map((ip) => `${direction === 'Ingress' ? 'dst' : 'src'} host ${ip}`);
    parts.push(hosts.length === 1 ? hosts[0]! : `(${hosts.join(' or ')})`);
  }
  if (filter.port !== undefined) parts.push(`port ${checkPort('port', filter.port)}`);
  if (filter.srcPort !== undefined) parts.push(`src port ${checkPort('srcPort', filter.srcPort)}`);
  if (filter.dstPort !== undefined) parts.push(`dst port ${checkPort('dstPort', filter.dstPort)}`);
  if (filter.peer !== undefined) {
    const side = direction === 'Ingress' ? 'src ' : direction === 'Egress' ? 'dst ' : '';
    parts.push(`${side}${peerPrimitive(filter.peer)}`);
  }
  if (filter.bpf !== undefined && filter.bpf.trim() !== '') parts.push(`(${checkBalanced(filter.bpf.trim())})`);
  return parts.join(' and ');
}

function invalidFilter(message: string): CaptureError {
  return new CaptureError(REASONS.InvalidFilter, message);
}

function checkPort(field: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalidFilter(`filter.${field} ${port} is not a port (1-65535)`);
  return port;
}

function peerPrimitive(peer: string): string {
  const [address = '', bits, extra] = peer.split('/');
  const family = isIP(address);
  if (bits === undefined && family !== 0) return `host ${address}`;
  const maxBits = family === 4 ? 32 : 128;
  if (family !== 0 && extra === undefined && /^[0-9]{1,3}$/.test(bits ?? '') && Number(bits) <= maxBits) return `net ${peer}`;
  throw invalidFilter(`filter.peer "${peer}" is neither an IP address nor a CIDR`);
}

// The bpf is ANDed inside parentheses; a stray `)` would close ours and OR the rest of
// the expression past the direction and port the user also asked for.
function checkBalanced(bpf: string): string {
  let depth = 0;
  for (const char of bpf) {
    depth += char === '(' ? 1 : char === ')' ? -1 : 0;
    if (depth < 0) break;
  }
  if (depth !== 0) throw invalidFilter(`filter.bpf "${bpf}" has unbalanced parentheses`);
  return bpf;
}

/**
 * Measured on 2 busy cores at 80 kpps (the senders take a core each): with libpcap's default
 * 2 MiB the agent is off the CPU long enough (event-loop delay up to 0.9 s) that tcpdump,
 * blocked writing to it, drops 1.3%; with 8 MiB it drops nothing, like a tcpdump writing a
 * file. It is kernel memory per running session.
 */
export const RING_KIB = 8192;

/**
 * The tcpdump arguments of a session. tcpdump does what it is best at (the packet socket,
 * the BPF filter, the kernel's counters) and hands every packet to the agent on stdout,
 * which writes the session's files (agent/capture-writer.ts): rotation, limits and the
 * stop are the agent's, so a file names its pod instance and a stop is exact.
 * - `-i any`: the pod's interfaces (eth0, lo, whatever the CNI named them) without knowing
 *   their names; libpcap skips the outgoing copy of loopback packets, so none is doubled.
 *   Packets get Linux cooked (SLL2) headers, which tshark and tcpdump -r read.
 * - `-w -` with `-U`: each packet reaches the pipe as soon as tcpdump has it, so the files,
 *   the live feed and the stop see it at once.
 * - `--time-stamp-precision=nano`: the stop instant is compared with the packets' own
 *   kernel timestamps.
 * - no `--immediate-mode`: it switches libpcap to TPACKET_V2, whose ring holds fixed frames
 *   of snapLen bytes on `any`, 8 of them in the default 2 MiB, and a burst drops (measured:
 *   16 of 200 datagrams kept). TPACKET_V3 packs packets into blocks that reach tcpdump when
 *   full or after 1s; `stop()` waits for them.
 * - `-Z root`: Debian's tcpdump otherwise changes to user tcpdump, which the agent's image
 *   need not have.
 * - `-y LINUX_SLL2`: pins the header layout that NOT_OTHERHOST reads.
 * - `-B`: a kernel ring of RING_KIB. tcpdump now waits for its reader (the agent) where a
 *   file never made it wait; the ring absorbs the agent not being scheduled for a moment.
 * The filter is the last element, after `--`, and always excludes NOT_OTHERHOST frames.
 */
export function tcpdumpArgv(spec: Pick<PacketCaptureSpec, 'filter' | 'limits'>, opts: { podIPs?: readonly string[] }): string[] {
  const snapLen = spec.limits?.snapLen ?? DEFAULTS.snapLen;
  return [
    ...['-i', 'any', '-y', 'LINUX_SLL2', '-n', '-U', '-Z', 'root', '--time-stamp-precision=nano', '-B', String(RING_KIB), '-s', String(snapLen), '-w', '-'],
    ...['--', captureExpression(buildFilter(spec.filter, opts.podIPs ?? []))],
  ];
}

/** DLT_LINUX_SLL2, the link type `-y LINUX_SLL2` gives every packet. */
export const LINUX_SLL2 = 276;

/**
 * A packet socket also sees frames that reached the pod's interface but were addressed to
 * another MAC (pkt_type PACKET_OTHERHOST): a bridge floods a frame for a MAC it has not
 * learned yet, which is exactly what happens right after a pod's IP is handed to a new pod.
 * They are not this pod's traffic, so no capture keeps them. Byte 10 of the LINUX_SLL2
 * header is the packet type; 3 is PACKET_OTHERHOST.
 */
const NOT_OTHERHOST = 'not link[10] == 3';

/** The expression tcpdump runs: the spec's filter with foreign frames excluded. */
export const captureExpression = (filter: string): string =>
  filter === '' ? NOT_OTHERHOST : `(${filter}) and ${NOT_OTHERHOST}`;

/** The absolute path of a tool on PATH, or CaptureError(TcpdumpMissing) naming it. */
async function resolveTool(name: string): Promise<string> {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  throw new CaptureError(REASONS.TcpdumpMissing, `${name} is not installed on this node's agent (PATH=${process.env.PATH ?? ''}); the agent image needs tcpdump and util-linux`);
}

const NOISE = [
  /^tcpdump: data link type /,
  /^tcpdump: listening on /,
  /^Running as user "root"/,
  /packets? (captured|received by filter|dropped by kernel|dropped by interface)/,
];

/** What tcpdump or nsenter said, without its banner and counters. */
function toolMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !NOISE.some((noise) => noise.test(line)))
    .map((line) => line.replace(/^tcpdump: /, ''));
  return lines.join('; ').slice(-500);
}

/** The failure of a process that ended before tcpdump was capturing. */
function startFailure(stderr: string, netns: HeldNetns): CaptureError {
  const message = toolMessage(stderr);
  if (/^nsenter: (cannot open|reassociate)/m.test(stderr)) {
    return new CaptureError(REASONS.NetnsNotFound, `network namespace net:[${netns.inode}] could not be entered: ${message}`);
  }
  if (/failed to execute/.test(stderr)) return new CaptureError(REASONS.TcpdumpMissing, message);
  return new CaptureError(REASONS.TcpdumpExited, `tcpdump exited before capturing: ${message || 'no message'}`);
}

// The held netns is the child's fd 3: nsenter enters that very namespace, not a path that
// could name another one by the time it is opened.
const NETNS_FD = 3;
const ENTER_HELD = `--net=/proc/self/fd/${NETNS_FD}`;
const stdioWith = (netns: HeldNetns, stdout: 'ignore' | 'pipe') => ['ignore', stdout, 'pipe', netns.fd] as const;

/**
 * Compiles `expression` as tcpdump would for `-i any` inside the pod's netns: ok, or
 * tcpdump's own message (which the caller reports as InvalidFilter). Throws CaptureError
 * when the check itself cannot run (netns gone, tcpdump missing).
 */
export async function compileFilter(expression: string, { netns }: { netns: HeldNetns }): Promise<{ ok: true } | { ok: false; message: string }> {
  if (expression.trim() === '') return { ok: true };
  const [nsenter, tcpdump] = await Promise.all([resolveTool('nsenter'), resolveTool('tcpdump')]);
  const { code, stderr } = await run(nsenter, [ENTER_HELD, '--', tcpdump, '-d', '-i', 'any', '-y', 'LINUX_SLL2', '--', expression], netns);
  if (code === 0) return { ok: true };
  if (/^nsenter: /m.test(stderr)) throw startFailure(stderr, netns);
  return { ok: false, message: toolMessage(stderr) || `tcpdump rejected the filter (exit ${code})` };
}

const COMPILE_TIMEOUT_MS = 10_000;

function run(command: string, args: string[], netns: HeldNetns): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [...stdioWith(netns, 'ignore')], timeout: COMPILE_TIMEOUT_MS, killSignal: 'SIGKILL' });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

export interface TcpdumpStats {
  captured?: number;
  receivedByFilter?: number;
  droppedByKernel?: number;
}

export interface TcpdumpExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stats: TcpdumpStats;
  /** the end of tcpdump's stderr, for messages */
  stderrTail: string;
}

/** Where tcpdump's packets go: agent/capture-writer.ts CaptureWriter fits. */
export interface PacketSink {
  push(packets: readonly Packet[], link: { linkType: number; snapLen: number }): void;
  /** the netns is proven: from now on packets may be kept */
  verified(): void;
  /** packets after this instant are not kept */
  cut(stopNs: bigint): void;
  /** a packet after the cut has arrived: everything before it has too */
  readonly pastCut: boolean;
  /** drops what was held when the netns could not be proven */
  close(): unknown;
}

export interface StopOptions {
  /** SIGTERM, then SIGKILL after this long */
  graceMs?: number;
  /** the stop instant (ns since the epoch): no packet after it is kept, every packet before it is */
  cutNs?: bigint;
}

export interface TcpdumpProcess {
  /** tcpdump's own pid (setpriv and nsenter exec it) and its process group */
  pid: number;
  startedAt: Date;
  /** when its netns inode was checked against the held one */
  verifiedAt: Date;
  /** settles when tcpdump has exited (by itself or stopped) and its last packet reached the sink */
  exited: Promise<TcpdumpExit>;
  /**
   * Waits (at most 1.5s) for packets still in the kernel's ring to reach the sink, then
   * SIGTERM to the group, SIGKILL after the grace; resolves after the exit.
   */
  stop(opts?: StopOptions): Promise<TcpdumpExit>;
  /** tcpdump's counters now (SIGUSR1), or undefined if it did not answer in time */
  requestStats(timeoutMs?: number): Promise<TcpdumpStats | undefined>;
}

const STAT_PATTERNS: Record<keyof TcpdumpStats, RegExp> = {
  captured: /(\d+) packets? captured/g,
  receivedByFilter: /(\d+) packets? received by filter/g,
  droppedByKernel: /(\d+) packets? dropped by kernel/g,
};

/** tcpdump's counters, from the last report in `text` (on exit, or after SIGUSR1). */
export function parseStats(text: string): TcpdumpStats {
  const stats: TcpdumpStats = {};
  for (const [key, pattern] of Object.entries(STAT_PATTERNS) as [keyof TcpdumpStats, RegExp][]) {
    const last = [...text.matchAll(pattern)].at(-1);
    if (last) stats[key] = Number(last[1]);
  }
  return stats;
}

const STDERR_KEEP = 8192;
const LISTEN_TIMEOUT_MS = 15_000;
const DRAIN_MS = 1500;
const DRAIN_POLL_MS = 20;

/** Packets the kernel passed to tcpdump's socket that tcpdump has taken or the kernel dropped. */
const accountedFor = (stats: TcpdumpStats): number => (stats.captured ?? 0) + (stats.droppedByKernel ?? 0);

/** The environment variable that marks a session's tcpdump, so a reaper finds it even without a record. */
export const SESSION_MARK = 'PACKET_CAPTURE_SESSION';

/**
 * Starts `tcpdump <argv>` inside the held network namespace, without a shell, in its own
 * process group, with SIGKILL as parent-death signal and its stdout on a pipe to the agent,
 * so it cannot outlive the agent (and could not write anywhere if it did). Packets go to
 * `sink` from the first one, but are kept only after the proof: tcpdump runs as tcpdump in
 * the held netns. Otherwise it is killed, the sink dropped, and CaptureError thrown
 * (NetnsMismatch, NetnsNotFound, TcpdumpMissing, TcpdumpExited).
 */
export async function startTcpdump({
  netns,
  argv,
  sink,
  mark,
  log,
  onSpawn,
}: {
  netns: HeldNetns;
  argv: string[];
  sink: PacketSink;
  /** the value of SESSION_MARK in tcpdump's environment */
  mark: string;
  log: Logger;
  /** called with the pid as soon as the process exists, before it can have captured anything worth keeping */
  onSpawn?(pid: number): void;
}): Promise<TcpdumpProcess> {
  const [setpriv, nsenter, tcpdump] = await Promise.all([resolveTool('setpriv'), resolveTool('nsenter'), resolveTool('tcpdump')]);
  const startedAt = new Date();
  const child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', nsenter, ENTER_HELD, '--', tcpdump, ...argv], {
    detached: true,
    stdio: [...stdioWith(netns, 'pipe')],
    env: { ...process.env, [SESSION_MARK]: mark },
  });
  if (child.pid !== undefined) onSpawn?.(child.pid);

  let stderr = '';
  let partialLine = '';
  let gone = false;
  let verified = false;
  let onListening: (() => void) | undefined;
  const statsWaiters = new Set<(stats: TcpdumpStats) => void>();

  const reader = new PcapStreamReader();
  let streamError: string | undefined;
  child.stdout!.on('data', (chunk: Buffer) => {
    if (streamError) return;
    try {
      const packets = reader.push(chunk);
      if (packets.length > 0) sink.push(packets, reader.header!);
    } catch (err) {
      // not a pcap stream: nothing of it can be trusted, and tcpdump is stopped below
      streamError = String(err);
      signalGroup('SIGKILL');
    }
  });

  const exited = new Promise<TcpdumpExit>((resolve) => {
    child.on('error', (err) => {
      gone = true;
      stderr += `\n${err.message}`;
      resolve({ code: null, signal: null, stats: {}, stderrTail: stderr.slice(-STDERR_KEEP) });
    });
    child.on('exit', () => (gone = true));
    // after 'close' every byte of stdout has been read, so the sink holds the last packet
    child.on('close', (code, signal) =>
      resolve({ code, signal, stats: parseStats(stderr), stderrTail: (streamError ? `${stderr}\n${streamError}` : stderr).slice(-STDERR_KEEP) }),
    );
  });

  const onLine = (line: string) => {
    if (/^tcpdump: listening on /.test(line)) onListening?.();
    else if (/captured.*dropped by kernel/.test(line)) {
      // the one-line report SIGUSR1 asks for (the report on exit spans three lines)
      const stats = parseStats(line);
      for (const waiter of statsWaiters) waiter(stats);
      statsWaiters.clear();
    } else if (line.trim() !== '' && !NOISE.some((noise) => noise.test(line))) {
      // before verification a failure is reported as a CaptureError; after, this is all we hear
      log[verified ? 'warn' : 'debug']({ pid: child.pid, stderr: line }, 'tcpdump says');
    }
  };
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEEP);
    const lines = (partialLine + chunk).split('\n');
    partialLine = lines.pop() ?? '';
    lines.forEach(onLine);
  });

  function signalGroup(signal: NodeJS.Signals) {
    if (gone || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  const kill = async (graceMs: number): Promise<TcpdumpExit> => {
    signalGroup('SIGTERM');
    const escalate = setTimeout(() => signalGroup('SIGKILL'), graceMs);
    try {
      return await exited;
    } finally {
      clearTimeout(escalate);
    }
  };
  const fail = async (error: CaptureError): Promise<never> => {
    sink.close();
    await kill(0);
    log.debug({ pid: child.pid, reason: error.reason, err: error.message }, 'tcpdump not started');
    throw error;
  };
  const started = await new Promise<'listening' | 'exited' | 'timeout'>((resolve) => {
    onListening = () => resolve('listening');
    void exited.then(() => resolve('exited'));
    setTimeout(() => resolve('timeout'), LISTEN_TIMEOUT_MS).unref();
  });
  onListening = undefined;
  if (started === 'exited') return fail(startFailure(stderr, netns));
  if (started === 'timeout') {
    return fail(new CaptureError(REASONS.TcpdumpExited, `tcpdump did not start capturing within ${LISTEN_TIMEOUT_MS / 1000}s: ${toolMessage(stderr)}`));
  }

  const pid = child.pid!;
  const actual = await runningIn(pid);
  if (actual.comm === undefined || actual.inode === undefined) {
    return fail(new CaptureError(REASONS.TcpdumpExited, `tcpdump (pid ${pid}) exited before its network namespace could be checked: ${toolMessage(stderr) || 'no message'}`));
  }
  if (actual.comm !== 'tcpdump' || actual.inode !== netns.inode) {
    return fail(
      new CaptureError(
        REASONS.NetnsMismatch,
        `tcpdump (pid ${pid}, ${actual.comm}) runs in net:[${actual.inode}], not in the pod's net:[${netns.inode}]; nothing it captured was kept`,
      ),
    );
  }
  sink.verified();
  const verifiedAt = new Date();
  verified = true;
  log.debug({ pid, argv, inode: netns.inode, startMs: verifiedAt.getTime() - startedAt.getTime() }, 'tcpdump capturing');

  const requestStats = (timeoutMs = 2000) =>
    new Promise<TcpdumpStats | undefined>((resolve) => {
      if (gone) return resolve(undefined);
      const timer = setTimeout(() => {
        statsWaiters.delete(answer);
        resolve(undefined);
      }, timeoutMs);
      const answer = (stats: TcpdumpStats) => {
        clearTimeout(timer);
        resolve(stats);
      };
      statsWaiters.add(answer);
      void exited.then((exit) => answer(exit.stats));
      try {
        process.kill(pid, 'SIGUSR1');
      } catch {
        // exited meanwhile: `exited` answers
      }
    });

  // Packets the kernel accepted but has not handed to tcpdump yet sit in a ring block that
  // is released when full or by a 1s timer; stopping before that would lose them. With a
  // cut, a packet after the stop instant proves every earlier one arrived; without one,
  // only the packets that arrived before the stop are waited for: with traffic still
  // flowing the ring is never empty, and waiting for that would always hit the deadline.
  const drain = async (cutNs: bigint | undefined) => {
    const deadline = Date.now() + DRAIN_MS;
    const atStop = await requestStats(DRAIN_MS);
    if (!atStop) return;
    const target = atStop.receivedByFilter ?? 0;
    let stats: TcpdumpStats | undefined = atStop;
    while (stats && !(cutNs !== undefined && sink.pastCut) && accountedFor(stats) < target && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      stats = await requestStats(Math.max(1, deadline - Date.now()));
    }
  };
  const stop = async ({ graceMs = 2000, cutNs }: StopOptions = {}): Promise<TcpdumpExit> => {
    if (cutNs !== undefined) sink.cut(cutNs);
    await drain(cutNs);
    return kill(graceMs);
  };

  return { pid, startedAt, verifiedAt, exited, stop, requestStats };
}

/** What /proc says about `pid` right now; fields are undefined once it has exited. */
async function runningIn(pid: number): Promise<{ comm?: string; inode?: number }> {
  const [comm, inode] = await Promise.allSettled([readFile(`/proc/${pid}/comm`, 'utf8'), netnsInodeOfPid(pid)]);
  return {
    comm: comm.status === 'fulfilled' ? comm.value.trim() : undefined,
    inode: inode.status === 'fulfilled' ? inode.value : undefined,
  };
}
