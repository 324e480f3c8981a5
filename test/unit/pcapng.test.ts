// The pcapng blocks the agent writes, checked byte for byte against the format, and read back.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BlockReader, enhancedPacket, interfaceDescription, sectionHeader } from '../../pcapng/blocks.ts';
import { mergeCaptureFiles } from '../../pcapng/merge.ts';
import { pcapHeader, pcapRecord, PcapStreamReader } from '../../pcapng/pcap.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('pcapng blocks', () => {
  it('a Section Header Block: byte-order magic, version 1.0, unknown section length, comments as options', () => {
    expect(sectionHeader({ comments: ['ab'] })).toEqual(
      hex('0a0d0d0a 28000000 4d3c2b1a 01000000 ffffffffffffffff 01000200 61620000 00000000 28000000'),
    );
  });

  it('an Interface Description Block: link type, snap length, if_name and nanosecond if_tsresol', () => {
    expect(interfaceDescription({ linkType: 276, snapLen: 262144, name: 'w/u' })).toEqual(
      hex('01000000 28000000 14010000 00000400 02000300 772f7500 09000100 09000000 00000000 28000000'),
    );
  });

  it('an Enhanced Packet Block: interface, 64-bit timestamp in two halves, lengths, data padded to 4', () => {
    const block = enhancedPacket(0, { timestampNs: (1n << 32n) + 2n, originalLength: 60, data: Buffer.from('abc') });
    expect(block).toEqual(hex('06000000 24000000 00000000 01000000 02000000 03000000 3c000000 61626300 24000000'));
  });

  it('reads back what it writes, whatever the chunks the bytes arrive in', () => {
    const packet = { timestampNs: 1_700_000_000_123_456_789n, originalLength: 1500, data: Buffer.from('payload!') };
    const file = Buffer.concat([
      sectionHeader({ comments: ['capture shop/web', 'pod web-0'], userappl: 'packet-capture-agent 1.2.3' }),
      interfaceDescription({ linkType: 276, snapLen: 96, name: 'web-0/uid-1', description: 'node a', filter: 'tcp port 80' }),
      enhancedPacket(0, packet),
    ]);
    const reader = new BlockReader();
    const blocks = [...file].flatMap((byte) => reader.push(Buffer.from([byte])));
    expect(blocks.map((b) => b.type)).toEqual(['section', 'interface', 'packet']);
    expect(blocks[0]).toMatchObject({ info: { comments: ['capture shop/web', 'pod web-0'], userappl: 'packet-capture-agent 1.2.3' } });
    expect(blocks[1]).toMatchObject({ tsresol: 9, info: { linkType: 276, snapLen: 96, name: 'web-0/uid-1', description: 'node a', filter: 'tcp port 80' } });
    expect(blocks[2]).toMatchObject({ interfaceId: 0, packet: { ...packet, data: packet.data } });
    expect(reader.buffered).toBe(0);
  });

  it('refuses a big-endian section and a malformed block length', () => {
    const be = sectionHeader({ comments: [] });
    be.writeUInt32BE(0x1a2b3c4d, 8);
    expect(() => new BlockReader().push(be)).toThrow(/little-endian/);
    const bad = enhancedPacket(0, { timestampNs: 0n, originalLength: 1, data: Buffer.from('x') });
    bad.writeUInt32LE(13, 4);
    expect(() => new BlockReader().push(bad)).toThrow(/malformed/);
  });
});

