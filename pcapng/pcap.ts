// Classic pcap: reading the stream `tcpdump -w -` writes, and writing it back for tools
// that read nothing newer (older macOS tcpdump, some analysers).

import type { Packet } from './blocks.ts';

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

export interface PcapHeader {
  linkType: number;
  snapLen: number;
  nanoseconds: boolean;
}

/**
 * Incremental reader of a pcap stream: push what the pipe delivered, take whole packets.
 * The header comes first; until it has arrived `header` is undefined.
 */
export class PcapStreamReader {
  private pending: Buffer = Buffer.alloc(0);
  private little = true;
  header: PcapHeader | undefined;

  push(chunk: Buffer): Packet[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    if (!this.header) {
      if (this.pending.length < GLOBAL_HEADER) return [];
      const le = this.pending.readUInt32LE(0);
      const be = this.pending.readUInt32BE(0);
      this.little = le === MAGIC_MICRO || le === MAGIC_NANO;
      const magic = this.little ? le : be;
      if (magic !== MAGIC_MICRO && magic !== MAGIC_NANO) throw new Error(`not a pcap stream (magic 0x${le.toString(16)})`);
      this.header = { nanoseconds: magic === MAGIC_NANO, snapLen: this.u32(16), linkType: this.u32(20) & 0x0fffffff };
      at = GLOBAL_HEADER;
    }
    const packets: Packet[] = [];
    const fraction = this.header.nanoseconds ? 1n : 1000n;
    while (this.pending.length - at >= RECORD_HEADER) {
      const captured = this.u32(at + 8);
      if (this.pending.length - at - RECORD_HEADER < captured) break;
      packets.push({
        timestampNs: BigInt(this.u32(at)) * 1_000_000_000n + BigInt(this.u32(at + 4)) * fraction,
        originalLength: this.u32(at + 12),
        // a view, not a copy: no chunk is written to after it arrived (push makes a new buffer)
        data: this.pending.subarray(at + RECORD_HEADER, at + RECORD_HEADER + captured),
      });
      at += RECORD_HEADER + captured;
    }
    this.pending = this.pending.subarray(at);
    return packets;
  }

  private u32(at: number): number {
    return this.little ? this.pending.readUInt32LE(at) : this.pending.readUInt32BE(at);
  }
}

export function pcapHeader({ linkType, snapLen }: { linkType: number; snapLen: number }): Buffer {
  const out = Buffer.alloc(GLOBAL_HEADER);
  out.writeUInt32LE(MAGIC_NANO, 0);
  out.writeUInt16LE(2, 4);
  out.writeUInt16LE(4, 6);
  out.writeUInt32LE(snapLen, 16);
  out.writeUInt32LE(linkType, 20);
  return out;
}

export function pcapRecord(packet: Packet): Buffer {
  const out = Buffer.alloc(RECORD_HEADER + packet.data.length);
  out.writeUInt32LE(Number(packet.timestampNs / 1_000_000_000n), 0);
  out.writeUInt32LE(Number(packet.timestampNs % 1_000_000_000n), 4);
  out.writeUInt32LE(packet.data.length, 8);
  out.writeUInt32LE(packet.originalLength, 12);
  packet.data.copy(out, RECORD_HEADER);
  return out;
}
