// `npm run bench [-- --quick] [--json FILE] [--only scale|netns|footprint] [--scale N]`: switch latency, capture fidelity, controller
// scale and agent footprint on a real control plane with pods as real network namespaces.
// Prints numbers and writes them as JSON plus a Markdown report under bench/results/;
// it asserts no thresholds. Needs root. Everything it makes is torn down at the end, on
// failure and on Ctrl-C.

import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startControlPlane } from '../local/control-plane.ts';
import { NetnsEnv } from './env.ts';
import { fidelityStep } from './fidelity.ts';
import { tcpdumpStartLatency, watchEventLatency } from './floor.ts';
import { agentFootprint } from './footprint.ts';
import { createNamespace, defer, installCrds, SYSTEM_NAMESPACE, teardownAll, useCompiledCli } from './harness.ts';
import { machine } from './proc.ts';
import { renderReport } from './report.ts';
import { controllerScale, PODS_PER_CAPTURE } from './scale.ts';
import { validateResults, type BenchResults, type FidelityStep } from './shape.ts';
import { summarize } from './stats.ts';
import { statusWritesPerSessionMinute } from './status-rate.ts';
import { switchLatency } from './switch.ts';

const RESULTS = fileURLToPath(new URL('./results/', import.meta.url));

const PLANS = {
  quick: {
    rounds: 5,
    floorRounds: 10,
    fidelity: { primary: 2000, steps: [2000], seconds: 3 },
    scales: [{ captures: 50, recreations: 10 }],
    quietS: 10,
    sessions: [0, 5, 10],
    windowS: 5,
    // the progress throttle is 30 s: a shorter window could not see one
    statusRateS: 35,
  },
  full: {
    rounds: 50,
    floorRounds: 30,
    fidelity: { primary: 20_000, steps: [5000, 20_000, 40_000, 80_000, 160_000], seconds: 10 },
    // N = 10,000 (30,000 pods) takes 6-8 minutes of the run on 2 cores, most of it the API server creating them
    scales: [
      { captures: 1000, recreations: 1000 },
      { captures: 10_000, recreations: 1000 },
    ],
    quietS: 60,
    sessions: [0, 10, 100],
    windowS: 20,
    statusRateS: 180,
  },
};

type Plan = (typeof PLANS)['quick'];

/**
 * `--scale N`: the controller scale at N captures over 3N pods only, with 1000 simultaneous
 * recreations from N = 1000 on (a tenth of the captures below that).
 */
const withScale = (plan: Plan, captures: number | undefined): Plan =>
  captures === undefined ? plan : { ...plan, scales: [{ captures, recreations: captures >= 1000 ? 1000 : Math.max(1, Math.ceil(captures / 10)) }] };

/** The largest of the plan's scale runs: the one `scale` reports (each is under `scaleRuns`). */
const largest = (plan: Plan) => plan.scales.reduce((a, b) => (b.captures > a.captures ? b : a));

const empty = summarize([]);

