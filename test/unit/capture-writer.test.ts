// The agent's writer on a real directory: what reaches disk, when, and in which files.

import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CaptureWriter, headerBlocks, type InstanceLabel } from '../../agent/capture-writer.ts';
import { readSessionMeta } from '../../agent/files.ts';
import { writerLimits } from '../../agent/sessions.ts';
import { BlockReader, type Block, type Packet } from '../../pcapng/blocks.ts';

const LINK = { linkType: 276, snapLen: 262144 };
const LABEL: InstanceLabel = {
  namespace: 'shop',
  name: 'web',
  captureUID: 'pc-1',
  generation: 3,
  podName: 'web-0',
  podUID: 'aaaaaaaa-0000-0000-0000-000000000001',
  node: 'node-a',
  podIPs: ['10.0.0.5'],
  sessionId: 'g3-aaaaaaaa-x',
  filter: 'not link[10] == 3',
  snapLen: 262144,
  agentVersion: '1.2.3',
};
const T0 = 1_700_000_000_000_000_000n;
const packet = (i: number, bytes = 100): Packet => ({ timestampNs: T0 + BigInt(i) * 1000n, originalLength: bytes, data: Buffer.alloc(bytes, i) });
const packets = (n: number, bytes = 100) => Array.from({ length: n }, (_, i) => packet(i, bytes));

let root: string;
let dir: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'pc-writer-'));
  dir = join(root, 'shop', 'web', LABEL.podUID, LABEL.sessionId);
});
afterEach(() => rm(root, { recursive: true, force: true }));

async function blocksOf(file: string): Promise<Block[]> {
  return new BlockReader().push(await readFile(join(dir, file)));
}
const packetsIn = (blocks: Block[]) => blocks.filter((b) => b.type === 'packet');

describe('CaptureWriter', () => {
  it('keeps nothing on disk until the netns is verified, then writes the held packets first', async () => {
    const writer = new CaptureWriter(dir, LABEL, {});
    writer.push(packets(3), LINK);
    expect(existsSync(dir)).toBe(false);
    writer.verified();
    writer.push([packet(3)], LINK);
    writer.close();
    expect(await readdir(dir)).toEqual(['capture-1.pcapng', 'session.json']);
    expect(await readSessionMeta(dir)).toEqual({ captureUID: 'pc-1', generation: 3, podUID: LABEL.podUID, podName: 'web-0' });
    const blocks = await blocksOf('capture-1.pcapng');
    expect(packetsIn(blocks).map((b) => b.type === 'packet' && b.packet.timestampNs)).toEqual([0, 1, 2, 3].map((i) => T0 + BigInt(i) * 1000n));
  });

  it('a writer closed before verification leaves no directory, no file and no count', () => {
    const writer = new CaptureWriter(dir, LABEL, {});
    writer.push(packets(5), LINK);
    expect(writer.close()).toEqual({ packets: 0, bytes: 0, files: 0 });
    expect(existsSync(dir)).toBe(false);
  });

  it('every file opens with the header naming the capture, the pod instance, the filter and the agent', async () => {
    const writer = new CaptureWriter(dir, LABEL, {});
    writer.verified();
    writer.push(packets(1), LINK);
    writer.close();
    const [section, iface] = await blocksOf('capture-1.pcapng');
    expect(section).toMatchObject({
      type: 'section',
      info: {
        comments: [
          'packetcapture.dev/capture: shop/web uid=pc-1 generation=3',
          `packetcapture.dev/pod: shop/web-0 uid=${LABEL.podUID} node=node-a ips=10.0.0.5`,
          'packetcapture.dev/session: g3-aaaaaaaa-x',
          'packetcapture.dev/filter: not link[10] == 3',
        ],
        userappl: 'packet-capture-agent 1.2.3',
      },
    });
    expect(iface).toMatchObject({ type: 'interface', tsresol: 9, info: { name: `web-0/${LABEL.podUID}`, linkType: 276, filter: 'not link[10] == 3' } });
  });

  it('rotates at fileSize and keeps a ring of fileCount files, each standing alone with the header', async () => {
    // an Enhanced Packet Block of 100 bytes takes 132: four packets per file
    const fileSizeBytes = headerBlocks(LABEL, LINK).length + 4 * 132;
    const writer = new CaptureWriter(dir, LABEL, { fileSizeBytes, fileCount: 3 });
    writer.verified();
    writer.push(packets(20), LINK);
    const counts = writer.close();
    const files = (await readdir(dir)).filter((f) => f.endsWith('.pcapng')).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    expect(files).toEqual(['capture-3.pcapng', 'capture-4.pcapng', 'capture-5.pcapng']);
    expect(counts).toMatchObject({ packets: 20, files: 3 });
    for (const file of files) {
      const blocks = await blocksOf(file);
      expect(blocks.slice(0, 2).map((b) => b.type)).toEqual(['section', 'interface']);
      expect(packetsIn(blocks)).toHaveLength(4);
      expect(blocks.reduce((n, b) => n + b.raw.length, 0)).toBe(fileSizeBytes);
    }
  });

  it('stops at exactly maxPackets and says so once', async () => {
    let limits = 0;
    const writer = new CaptureWriter(dir, LABEL, { maxPackets: 4 }, { onLimit: () => limits++ });
    writer.verified();
    writer.push(packets(3), LINK);
    writer.push(packets(5), LINK);
    expect(writer.close().packets).toBe(4);
    expect(limits).toBe(1);
    expect(packetsIn(await blocksOf('capture-1.pcapng'))).toHaveLength(4);
  });

  it('after a cut keeps every packet up to the stop instant and none after it', async () => {
    const writer = new CaptureWriter(dir, LABEL, {});
    writer.verified();
    writer.push(packets(3), LINK);
    writer.cut(T0 + 4000n);
    expect(writer.pastCut).toBe(false);
    // late delivery of earlier packets is still kept
    writer.push([packet(3), packet(4), packet(5), packet(6)], LINK);
    expect(writer.pastCut).toBe(true);
    writer.close();
    const kept = packetsIn(await blocksOf('capture-1.pcapng')).map((b) => b.type === 'packet' && b.packet.timestampNs);
    expect(kept).toEqual([0, 1, 2, 3, 4].map((i) => T0 + BigInt(i) * 1000n));
    expect(writer.discarded).toBe(2);
  });

  it('feeds written packets to live readers and drops a reader that cannot keep up, never the capture', async () => {
    const writer = new CaptureWriter(dir, LABEL, {});
    writer.verified();
    const fast: bigint[] = [];
    let slowSeen = 0;
    writer.follow((p) => (fast.push(p.timestampNs), true));
    writer.follow(() => ++slowSeen < 2);
    writer.push(packets(5), LINK);
    writer.close();
    expect(fast).toHaveLength(5);
    expect(slowSeen).toBe(2);
    expect(packetsIn(await blocksOf('capture-1.pcapng'))).toHaveLength(5);
  });
});

describe('writerLimits', () => {
  it('fileSize as bytes, fileCount only with a fileSize, maxPackets as is', () => {
    expect(writerLimits({ target: { podName: 'a' }, limits: { fileSize: '10Mi', fileCount: 5, maxPackets: 9 } })).toEqual({ fileSizeBytes: 10 * 1024 * 1024, fileCount: 5, maxPackets: 9 });
    expect(writerLimits({ target: { podName: 'a' }, limits: { fileCount: 5 } })).toEqual({});
    expect(() => writerLimits({ target: { podName: 'a' }, limits: { fileSize: 'lots' } })).toThrow(RangeError);
  });
});
