// `npm run demo` as CI runs it: its own local cluster, web-0 captured before and after the
// StatefulSet recreates it, and the verdict read back from the files themselves.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoOnOwnCluster, type DemoResult } from '../../local/demo.ts';
import { ourNetnsNames } from '../../local/fabric.ts';
import { sandboxNames } from '../../local/node.ts';
import { agentE2eAvailable } from './support/agent-harness.ts';

describe.runIf(agentE2eAvailable)('npm run demo', () => {
  let outDir = '';
  let result: DemoResult;
  const progress: string[] = [];

  beforeAll(async () => {
    outDir = await mkdtemp(join(tmpdir(), 'demo-out-'));
    result = await demoOnOwnCluster({ outDir, progress: (line) => progress.push(line) });
  });

  afterAll(async () => {
    await rm(outDir, { recursive: true, force: true });
  });

  it('says no file holds a packet of another instance', () => {
    expect(result.summary.split('\n').at(-1)).toBe('no foreign packets: OK');
    expect(result.ok).toBe(true);
    expect(result.foreign).toBe(0);
  });

  it('captured two instances of web-0, each answering in its own files only', () => {
    const [before, after] = result.instances;
    expect(result.instances).toHaveLength(2);
    expect(before!.name).toBe('web-0');
    expect(after!.name).toBe('web-0');
    expect(after!.uid).not.toBe(before!.uid);
    for (const instance of result.instances) {
      expect(instance.files.length).toBeGreaterThan(0);
      expect(instance.files.reduce((n, f) => n + f.packets, 0)).toBeGreaterThan(0);
      for (const file of instance.files) {
        expect(file.path.startsWith(join(outDir, instance.uid))).toBe(true);
        expect(Object.keys(file.answeredBy).every((uid) => uid === instance.uid)).toBe(true);
        expect(file.ips).toContain(instance.ip);
      }
      expect(instance.files.reduce((n, f) => n + (f.answeredBy[instance.uid] ?? 0), 0)).toBeGreaterThan(0);
    }
    expect(result.summary).toContain(before!.uid);
    expect(result.summary).toContain(after!.uid);
  });

  it('showed its progress and removed its cluster afterwards', () => {
    expect(progress.some((line) => line.startsWith('deleting web-0'))).toBe(true);
    expect(progress.slice(-2)).toEqual(['removing the demo cluster', 'demo cluster removed']);
    for (const instance of result.instances) expect(ourNetnsNames()).not.toContain(sandboxNames(instance.uid).netns);
  });
});
