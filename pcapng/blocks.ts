// pcapng blocks (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html), written
// and read in little-endian, the byte order of every machine the agent runs on. Only what a
// capture file of this project holds: one Section Header Block naming the capture and the
// pod instance, an Interface Description Block per instance, Enhanced Packet Blocks.

export const BLOCK = { SHB: 0x0a0d0d0a, IDB: 0x00000001, EPB: 0x00000006 } as const;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPT = { endofopt: 0, comment: 1 } as const;
const SHB_OPT = { hardware: 2, os: 3, userappl: 4 } as const;
const IF_OPT = { name: 2, description: 3, tsresol: 9, filter: 11, os: 12 } as const;
/** if_tsresol 9: timestamps count nanoseconds, as tcpdump's --time-stamp-precision=nano gives them */
export const NANO_RESOLUTION = 9;

export interface Option {
  code: number;
  value: Buffer;
}

const pad4 = (n: number): number => (n + 3) & ~3;
const text = (code: number, value: string): Option => ({ code, value: Buffer.from(value, 'utf8') });

function options(list: readonly Option[]): Buffer {
  if (list.length === 0) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  for (const { code, value } of list) {
    const head = Buffer.alloc(4);
    head.writeUInt16LE(code, 0);
    head.writeUInt16LE(value.length, 2);
    parts.push(head, value, Buffer.alloc(pad4(value.length) - value.length));
  }
  parts.push(Buffer.alloc(4)); // opt_endofopt
  return Buffer.concat(parts);
}

/** type, total length, body (padded), total length again */
function block(type: number, body: Buffer): Buffer {
  const length = 12 + pad4(body.length);
  const out = Buffer.alloc(length);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(length, 4);
  body.copy(out, 8);
  out.writeUInt32LE(length, length - 4);
  return out;
}

export interface SectionInfo {
  /** shb_comment lines: what capinfos and Wireshark show as the file's comments */
  comments: readonly string[];
  hardware?: string;
  os?: string;
  userappl?: string;
}

export function sectionHeader(info: SectionInfo): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
  fixed.writeUInt16LE(1, 4); // major
  fixed.writeUInt16LE(0, 6); // minor
  fixed.writeBigInt64LE(-1n, 8); // section length: not known while writing
  const opts = [
    ...info.comments.map((c) => text(OPT.comment, c)),
    ...(info.hardware ? [text(SHB_OPT.hardware, info.hardware)] : []),
    ...(info.os ? [text(SHB_OPT.os, info.os)] : []),
    ...(info.userappl ? [text(SHB_OPT.userappl, info.userappl)] : []),
  ];
  return block(BLOCK.SHB, Buffer.concat([fixed, options(opts)]));
}

export interface InterfaceInfo {
  linkType: number;
  snapLen: number;
  /** if_name, e.g. `web-0/<pod UID>` */
  name: string;
  description?: string;
  /** the capture filter actually run (if_filter, type 0: a libpcap expression) */
  filter?: string;
  comments?: readonly string[];
}

export function interfaceDescription(info: InterfaceInfo): Buffer {
  const fixed = Buffer.alloc(8);
  fixed.writeUInt16LE(info.linkType, 0);
  fixed.writeUInt32LE(info.snapLen, 4);
  const opts: Option[] = [
    ...(info.comments ?? []).map((c) => text(OPT.comment, c)),
    text(IF_OPT.name, info.name),
    ...(info.description ? [text(IF_OPT.description, info.description)] : []),
    { code: IF_OPT.tsresol, value: Buffer.from([NANO_RESOLUTION]) },
    ...(info.filter ? [{ code: IF_OPT.filter, value: Buffer.concat([Buffer.from([0]), Buffer.from(info.filter, 'utf8')]) }] : []),
  ];
  return block(BLOCK.IDB, Buffer.concat([fixed, options(opts)]));
}

export interface Packet {
  /** nanoseconds since the epoch */
  timestampNs: bigint;
  /** bytes on the wire (the data may be cut at the snap length) */
  originalLength: number;
  data: Buffer;
}

const EPB_HEAD = 28;

/** The size an Enhanced Packet Block of `dataLength` bytes takes. */
export const enhancedPacketSize = (dataLength: number): number => EPB_HEAD + pad4(dataLength) + 4;

export function enhancedPacket(interfaceId: number, packet: Packet): Buffer {
  const out = Buffer.alloc(enhancedPacketSize(packet.data.length));
  writeEnhancedPacket(out, 0, interfaceId, packet);
  return out;
}

/**
 * Writes the Enhanced Packet Block of `packet` into `out` at `offset` and returns the offset
 * after it: the writer packs a whole batch into one buffer, with no allocation per packet.
 */
