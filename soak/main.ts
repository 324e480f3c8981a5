// `npm run soak [-- --quick | --duration 30m] [--seed N]`: the product under faults on the
// local cluster with traffic flowing (pod recreations, some taking the old IP, spec edits,
// capture deletions and re-creations, kill -9 of the agent and of the controller leader,
// API server restarts, etcd compactions), its invariants checked throughout and at the
// end. Prints the counts of faults and checks; exits 1 on any violation. Needs root.

import { parseArgs } from 'node:util';
import { parseDuration } from '../crds/units.ts';
import { missingRootOrTools } from '../test/support/require.ts';
import { defer, now, pool, sleep, teardownAll, waitFor } from '../bench/harness.ts';
import { NAMESPACE, SoakCluster, SLOTS } from './cluster.ts';
import { inject } from './faults.ts';
import {
  framesOfAnother,
  memoryGrowth,
  rejectedWrites,
  StaleTracker,
  stateMismatch,
  staleness,
  targetedLongEnough,
  uncapturedInstances,
  type Staleness,
} from './invariants.ts';
import { captureFiles, findSessionDirs, readFrames, runningTcpdumps, type SessionDir } from './observe.ts';
import { renderReport, Tally } from './report.ts';
import { faultSchedule } from './schedule.ts';

const PLANS = {
  // what CI runs: every fault at least once, the whole run within ~3 minutes
  quick: { durationMs: 90_000, meanGapMs: 3_000, rareEveryMs: Infinity },
  full: { meanGapMs: 4_000, rareEveryMs: 5 * 60_000 },
};
/** after the faults, how long the captures get to reach the state their spec implies */
const SETTLE_MS = 90_000;
const STALE_CHECK_MS = 2_000;
const MEMORY_SAMPLE_MS = 5_000;
const FILE_CHECK_MS = 10_000;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, duration: { type: 'string' }, seed: { type: 'string' } } });
  const missing = missingRootOrTools(['ip', 'tcpdump', 'tshark', 'nsenter', 'setpriv'], 'iproute2 tcpdump tshark util-linux');
  if (missing) {
    console.error(`soak: ${missing}`);
    return 2;
  }
  const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
  if (!Number.isSafeInteger(seed)) {
    console.error(`soak: --seed ${values.seed} is not an integer`);
    return 2;
  }
  const durationMs = values.quick ? PLANS.quick.durationMs : parseDuration(values.duration ?? '10m');
  const plan = values.quick ? PLANS.quick : PLANS.full;
  const faults = faultSchedule(seed, { durationMs, meanGapMs: plan.meanGapMs, rareEveryMs: plan.rareEveryMs });
  const started = now();
  const say = (msg: string) => console.log(`soak: ${msg} (${Math.round((now() - started) / 1000)} s)`);
  say(`seed ${seed}, ${faults.length} faults over ${durationMs / 1000} s`);

  const tally = new Tally();
  const cluster = await SoakCluster.start();
  for (let slot = 0; slot < SLOTS; slot++) await cluster.createSlotPod(slot);
  for (const c of cluster.captures) await cluster.createCapture(c);
  await cluster.flood(durationMs + SETTLE_MS + 180_000);
  say('cluster up, traffic flowing');

  // ---- checks that run throughout ----------------------------------------------------

  const sessions = new Map<string, SessionDir>();
  const filesChecked = new Set<string>();
  const withPackets = new Set<string>();
  const stale = new StaleTracker();

  const checkStaleTcpdumps = async () => {
    const captures = await cluster.listCaptures().catch(() => undefined);
    // with the API server away there is nothing to compare with
    if (!captures) return;
    await findSessionDirs(cluster.dataDir, NAMESPACE, sessions);
    const byId = new Map([...sessions.values()].map((s) => [s.sessionId, s]));
    const world = { instanceRuns: (uid: string) => cluster.node.podNetns(uid) !== undefined, captures: new Map(captures.map((c) => [c.metadata.uid, c.metadata.generation ?? 1])) };
    const tcpdumps = await runningTcpdumps(cluster.dataDir);
    const found = new Map<number, Staleness>();
    for (const t of tcpdumps) {
      const why = staleness(byId.get(t.sessionId)?.meta, world);
      if (why) found.set(t.pid, why);
    }
    const violations = stale.observe(now(), found, cluster.quietSince());
    tally.checked(
      'staleTcpdumps',
      tcpdumps.length,
      violations.map((v) => `tcpdump ${v.pid} of session ${tcpdumps.find((t) => t.pid === v.pid)?.sessionId} still runs ${Math.round(v.staleMs / 1000)} s after: ${v.reason}`),
    );
    return tcpdumps;
  };

  /** Reads the files of sessions that can get no more packets: their tcpdump is gone and so is their instance, or `all`. */
  const checkFiles = async (all: boolean) => {
    const running = new Set((await runningTcpdumps(cluster.dataDir)).map((t) => t.sessionId));
    await findSessionDirs(cluster.dataDir, NAMESPACE, sessions);
    const due = [...sessions.values()].filter(
      (s) => !filesChecked.has(s.dir) && !running.has(s.sessionId) && (all || cluster.instances.get(s.podUID)?.to !== undefined),
    );
    await pool(due, 4, async (s) => {
      filesChecked.add(s.dir);
      const instance = cluster.instances.get(s.podUID);
      if (instance?.slot === undefined) {
        tally.checked('foreignPackets', 1, [`session ${s.dir} captured pod ${s.podUID}, which no capture targets`]);
        return;
      }
      const files = await captureFiles(s.dir);
      const frames = (await Promise.all(files.map(readFrames))).flat();
      const others = framesOfAnother(frames, instance);
      tally.count('session directories read');
      tally.count('capture files read', files.length);
      tally.count('packets checked', frames.length);
      if (frames.length > others.length) withPackets.add(s.podUID);
      const sample = others.slice(0, 3).map((f) => `${new Date(f.time).toISOString()} ${f.src ?? `arp ${f.arpIps.join('>')}`} > ${f.dst ?? ''}`);
      tally.checked('foreignPackets', frames.length, others.length > 0 ? [`${others.length} packets of another instance in ${s.dir} (pod ${instance.name} ${instance.ip}): ${sample.join('; ')}`] : []);
    });
  };

  let running = true;
  const every = (ms: number, what: string, fn: () => Promise<unknown>) =>
    (async () => {
      while (running) {
        await fn().catch((err: unknown) => console.error(`soak: ${what} failed this round: ${(err as Error).message}`));
        await sleep(ms);
      }
    })();
  const loops = [
    every(STALE_CHECK_MS, 'tcpdump check', checkStaleTcpdumps),
    every(MEMORY_SAMPLE_MS, 'memory sample', () => cluster.sampleMemory()),
    every(FILE_CHECK_MS, 'file check', () => checkFiles(false)),
  ];
  const stopLoops = defer('checks', async () => {
    running = false;
    await Promise.all(loops);
  });

  // ---- the faults ------------------------------------------------------------------

  const faultsFrom = now();
  for (const fault of faults) {
    await sleep(Math.max(0, faultsFrom + fault.at - now()));
    await inject(cluster, fault, tally);
  }
  say(`faults done: ${faults.length}`);

  // ---- the end -----------------------------------------------------------------------

  const mismatches = await settle(cluster);
  tally.checked('captureStates', cluster.captures.length, [...mismatches].map(([name, why]) => `capture ${name} after ${SETTLE_MS / 1000} s: ${why}`));
  say('captures settled');

  for (const c of cluster.captures) await cluster.deleteCapture(c);
  const deletedAt = now();
  const leftover = await waitFor(
    'every tcpdump to stop',
    async () => {
      const t = await runningTcpdumps(cluster.dataDir);
      return t.length === 0 || now() > deletedAt + 20_000 ? t : undefined;
    },
    { timeoutMs: 30_000, everyMs: 200 },
  );
  tally.checked('staleTcpdumps', 1, leftover.map((t) => `tcpdump ${t.pid} (session ${t.sessionId}) still runs 20 s after every capture was deleted`));
  await stopLoops();
  await checkFiles(true);

  const end = now();
  const targeted = cluster.targetedInstances(end);
  tally.count('pod instances', cluster.instances.size);
  tally.count('instances targeted >= 2 s', targetedLongEnough(targeted, cluster.disruptions));
  const uncaptured = uncapturedInstances(targeted, cluster.disruptions, withPackets);
  tally.checked(
    'instancesCaptured',
    targeted.length,
    uncaptured.map((uid) => {
      const i = cluster.instances.get(uid)!;
      return `pod ${i.name} (${uid}, ${i.ip}) ran ${new Date(i.runningAt!).toISOString()} - ${i.deleteSentAt ? new Date(i.deleteSentAt).toISOString() : 'end'} targeted, and no file of it holds a packet`;
    }),
  );

  const lines = cluster.components.flatMap((c) => c.records.map((r) => ({ at: r.at, msg: r.msg, err: r.err, component: c.name })));
  tally.checked('rejectedWrites', lines.length, rejectedWrites(lines).map((l) => `${l.component} at ${new Date(l.at).toISOString()}: ${l.msg}: ${String(l.err)}`));

  for (const [c, samples] of cluster.memory) {
    const growth = memoryGrowth(samples);
    if (!growth) continue;
    tally.checked('memoryFlat', 1, growth.grew ? [`${c.name}: RSS ${growth.baselineMb.toFixed(0)} MB early, never below ${growth.finalMb.toFixed(0)} MB late`] : []);
  }

  console.log(renderReport(tally, { seed, durationMs, elapsedMs: now() - started }));
  return tally.violations.length > 0 ? 1 : 0;
}

/** Waits until every capture is in the state its spec implies; returns those that are not. */
async function settle(cluster: SoakCluster): Promise<Map<string, string>> {
  const deadline = now() + SETTLE_MS;
  let mismatches = new Map<string, string>();
  for (;;) {
    // a failed list counts as a mismatch of every capture until the deadline
    const captures = await cluster.listCaptures().catch(() => undefined);
    mismatches = new Map();
    for (const c of cluster.captures) {
      const got = captures?.find((x) => x.metadata.name === c.name);
      const why = got ? stateMismatch(got, cluster.expectedState(c)) : 'not found';
      if (why) mismatches.set(c.name, why);
    }
    if (mismatches.size === 0 || now() > deadline) return mismatches;
    await sleep(1_000);
  }
}

let exiting = false;
const shutdown = (signal: NodeJS.Signals) => {
  if (exiting) return;
  exiting = true;
  console.error(`soak: ${signal}, tearing down`);
  void teardownAll().finally(() => process.exit(130));
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`soak: ${(err as Error).stack ?? String(err)}`);
} finally {
  if (!exiting) await teardownAll();
}
process.exit(code);
