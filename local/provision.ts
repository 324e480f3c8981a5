// What the local cluster, the real node and the tests need from the machine, and getting
// it there. `plan` is pure: from what is present it decides which Debian packages to
// install with apt-get, or what the user must do (no root, no apt, no Go). `provision`
// looks at this machine, says in one line what it installs and why, and runs apt-get.
// .ci/run installs through the same lists, so there is one list of system packages.

import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A Debian package, what shows it is installed, and what it is for (said when installing it). */
export interface Need {
  pkg: string;
  /** a command on PATH, or an absolute path for a package that brings no command */
  provides: string;
  why: string;
}

/** What is built with Go for a command: nothing, the control plane, or also a real node's binaries. */
export type GoBuilds = 'none' | 'control-plane' | 'real-node';

/** What one command needs of the machine. */
export interface Setup {
  needs: readonly Need[];
  builds: GoBuilds;
}

/** The agent on this machine (`npm start -- --kubeconfig F`): tcpdump inside pods' namespaces. */
export const AGENT: Setup = {
  builds: 'none',
  needs: [
    { pkg: 'iproute2', provides: 'ip', why: 'pods are network namespaces on a bridge' },
    { pkg: 'util-linux', provides: 'nsenter', why: "tcpdump runs inside a pod's namespace" },
    { pkg: 'util-linux', provides: 'setpriv', why: "tcpdump runs inside a pod's namespace" },
    { pkg: 'tcpdump', provides: 'tcpdump', why: 'the captures' },
  ],
};

/** `npm start`, `npm run demo`: the agents, the control plane's certificates, reading captures. */
export const LOCAL_CLUSTER: Setup = {
  builds: 'control-plane',
  needs: [
    ...AGENT.needs,
    { pkg: 'tshark', provides: 'tshark', why: 'the demo reads the capture files' },
    { pkg: 'curl', provides: 'curl', why: 'requests to pods from this machine, as the README shows' },
    { pkg: 'openssl', provides: 'openssl', why: "the control plane's certificates" },
    { pkg: 'ca-certificates', provides: '/etc/ssl/certs/ca-certificates.crt', why: 'Go fetches the control plane from its module proxy' },
  ],
};

/** `--real-node`: kubelet + containerd (runc, kube-proxy's NAT rule) and packing its images. */
export const REAL_NODE: Setup = {
  builds: 'real-node',
  needs: [
    ...LOCAL_CLUSTER.needs,
    { pkg: 'runc', provides: 'runc', why: "containerd's runtime" },
    { pkg: 'iptables', provides: 'iptables', why: 'the kubernetes Service rule' },
    { pkg: 'umoci', provides: 'umoci', why: 'packs the images' },
    { pkg: 'mmdebstrap', provides: 'mmdebstrap', why: "the image's root filesystem" },
    { pkg: 'skopeo', provides: 'skopeo', why: 'writes the image archives' },
    { pkg: 'gcc', provides: 'gcc', why: 'builds the static pause' },
    { pkg: 'libc6-dev', provides: '/usr/include/stdio.h', why: 'builds the static pause' },
  ],
};

/** `npm test` and .ci/run: every suite. */
export const TESTS: Setup = {
  builds: 'real-node',
  needs: [
    ...REAL_NODE.needs,
    { pkg: 'iputils-ping', provides: 'ping', why: 'e2e traffic' },
    { pkg: 'procps', provides: 'ps', why: 'e2e process checks' },
    { pkg: 'lua5.1', provides: 'lua5.1', why: 'the Argo CD health check runs in Lua 5.1' },
    { pkg: 'prometheus', provides: 'promtool', why: 'promtool tests the alert rules' },
  ],
};

/** What a plan is made from: the facts about one machine. */
export interface Machine {
  root: boolean;
  /** apt-get is on PATH */
  apt: boolean;
  /** whether a Need's `provides` is there */
  has(provides: string): boolean;
  /** Go is installed, or the binaries it would build are given or cached already */
  go: boolean;
}

export interface Plan {
  /** the packages to install, in the order of the list */
  packages: string[];
  /** what to run, in order; empty when nothing is to be installed */
  commands: string[][];
  /** the one line said before running them */
  announce?: string;
  /** why nothing can run: what the user must install or do; nothing is installed then */
  blocked?: string;
}

export const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive' } as const;

/**
 * Go is not an apt package here: Kubernetes releases need the newest Go (Debian's is
 * older), and Go is only needed once, to build the binaries that are then cached.
 */
export const GO_MISSING =
  'Go 1.26 or newer, once, to build etcd and the Kubernetes control plane from the Go module proxy (Debian\'s golang is too old): ' +
  'install it from https://go.dev/dl/ into /usr/local/go, or set KUBEBUILDER_ASSETS to a directory of envtest binaries';

const unique = (items: readonly string[]): string[] => [...new Set(items)];