export function writeEnhancedPacket(out: Buffer, offset: number, interfaceId: number, packet: Packet): number {
  const length = enhancedPacketSize(packet.data.length);
  const end = offset + length;
  out.writeUInt32LE(BLOCK.EPB, offset);
  out.writeUInt32LE(length, offset + 4);
  out.writeUInt32LE(interfaceId, offset + 8);
  out.writeUInt32LE(Number(packet.timestampNs >> 32n), offset + 12);
  out.writeUInt32LE(Number(packet.timestampNs & 0xffffffffn), offset + 16);
  out.writeUInt32LE(packet.data.length, offset + 20);
  out.writeUInt32LE(packet.originalLength, offset + 24);
  packet.data.copy(out, offset + EPB_HEAD);
  // padding zeroed: `out` may come from allocUnsafe
  out.fill(0, offset + EPB_HEAD + packet.data.length, end - 4);
  out.writeUInt32LE(length, end - 4);
  return end;
}

export type Block =
  | { type: 'section'; info: SectionInfo; raw: Buffer }
  | { type: 'interface'; info: InterfaceInfo; tsresol: number; raw: Buffer }
  | { type: 'packet'; interfaceId: number; packet: Packet; raw: Buffer }
  | { type: 'other'; blockType: number; raw: Buffer };

function parseOptions(buf: Buffer): Option[] {
  const out: Option[] = [];
  let at = 0;
  while (at + 4 <= buf.length) {
    const code = buf.readUInt16LE(at);
    const length = buf.readUInt16LE(at + 2);
    if (code === OPT.endofopt) break;
    out.push({ code, value: buf.subarray(at + 4, at + 4 + length) });
    at += 4 + pad4(length);
  }
  return out;
}

const utf8 = (opts: Option[], code: number): string[] => opts.filter((o) => o.code === code).map((o) => o.value.toString('utf8'));

/**
 * Reads pcapng blocks as they arrive: push bytes, take complete blocks. Only little-endian
 * sections (the ones this project writes) are understood; anything else is an error.
 */
export class BlockReader {
  private pending: Buffer = Buffer.alloc(0);
  /** per interface of the current section, the if_tsresol exponent of 10 */
  private resolutions: number[] = [];

  push(chunk: Buffer): Block[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const blocks: Block[] = [];
    let at = 0;
    while (this.pending.length - at >= 12) {
      const type = this.pending.readUInt32LE(at);
      if (type === BLOCK.SHB && this.pending.readUInt32LE(at + 8) !== BYTE_ORDER_MAGIC) throw new Error('not a little-endian pcapng section');
      const length = this.pending.readUInt32LE(at + 4);
      if (length < 12 || length % 4 !== 0) throw new Error(`malformed pcapng block of length ${length} at offset ${at}`);
      if (this.pending.length - at < length) break;
      blocks.push(this.parse(type, this.pending.subarray(at, at + length)));
      at += length;
    }
    this.pending = this.pending.subarray(at);
    return blocks;
  }

  /** bytes of an incomplete block still waiting for the rest */
  get buffered(): number {
    return this.pending.length;
  }

  private parse(type: number, raw: Buffer): Block {
    const body = raw.subarray(8, raw.length - 4);
    if (type === BLOCK.SHB) {
      this.resolutions = [];
      const opts = parseOptions(body.subarray(16));
      const one = (code: number) => utf8(opts, code)[0];
      return {
        type: 'section',
        raw,
        info: { comments: utf8(opts, OPT.comment), hardware: one(SHB_OPT.hardware), os: one(SHB_OPT.os), userappl: one(SHB_OPT.userappl) },
      };
    }
    if (type === BLOCK.IDB) {
      const opts = parseOptions(body.subarray(8));
      const tsresol = opts.find((o) => o.code === IF_OPT.tsresol)?.value[0] ?? 6;
      if (tsresol & 0x80) throw new Error('pcapng interfaces with a power-of-two timestamp resolution are not supported');
      this.resolutions.push(tsresol);
      const filter = opts.find((o) => o.code === IF_OPT.filter)?.value;
      return {
        type: 'interface',
        raw,
        tsresol,
        info: {
          linkType: body.readUInt16LE(0),
          snapLen: body.readUInt32LE(4),
          name: utf8(opts, IF_OPT.name)[0] ?? '',
          description: utf8(opts, IF_OPT.description)[0],
          filter: filter && filter[0] === 0 ? filter.subarray(1).toString('utf8') : undefined,
          comments: utf8(opts, OPT.comment),
        },
      };
    }
    if (type === BLOCK.EPB) {
      const interfaceId = body.readUInt32LE(0);
      const units = (BigInt(body.readUInt32LE(4)) << 32n) | BigInt(body.readUInt32LE(8));
      const resolution = this.resolutions[interfaceId] ?? 6;
      const captured = body.readUInt32LE(12);
      return {
        type: 'packet',
        raw,
        interfaceId,
        packet: {
          timestampNs: resolution <= 9 ? units * 10n ** BigInt(9 - resolution) : units / 10n ** BigInt(resolution - 9),
          originalLength: body.readUInt32LE(16),
          data: body.subarray(20, 20 + captured),
        },
      };
    }
    return { type: 'other', blockType: type, raw };
  }
}
