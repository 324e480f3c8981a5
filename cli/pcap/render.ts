// What the plugin prints, as pure functions of the objects it read and the current time.

import type { PacketCapture, SessionStatus } from '../../crds/packetcapture.ts';
import type { CoreEvent } from './client.ts';

/** Columns padded to their widest cell, as kubectl prints them. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], indent = ''): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    indent +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** kubectl's short ages: 45s, 3m, 2h, 5d. */
export function age(since: string | undefined, now: number): string {
  if (!since) return '-';
  const s = Math.max(0, Math.floor((now - Date.parse(since)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 2 * 3600) return `${Math.floor(s / 60)}m`;
  if (s < 2 * 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const dash = (v: string | number | undefined): string => (v === undefined || v === '' ? '-' : String(v));
const totalPackets = (c: PacketCapture): number => (c.status?.sessions ?? []).reduce((n, s) => n + (s.packets ?? 0), 0);

/** `list`: one row per capture; a selector capture with several pods lists them comma-separated. */
export function listTable(captures: readonly PacketCapture[], now: number, withNamespace: boolean): string {
  const header = ['NAME', 'PHASE', 'POD UID', 'NODE', 'PACKETS', 'SESSIONS', 'AGE'];
  const rows = [...captures]
    .sort((a, b) => a.metadata.namespace.localeCompare(b.metadata.namespace) || a.metadata.name.localeCompare(b.metadata.name))
    .map((c) => {
      const targets = c.status?.targets ?? [];
      const row = [
        c.metadata.name,
        dash(c.status?.phase),
        dash(targets.map((t) => t.podUID).join(',')),
        dash([...new Set(targets.map((t) => t.nodeName))].join(',')),
        String(totalPackets(c)),
        String(c.status?.sessions?.length ?? 0),
        age(c.metadata.creationTimestamp, now),
      ];
      return withNamespace ? [c.metadata.namespace, ...row] : row;
    });
  return table(withNamespace ? ['NAMESPACE', ...header] : header, rows);
}

function targetSpec(c: PacketCapture): string {
  const { podName, podSelector } = c.spec.target;
  if (podName) return `podName ${podName}`;
  const labels = Object.entries(podSelector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  const expressions = (podSelector?.matchExpressions ?? []).map((e) => `${e.key} ${e.operator}${e.values ? ` (${e.values.join(',')})` : ''}`);
  return `podSelector ${[...labels, ...expressions].join(', ') || '(every pod)'}`;
}

const fields = (o: object | undefined): string =>
  Object.entries(o ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || '-';

const sessionRow = (s: SessionStatus, now: number): string[] => [
  s.id,
  s.podName,
  s.podUID,
  s.nodeName,
  s.state,
  dash(s.endReason ?? s.reason),
  String(s.packets ?? 0),
  String(s.bytes ?? 0),
  String(s.files ?? 0),
  age(s.startTime, now),
  s.endTime ? age(s.endTime, now) : '-',
];

/** `describe`: spec, status and the recent events, as `kubectl describe` lays them out. */
export function describeText(c: PacketCapture, events: readonly CoreEvent[], now: number): string {
  const status = c.status ?? {};
  const meta = c.metadata;
  const out = [
    `Name:          ${meta.name}`,
    `Namespace:     ${meta.namespace}`,
    `UID:           ${meta.uid}`,
    `Created:       ${dash(meta.creationTimestamp)} (${age(meta.creationTimestamp, now)} ago)`,
    ...(meta.deletionTimestamp ? [`Deleting:      since ${meta.deletionTimestamp}`] : []),
    `Generation:    ${dash(meta.generation)} (observed ${dash(status.observedGeneration)})`,
    `Phase:         ${dash(status.phase)}`,
    `Target:        ${targetSpec(c)}`,
    `Filter:        ${fields(c.spec.filter)}`,
    `Limits:        ${fields(c.spec.limits)}`,
    `Lifecycle:     ${c.spec.lifecycle ?? 'Follow'}`,
    'Targets:',
    (status.targets ?? []).length === 0
      ? '  <none>'
      : table(['POD', 'POD UID', 'NODE', 'POD IP'], (status.targets ?? []).map((t) => [t.podName, t.podUID, t.nodeName, dash(t.podIP)]), '  '),
    'Sessions:',
    (status.sessions ?? []).length === 0
      ? '  <none>'
      : table(
          ['ID', 'POD', 'POD UID', 'NODE', 'STATE', 'REASON', 'PACKETS', 'BYTES', 'FILES', 'STARTED', 'ENDED'],
          (status.sessions ?? []).map((s) => sessionRow(s, now)),
          '  ',
        ),
    'Conditions:',
    (status.conditions ?? []).length === 0
      ? '  <none>'
      : table(['TYPE', 'STATUS', 'REASON', 'MESSAGE'], (status.conditions ?? []).map((k) => [k.type, k.status, k.reason, k.message]), '  '),
    'Events:',
    events.length === 0 ? '  <none>' : eventsTable(events, now),
  ];
  return out.join('\n');
}

const eventTime = (e: CoreEvent): string | undefined => e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata.creationTimestamp;

/** The last `limit` events, oldest first. */
export function eventsTable(events: readonly CoreEvent[], now: number, limit = 10): string {
  const recent = [...events].sort((a, b) => Date.parse(eventTime(a) ?? '') - Date.parse(eventTime(b) ?? '')).slice(-limit);
  return table(
    ['LAST SEEN', 'TYPE', 'REASON', 'FROM', 'MESSAGE'],
    recent.map((e) => [
      age(eventTime(e), now),
      dash(e.type),
      dash(e.reason),
      dash(e.reportingComponent || e.source?.component),
      `${dash(e.message)}${(e.count ?? 1) > 1 ? ` (x${e.count})` : ''}`,
    ]),
    '  ',
  );
}

/** `watch`: the live part of the status, with no ages, so it changes only when the status does. */
export function watchText(c: PacketCapture): string {
  const status = c.status ?? {};
  const conditions = (status.conditions ?? []).map((k) => `${k.type}=${k.status}${k.reason ? ` (${k.reason})` : ''}`).join('  ');
  const sessions = status.sessions ?? [];
  return [
    `${c.metadata.namespace}/${c.metadata.name}  phase ${dash(status.phase)}  generation ${dash(c.metadata.generation)}  packets ${totalPackets(c)}${
      c.metadata.deletionTimestamp ? '  (deleting)' : ''
    }`,
    `  conditions: ${conditions || '-'}`,
    ...(status.targets ?? []).map((t) => `  target ${t.podName} ${t.podUID} on ${t.nodeName}${t.podIP ? ` (${t.podIP})` : ''}`),
    sessions.length === 0
      ? '  no sessions'
      : table(
          ['SESSION', 'POD UID', 'NODE', 'STATE', 'REASON', 'PACKETS', 'BYTES', 'FILES'],
          sessions.map((s) => [s.id, s.podUID, s.nodeName, s.state, dash(s.endReason ?? s.reason), String(s.packets ?? 0), String(s.bytes ?? 0), String(s.files ?? 0)]),
          '  ',
        ),
  ].join('\n');
}
