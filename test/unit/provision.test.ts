// Provisioning against a fake package manager: a machine whose packages are a set, and an
// apt-get that adds to it. The same plan runs for real in CI, which starts on a bare machine.

import { describe, expect, it } from 'vitest';
import { AGENT, GO_MISSING, LOCAL_CLUSTER, plan, provision, TESTS, type Machine, type ProvisionIO, type Setup } from '../../local/provision.ts';

interface FakeMachine extends ProvisionIO {
  ran: string[][];
  said: string[];
}

/** A machine with the packages `installed`; its apt-get installs what it is asked for, unless it is `broken`. */
function fakeMachine(installed: string[], facts: Partial<Omit<Machine, 'has'>> = {}, opts: { broken?: boolean; installsNothing?: boolean } = {}): FakeMachine {
  const packages = new Set(installed);
  const byProvides = new Map(TESTS.needs.map((n) => [n.provides, n.pkg]));
  const ran: string[][] = [];
  const said: string[] = [];
  return {
    machine: { root: true, apt: true, go: true, ...facts, has: (provides) => packages.has(byProvides.get(provides)!) },
    async run(argv) {
      ran.push([...argv]);
      if (opts.broken) throw new Error(`${argv.join(' ')} failed (100)`);
      if (argv[1] === 'install' && !opts.installsNothing) for (const pkg of argv.filter((a) => !a.startsWith('-')).slice(2)) packages.add(pkg);
    },
    say: (line) => said.push(line),
    ran,
    said,
  };
}

const packagesOf = (setup: Setup): string[] => [...new Set(setup.needs.map((n) => n.pkg))];
const everything = packagesOf(TESTS);
const without = (...missing: string[]) => everything.filter((p) => !missing.includes(p));
const START = { rootHint: 'sudo npm start', rootReason: 'pods are network namespaces' };

describe('provisioning the system packages', () => {
  it('installs nothing and says nothing when every package is there', async () => {
    const m = fakeMachine(everything);
    expect(await provision('npm test', TESTS, { rootHint: 'sudo npm test' }, m)).toBeUndefined();
    expect(m.ran).toEqual([]);
    expect(m.said).toEqual([]);
  });

  it('as root with apt, installs exactly the missing packages with apt-get, after saying what and why in one line', async () => {
    const m = fakeMachine(without('tcpdump', 'tshark'));
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBeUndefined();
    expect(m.ran).toEqual([
      ['apt-get', 'update', '-qq'],
      ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'tcpdump', 'tshark'],
    ]);
    expect(m.said).toEqual(['installing with apt-get what the local cluster needs: tcpdump (the captures), tshark (the demo reads the capture files)']);
  });

  it('names a package once when several of its commands are missing', () => {
    const p = plan('the agent', AGENT.needs, fakeMachine(without('util-linux')).machine, START);
    expect(p.packages).toEqual(['util-linux']);
    expect(p.commands.at(-1)).toEqual(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'util-linux']);
  });

  it('asks only for what the command needs: the agent alone does not install tshark', () => {
    expect(plan('the agent', AGENT.needs, fakeMachine(without('tshark')).machine, START)).toEqual({ packages: [], commands: [] });
  });

  it('without root, installs nothing and names root and every missing package with the command to install them', async () => {
    const m = fakeMachine(without('tcpdump', 'openssl'), { root: false });
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBe(
      'the local cluster needs root (pods are network namespaces) and tcpdump, openssl: ' +
        'run it as root, which installs them (sudo npm start), or install them first (apt-get install -y tcpdump openssl)',
    );
    expect(m.ran).toEqual([]);
  });

  it('without root and with everything installed, says only that it needs root', () => {
    expect(plan('the local cluster', LOCAL_CLUSTER.needs, fakeMachine(everything, { root: false }).machine, START).blocked).toBe(
      'the local cluster needs root: pods are network namespaces (try: sudo npm start)',
    );
  });

  it('without root, a command that runs without root still gets its packages listed', () => {
    const p = plan('npm test', TESTS.needs, fakeMachine(without('lua5.1'), { root: false }).machine, { rootHint: 'sudo npm test' });
    expect(p.blocked).toBe('npm test needs lua5.1: run it as root, which installs them (sudo npm test), or install them first (apt-get install -y lua5.1)');
    expect(p.commands).toEqual([]);
  });

  it('without apt, lists the missing commands and their Debian packages', async () => {
    const m = fakeMachine(without('tcpdump', 'ca-certificates'), { apt: false });
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBe(
      'the local cluster needs tcpdump, ca-certificates: this machine has no apt-get: install with its package manager ' +
        'what brings tcpdump, /etc/ssl/certs/ca-certificates.crt (Debian: tcpdump ca-certificates)',
    );
    expect(m.ran).toEqual([]);
  });

  it('without Go (and nothing built with it yet), says how to get it and installs nothing, even what it could', async () => {
    const m = fakeMachine(without('tcpdump'), { go: false });
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBe(`the local cluster needs ${GO_MISSING}`);
    expect(m.ran).toEqual([]);
  });

  it('puts every problem in one message', () => {
    const p = plan('the local cluster', LOCAL_CLUSTER.needs, fakeMachine(without('tcpdump'), { root: false, go: false }).machine, START);
    expect(p.blocked).toMatch(/^the local cluster needs root \(.*\) and tcpdump: .*; and Go 1\.26 or newer/);
  });

  it('when apt-get fails, says so with what it was installing', async () => {
    const m = fakeMachine(without('tcpdump'), {}, { broken: true });
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBe(
      'the local cluster needs tcpdump, and installing them failed: apt-get update -qq failed (100)',
    );
  });

  it('when apt-get succeeds but a command is still not there, names it', async () => {
    const m = fakeMachine(without('tcpdump'), {}, { installsNothing: true });
    expect(await provision('the local cluster', LOCAL_CLUSTER, START, m)).toBe(
      'the local cluster still lacks tcpdump after apt-get install -y -qq --no-install-recommends tcpdump',
    );
  });

  it('is one list: the tests need everything the local cluster and the real node need, each package named once per command', () => {
    for (const setup of [AGENT, LOCAL_CLUSTER, TESTS]) {
      const provides = setup.needs.map((n) => n.provides);
      expect(new Set(provides).size).toBe(provides.length);
    }
    expect(everything).toEqual(expect.arrayContaining([...packagesOf(LOCAL_CLUSTER), 'runc', 'iptables', 'umoci', 'mmdebstrap', 'skopeo', 'gcc', 'libc6-dev', 'lua5.1', 'prometheus']));
  });
});
