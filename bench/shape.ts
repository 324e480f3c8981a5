// The results document of `npm run bench` and its validator. CI runs the quick bench, then
// check-results.ts, so a change that silently drops a measurement fails there.

import type { Summary } from './stats.ts';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGb: number;
  kernel: string;
}

export interface FidelityStep {
  ratePps: number;
  sent: number;
  agent: number;
  raw: number;
  agentDrops: number;
  rawDrops: number;
  /** agent / raw captured packets; null when raw captured nothing */
  ratio: number | null;
  /** the agent process's CPU (% of one core) per 10,000 packets per second it wrote; null when nothing was written */
  agentCpuPctPer10kpps: number | null;
}

export interface ForeignNodeEvents {
  /** every write of the phase's captures (MODIFIED events of a cluster-wide watch) */
  writes: number;
  modified: number;
  added: number;
  deleted: number;
}

export interface BenchResults {
  machine: Machine;
  quick: boolean;
  startedAt: string;
  durationS: number;
  switchLatencyMs: Summary;
  oldExitMs: Summary;
  /** the share of switchLatencyMs the agent spent in tcpdump start + verify */
  switchTcpdumpStartMs?: Summary;
  floorMs: { watchEvent: number | null; tcpdumpStart: number | null; watchEventSummary?: Summary; tcpdumpStartSummary?: Summary };
  fidelity: FidelityStep & { steps: FidelityStep[] };
  scale: {
    captures: number;
    pods: number;
    resolveAllMs: number | null;
    readyAllMs: number | null;
    writesPerCapture: number | null;
    quietMinuteWrites: number | null;
    quietWindowS: number;
    controllerPeakRssMb: number | null;
    controllerCpuS: number | null;
    /** nodes the pods are spread over, each with a live agent Lease */
    nodes?: number;
    /** creating the pods (the cluster the controller then lists and watches) */
    fillClusterS?: number | null;
    /** from the last capture created to the last one resolved */
    resolveAfterLastCreateMs: number | null;
    recreations: number;
    /** `recreations` pods recreated at once → every target shows its new UID */
    recreateMs: number | null;
    /** recreateMs when `recreations` is 1000 (--scale >= 1000), else null */
    recreate1000Ms: number | null;
    /** the longest any recreated pod waited, from Running to its capture showing the new UID: the controller's share */
    recreateAfterRunningMaxMs?: number | null;
    /** from the first DELETE until the bench had deleted every chosen pod, and until it had every new one Running */
    recreateDeletesMs?: number | null;
    recreateRunningMs?: number | null;
    /** the same recreations of as many pods no capture targets: the bench's requests alone */
    recreateUntargetedMs?: number | null;
    /** the controller's peak resident memory in each phase: start-up and the lists, creating and resolving, quiet, recreations */
    controllerPeakRssByPhaseMb?: Record<string, number | null>;
    controllerCpuAfterSyncS?: number | null;
    controllerRssAtSyncMb?: number | null;
    createAllMs?: number | null;
    /** what the writes changed (diff.ts parts -> count), whole phase and quiet window */
    writesChanged?: Record<string, number>;
    quietWritesChanged?: Record<string, number>;
    /** what that agent heard: MODIFIED are writes, ADDED and DELETED a capture's way from unplaced to placed elsewhere */
    foreignNode?: ForeignNodeEvents;
  };
  /** every scale run of the plan, smallest first, when it has more than one (`scale` is the largest) */
  scaleRuns?: BenchResults['scale'][];
  /**
   * watch events an agent on a node without pods receives per status write of the scale
   * phase's captures (all of them foreign to it); before placement labels every agent got every write: 1
   */
  agentWatchEventsPerForeignWrite: number | null;
  /** status writes (watch MODIFIED events) per minute of one running session under steady traffic */
  statusWritesPerSessionMinute: number | null;
  statusRateWindowS: number;
  agent: {
    rssMb: Record<string, number | null>;
    cpuPct: Record<string, number | null>;
    tcpdumpRssMb: Record<string, number | null>;
    tcpdumpCount: Record<string, number>;
    windowS: number;
  };
  /** phases that failed, with their message; their numbers are null */
  errors: string[];
}

