// `kubectl pcap version`: the package version, and the git commit when it is known. The
// single-file plugin has the commit written in by scripts/build-plugin; run from a checkout,
// git says it; elsewhere it is unknown.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pkg from '../../package.json' with { type: 'json' };

export interface BuildInfo {
  version: string;
  commit?: string;
}

/** Replaced by scripts/build-plugin (esbuild's define) with the build's BuildInfo. */
declare const KUBECTL_PCAP_BUILD: BuildInfo | undefined;

export const versionText = ({ version, commit }: BuildInfo): string => `kubectl-pcap ${version} (commit ${commit ?? 'unknown'})`;

export function buildInfo(): BuildInfo {
  if (typeof KUBECTL_PCAP_BUILD === 'object') return KUBECTL_PCAP_BUILD;
  return { version: pkg.version, commit: checkoutCommit() };
}

function checkoutCommit(): string | undefined {
  const git = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: fileURLToPath(new URL('.', import.meta.url)), encoding: 'utf8' });
  return git.status === 0 ? git.stdout.trim() : undefined;
}