function emptyResults(quick: boolean, m: BenchResults['machine'], plan: Plan): BenchResults {
  const step: FidelityStep = { ratePps: plan.fidelity.primary, sent: 0, agent: 0, raw: 0, agentDrops: 0, rawDrops: 0, ratio: null, agentCpuPctPer10kpps: null };
  const bySessions = <T>(v: T) => Object.fromEntries(plan.sessions.map((n) => [String(n), v]));
  return {
    machine: m,
    quick,
    startedAt: new Date().toISOString(),
    durationS: 0,
    switchLatencyMs: empty,
    oldExitMs: empty,
    floorMs: { watchEvent: null, tcpdumpStart: null },
    fidelity: { ...step, steps: [] },
    scale: {
      captures: largest(plan).captures,
      pods: largest(plan).captures * PODS_PER_CAPTURE,
      resolveAllMs: null,
      resolveAfterLastCreateMs: null,
      readyAllMs: null,
      writesPerCapture: null,
      quietMinuteWrites: null,
      quietWindowS: plan.quietS,
      controllerPeakRssMb: null,
      controllerCpuS: null,
      recreations: largest(plan).recreations,
      recreateMs: null,
      recreate1000Ms: null,
    },
    agentWatchEventsPerForeignWrite: null,
    statusWritesPerSessionMinute: null,
    statusRateWindowS: plan.statusRateS,
    agent: { rssMb: bySessions(null), cpuPct: bySessions(null), tcpdumpRssMb: bySessions(null), tcpdumpCount: bySessions(0), windowS: plan.windowS },
    errors: [],
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, json: { type: 'string' }, only: { type: 'string' }, scale: { type: 'string' } },
  });
  // --only scale|netns|footprint: one part, for working on it (the results then have nulls
  // for the rest); footprint is the agent's memory and CPU by sessions, a part of netns
  const only = values.only;
  if (only !== undefined && !['scale', 'netns', 'footprint'].includes(only)) {
    console.error(`bench: --only wants scale, netns or footprint, got ${only}`);
    return 2;
  }
  const wanted = (part: 'scale' | 'netns' | 'footprint') => only === undefined || only === part || (part === 'footprint' && only === 'netns');
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (network namespaces, cgroups, tcpdump)');
    return 2;
  }
  const quick = values.quick ?? false;
  const scale = values.scale === undefined ? undefined : Number(values.scale);
  if (scale !== undefined && !(Number.isInteger(scale) && scale > 0)) {
    console.error(`bench: --scale wants a positive whole number of captures, got ${values.scale}`);
    return 2;
  }
  const plan = withScale(quick ? PLANS.quick : PLANS.full, scale);
  const started = performance.now();
  const results = emptyResults(quick, await machine(), plan);
  const say = (msg: string) => console.log(`bench: ${msg} (${Math.round((performance.now() - started) / 1000)} s)`);

  /** Runs one phase; a failure is recorded and the next phase still runs. */
  const phase = async (name: string, fn: () => Promise<void>) => {
    say(`${name}...`);
    try {
      await fn();
    } catch (err) {
      results.errors.push(`${name}: ${(err as Error).message ?? String(err)}`);
      console.error(`bench: ${name} failed: ${(err as Error).stack ?? String(err)}`);
    }
  };

  await useCompiledCli();
  const cp = await startControlPlane();
  defer('control plane', () => cp.stop());
  await installCrds(cp.kubeConfig);
  await createNamespace(cp.kubeConfig, SYSTEM_NAMESPACE);
  const kc = cp.kubeConfig;

  await phase('floor: watch event delivery', async () => {
    results.floorMs.watchEventSummary = await watchEventLatency(kc, SYSTEM_NAMESPACE, plan.floorRounds);
    results.floorMs.watchEvent = results.floorMs.watchEventSummary.p50;
  });

  let env: NetnsEnv | undefined;
  if (wanted('footprint')) {
    await phase('netns node and agent', async () => {
      env = await NetnsEnv.start(kc, cp.kubeconfigPath);
    });
  }
  if (env) {
    const e = env;
    const podsUp = new Set<string>();
    // first, while the agent has never run a session
    await phase('agent footprint, 0 sessions', async () => {
      const f = await agentFootprint(e, 0, plan.windowS, podsUp);
      record('0', f);
    });
    if (wanted('netns')) await phase('fidelity', async () => {
      const pod = await e.startPod('fidelity-0');
      results.floorMs.tcpdumpStartSummary = await tcpdumpStartLatency(pod.netnsPath, plan.floorRounds);
      results.floorMs.tcpdumpStart = results.floorMs.tcpdumpStartSummary.p50;
      for (const rate of plan.fidelity.steps) {
        const step = await fidelityStep(e, pod, rate, plan.fidelity.seconds);
        results.fidelity.steps.push(step);
        if (rate === plan.fidelity.primary) Object.assign(results.fidelity, { ...step, steps: results.fidelity.steps });
        say(`fidelity ${rate} pps: sent ${step.sent}, agent ${step.agent} (drops ${step.agentDrops}), raw ${step.raw} (drops ${step.rawDrops}), agent CPU ${step.agentCpuPctPer10kpps ?? '-'}% of a core per 10 kpps`);
      }
      await e.deletePod('fidelity-0');
    });
    if (wanted('netns')) await phase('status writes of a busy session', async () => {
      const pod = await e.startPod('status-rate-0');
      results.statusWritesPerSessionMinute = await statusWritesPerSessionMinute(e, pod, plan.statusRateS);
      say(`status writes: ${results.statusWritesPerSessionMinute} per session-minute at 500 pps over ${plan.statusRateS} s`);
      await e.deletePod('status-rate-0');
    });
    if (wanted('netns')) await phase('switch latency', async () => {
      const s = await switchLatency(e, plan.rounds);
      results.switchLatencyMs = s.switch;
      results.oldExitMs = s.oldExit;
      results.switchTcpdumpStartMs = s.tcpdumpStart;
    });
    for (const n of plan.sessions.filter((n) => n > 0)) {
      await phase(`agent footprint, ${n} sessions`, async () => record(String(n), await agentFootprint(e, n, plan.windowS, podsUp)));
    }
    // the scale phase's captures start unplaced, and an agent hears every unplaced capture:
    // left running, it would compete with the controller for CPU there
    await e.agent.stop();
  }
  function record(key: string, f: Awaited<ReturnType<typeof agentFootprint>>) {
    results.agent.rssMb[key] = f.rssMb;
    results.agent.cpuPct[key] = f.cpuPct;
    results.agent.tcpdumpRssMb[key] = f.tcpdumpRssMb;
    results.agent.tcpdumpCount[key] = f.tcpdumps;
  }

  if (wanted('scale')) {
    const runs: BenchResults['scale'][] = [];
    for (const [i, run] of plan.scales.entries()) {
      await phase(`controller scale, ${run.captures} captures`, async () => {
        // every run after the first on a control plane of its own: the one before left its
        // captures and pods behind (no namespace controller runs here to delete them)
        const own = i === 0 ? cp : await startControlPlane();
        try {
          if (own !== cp) {
            await installCrds(own.kubeConfig);
            await createNamespace(own.kubeConfig, SYSTEM_NAMESPACE);
          }
          const result = await controllerScale(own.kubeConfig, own.kubeconfigPath, { ...run, quietS: plan.quietS });
          runs.push(result);
          const { foreignNode } = result;
          say(`foreign-node agent: ${foreignNode?.modified} events for ${foreignNode?.writes} writes (and ${foreignNode?.added} ADDED, ${foreignNode?.deleted} DELETED on the way from unplaced to placed elsewhere)`);
        } finally {
          if (own !== cp) await own.stop();
        }
      });
    }
    const top = runs.find((r) => r.captures === largest(plan).captures);
    if (top) results.scale = top;
    if (plan.scales.length > 1) results.scaleRuns = runs;
    const heard = runs.reduce((sum, r) => sum + (r.foreignNode?.modified ?? 0), 0);
    const written = runs.reduce((sum, r) => sum + (r.foreignNode?.writes ?? 0), 0);
    if (written > 0) results.agentWatchEventsPerForeignWrite = Math.round((heard / written) * 1000) / 1000;
  }

  results.durationS = Math.round((performance.now() - started) / 1000);
  const problems = validateResults(results);
  if (problems.length > 0) results.errors.push(...problems.map((p) => `shape: ${p}`));

  await mkdir(RESULTS, { recursive: true });
  const stem = `${quick ? 'quick' : 'full'}${values.only ? `-${values.only}` : ''}${scale !== undefined ? `-${scale}` : ''}`;
  const json = `${JSON.stringify(results, null, 2)}\n`;
  await writeFile(resolve(RESULTS, `${stem}.json`), json);
  await writeFile(resolve(RESULTS, `${stem}.md`), renderReport(results));
  if (values.json) {
    const file = resolve(process.env.INIT_CWD ?? process.cwd(), values.json);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, json);
  }
  console.log(json);
  say(`report: ${resolve(RESULTS, `${stem}.md`)}`);
  return results.errors.length > 0 ? 1 : 0;
}

let exiting = false;
const shutdown = (signal: NodeJS.Signals) => {
  if (exiting) return;
  exiting = true;
  console.error(`bench: ${signal}, tearing down`);
  void teardownAll().finally(() => process.exit(130));
};
// `on`, not `once`: Ctrl-C reaches node twice (from the terminal and relayed by the tsx
// wrapper), and a second signal without a handler would kill the process mid-teardown
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`);
} finally {
  if (!exiting) await teardownAll();
}
process.exit(code);
