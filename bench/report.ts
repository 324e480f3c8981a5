// The Markdown report of one bench run: tables of every number plus charts GitHub renders
// (mermaid xychart) and a text bar chart that reads anywhere. Pure: results in, text out.

import type { BenchResults } from './shape.ts';
import type { Summary } from './stats.ts';

const show = (v: number | null | undefined, unit = ''): string => (v === null || v === undefined ? '—' : `${v}${unit}`);

/** A bar of `width` cells for `value` on a scale up to `max`, in eighth-cell steps. */
export function textBar(value: number, max: number, width = 40): string {
  if (!(max > 0) || !(value > 0)) return '';
  const eighths = Math.round((Math.min(value, max) / max) * width * 8);
  const partial = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8]!;
  return '█'.repeat(Math.floor(eighths / 8)) + partial;
}

/** Labelled rows as a fenced text chart; rows without a value are shown as "—". */
export function textChart(rows: readonly { label: string; value: number | null }[], unit: string): string {
  const max = Math.max(0, ...rows.map((r) => r.value ?? 0));
  const width = Math.max(...rows.map((r) => r.label.length));
  const lines = rows.map((r) => `${r.label.padEnd(width)} │${r.value === null ? ' —' : `${textBar(r.value, max)} ${r.value} ${unit}`}`);
  return ['```text', ...lines, '```'].join('\n');
}

/** A mermaid bar chart; labels are quoted, values null become 0 (mermaid has no gaps). */
export function mermaidBars(title: string, yLabel: string, rows: readonly { label: string; value: number | null }[]): string {
  const labels = rows.map((r) => JSON.stringify(r.label)).join(', ');
  const values = rows.map((r) => r.value ?? 0).join(', ');
  return ['```mermaid', 'xychart-beta', `  title ${JSON.stringify(title)}`, `  x-axis [${labels}]`, `  y-axis ${JSON.stringify(yLabel)}`, `  bar [${values}]`, '```'].join('\n');
}

const summaryRow = (name: string, s: Summary): string =>
  `| ${name} | ${s.n} | ${show(s.p50)} | ${show(s.p90)} | ${show(s.p99)} | ${show(s.max)} |`;

/** The table of one controller scale run. */
function scaleTable(s: BenchResults['scale']): string[] {
  const out: string[] = [];
  out.push('');
  out.push('| measure | value |');
  out.push('|---|---|');
  out.push(`| captures / pods | ${s.captures} / ${s.pods} |`);
  out.push(`| all TargetResolved=True | ${show(s.resolveAllMs, ' ms')} |`);
  out.push(`| … of which after the last capture was created | ${show(s.resolveAfterLastCreateMs, ' ms')} |`);
  out.push(`| all targets + phase written | ${show(s.readyAllMs, ' ms')} |`);
  out.push(`| status writes per capture | ${show(s.writesPerCapture)} |`);
  out.push(`| writes during a quiet ${s.quietWindowS} s | ${show(s.quietMinuteWrites)} |`);
  out.push(`| controller peak RSS | ${show(s.controllerPeakRssMb, ' MB')} |`);
  if (s.controllerPeakRssByPhaseMb) out.push(`| … its peak in each phase | ${Object.entries(s.controllerPeakRssByPhaseMb).map(([k, v]) => `${k} ${show(v, ' MB')}`).join(', ')} |`);
  out.push(`| controller CPU (whole life) | ${show(s.controllerCpuS, ' s')} |`);
  if (s.controllerCpuAfterSyncS !== undefined) out.push(`| controller CPU after its watches synced | ${show(s.controllerCpuAfterSyncS, ' s')} |`);
  if (s.controllerRssAtSyncMb !== undefined) out.push(`| controller RSS when synced, before any capture | ${show(s.controllerRssAtSyncMb, ' MB')} |`);
  if (s.createAllMs !== undefined) out.push(`| creating the ${s.captures} captures | ${show(s.createAllMs, ' ms')} |`);
  out.push(`| ${s.recreations} simultaneous pod recreations → every target shows its new UID | ${show(s.recreateMs, ' ms')} |`);
  if (s.recreateRunningMs != null) out.push(`| … of which the bench deleting them / having every new pod Running | ${show(s.recreateDeletesMs ?? null, ' ms')} / ${show(s.recreateRunningMs, ' ms')} |`);
  if (s.recreateUntargetedMs != null) out.push(`| the same recreations of ${s.recreations} pods no capture targets (the bench's requests alone) | ${show(s.recreateUntargetedMs, ' ms')} |`);
  if (s.recreateAfterRunningMaxMs !== undefined) out.push(`| … longest wait of one of them from its new pod Running | ${show(s.recreateAfterRunningMaxMs, ' ms')} |`);
  const parts = (counts: Record<string, number> | undefined) =>
    counts && Object.keys(counts).length > 0
      ? Object.entries(counts)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')
      : '—';
  if (s.writesChanged) out.push(`| what the writes changed (whole phase) | ${parts(s.writesChanged)} |`);
  if (s.quietWritesChanged) out.push(`| what the quiet-window writes changed | ${parts(s.quietWritesChanged)} |`);
  out.push('');
  return out;
}

