// Which packets of a capture file belong to the pod instance it was taken from (pure): the
// one rule the e2e tests and the demo check capture files by. A packet is the instance's
// when it names the instance's address, or when it names no host at all: a netns's own
// kernel talks to its link before (and besides) using its address, e.g. an IGMP report
// 0.0.0.0 -> 224.0.0.22 or an MLD report :: -> ff02::16 as its interface comes up. Any
// other address, even towards a multicast group, is another host's and so foreign.

const isUnspecified = (address: string): boolean => address === '0.0.0.0' || address === '::';

/** 169.254.0.0/16 and fe80::/10: addresses of the link itself, which every netns may use */
const isLinkLocal = (address: string): boolean => address.startsWith('169.254.') || /^fe[89ab][0-9a-f]:/i.test(address);

/** 224.0.0.0/4, ff00::/8 and the limited broadcast: a destination that is nobody in particular */
function isGroup(address: string): boolean {
  if (address === '255.255.255.255') return true;
  if (/^ff[0-9a-f]{2}:/i.test(address)) return true;
  const first = Number(/^(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.exec(address)?.[1]);
  return first >= 224 && first <= 239;
}

/** An unspecified or link-local source to a group: control traffic of the link, naming no host. */
export const namesNoHost = (src: string, dst: string): boolean => (isUnspecified(src) || isLinkLocal(src)) && isGroup(dst);

/**
 * Whether an IP packet `src -> dst` belongs to the instance whose addresses are `own`: it
 * names no host, or one end is the instance's and the other, when `peers` is given, is a
 * peer, the instance again, or a group.
 */
export function isInstancePacket(src: string, dst: string, own: readonly string[], peers?: readonly string[]): boolean {
  if (namesNoHost(src, dst)) return true;
  const other = own.includes(src) ? dst : own.includes(dst) ? src : undefined;
  if (other === undefined) return false;
  return !peers || own.includes(other) || peers.includes(other) || isGroup(other);
}

/** A frame as the e2e tests read it with tshark: its outer IP header, or its ARP addresses. */
export interface Frame {
  /** outer IPv4 or IPv6 header; unset for frames without one */
  src?: string;
  dst?: string;
  arpIps: string[];
  /** 1 request, 2 reply */
  arpOpcode?: number;
}

/**
 * The frames of a file that do not belong to the instance with `ip`: an IP packet that is
 * not the instance's (isInstancePacket), an ARP reply not about its address, and anything
 * else but ARP requests, which the bridge floods to every port whenever they are about
 * another address.
 */
export function foreignFrames<T extends Frame>(frames: readonly T[], ip: string): T[] {
  return frames.filter((f) => {
    if (f.src !== undefined && f.dst !== undefined) return !isInstancePacket(f.src, f.dst, [ip]);
    if (f.arpIps.length > 0) return !f.arpIps.includes(ip) && f.arpOpcode !== 1;
    return true;
  });
}