type Check = (value: unknown, path: string, problems: string[]) => void;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const num =
  ({ nullable = false, integer = false, min = -Infinity } = {}): Check =>
  (v, path, problems) => {
    if (v === null && nullable) return;
    if (typeof v !== 'number' || !Number.isFinite(v)) problems.push(`${path}: expected a number${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
    else if (integer && !Number.isInteger(v)) problems.push(`${path}: expected an integer, got ${v}`);
    else if (v < min) problems.push(`${path}: expected >= ${min}, got ${v}`);
  };

const str: Check = (v, path, problems) => {
  if (typeof v !== 'string' || v === '') problems.push(`${path}: expected a non-empty string, got ${JSON.stringify(v)}`);
};

const bool: Check = (v, path, problems) => {
  if (typeof v !== 'boolean') problems.push(`${path}: expected a boolean, got ${JSON.stringify(v)}`);
};

const obj =
  (fields: Record<string, Check>, { optional = [] as string[] } = {}): Check =>
  (v, path, problems) => {
    if (!isObject(v)) {
      problems.push(`${path}: expected an object, got ${JSON.stringify(v)}`);
      return;
    }
    for (const [key, check] of Object.entries(fields)) {
      if (!(key in v)) {
        if (!optional.includes(key)) problems.push(`${path}.${key}: missing`);
        continue;
      }
      check(v[key], `${path}.${key}`, problems);
    }
  };

const arrayOf =
  (item: Check): Check =>
  (v, path, problems) => {
    if (!Array.isArray(v)) problems.push(`${path}: expected an array, got ${JSON.stringify(v)}`);
    else v.forEach((x, i) => item(x, `${path}[${i}]`, problems));
  };

/** A map from session count ("0", "10", ...) to a value; at least one key. */
const bySessions =
  (value: Check): Check =>
  (v, path, problems) => {
    if (!isObject(v) || Object.keys(v).length === 0) {
      problems.push(`${path}: expected an object keyed by session count, got ${JSON.stringify(v)}`);
      return;
    }
    for (const [key, x] of Object.entries(v)) {
      if (!/^\d+$/.test(key)) problems.push(`${path}: key ${JSON.stringify(key)} is not a session count`);
      value(x, `${path}.${key}`, problems);
    }
  };

const ms = num({ nullable: true, min: 0 });
const count = num({ integer: true, min: 0 });

const summary: Check = (v, path, problems) => {
  obj({ n: count, p50: ms, p90: ms, p99: ms, max: ms })(v, path, problems);
  if (!isObject(v) || typeof v.n !== 'number') return;
  const ps = [v.p50, v.p90, v.p99, v.max];
  if (v.n === 0 && ps.some((p) => p !== null)) problems.push(`${path}: percentiles must be null without samples`);
  if (v.n > 0 && ps.some((p) => p === null)) problems.push(`${path}: percentiles missing although n=${v.n}`);
  const finite = ps.filter((p): p is number => typeof p === 'number');
  if (finite.length === 4 && finite.some((p, i) => i > 0 && p < finite[i - 1]!)) problems.push(`${path}: percentiles are not ordered p50<=p90<=p99<=max`);
};

const fidelityStep = {
  ratePps: num({ min: 1 }),
  sent: count,
  agent: count,
  raw: count,
  agentDrops: count,
  rawDrops: count,
  ratio: num({ nullable: true, min: 0 }),
  agentCpuPctPer10kpps: num({ nullable: true, min: 0 }),
};

const results = obj(
  {
    machine: obj({ cpuModel: str, cores: num({ integer: true, min: 1 }), memoryGb: num({ min: 0 }), kernel: str }),
    quick: bool,
    startedAt: str,
    durationS: num({ min: 0 }),
    switchLatencyMs: summary,
    oldExitMs: summary,
    floorMs: obj({ watchEvent: ms, tcpdumpStart: ms, watchEventSummary: summary, tcpdumpStartSummary: summary }, { optional: ['watchEventSummary', 'tcpdumpStartSummary'] }),
    fidelity: obj({ ...fidelityStep, steps: arrayOf(obj(fidelityStep)) }),
    scale: obj({
      captures: count,
      pods: count,
      resolveAllMs: ms,
      readyAllMs: ms,
      writesPerCapture: ms,
      quietMinuteWrites: num({ nullable: true, integer: true, min: 0 }),
      quietWindowS: num({ min: 0 }),
      controllerPeakRssMb: ms,
      controllerCpuS: ms,
      resolveAfterLastCreateMs: ms,
      recreations: count,
      recreateMs: ms,
      recreate1000Ms: ms,
    }),
    agentWatchEventsPerForeignWrite: num({ nullable: true, min: 0 }),
    statusWritesPerSessionMinute: num({ nullable: true, min: 0 }),
    statusRateWindowS: num({ min: 0 }),
    agent: obj({
      rssMb: bySessions(ms),
      cpuPct: bySessions(ms),
      tcpdumpRssMb: bySessions(ms),
      tcpdumpCount: bySessions(count),
      windowS: num({ min: 0 }),
    }),
    errors: arrayOf(str),
  },
);

/** Every way `value` differs from BenchResults, as "path: problem" lines; empty when it fits. */
export function validateResults(value: unknown): string[] {
  const problems: string[] = [];
  results(value, '$', problems);
  return problems;
}
