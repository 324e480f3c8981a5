// `kubectl pcap version`: the package version, and the commit when it is known.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildInfo, versionText } from '../../cli/pcap/version.ts';

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

describe('kubectl pcap version', () => {
  it('says the version and the commit', () => {
    expect(versionText({ version: '1.2.3', commit: '0123456789ab' })).toBe('kubectl-pcap 1.2.3 (commit 0123456789ab)');
  });

  it('says when the commit is not known', () => {
    expect(versionText({ version: '1.2.3' })).toBe('kubectl-pcap 1.2.3 (commit unknown)');
  });

  it("run from a checkout, is package.json's version at the checkout's commit", () => {
    const head = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
    expect(head).toMatch(/^[0-9a-f]{12}$/);
    expect(buildInfo()).toEqual({ version: PACKAGE_VERSION, commit: head });
  });
});
