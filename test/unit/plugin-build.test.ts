// The single-file plugin (scripts/build-plugin): built here, it runs with no Node.js on PATH
// and outside the repository, and its krew manifest names the archive it comes in. Prints
// the file's size and start time (numbers, not assertions).

import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { requireOrSkip } from '../support/require.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PACKAGE_VERSION = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ARCH = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;

// the build packs the archive with GNU tar, and the test reads it back with it
const tarAvailable = requireOrSkip('GNU tar', () => (spawnSync('tar', ['--version']).error ? 'tar is not on PATH (apt-get install tar)' : undefined));

describe.runIf(tarAvailable)('the single-file kubectl-pcap', { timeout: 60_000 }, () => {
  let out: string;
  /** a directory with nothing in it: PATH for runs that must find no node */
  let empty: string;
  let exe: string;
  const run = (args: string[]) => spawnSync(exe, args, { cwd: empty, env: { PATH: empty }, encoding: 'utf8' });

  beforeAll(async () => {
    out = await mkdtemp(join(tmpdir(), 'plugin-'));
    empty = await mkdtemp(join(tmpdir(), 'no-node-'));
    const built = await promisify(execFile)(join(ROOT, 'scripts/build-plugin'), ['-o', out], { cwd: ROOT, maxBuffer: 1 << 20 });
    exe = built.stdout.trim().split('\n').at(-1)!;
  }, 300_000);
  afterAll(async () => {
    await Promise.all([out, empty].filter(Boolean).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('says its version and the commit it was built from, with no node on PATH', () => {
    const head = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
    expect(spawnSync('sh', ['-c', 'command -v node'], { env: { PATH: empty } }).status).not.toBe(0);
    const version = run(['version']);
    expect(version.stderr).toBe('');
    expect(version.stdout).toBe(`kubectl-pcap ${PACKAGE_VERSION} (commit ${head})\n`);
    expect(version.status).toBe(0);
  });

  it('shows its help with every command, with no node on PATH', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    for (const command of ['list', 'describe', 'fetch', 'watch', 'version']) expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
  });

  it('comes with a krew manifest naming its archive by sha256, holding this file as the bin', async () => {
    const manifest = parse(await readFile(join(out, 'pcap.yaml'), 'utf8'));
    expect(manifest).toMatchObject({ apiVersion: 'krew.googlecontainertools.github.com/v1alpha2', kind: 'Plugin', metadata: { name: 'pcap' } });
    expect(manifest.spec.version).toBe(`v${PACKAGE_VERSION}`);
    const [platform] = manifest.spec.platforms;
    expect(platform.selector.matchLabels).toEqual({ os: process.platform, arch: ARCH });
    const archive = join(out, `kubectl-pcap-${process.platform}-${ARCH}.tar.gz`);
    expect(platform.uri.endsWith(`/v${PACKAGE_VERSION}/kubectl-pcap-${process.platform}-${ARCH}.tar.gz`)).toBe(true);
    expect(platform.sha256).toBe(createHash('sha256').update(await readFile(archive)).digest('hex'));
    expect(platform.bin).toBe('kubectl-pcap');
    const unpacked = await mkdtemp(join(tmpdir(), 'krew-'));
    try {
      expect(spawnSync('tar', ['-xzf', archive, '-C', unpacked]).status).toBe(0);
      const [packed, built] = await Promise.all([readFile(join(unpacked, platform.bin)), readFile(exe)]);
      expect(packed.equals(built)).toBe(true);
    } finally {
      await rm(unpacked, { recursive: true, force: true });
    }
  });

  it('reports its size and start time', async () => {
    const starts = Array.from({ length: 5 }, () => {
      const t0 = process.hrtime.bigint();
      expect(run(['version']).status).toBe(0);
      return Number(process.hrtime.bigint() - t0) / 1e6;
    }).sort((a, b) => a - b);
    const { size } = await stat(exe);
    console.log(`kubectl-pcap single file: ${(size / 2 ** 20).toFixed(1)} MiB; \`version\` in ${starts[2]!.toFixed(0)} ms (median of 5, min ${starts[0]!.toFixed(0)} ms)`);
  });
});
