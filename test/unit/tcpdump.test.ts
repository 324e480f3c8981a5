import { describe, expect, it } from 'vitest';
import type { Filter } from '../../crds/packetcapture.ts';
import { buildFilter, CaptureError, parseStats, tcpdumpArgv } from '../../agent/tcpdump.ts';

const POD = '10.244.1.7';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('buildFilter', () => {
  it.each<[string, Filter | undefined, string]>([
    ['no filter captures everything', undefined, ''],
    ['an empty filter captures everything', {}, ''],
    ['Both needs no pod IP and adds nothing', { direction: 'Both' }, ''],
    ['TCP', { protocol: 'TCP' }, 'tcp'],
    ['UDP', { protocol: 'UDP' }, 'udp'],
    ['ICMP', { protocol: 'ICMP' }, 'icmp'],
    ['ICMPv6', { protocol: 'ICMPv6' }, 'icmp6'],
    ['SCTP', { protocol: 'SCTP' }, 'sctp'],
    ['port matches either side', { protocol: 'TCP', port: 80 }, 'tcp and port 80'],
    ['srcPort and dstPort are header fields', { srcPort: 1234, dstPort: 53 }, 'src port 1234 and dst port 53'],
    ['Ingress is what reaches the pod', { direction: 'Ingress' }, `dst host ${POD}`],
    ['Egress is what leaves the pod', { direction: 'Egress', protocol: 'UDP' }, `udp and src host ${POD}`],
    ['a peer IP on either side', { peer: '192.168.0.9' }, 'host 192.168.0.9'],
    ['a peer CIDR on either side', { peer: '10.0.0.0/8' }, 'net 10.0.0.0/8'],
    ['an Ingress peer is the source', { direction: 'Ingress', peer: '10.0.0.0/8' }, `dst host ${POD} and src net 10.0.0.0/8`],
    ['an Egress peer is the destination', { direction: 'Egress', peer: '192.168.0.9' }, `src host ${POD} and dst host 192.168.0.9`],
    ['an IPv6 peer CIDR', { peer: 'fd00::/8' }, 'net fd00::/8'],
    ['bpf is ANDed in parentheses', { protocol: 'TCP', bpf: 'tcp[13] & 2 != 0 or tcp[13] & 1 != 0' }, 'tcp and (tcp[13] & 2 != 0 or tcp[13] & 1 != 0)'],
    ['bpf alone is still parenthesised', { bpf: ' (udp) or (icmp) ' }, '((udp) or (icmp))'],
    ['a blank bpf adds nothing', { protocol: 'TCP', bpf: '  ' }, 'tcp'],
    [
      'everything at once',
      { protocol: 'TCP', port: 443, peer: '10.0.0.0/8', direction: 'Ingress', bpf: 'tcp[13] & 2 != 0' },
      `tcp and dst host ${POD} and port 443 and src net 10.0.0.0/8 and (tcp[13] & 2 != 0)`,
    ],
  ])('%s', (_behaviour, filter, expected) => {
    expect(buildFilter(filter, [POD])).toBe(expected);
  });

  it('an IPv6 pod IP works with a direction', () => {
    expect(buildFilter({ direction: 'Egress' }, ['fd00:10:244::7'])).toBe('src host fd00:10:244::7');
  });

  it('a dual-stack pod: the direction holds for either of its IPs', () => {
    expect(buildFilter({ direction: 'Ingress', protocol: 'TCP' }, [POD, 'fd00:10:244::7'])).toBe(`tcp and (dst host ${POD} or dst host fd00:10:244::7)`);
    expect(buildFilter({ direction: 'Egress', peer: '10.0.0.0/8' }, [POD, 'fd00:10:244::7'])).toBe(
      `(src host ${POD} or src host fd00:10:244::7) and dst net 10.0.0.0/8`,
    );
  });

  it.each<[string, Filter, string[], RegExp]>([
    ['Ingress without a pod IP', { direction: 'Ingress' }, [], /direction Ingress .* no IP/],
    ['Egress without a pod IP', { direction: 'Egress' }, [], /direction Egress .* no IP/],
    ['a pod IP that is not an IP', { direction: 'Egress' }, ['pod-a'], /pod IP "pod-a"/],
    ['a second pod IP that is not an IP', { direction: 'Egress' }, [POD, 'pod-a'], /pod IP "pod-a"/],
    ['a peer that is a name', { peer: 'example.com' }, [POD], /filter\.peer "example\.com"/],
    ['a peer that smuggles an expression', { peer: '10.0.0.0/8 or host 1.2.3.4' }, [POD], /filter\.peer/],
    ['a peer prefix longer than the address', { peer: '10.0.0.0/33' }, [POD], /filter\.peer/],
    ['a port out of range', { port: 70000 }, [POD], /filter\.port 70000/],
    ['a fractional port', { srcPort: 80.5 }, [POD], /filter\.srcPort/],
    ['a bpf that closes our parenthesis', { protocol: 'TCP', bpf: 'udp) or (icmp' }, [POD], /unbalanced/],
    ['a bpf that leaves one open', { bpf: '(udp' }, [POD], /unbalanced/],
    ['an unknown protocol', { protocol: 'GRE' as Filter['protocol'] }, [POD], /filter\.protocol "GRE"/],
  ])('%s is InvalidFilter', (_case, filter, podIPs, message) => {
    const error = thrown(() => buildFilter(filter, podIPs));
    expect(error).toBeInstanceOf(CaptureError);
    expect(error).toMatchObject({ reason: 'InvalidFilter', message: expect.stringMatching(message) });
  });
});

