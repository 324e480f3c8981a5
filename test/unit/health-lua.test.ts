// The Argo CD health check (examples/argocd/health.lua) run by a real Lua 5.1, the
// language version of Argo CD's gopher-lua, on every sample of health-tests/, as Argo CD
// runs it: the object as the global `obj`, the script's return value as the health.

import { spawnSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { requireOrSkip } from '../support/require.ts';

const ARGOCD = fileURLToPath(new URL('../../examples/argocd/', import.meta.url));
const SCRIPT = join(ARGOCD, 'health.lua');
const SAMPLES = join(ARGOCD, 'health-tests');
const LUA = 'lua5.1';

const luaAvailable = requireOrSkip(`the ${LUA} interpreter`, () => {
  const run = spawnSync(LUA, ['-v'], { encoding: 'utf8' });
  return run.error ? `${LUA} -v failed: ${run.error.message} (apt-get install lua5.1)` : undefined;
});

/** A Lua string literal of the UTF-8 bytes of `s`, escaping all but printable ASCII. */
const luaString = (s: string): string =>
  `"${[...Buffer.from(s, 'utf8')]
    .map((b) =>
      b === 0x22 || b === 0x5c
        ? `\\${String.fromCharCode(b)}`
        : b < 0x20 || b >= 0x7f
          ? `\\${String(b).padStart(3, '0')}`
          : String.fromCharCode(b),
    )
    .join('')}"`;

/** A JSON-like value as a Lua table constructor: arrays 1-based, as Argo CD passes them. */
function toLua(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'string') return luaString(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `{${value.map(toLua).join(', ')}}`;
  const fields = Object.entries(value as Record<string, unknown>).map(([k, v]) => `[${luaString(k)}] = ${toLua(v)}`);
  return `{${fields.join(', ')}}`;
}

interface Health {
  status: string;
  message: string;
}

function health(obj: unknown): Health {
  const harness = [
    `obj = ${toLua(obj)}`,
    `local hs = dofile(${luaString(SCRIPT)})`,
    `io.write(hs.status or "", "\\n", hs.message or "")`,
  ].join('\n');
  const run = spawnSync(LUA, ['-'], { input: harness, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`${LUA} failed: ${run.stderr}`);
  const [status = '', ...message] = run.stdout.split('\n');
  return { status, message: message.join('\n') };
}

interface HealthTests {
  tests: { healthStatus: { status: string; message: string }; inputPath: string }[];
}

const expectations = (parse(await readFile(join(SAMPLES, 'health_test.yaml'), 'utf8')) as HealthTests).tests;

describe.runIf(luaAvailable)('Argo CD health of a PacketCapture', () => {
  it.each(expectations.map((t) => [t.inputPath, t.healthStatus.status, t] as const))(
    '%s is %s',
    async (_file, _status, { inputPath, healthStatus }) => {
      const obj = parse(await readFile(join(SAMPLES, inputPath), 'utf8'));
      expect(health(obj)).toEqual(healthStatus);
    },
  );

  it('an object without generation or status is waiting to become Ready', () => {
    expect(health({ metadata: {} })).toEqual({ status: 'Progressing', message: 'Waiting for the capture to become Ready' });
  });

  it('passes strings through byte for byte, quotes and non-ASCII included', () => {
    const message = 'pod "wéb-0"\\ not found\n\t10\u00b5s';
    const obj = {
      metadata: { generation: 1 },
      status: {
        observedGeneration: 1,
        conditions: [{ type: 'Stalled', status: 'True', reason: 'PodNotFound', message }],
      },
    };
    expect(health(obj)).toEqual({ status: 'Degraded', message });
  });
});

describe('Argo CD health check files', () => {
  it('health_test.yaml covers every sample, and every verdict Argo CD can act on', async () => {
    const samples = (await readdir(SAMPLES)).filter((f) => f.endsWith('.yaml') && f !== 'health_test.yaml');
    expect(expectations.map((t) => t.inputPath).sort()).toEqual(samples.sort());
    expect(new Set(expectations.map((t) => t.healthStatus.status))).toEqual(new Set(['Progressing', 'Healthy', 'Degraded']));
  });

  it('argocd-cm-patch.yaml installs health.lua verbatim', async () => {
    const patch = parse(await readFile(join(ARGOCD, 'argocd-cm-patch.yaml'), 'utf8')) as {
      metadata: { name: string };
      data: Record<string, string>;
    };
    expect(patch.metadata.name).toBe('argocd-cm');
    expect(patch.data['resource.customizations.health.packetcapture.dev_PacketCapture']).toBe(
      await readFile(SCRIPT, 'utf8'),
    );
  });
});
