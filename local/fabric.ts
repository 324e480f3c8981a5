// The simulated network: one bridge (`pcbr0`) inside its own network namespace
// (`pc-fabric`), and a network namespace per pod or traffic host with a veth on it.
// The bridge lives outside the host namespace so the host's firewall (Docker's FORWARD
// DROP with br_netfilter, for one) never sees pod-to-pod traffic, and nothing on it has a
// way off the machine: pods know no route but their /16. The host reaches the pods over
// one more veth (`pch0` on its side), which carries the pod and service CIDRs, so
// `curl http://<pod IP>` from the host gets the pod and no address the local cluster hands
// out follows the default route off the machine. Every namespace, veth and cgroup made
// here is written down first in an ownership record naming this process, so a later
// cleanupStale() can remove what a crashed run left behind without touching another live
// run's pods.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { cgroupPids, removeCgroupChain, removeCgroupChainSync } from './cgroups.ts';
import { SERVICE_CIDR } from './control-plane.ts';

/** Every network namespace we make starts with this. */
export const NETNS_PREFIX = 'pc-';
export const FABRIC_NETNS = 'pc-fabric';
/** The names pods (`pc-` + 12 hex digits of the UID) and traffic hosts get; no other namespace is ever touched. */
export const isOurNetns = (name: string): boolean => /^pc-([0-9a-f]{12}|host-[a-z0-9-]+)$/.test(name);
export const BRIDGE = 'pcbr0';
export const NETNS_DIR = '/run/netns';
/** All pods and hosts share one L2 segment: every address is on-link, none is routed. */
export const FABRIC_PREFIX_LENGTH = 16;
/** The host's side of its veth to the bridge, and the peer's name on the bridge. */
export const HOST_LINK = 'pch0';
const HOST_LINK_PEER = 'pchost';
/** The host's address on the fabric: above the node subnets (0-249) and the traffic hosts' 250. */
export const HOST_FABRIC_ADDRESS = '10.244.255.254';
/**
 * The host's route to Services rides the fabric too, below the real node's (pcrn0, metric 0)
 * where one runs: the simulated nodes have no kube-proxy, so nothing answers there, but
 * nothing leaves the machine either.
 */
const SERVICE_ROUTE_METRIC = 1000;
const RECORD_DIR = '/run/packet-capture-sim';

export interface Owner {
  pid: number;
  /** /proc/<pid>/stat starttime, so a recycled PID is not mistaken for the owner */
  startTime: string;
}

/** What one sandbox consists of, written before any of it is made. */
export interface SandboxRecord {
  netns: string;
  /** its peer's name in the fabric namespace */
  veth: string;
  /** the sandbox's cgroup and its ancestors, leaf first; the first `own` are this sandbox's alone */
  cgroups?: { chain: string[]; own: number };
  owner: Owner;
}

export class CommandError extends Error {
  override name = 'CommandError';
}

export interface Completed {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a program without a shell and collects its output, whatever its exit code. */
export function complete(file: string, args: readonly string[], input?: string): Promise<Completed> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin?.end(input);
  });
}

/** Runs a program without a shell; rejects with its stderr when it fails. */
export async function run(file: string, args: readonly string[], input?: string): Promise<string> {
  const { code, signal, stdout, stderr } = await complete(file, args, input);
  if (code === 0) return stdout;
  throw new CommandError(`${file} ${args.join(' ')}: ${stderr.trim() || `exit ${code ?? signal}`}`);
}

/**
 * argv for `setpriv` that runs `argv` inside a network namespace and dies with the process
 * that spawned it. setpriv and nsenter exec in turn, so the PID is the program's own.
 */
export const inNetns = (netns: string, argv: readonly string[]): string[] => [
  '--pdeathsig',
  'KILL',
  'nsenter',
  `--net=${netnsPath(netns)}`,
  ...argv,
];

/** `ip` in a network namespace; several commands go in one process as a batch. */
export const ip = (netns: string | undefined, commands: readonly string[][]): Promise<string> => {
  const prefix = netns ? ['-n', netns] : [];
  return commands.length === 1
    ? run('ip', [...prefix, ...commands[0]!])
    : run('ip', [...prefix, '-batch', '-'], commands.map((c) => c.join(' ')).join('\n') + '\n');
};

const alreadyExists = (err: unknown) => err instanceof CommandError && /File exists/.test(err.message);
const notFound = (err: unknown) =>
  err instanceof CommandError && /Cannot find device|No such file|does not exist|Invalid "netns" value/.test(err.message);

export const netnsPath = (name: string): string => join(NETNS_DIR, name);

