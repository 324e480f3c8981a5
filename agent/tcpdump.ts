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
  type Reason,
} from '../crds/packetcapture.ts';
import { parseQuantity } from '../crds/units.ts';
import type { Logger } from '../kube/log.ts';
import { CAPTURE_FILE } from './files.ts';
import { netnsInodeOfPid } from './netns.ts';

/** A failure with the reason word a session reports in status. */
export class CaptureError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
  ) {
    super(message);
    this.name = 'CaptureError';
  }
}

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
 * The tcpdump arguments for a session writing into `dir`.
 * - `-i any`: the pod's interfaces (eth0, lo, whatever the CNI named them) without knowing
 *   their names; libpcap skips the outgoing copy of loopback packets, so none is doubled.
 *   The files get Linux cooked (SLL2) headers, which tshark and tcpdump -r read.
 * - `-U`: each packet is in the file as soon as tcpdump has it, so files can be read and
 *   sized while running.
 * - no `--immediate-mode`: it switches libpcap to TPACKET_V2, whose ring holds fixed frames
 *   of snapLen bytes on `any`, 8 of them in the default 2 MiB, and a burst drops (measured:
 *   16 of 200 datagrams kept). TPACKET_V3 packs packets into blocks that reach tcpdump when
 *   full or after 1s; `stop()` waits for them.
 * - `-Z root`: Debian's tcpdump otherwise drops to user tcpdump and cannot open the next
 *   file of a rotation in the agent's directory.
 * - `-C` counts millions of bytes: the quantity is rounded up, at least 1. `-W` makes the
 *   `-C` files a ring; without a fileSize there is nothing to rotate, so fileCount alone
 *   changes nothing.
 * - `-y LINUX_SLL2`: pins the header layout that NOT_OTHERHOST reads.
 * The filter is the last element, after `--`, and always excludes NOT_OTHERHOST frames.
 */
export function tcpdumpArgv(
  spec: Pick<PacketCaptureSpec, 'filter' | 'limits'>,
  opts: { dir: string; podIPs?: readonly string[] },
): string[] {
  const limits = spec.limits ?? {};
  const argv = ['-i', 'any', '-y', 'LINUX_SLL2', '-n', '-U', '-Z', 'root'];
  argv.push('-s', String(limits.snapLen ?? DEFAULTS.snapLen), '-w', join(opts.dir, CAPTURE_FILE));
  if (limits.maxPackets !== undefined) argv.push('-c', String(limits.maxPackets));
  if (limits.fileSize !== undefined) {
    argv.push('-C', String(Math.max(1, Math.ceil(parseQuantity(limits.fileSize) / 1_000_000))));
    if (limits.fileCount !== undefined) argv.push('-W', String(limits.fileCount));
  }
  argv.push('--', captureExpression(buildFilter(spec.filter, opts.podIPs ?? [])));
  return argv;
}

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
function startFailure(stderr: string, netnsPath: string): CaptureError {
  const message = toolMessage(stderr);
  if (/^nsenter: (cannot open|reassociate)/m.test(stderr)) {
    return new CaptureError(REASONS.NetnsNotFound, `network namespace ${netnsPath} is gone, the pod's process exited: ${message}`);
  }
  if (/failed to execute/.test(stderr)) return new CaptureError(REASONS.TcpdumpMissing, message);
  return new CaptureError(REASONS.TcpdumpExited, `tcpdump exited before capturing: ${message || 'no message'}`);
}

/**
 * Compiles `expression` as tcpdump would for `-i any` inside the pod's netns: ok, or
 * tcpdump's own message (which the caller reports as InvalidFilter). Throws CaptureError
 * when the check itself cannot run (netns gone, tcpdump missing).
 */
export async function compileFilter(
  expression: string,
  { netnsPath }: { netnsPath: string },
): Promise<{ ok: true } | { ok: false; message: string }> {
  if (expression.trim() === '') return { ok: true };
  const [nsenter, tcpdump] = await Promise.all([resolveTool('nsenter'), resolveTool('tcpdump')]);
  const { code, stderr } = await run(nsenter, [`--net=${netnsPath}`, '--', tcpdump, '-d', '-i', 'any', '-y', 'LINUX_SLL2', '--', expression]);
  if (code === 0) return { ok: true };
  if (/^nsenter: /m.test(stderr)) throw startFailure(stderr, netnsPath);
  return { ok: false, message: toolMessage(stderr) || `tcpdump rejected the filter (exit ${code})` };
}

const COMPILE_TIMEOUT_MS = 10_000;

function run(command: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: COMPILE_TIMEOUT_MS, killSignal: 'SIGKILL' });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
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