/**
 * What to do on `machine` so that `what` (e.g. "the local cluster") has `needs`.
 * `rootHint` is how to run it as root (e.g. "sudo npm start"); `rootReason` why it needs root
 * at all, or undefined when it can run without (then only the packages need root).
 */
export function plan(what: string, needs: readonly Need[], machine: Machine, hints: { rootHint: string; rootReason?: string }): Plan {
  const missing = needs.filter((n) => !machine.has(n.provides));
  const packages = unique(missing.map((n) => n.pkg));
  const list = packages.join(', ');
  const yourself = machine.apt
    ? `run it as root, which installs them (${hints.rootHint}), or install them first (apt-get install -y ${packages.join(' ')})`
    : `this machine has no apt-get: install with its package manager what brings ${unique(missing.map((n) => n.provides)).join(', ')} ` +
      `(Debian: ${packages.join(' ')})`;
  const problems: string[] = [];
  if (!machine.root && hints.rootReason !== undefined) {
    problems.push(packages.length === 0 ? `root: ${hints.rootReason} (try: ${hints.rootHint})` : `root (${hints.rootReason}) and ${list}: ${yourself}`);
  } else if (packages.length > 0 && !(machine.root && machine.apt)) {
    problems.push(`${list}: ${yourself}`);
  }
  if (!machine.go) problems.push(GO_MISSING);
  if (problems.length > 0) return { packages: [], commands: [], blocked: `${what} needs ${problems.join('; and ')}` };
  if (packages.length === 0) return { packages, commands: [] };
  const reasons = unique(missing.map((n) => `${n.pkg} (${n.why})`));
  return {
    packages,
    // a fresh machine (a container image) has no package lists yet
    commands: [
      ['apt-get', 'update', '-qq'],
      ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...packages],
    ],
    announce: `installing with apt-get what ${what} needs: ${reasons.join(', ')}`,
  };
}

// ---- this machine -------------------------------------------------------------------------

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Whether `command` is an executable file in a directory of PATH. */
export const onPath = (command: string): boolean => (process.env.PATH ?? '').split(delimiter).some((dir) => dir && executable(join(dir, command)));

const cacheRoot = (): string => process.env.PACKET_CAPTURE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'packet-capture');

/** A complete build in a cache of scripts/lib/go-build.sh (its `.complete` marker). */
const cached = (part: string): boolean => {
  const dir = join(cacheRoot(), part);
  try {
    return readdirSync(dir).some((key) => existsSync(join(dir, key, '.complete')));
  } catch {
    return false;
  }
};

/**
 * Whether the binaries the scripts build with Go are there without it: given (the
 * scripts' overrides) or built before. Any cached version counts; should the scripts want
 * another, they say themselves that Go is missing.
 */
function goNotNeeded(builds: GoBuilds): boolean {
  const controlPlane = !!process.env.KUBEBUILDER_ASSETS || cached('control-plane');
  const node = !!process.env.NODE_BINARIES_DIR || cached('node');
  return builds === 'none' || (controlPlane && (builds === 'control-plane' || node));
}

/** The facts about this machine that `plan` needs. */
export function thisMachine(builds: GoBuilds): Machine {
  return {
    root: process.getuid?.() === 0,
    apt: onPath('apt-get'),
    has: (provides) => (provides.startsWith('/') ? existsSync(provides) : onPath(provides)),
    // scripts/lib/go-build.sh also looks there
    go: onPath('go') || executable('/usr/local/go/bin/go') || goNotNeeded(builds),
  };
}

/** Runs a command with the terminal's stderr; rejects when it fails. */
function runInherited(argv: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // apt's progress would bury the one line said before it; its errors go to stderr
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...APT_ENV } });
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} failed (${code ?? signal})`))));
  });
}

export interface ProvisionIO {
  machine: Machine;
  run(argv: readonly string[]): Promise<void>;
  say(line: string): void;
}

export const systemIO = (setup: Setup, say: (line: string) => void): ProvisionIO => ({ machine: thisMachine(setup.builds), run: runInherited, say });

/**
 * Installs what `plan` says is missing. Resolves with why `what` cannot run (nothing was
 * installed then), or undefined when everything is there now.
 */
export async function provision(what: string, { needs }: Setup, hints: { rootHint: string; rootReason?: string }, io: ProvisionIO): Promise<string | undefined> {
  const p = plan(what, needs, io.machine, hints);
  if (p.blocked) return p.blocked;
  if (p.announce) io.say(p.announce);
  for (const argv of p.commands) {
    try {
      await io.run(argv);
    } catch (err) {
      return `${what} needs ${p.packages.join(', ')}, and installing them failed: ${(err as Error).message}`;
    }
  }
  const still = needs.filter((n) => !io.machine.has(n.provides)).map((n) => n.provides);
  return still.length > 0 ? `${what} still lacks ${unique(still).join(', ')} after ${p.commands.at(-1)!.join(' ')}` : undefined;
}
