import { describe, expect, it } from 'vitest';
import { foreignFrames, isInstancePacket, type Frame } from '../../local/packets.ts';

const POD = '10.244.1.2';
const OTHER_POD = '10.244.1.3';
const HOST = '10.244.250.7';
const ip = (src: string, dst: string): Frame => ({ src, dst, arpIps: [] });
const arp = (opcode: number, sender: string, target: string): Frame => ({ arpIps: [sender, target], arpOpcode: opcode });

describe('foreignFrames', () => {
  it.each([
    ['traffic to the instance', ip(HOST, POD)],
    ['traffic from the instance', ip(POD, HOST)],
    ['an IGMP report of its netns as its interface comes up', ip('0.0.0.0', '224.0.0.22')],
    ['an MLD report of its netns', ip('::', 'ff02::16')],
    ['a router solicitation from its link-local address', ip('fe80::a8c1:abff:fe00:102', 'ff02::2')],
    ['an IPv4 link-local (169.254/16) announcement to a group', ip('169.254.7.9', '224.0.0.251')],
    ['a DHCP-style broadcast from the unspecified address', ip('0.0.0.0', '255.255.255.255')],
    ['the instance sending to a multicast group', ip(POD, '224.0.0.251')],
    ['an ARP request about another address (flooded to every port)', arp(1, OTHER_POD, '10.244.1.1')],
    ['an ARP reply about the instance', arp(2, POD, '10.244.1.1')],
  ])('counts %s as the instance\'s', (_what, frame) => {
    expect(foreignFrames([frame], POD)).toEqual([]);
  });

  it.each([
    ["another pod's IP to a multicast group", ip(OTHER_POD, '224.0.0.22')],
    ["another pod's IP to the broadcast address", ip(OTHER_POD, '255.255.255.255')],
    ['traffic between two other hosts', ip(HOST, OTHER_POD)],
    ['the unspecified address to a unicast host', ip('0.0.0.0', OTHER_POD)],
    ['a link-local source to a unicast address', ip('fe80::1', 'fe80::2')],
    ['an IPv6 unicast packet of another host to a group', ip('fd00::3', 'ff02::1')],
    ['an ARP reply about another address', arp(2, OTHER_POD, '10.244.1.1')],
    ['a frame with neither an IP header nor ARP', { arpIps: [] }],
  ])('counts %s as foreign', (_what, frame) => {
    expect(foreignFrames([frame], POD)).toEqual([frame]);
  });
});

describe('isInstancePacket with peers', () => {
  it('accepts the instance with a peer, a group, or no host at all', () => {
    expect(isInstancePacket(HOST, POD, [POD], [HOST])).toBe(true);
    expect(isInstancePacket(POD, '224.0.0.251', [POD], [HOST])).toBe(true);
    expect(isInstancePacket('0.0.0.0', '224.0.0.22', [POD], [HOST])).toBe(true);
  });

  it('refuses the instance with anyone but a peer', () => {
    expect(isInstancePacket(POD, OTHER_POD, [POD], [HOST])).toBe(false);
    expect(isInstancePacket(OTHER_POD, POD, [POD], [HOST])).toBe(false);
    expect(isInstancePacket(HOST, OTHER_POD, [POD], [HOST])).toBe(false);
  });
});