/** The start time of a process, or undefined if it is gone. */
export function processStartTime(pid: number): string | undefined {
  try {
    return parseStartTime(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat; the command name before it may contain spaces and parentheses. */
export function parseStartTime(stat: string): string | undefined {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

let self: Owner | undefined;
export const currentOwner = (): Owner => (self ??= { pid: process.pid, startTime: processStartTime(process.pid) ?? '' });

const ownerAlive = (owner: Owner) => processStartTime(owner.pid) === owner.startTime;

// ---- scripts run inside namespaces ----------------------------------------------------

const scripts = new Map<string, Promise<string>>();

/**
 * A plain JavaScript copy of a TypeScript script that needs no loader (pod-server.ts,
 * traffic.ts): node starts it about 100 ms sooner than the .ts, with no type stripper to
 * load, and every pod start pays that. Made once per process; named by content.
 */
export function runnableScript(tsPath: string): Promise<string> {
  let compiled = scripts.get(tsPath);
  if (!compiled) {
    compiled = compileScript(tsPath);
    scripts.set(tsPath, compiled);
  }
  return compiled;
}

// in a child node, where its "experimental" warning can be silenced without hiding others
const STRIP = "process.stdout.write(require('node:module').stripTypeScriptTypes(require('node:fs').readFileSync(process.argv[1], 'utf8')))";

async function compileScript(tsPath: string): Promise<string> {
  const js = await run(process.execPath, ['--disable-warning=ExperimentalWarning', '-e', STRIP, tsPath]);
  const dir = join(RECORD_DIR, 'scripts');
  const out = join(dir, `${basename(tsPath, '.ts')}-${createHash('sha256').update(js).digest('hex').slice(0, 12)}.mjs`);
  if (!existsSync(out)) {
    await mkdir(dir, { recursive: true });
    await writeAtomically(out, js);
  }
  return out;
}

/** Readers in other processes see the whole file or none of it. */
async function writeAtomically(path: string, content: string): Promise<void> {
  const partial = `${path}.${process.pid}.partial`;
  await writeFile(partial, content);
  await rename(partial, path);
}

// ---- the bridge ---------------------------------------------------------------------

let fabricUsers = 0;
let fabricReady: Promise<void> | undefined;

/** Makes sure the bridge exists; every acquire is matched by a releaseFabric(). */
export async function acquireFabric(): Promise<void> {
  installExitCleanup();
  fabricUsers++;
  fabricReady ??= ensureFabric().catch((err: unknown) => {
    fabricReady = undefined;
    throw err;
  });
  try {
    await fabricReady;
  } catch (err) {
    fabricUsers--;
    throw err;
  }
}

async function ensureFabric(): Promise<void> {
  // tolerant of another process creating the same fabric at the same moment
  if (!existsSync(netnsPath(FABRIC_NETNS))) await run('ip', ['netns', 'add', FABRIC_NETNS]).catch(ignore(alreadyExists));
  await ip(FABRIC_NETNS, [['link', 'add', BRIDGE, 'type', 'bridge']]).catch(ignore(alreadyExists));
  // no IPv6 link-local addresses on the fabric: no router solicitations or MLD in captures
  await ip(FABRIC_NETNS, [
    ['link', 'set', 'lo', 'up'],
    ['link', 'set', BRIDGE, 'addrgenmode', 'none'],
    ['link', 'set', BRIDGE, 'up'],
  ]);
  await linkHost();
}

/**
 * The host's veth to the bridge, its fabric address (whose /16 is the route to every pod)
 * and the route to Services. It goes with the fabric's namespace, which holds its peer.
 */
async function linkHost(): Promise<void> {
  const add = () =>
    ip(undefined, [['link', 'add', HOST_LINK, 'address', macForAddress(HOST_FABRIC_ADDRESS), 'type', 'veth', 'peer', 'name', HOST_LINK_PEER, 'netns', FABRIC_NETNS]]);
  await add().catch(async (err: unknown) => {
    if (!alreadyExists(err)) throw err;
    // the link of a fabric namespace deleted a moment ago goes only when the kernel is done with it
    if ((await complete('ip', ['-n', FABRIC_NETNS, 'link', 'show', HOST_LINK_PEER])).code === 0) return;
    await ip(undefined, [['link', 'del', HOST_LINK]]).catch(ignore(notFound));
    await add();
  });
  await ip(FABRIC_NETNS, [
    ['link', 'set', HOST_LINK_PEER, 'addrgenmode', 'none'],
    ['link', 'set', HOST_LINK_PEER, 'master', BRIDGE, 'up'],
  ]);
  // no router solicitations or MLD from the host into the pods' captures
  await writeFile(`/proc/sys/net/ipv6/conf/${HOST_LINK}/disable_ipv6`, '1').catch(() => undefined);
  await ip(undefined, [['link', 'set', HOST_LINK, 'addrgenmode', 'none']]);
  await ip(undefined, [['addr', 'add', `${HOST_FABRIC_ADDRESS}/${FABRIC_PREFIX_LENGTH}`, 'dev', HOST_LINK]]).catch(ignore(alreadyExists));
  await ip(undefined, [['link', 'set', HOST_LINK, 'up']]);
  await ip(undefined, [['route', 'add', SERVICE_CIDR, 'dev', HOST_LINK, 'metric', String(SERVICE_ROUTE_METRIC)]]).catch(ignore(alreadyExists));
}

/** The bridge's ports but the host's: what keeps the fabric in use. */
const sandboxPorts = (ports: { ifname?: string }[]): unknown[] => ports.filter((p) => p.ifname !== HOST_LINK_PEER);

const ignore =
  (match: (err: unknown) => boolean) =>
  (err: unknown): void => {
    if (!match(err)) throw err;
  };

/** Drops this process's use of the bridge; removes it when nothing is attached to it. */
export async function releaseFabric(): Promise<void> {
  if (--fabricUsers > 0) return;
  fabricReady = undefined;
  await removeFabricIfUnused();
}

async function removeFabricIfUnused(): Promise<boolean> {
  if (!existsSync(netnsPath(FABRIC_NETNS))) return false;
  const ports = JSON.parse((await ip(FABRIC_NETNS, [['-j', 'link', 'show', 'master', BRIDGE]]).catch(() => '[]')) || '[]') as { ifname?: string }[];
  if (sandboxPorts(ports).length > 0) return false;
  // at once: with the namespace alone the host's link would linger until the kernel frees it
  await ip(FABRIC_NETNS, [['link', 'del', HOST_LINK_PEER]]).catch(ignore(notFound));
  await run('ip', ['netns', 'del', FABRIC_NETNS]).catch(ignore(notFound));
  return true;
}

// ---- sandboxes ----------------------------------------------------------------------

/** This process's sandboxes, for the synchronous clean-up when it exits. */
const live = new Map<string, SandboxRecord>();

const recordPath = (netns: string) => join(RECORD_DIR, `${netns}.json`);

/**
 * The MAC of the interface holding `address`: 0a:58 and the address's four bytes, as
 * OVN-Kubernetes does. A pod that is handed a deleted pod's IP also gets its MAC, so its
 * neighbours' ARP caches stay right and traffic to the IP reaches the new pod at once.
 */
export function macForAddress(address: string): string {
  return ['0a', '58', ...address.split('.').map((octet) => Number(octet).toString(16).padStart(2, '0'))].join(':');
}

/**
 * An empty network namespace. The record is written first, so a crash at any point
 * leaves something cleanupStale() can undo.
 */
export async function createNetns(record: SandboxRecord): Promise<void> {
  if (!isOurNetns(record.netns)) throw new Error(`netns name ${record.netns} is not one of ours (pc-<12 hex> or pc-host-<name>)`);
  await mkdir(RECORD_DIR, { recursive: true });
  await writeAtomically(recordPath(record.netns), JSON.stringify(record));
  live.set(record.netns, record);
  await run('ip', ['netns', 'add', record.netns]);
}

/** A veth from the namespace (as eth0, holding `address`) to the bridge. */
export async function attachToFabric(record: SandboxRecord, address: string): Promise<void> {
  // another process's cleanupStale() may have found the bridge unused and removed it
  if (!existsSync(netnsPath(FABRIC_NETNS))) await ensureFabric();
  await ip(FABRIC_NETNS, [
    ['link', 'add', record.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'address', macForAddress(address), 'netns', record.netns],
    ['link', 'set', record.veth, 'addrgenmode', 'none'],
    ['link', 'set', record.veth, 'master', BRIDGE, 'up'],
  ]);
  await ip(record.netns, [
    ['link', 'set', 'lo', 'up'],
    ['link', 'set', 'eth0', 'addrgenmode', 'none'],
    ['addr', 'add', `${address}/${FABRIC_PREFIX_LENGTH}`, 'dev', 'eth0'],
    ['link', 'set', 'eth0', 'up'],
  ]);
}

/**
 * Removes everything a record names: kills what still runs in the namespace or the
 * cgroup, deletes the veth, the namespace and the cgroups, then the record. Safe to run
 * on a half-made sandbox and to run twice.
 */
export async function destroySandbox(record: SandboxRecord): Promise<void> {
  // a pod's processes are all in its cgroup; a host has none, so look in its namespace
  await killAndWait(record.cgroups ? await cgroupPids(record.cgroups.chain[0]!) : await netnsPids(record.netns));
  await ip(FABRIC_NETNS, [['link', 'del', record.veth]]).catch(ignore(notFound));
  await run('ip', ['netns', 'del', record.netns]).catch(ignore(notFound));
  if (record.cgroups) await removeCgroupChain(record.cgroups.chain, record.cgroups.own);
  await rm(recordPath(record.netns), { force: true });
  live.delete(record.netns);
}

async function netnsPids(netns: string): Promise<number[]> {
  if (!existsSync(netnsPath(netns))) return [];
  const out = await run('ip', ['netns', 'pids', netns]).catch(() => '');
  return out.split('\n').filter(Boolean).map(Number);
}

const gone = (pid: number) => !existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readIfExists(`/proc/${pid}/status`));
const readIfExists = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

async function killAndWait(pids: number[], timeoutMs = 5_000): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (pids.some((pid) => !gone(pid))) {
    if (Date.now() > deadline) throw new Error(`processes ${pids.filter((p) => !gone(p)).join(', ')} survived SIGKILL`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Removes what earlier runs left behind: every sandbox whose recorded owner is no longer
 * running, every `pc-` namespace that no record names (made before its record could be
 * written), and the bridge when nothing is attached to it. Sandboxes of live processes,
 * this one included, are left alone. Returns the namespaces removed.
 */
export async function cleanupStale(): Promise<string[]> {
  const removed: string[] = [];
  const kept = new Set<string>();
  // namespaces before records: a namespace listed here had its record written before it
  const names = await readdir(NETNS_DIR).catch(() => [] as string[]);
  const files = await readdir(RECORD_DIR).catch(() => [] as string[]);
  for (const file of files.filter((f) => f.endsWith('.json'))) {
    const record = await readFile(join(RECORD_DIR, file), 'utf8').then(
      (text) => JSON.parse(text) as SandboxRecord,
      () => undefined,
    );
    if (!record) continue;
    if (ownerAlive(record.owner)) {
      kept.add(record.netns);
      continue;
    }
    await destroySandbox(record);
    removed.push(record.netns);
  }
  for (const name of names) {
    if (!isOurNetns(name) || kept.has(name)) continue;
    await killAndWait(await netnsPids(name));
    await run('ip', ['netns', 'del', name]).catch(ignore(notFound));
    removed.push(name);
  }
  if (fabricUsers === 0 && (await removeFabricIfUnused())) removed.push(FABRIC_NETNS);
  return removed;
}

// ---- leaving nothing behind when the process ends ---------------------------------------

let exitCleanupInstalled = false;

function installExitCleanup(): void {
  if (exitCleanupInstalled) return;
  exitCleanupInstalled = true;
  process.on('exit', cleanupLiveSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      // Someone else handles this signal and will stop their nodes; 'exit' is our backstop.
      if (process.listenerCount(signal) > 1) return;
      cleanupLiveSync();
      process.removeListener(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** What destroySandbox does, synchronously: 'exit' listeners cannot wait for promises. */
function cleanupLiveSync(): void {
  for (const record of live.values()) {
    try {
      const leaf = record.cgroups?.chain[0];
      const pids = leaf ? readIfExists(join(leaf, 'cgroup.procs')).split('\n').filter(Boolean).map(Number) : [];
      const netnsOut = execFileSync('ip', ['netns', 'pids', record.netns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      pids.push(...netnsOut.split('\n').filter(Boolean).map(Number));
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      for (let i = 0; i < 100 && pids.some((pid) => !gone(pid)); i++) sleepSync(20);
      execFileSync('ip', ['-n', FABRIC_NETNS, 'link', 'del', record.veth], { stdio: 'ignore' });
      execFileSync('ip', ['netns', 'del', record.netns], { stdio: 'ignore' });
      if (record.cgroups) removeCgroupChainSync(record.cgroups.chain, record.cgroups.own);
      rmSync(recordPath(record.netns), { force: true });
    } catch {
      // leave the record: the next cleanupStale() finishes the job
    }
  }
  live.clear();
  if (fabricUsers > 0 && existsSync(netnsPath(FABRIC_NETNS))) {
    try {
      const ports = execFileSync('ip', ['-n', FABRIC_NETNS, '-j', 'link', 'show', 'master', BRIDGE], { encoding: 'utf8' });
      if (sandboxPorts(JSON.parse(ports || '[]') as { ifname?: string }[]).length === 0) {
        spawnSync('ip', ['-n', FABRIC_NETNS, 'link', 'del', HOST_LINK_PEER], { stdio: 'ignore' });
        execFileSync('ip', ['netns', 'del', FABRIC_NETNS], { stdio: 'ignore' });
      }
    } catch {
      // another run's ports are attached, or it is already gone
    }
  }
}

/** This machine's pod and host namespaces and the fabric's, of every run (for tests and diagnostics). */
export const ourNetnsNames = (): string[] => {
  try {
    return readdirSync(NETNS_DIR).filter((n) => isOurNetns(n) || n === FABRIC_NETNS);
  } catch {
    return [];
  }
};