describe('classic pcap', () => {
  it("reads tcpdump's nanosecond stream in any chunking, and writes the same records back", () => {
    const packets = [
      { timestampNs: 1_700_000_000_000_000_001n, originalLength: 80, data: Buffer.from('first') },
      { timestampNs: 1_700_000_001_999_999_999n, originalLength: 5, data: Buffer.from('2nd..') },
    ];
    const stream = Buffer.concat([pcapHeader({ linkType: 276, snapLen: 262144 }), ...packets.map(pcapRecord)]);
    const reader = new PcapStreamReader();
    const read = [stream.subarray(0, 10), stream.subarray(10, 30), stream.subarray(30, 55), stream.subarray(55)].flatMap((c) => reader.push(c));
    expect(reader.header).toEqual({ linkType: 276, snapLen: 262144, nanoseconds: true });
    expect(read).toEqual(packets);
  });

  it('reads microsecond streams too, and refuses what is not pcap', () => {
    const micro = pcapHeader({ linkType: 1, snapLen: 65535 });
    micro.writeUInt32LE(0xa1b2c3d4, 0);
    const record = Buffer.alloc(17);
    record.writeUInt32LE(10, 0);
    record.writeUInt32LE(250, 4); // microseconds
    record.writeUInt32LE(1, 8);
    record.writeUInt32LE(1, 12);
    const reader = new PcapStreamReader();
    expect(reader.push(Buffer.concat([micro, record]))).toEqual([{ timestampNs: 10_000_250_000n, originalLength: 1, data: Buffer.alloc(1) }]);
    expect(() => new PcapStreamReader().push(Buffer.alloc(24, 7))).toThrow(/not a pcap stream/);
  });
});

describe('mergeCaptureFiles', () => {
  const file = (name: string, times: number[]) =>
    Buffer.concat([
      sectionHeader({ comments: [`pod ${name}`] }),
      interfaceDescription({ linkType: 276, snapLen: 262144, name }),
      ...times.map((t) => enhancedPacket(0, { timestampNs: BigInt(t), originalLength: 4, data: Buffer.from(`${name}@${t}`) })),
    ]);

  async function merged(format: 'pcapng' | 'pcap') {
    const dir = await mkdtemp(join(tmpdir(), 'pc-merge-'));
    try {
      // web-0 recreated: its old instance's two files (a rotation) and the new instance's file
      const paths = [join(dir, 'a1'), join(dir, 'a2'), join(dir, 'b')];
      await writeFile(paths[0]!, file('web-0/uid-a', [10, 30]));
      await writeFile(paths[1]!, file('web-0/uid-a', [50, 70]));
      await writeFile(paths[2]!, file('web-0/uid-b', [20, 40, 60]));
      const chunks: Buffer[] = [];
      const out = new PassThrough().on('data', (c: Buffer) => chunks.push(c));
      const result = await mergeCaptureFiles(paths, out, { format, comments: ['capture shop/web'] });
      return { result, bytes: Buffer.concat(chunks) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  it('puts every packet on one timeline, with one interface per instance', async () => {
    const { result, bytes } = await merged('pcapng');
    expect(result).toEqual({ packets: 7, interfaces: ['web-0/uid-a', 'web-0/uid-b'] });
    const blocks = new BlockReader().push(bytes);
    const names = blocks.filter((b) => b.type === 'interface').map((b) => b.type === 'interface' && b.info.name);
    expect(names).toEqual(['web-0/uid-a', 'web-0/uid-b']);
    const packets = blocks.flatMap((b) => (b.type === 'packet' ? [`${names[b.interfaceId]}:${b.packet.timestampNs}:${b.packet.data}`] : []));
    expect(packets).toEqual([10, 20, 30, 40, 50, 60, 70].map((t) => `web-0/uid-${[20, 40, 60].includes(t) ? 'b' : 'a'}:${t}:web-0/uid-${[20, 40, 60].includes(t) ? 'b' : 'a'}@${t}`));
    expect(blocks[0]).toMatchObject({ type: 'section', info: { comments: ['capture shop/web'] } });
  });

  it('writes classic pcap for tools that read nothing newer', async () => {
    const { result, bytes } = await merged('pcap');
    expect(result.packets).toBe(7);
    const reader = new PcapStreamReader();
    const packets = reader.push(bytes);
    expect(reader.header).toEqual({ linkType: 276, snapLen: 262144, nanoseconds: true });
    expect(packets.map((p) => Number(p.timestampNs))).toEqual([10, 20, 30, 40, 50, 60, 70]);
  });
});