export function renderReport(r: BenchResults): string {
  const m = r.machine;
  const f = r.fidelity;
  const s = r.scale;
  const sessions = Object.keys(r.agent.rssMb).sort((a, b) => Number(a) - Number(b));
  const out: string[] = [];
  out.push(`# packet-capture benchmark${r.quick ? ' (--quick)' : ''}`);
  out.push('');
  out.push(`Run ${r.startedAt}, ${r.durationS} s. Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGb} GB, Linux ${m.kernel}.`);
  out.push('Real kube-apiserver + etcd, pods as real network namespaces, real tcpdump. Numbers are measurements of this run, not thresholds.');
  out.push('');
  out.push('## Switch latency (pod recreated with traffic flowing)');
  out.push('');
  out.push('| ms | n | p50 | p90 | p99 | max |');
  out.push('|---|---|---|---|---|---|');
  out.push(summaryRow('new pod bound to its node → new tcpdump verified in its netns', r.switchLatencyMs));
  if (r.switchTcpdumpStartMs) out.push(summaryRow('… of which the agent starting + verifying tcpdump', r.switchTcpdumpStartMs));
  out.push(summaryRow('old pod deleted → old tcpdump exited', r.oldExitMs));
  if (r.floorMs.watchEventSummary) out.push(summaryRow('floor: API write → watch event delivered', r.floorMs.watchEventSummary));
  if (r.floorMs.tcpdumpStartSummary) out.push(summaryRow('floor: bare tcpdump start + verify in a netns', r.floorMs.tcpdumpStartSummary));
  out.push('');
  const latencyRows = [
    { label: 'switch p50', value: r.switchLatencyMs.p50 },
    { label: 'switch p90', value: r.switchLatencyMs.p90 },
    { label: 'switch max', value: r.switchLatencyMs.max },
    { label: 'old exit p50', value: r.oldExitMs.p50 },
    { label: 'old exit max', value: r.oldExitMs.max },
    { label: 'floor watch', value: r.floorMs.watchEvent },
    { label: 'floor tcpdump', value: r.floorMs.tcpdumpStart },
  ];
  out.push(mermaidBars('Switch latency and its floor', 'ms', latencyRows));
  out.push('');
  out.push(textChart(latencyRows, 'ms'));
  out.push('');
  out.push('## Fidelity (agent session vs. raw tcpdump in the same netns, same traffic)');
  out.push('');
  out.push('| rate (pps) | sent | agent wrote | raw captured | agent kernel drops | raw kernel drops | agent/raw | agent CPU % of a core per 10 kpps |');
  out.push('|---|---|---|---|---|---|---|---|');
  for (const step of f.steps) {
    out.push(`| ${step.ratePps} | ${step.sent} | ${step.agent} | ${step.raw} | ${step.agentDrops} | ${step.rawDrops} | ${show(step.ratio)} | ${show(step.agentCpuPctPer10kpps)} |`);
  }
  out.push('');
  const runs = r.scaleRuns ?? [s];
  for (const run of runs) {
    out.push(runs.length > 1 ? `## Controller scale: ${run.captures} captures over ${run.pods} pods` : '## Controller scale');
    out.push(...scaleTable(run));
  }
  out.push('## What an agent hears of other nodes\' captures');
  out.push('');
  const heard = runs
    .filter((run) => run.foreignNode)
    .map(({ captures, foreignNode: fn }) => `${runs.length > 1 ? `at ${captures}: ` : ''}${fn!.modified} for ${fn!.writes} writes; besides, ${fn!.added} ADDED and ${fn!.deleted} DELETED`);
  out.push(
    `${show(r.agentWatchEventsPerForeignWrite)} watch events per status write of a capture with no pod on the agent's node` +
      (heard.length > 0 ? ` (${heard.join('; ')}: ADDED and DELETED as captures went from unplaced to placed, or back when their pod was gone).` : '.'),
  );
  out.push('');
  out.push('## Status writes of a busy session');
  out.push('');
  out.push(`${show(r.statusWritesPerSessionMinute)} writes per minute of one running session under 500 pps (watch MODIFIED events over ${r.statusRateWindowS} s; start and end are written at once, progress at most every 30 s).`);
  out.push('');
  out.push('## Agent footprint');
  out.push('');
  out.push(`CPU averaged over ${r.agent.windowS} s with the sessions running; tcpdump processes counted apart from the agent.`);
  out.push('');
  out.push('| sessions | agent RSS (MB) | agent CPU (%) | tcpdumps | tcpdump RSS total (MB) |');
  out.push('|---|---|---|---|---|');
  for (const k of sessions) {
    out.push(`| ${k} | ${show(r.agent.rssMb[k])} | ${show(r.agent.cpuPct[k])} | ${r.agent.tcpdumpCount[k] ?? 0} | ${show(r.agent.tcpdumpRssMb[k])} |`);
  }
  out.push('');
  out.push(textChart(sessions.map((k) => ({ label: `${k} sessions`, value: r.agent.rssMb[k] ?? null })), 'MB agent RSS'));
  if (r.errors.length > 0) {
    out.push('');
    out.push('## Phases that failed');
    out.push('');
    for (const e of r.errors) out.push(`- ${e}`);
  }
  out.push('');
  return out.join('\n');
}