describe('tcpdumpArgv', () => {
  const base = ['-i', 'any', '-y', 'LINUX_SLL2', '-n', '-U', '-Z', 'root', '--time-stamp-precision=nano', '-B', '8192'];

  it('defaults: any interface, default snap length, packets to the agent on stdout, only frames addressed to the pod', () => {
    expect(tcpdumpArgv({}, {})).toEqual([...base, '-s', '262144', '-w', '-', '--', 'not link[10] == 3']);
  });

  it('the limits are the agent writer\'s, not tcpdump\'s: only the snap length reaches tcpdump, and the filter comes last as one element', () => {
    const argv = tcpdumpArgv(
      {
        filter: { protocol: 'TCP', port: 80, direction: 'Ingress' },
        limits: { maxPackets: 1000, fileSize: '10Mi', fileCount: 5, snapLen: 96 },
      },
      { podIPs: [POD] },
    );
    expect(argv).toEqual([...base, '-s', '96', '-w', '-', '--', `(tcp and dst host ${POD} and port 80) and not link[10] == 3`]);
  });

  it('an invalid filter fails the argv, not tcpdump', () => {
    expect(() => tcpdumpArgv({ filter: { direction: 'Ingress' } }, {})).toThrow(CaptureError);
  });
});

describe('parseStats', () => {
  it("reads tcpdump's report on exit", () => {
    const stderr = [
      'tcpdump: data link type LINUX_SLL2',
      'tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), snapshot length 262144 bytes',
      '3 packets captured',
      '6 packets received by filter',
      '0 packets dropped by kernel',
      '',
    ].join('\n');
    expect(parseStats(stderr)).toEqual({ captured: 3, receivedByFilter: 6, droppedByKernel: 0 });
  });

  it('takes the last report when SIGUSR1 printed earlier ones', () => {
    const stderr = [
      'tcpdump: 1 packet captured, 2 packets received by filter, 0 packets dropped by kernel',
      'tcpdump: 12 packets captured, 24 packets received by filter, 1 packet dropped by kernel',
    ].join('\n');
    expect(parseStats(stderr)).toEqual({ captured: 12, receivedByFilter: 24, droppedByKernel: 1 });
  });

  it('has no counters when tcpdump was killed before reporting', () => {
    expect(parseStats('tcpdump: listening on any\n')).toEqual({});
  });
});
