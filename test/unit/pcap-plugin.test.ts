import { describe, expect, it } from 'vitest';
import { planDownload, servedEnd } from '../../cli/pcap/fetch.ts';
import { age, describeText, listTable, table, watchText } from '../../cli/pcap/render.ts';
import type { PacketCapture } from '../../crds/packetcapture.ts';
import { hostAddress } from '../../local/start.ts';

const NOW = Date.parse('2025-01-01T12:00:00Z');
const UID_A = '11111111-1111-4111-8111-111111111111';
const UID_B = '22222222-2222-4222-8222-222222222222';

const capture = (over: Partial<PacketCapture['status']> = {}, name = 'web-http', namespace = 'demo'): PacketCapture => ({
  apiVersion: 'packetcapture.dev/v1alpha1',
  kind: 'PacketCapture',
  metadata: { name, namespace, uid: 'pc-uid', generation: 2, creationTimestamp: '2025-01-01T11:57:00Z' },
  spec: { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 }, limits: { maxPackets: 100 } },
  status: {
    phase: 'Capturing',
    observedGeneration: 2,
    targets: [{ podName: 'web-0', podUID: UID_B, nodeName: 'node-2', podIP: '10.244.2.2' }],
    sessions: [
      { id: 's1', podUID: UID_A, podName: 'web-0', nodeName: 'node-1', generation: 2, state: 'Ended', endReason: 'PodDeleted', packets: 40, startTime: '2025-01-01T11:58:00Z', endTime: '2025-01-01T11:59:00Z' },
      { id: 's2', podUID: UID_B, podName: 'web-0', nodeName: 'node-2', generation: 2, state: 'Running', packets: 2, startTime: '2025-01-01T11:59:30Z' },
    ],
    conditions: [{ type: 'Ready', status: 'True', reason: 'SessionsRunning', message: '1 session running', lastTransitionTime: '2025-01-01T11:59:30Z' }],
    ...over,
  },
});

describe('planDownload', () => {
  it('fetches a file it has not seen from the start', () => {
    expect(planDownload(undefined, 100)).toEqual({ action: 'get', from: 0 });
  });
  it('continues a partial copy from its length', () => {
    expect(planDownload(40, 100)).toEqual({ action: 'get', from: 40 });
  });
  it('skips a copy as long as the agent file', () => {
    expect(planDownload(100, 100)).toEqual({ action: 'skip' });
  });
  it('starts over when the copy is longer than the agent file (a ring file started over)', () => {
    expect(planDownload(150, 100)).toEqual({ action: 'get', from: 0 });
  });
});

describe('servedEnd', () => {
  const headers = (h: Record<string, string>) => ({ get: (name: string) => h[name] ?? null });
  it('reads the end of a 206 from Content-Range', () => {
    expect(servedEnd(206, headers({ 'content-range': 'bytes 40-99/100' }), 40)).toBe(100);
  });
  it('refuses a 206 that starts elsewhere than asked', () => {
    expect(servedEnd(206, headers({ 'content-range': 'bytes 0-99/100' }), 40)).toBeUndefined();
  });
  it('takes the length of a 200', () => {
    expect(servedEnd(200, headers({ 'content-length': '77' }), 0)).toBe(77);
  });
});

describe('rendering', () => {
  it('pads columns to the widest cell', () => {
    expect(table(['A', 'BB'], [['long', 'x']])).toBe('A      BB\nlong   x');
  });

  it('says ages as kubectl does', () => {
    expect(age('2025-01-01T11:59:15Z', NOW)).toBe('45s');
    expect(age('2025-01-01T11:50:00Z', NOW)).toBe('10m');
    expect(age('2025-01-01T06:00:00Z', NOW)).toBe('6h');
    expect(age(undefined, NOW)).toBe('-');
  });

  it('lists the current pod UID, its node and the packets of every session', () => {
    const lines = listTable([capture()], NOW, false).split('\n');
    expect(lines[0]).toMatch(/^NAME\s+PHASE\s+POD UID\s+NODE\s+PACKETS\s+SESSIONS\s+AGE$/);
    expect(lines[1]!.split(/\s{2,}/)).toEqual(['web-http', 'Capturing', UID_B, 'node-2', '42', '2', '3m']);
  });

  it('lists the namespace first with --all-namespaces, and a dash for a capture without targets', () => {
    const lines = listTable([capture({ targets: [], sessions: [], phase: 'Pending' }, 'idle', 'other')], NOW, true).split('\n');
    expect(lines[1]!.split(/\s{2,}/)).toEqual(['other', 'idle', 'Pending', '-', '-', '0', '0', '3m']);
  });

  it('describes targets, sessions with their end reasons, conditions and events', () => {
    const text = describeText(
      capture(),
      [{ type: 'Normal', reason: 'TargetResolved', message: `web-0 is ${UID_B}`, lastTimestamp: '2025-01-01T11:59:30Z', metadata: {}, reportingComponent: 'packet-capture-controller' }],
      NOW,
    );
    expect(text).toContain('Target:        podName web-0');
    expect(text).toContain('Filter:        protocol TCP, port 80');
    expect(text).toMatch(new RegExp(`s1\\s+web-0\\s+${UID_A}\\s+node-1\\s+Ended\\s+PodDeleted\\s+40`));
    expect(text).toMatch(/Ready\s+True\s+SessionsRunning\s+1 session running/);
    expect(text).toMatch(/30s\s+Normal\s+TargetResolved\s+packet-capture-controller\s+web-0 is/);
  });

  it('watch text changes with the status and not with the clock', () => {
    const before = watchText(capture());
    expect(watchText(capture())).toBe(before);
    const more = capture();
    more.status!.sessions![1]!.packets = 3;
    expect(watchText(more)).not.toBe(before);
    expect(before).toContain(`target web-0 ${UID_B} on node-2 (10.244.2.2)`);
  });
});

describe('hostAddress', () => {
  const iface = (address: string, family: 'IPv4' | 'IPv6', internal = false) => ({ address, family, internal });
  it('prefers an IPv4 address that is not loopback', () => {
    expect(hostAddress({ lo: [iface('127.0.0.1', 'IPv4', true)], eth0: [iface('fe80::1', 'IPv6'), iface('fd00::2', 'IPv6'), iface('192.0.2.2', 'IPv4')] })).toBe('192.0.2.2');
  });
  it('takes a global IPv6 address when there is no IPv4 one, never a link-local one', () => {
    expect(hostAddress({ eth0: [iface('fe80::1', 'IPv6'), iface('fd00::2', 'IPv6')] })).toBe('fd00::2');
    expect(hostAddress({ lo: [iface('127.0.0.1', 'IPv4', true)], eth0: [iface('fe80::1', 'IPv6')] })).toBeUndefined();
  });
});
