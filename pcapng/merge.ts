// Many capture files, one timeline: the packets of every file in timestamp order, one
// interface per pod instance (the files' interface name, `<pod>/<uid>`), so Wireshark
// shows which instance each packet came from. Files are read as streams, so a capture of
// any size merges in little memory. Each file is in capture order, which is time order up to
// the sub-microsecond inversions of packets timestamped on different CPUs; the merge keeps
// each file's order and takes the earliest head across files.

import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { BlockReader, enhancedPacket, interfaceDescription, sectionHeader, type InterfaceInfo, type Packet } from './blocks.ts';
import { pcapHeader, pcapRecord } from './pcap.ts';

export type MergeFormat = 'pcapng' | 'pcap';

interface Next {
  packet: Packet;
  iface: InterfaceInfo;
}

const CHUNK = 1024 * 1024;

/** The packets of one pcapng file, each with the interface it was captured on. */
async function* packetsOf(path: string): AsyncGenerator<Next> {
  const file: FileHandle = await open(path, 'r');
  try {
    const reader = new BlockReader();
    let interfaces: InterfaceInfo[] = [];
    const buffer = Buffer.alloc(CHUNK);
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, CHUNK, null);
      // a file fetched while it was written may end inside a block: what is whole counts
      if (bytesRead === 0) return;
      for (const block of reader.push(Buffer.from(buffer.subarray(0, bytesRead)))) {
        if (block.type === 'section') interfaces = [];
        else if (block.type === 'interface') interfaces.push(block.info);
        else if (block.type === 'packet') {
          const iface = interfaces[block.interfaceId];
          if (!iface) throw new Error(`${path}: a packet names interface ${block.interfaceId}, which the file does not describe`);
          yield { packet: block.packet, iface };
        }
      }
    }
  } finally {
    await file.close();
  }
}

export interface MergeResult {
  packets: number;
  /** interface names in the order they first appear */
  interfaces: string[];
}

/**
 * Writes the packets of `paths` to `out` on one timeline: pcapng with an interface per
 * instance and `comments` in the section header, or classic pcap (one link type; the
 * instance names are then lost, which is why pcapng is the default).
 */
export async function mergeCaptureFiles(paths: readonly string[], out: Writable, { format = 'pcapng', comments = [] }: { format?: MergeFormat; comments?: readonly string[] } = {}): Promise<MergeResult> {
  const write = (chunk: Buffer) => (out.write(chunk) ? Promise.resolve() : new Promise<void>((resolve) => out.once('drain', () => resolve())));
  const sources = paths.map((path) => packetsOf(path));
  const heads: (Next | undefined)[] = await Promise.all(sources.map(async (source) => (await source.next()).value ?? undefined));
  const ids = new Map<string, number>();
  let pcapLink: number | undefined;
  let packets = 0;
  if (format === 'pcapng') await write(sectionHeader({ comments, userappl: 'kubectl-pcap fetch --merge' }));
  for (;;) {
    let earliest = -1;
    for (let i = 0; i < heads.length; i++) {
      const head = heads[i];
      if (head && (earliest < 0 || head.packet.timestampNs < heads[earliest]!.packet.timestampNs)) earliest = i;
    }
    if (earliest < 0) break;
    const { packet, iface } = heads[earliest]!;
    if (format === 'pcapng') {
      let id = ids.get(iface.name);
      if (id === undefined) {
        ids.set(iface.name, (id = ids.size));
        await write(interfaceDescription(iface));
      }
      await write(enhancedPacket(id, packet));
    } else {
      if (pcapLink === undefined) {
        pcapLink = iface.linkType;
        await write(pcapHeader({ linkType: iface.linkType, snapLen: iface.snapLen }));
      }
      if (iface.linkType !== pcapLink) throw new Error(`classic pcap holds one link type; ${iface.name} has ${iface.linkType}, not ${pcapLink}: use pcapng`);
      ids.set(iface.name, 0);
      await write(pcapRecord(packet));
    }
    packets++;
    heads[earliest] = (await sources[earliest]!.next()).value ?? undefined;
  }
  return { packets, interfaces: [...ids.keys()] };
}