export interface TcpdumpProcess {
  /** tcpdump's own pid (setpriv and nsenter exec it) and its process group */
  pid: number;
  startedAt: Date;
  /** when its netns inode was checked against the expected one */
  verifiedAt: Date;
  /** settles when tcpdump has exited (by itself, e.g. -c reached, or stopped) */
  exited: Promise<TcpdumpExit>;
  /**
   * Waits (at most 1.5s) for packets still in the kernel's ring to reach the file, then
   * SIGTERM to the group, SIGKILL after graceMs; resolves after the exit.
   */
  stop(graceMs?: number): Promise<TcpdumpExit>;
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
const DRAIN_POLL_MS = 100;

/** Packets the kernel passed to tcpdump's socket that tcpdump has taken or the kernel dropped. */
const accountedFor = (stats: TcpdumpStats): number => (stats.captured ?? 0) + (stats.droppedByKernel ?? 0);

/**
 * Starts `tcpdump <argv>` inside the network namespace at `netnsPath`, without a shell,
 * in its own process group, with SIGKILL as parent-death signal so it cannot outlive the
 * agent. Resolves once tcpdump is capturing and its netns inode is `expectedInode`;
 * otherwise kills it and throws CaptureError (NetnsMismatch, NetnsNotFound,
 * TcpdumpMissing, TcpdumpExited).
 */
export async function startTcpdump({
  netnsPath,
  expectedInode,
  argv,
  log,
}: {
  netnsPath: string;
  expectedInode: number;
  argv: string[];
  log: Logger;
}): Promise<TcpdumpProcess> {
  const [setpriv, nsenter, tcpdump] = await Promise.all([resolveTool('setpriv'), resolveTool('nsenter'), resolveTool('tcpdump')]);
  const startedAt = new Date();
  const child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', nsenter, `--net=${netnsPath}`, '--', tcpdump, ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });

  let stderr = '';
  let partialLine = '';
  let gone = false;
  let verified = false;
  let onListening: (() => void) | undefined;
  const statsWaiters = new Set<(stats: TcpdumpStats) => void>();

  const exited = new Promise<TcpdumpExit>((resolve) => {
    child.on('error', (err) => {
      gone = true;
      stderr += `\n${err.message}`;
      resolve({ code: null, signal: null, stats: {}, stderrTail: stderr.slice(-STDERR_KEEP) });
    });
    child.on('exit', () => (gone = true));
    child.on('close', (code, signal) => resolve({ code, signal, stats: parseStats(stderr), stderrTail: stderr.slice(-STDERR_KEEP) }));
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
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEEP);
    const lines = (partialLine + chunk).split('\n');
    partialLine = lines.pop() ?? '';
    lines.forEach(onLine);
  });

  const signalGroup = (signal: NodeJS.Signals) => {
    if (gone || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
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
  if (started === 'exited') return fail(startFailure(stderr, netnsPath));
  if (started === 'timeout') {
    return fail(new CaptureError(REASONS.TcpdumpExited, `tcpdump did not start capturing within ${LISTEN_TIMEOUT_MS / 1000}s: ${toolMessage(stderr)}`));
  }

  const pid = child.pid!;
  const actual = await runningIn(pid);
  if (actual.comm === undefined || actual.inode === undefined) {
    return fail(new CaptureError(REASONS.TcpdumpExited, `tcpdump (pid ${pid}) exited before its network namespace could be checked: ${toolMessage(stderr) || 'no message'}`));
  }
  if (actual.comm !== 'tcpdump' || actual.inode !== expectedInode) {
    return fail(
      new CaptureError(
        REASONS.NetnsMismatch,
        `tcpdump (pid ${pid}, ${actual.comm}) runs in net:[${actual.inode}], not in the pod's net:[${expectedInode}] resolved from ${netnsPath}; not capturing`,
      ),
    );
  }
  const verifiedAt = new Date();
  verified = true;
  log.debug({ pid, argv, netnsPath, inode: expectedInode, startMs: verifiedAt.getTime() - startedAt.getTime() }, 'tcpdump capturing');

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
  // is released when full or by a 1s timer; stopping before that would lose them. Only the
  // packets that arrived before the stop are waited for: with traffic still flowing the
  // ring is never empty, and waiting for that would always run into the deadline.
  const drain = async () => {
    const deadline = Date.now() + DRAIN_MS;
    const atStop = await requestStats(DRAIN_MS);
    if (!atStop) return;
    const target = atStop.receivedByFilter ?? 0;
    let stats: TcpdumpStats | undefined = atStop;
    while (stats && accountedFor(stats) < target && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      stats = await requestStats(Math.max(1, deadline - Date.now()));
    }
  };
  const stop = async (graceMs = 2000): Promise<TcpdumpExit> => {
    await drain();
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
