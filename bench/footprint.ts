// The agent's own memory and CPU with a given number of concurrent sessions; its tcpdump
// processes are counted apart.

import type { NetnsEnv } from './env.ts';
import { pool, sleep, waitFor } from './harness.ts';
import { sample, tcpdumpChildren } from './proc.ts';
import { round1 } from './stats.ts';

export interface Footprint {
  rssMb: number | null;
  cpuPct: number | null;
  tcpdumps: number;
  tcpdumpRssMb: number | null;
}

const LABEL = { 'bench.packetcapture.dev/footprint': 'true' };

/**
 * `sessions` sessions as (pods x captures): up to 10 pods, each capture selecting all of
 * them, so 100 sessions need 10 pod namespaces rather than 100.
 */
export function layout(sessions: number): { pods: number; captures: number } {
  if (sessions === 0) return { pods: 0, captures: 0 };
  const pods = Math.min(10, sessions);
  return { pods, captures: Math.ceil(sessions / pods) };
}

export async function agentFootprint(env: NetnsEnv, sessions: number, windowS: number, podsUp: Set<string>): Promise<Footprint> {
  const { pods, captures } = layout(sessions);
  await pool(
    Array.from({ length: pods }, (_, i) => `footprint-${i}`).filter((n) => !podsUp.has(n)),
    4,
    async (name) => {
      await env.startPod(name, LABEL);
      podsUp.add(name);
    },
  );
  const names = Array.from({ length: captures }, (_, i) => `footprint-${sessions}-${i}`);
  await pool(names, 4, (name) => env.createCapture(name, { target: { podSelector: { matchLabels: LABEL } }, filter: { protocol: 'UDP', port: 9 } }));
  try {
    const expected = pods * captures;
    const tcpdumps = await waitFor(`${expected} tcpdumps under the agent`, async () => {
      const pids = await tcpdumpChildren(env.agent.pid);
      return pids.length === expected ? pids : undefined;
    }, { timeoutMs: 120_000, everyMs: 200 });
    // let the start-up work (status writes, first progress polls) pass before measuring
    await sleep(2000);
    const before = await sample(env.agent.pid);
    const t0 = performance.now();
    await sleep(windowS * 1000);
    const after = await sample(env.agent.pid);
    const elapsedS = (performance.now() - t0) / 1000;
    const tcpdumpSamples = await Promise.all(tcpdumps.map(sample));
    return {
      rssMb: after ? round1(after.rssMb) : null,
      cpuPct: before && after ? round1(((after.cpuS - before.cpuS) / elapsedS) * 100) : null,
      tcpdumps: tcpdumps.length,
      tcpdumpRssMb: tcpdumps.length === 0 ? 0 : round1(tcpdumpSamples.reduce((sum, s) => sum + (s?.rssMb ?? 0), 0)),
    };
  } finally {
    await pool(names, 4, (name) => env.deleteCapture(name));
    await waitFor('every footprint tcpdump to exit', async () => ((await tcpdumpChildren(env.agent.pid)).length === 0 ? true : undefined), {
      timeoutMs: 120_000,
      everyMs: 200,
    });
  }
}
