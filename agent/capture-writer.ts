// The session's files, written by the agent from the packets tcpdump hands it on a pipe:
// self-describing pcapng (every file opens with the same header naming its capture and
// pod instance, so a file copied anywhere still says where it came from), rotation and
// ring, the packet limit, the exact stop, and a live feed for whoever streams the session.
// Nothing is written before the session's netns is verified: until then packets are held
// in memory, and a failed verification discards them without a trace on disk.

import { closeSync, ftruncateSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { enhancedPacketSize, interfaceDescription, sectionHeader, writeEnhancedPacket, type Packet } from '../pcapng/blocks.ts';
import { captureFileName, makeSessionDir } from './files.ts';

/** What a file says about itself: the capture, the pod instance, the filter run, the agent. */
export interface InstanceLabel {
  namespace: string;
  name: string;
  captureUID: string;
  generation: number;
  podName: string;
  podUID: string;
  node: string;
  podIPs: readonly string[];
  sessionId: string;
  /** the expression tcpdump runs */
  filter: string;
  snapLen: number;
  agentVersion: string;
}

export interface WriterLimits {
  /** start a new file when the next packet would make this one larger */
  fileSizeBytes?: number;
  /** with fileSizeBytes: keep only the newest this many files */
  fileCount?: number;
  maxPackets?: number;
}

export interface WriterCounts {
  packets: number;
  /** bytes of the session's files on disk now (a ring's removed files no longer count) */
  bytes: number;
  files: number;
}

/** A live reader of a session's packets; returns false when it cannot keep up (and is then dropped). */
export type FeedListener = (packet: Packet) => boolean;

/** The interface name of an instance in a pcapng file: pod name and UID, so a merged file still tells instances apart. */
export const interfaceName = (label: Pick<InstanceLabel, 'podName' | 'podUID'>): string => `${label.podName}/${label.podUID}`;

export function headerBlocks(label: InstanceLabel, link: { linkType: number; snapLen: number }): Buffer {
  const ips = label.podIPs.length > 0 ? label.podIPs.join(',') : 'none yet';
  return Buffer.concat([
    sectionHeader({
      comments: [
        `packetcapture.dev/capture: ${label.namespace}/${label.name} uid=${label.captureUID} generation=${label.generation}`,
        `packetcapture.dev/pod: ${label.namespace}/${label.podName} uid=${label.podUID} node=${label.node} ips=${ips}`,
        `packetcapture.dev/session: ${label.sessionId}`,
        `packetcapture.dev/filter: ${label.filter}`,
      ],
      os: 'Linux',
      userappl: `packet-capture-agent ${label.agentVersion}`,
    }),
    interfaceDescription({
      linkType: link.linkType,
      snapLen: link.snapLen,
      name: interfaceName(label),
      description: `pod ${label.namespace}/${label.podName} uid=${label.podUID} on node ${label.node}, ips ${ips}`,
      filter: label.filter,
    }),
  ]);
}

const FLUSH_BYTES = 256 * 1024;
const FLUSH_MS = 20;

/** Packets held before verification at most: a few ms of traffic at any rate the agent keeps up with. */
const HOLD_BYTES = 16 * 1024 * 1024;

export type WriterState = 'holding' | 'writing' | 'failed' | 'closed';

export class CaptureWriter {
  private state: WriterState = 'holding';
  private held: Packet[] = [];
  private heldBytes = 0;
  private header: Buffer | undefined;
  private fd: number | undefined;
  private sequence = 0;
  private fileBytes = 0;
  private readonly files: { name: string; bytes: number }[] = [];
  private readonly listeners = new Set<FeedListener>();
  private readonly watchers = new Set<{ verified?(): void; closed?(): void }>();
  private cutNs: bigint | undefined;
  private batch: { packets: Packet[]; bytes: number } = { packets: [], bytes: 0 };
  private flushTimer: NodeJS.Timeout | undefined;
  private newestNs = 0n;
  private limitReached = false;
  packets = 0;
  /** packets that arrived after the stop instant, or past maxPackets, or beyond the hold: never written */
  discarded = 0;

  constructor(
    readonly dir: string,
    readonly label: InstanceLabel,
    private readonly limits: WriterLimits,
    private readonly hooks: {
      /** maxPackets written: the session stops tcpdump */
      onLimit?(): void;
      /** the first packet that could not be written (ENOSPC, EIO, ...): the session ends with it */
      onWriteError?(err: NodeJS.ErrnoException): void;
    } = {},
  ) {}

  /** Packets from tcpdump, in arrival order, with the link type of its stream. */
  push(packets: readonly Packet[], link: { linkType: number; snapLen: number }): void {
    if (this.state === 'closed' || this.state === 'failed') return;
    this.header ??= headerBlocks(this.label, link);
    for (const packet of packets) {
      if (packet.timestampNs > this.newestNs) this.newestNs = packet.timestampNs;
      if (this.state === 'holding') {
        if (this.heldBytes + packet.data.length > HOLD_BYTES) this.discarded++;
        else {
          this.held.push(packet);
          this.heldBytes += packet.data.length;
        }
        continue;
      }
      this.writeOne(packet);
    }
    this.flushSoon();
  }

  // Packets reach the disk in writes of up to FLUSH_BYTES or every FLUSH_MS, not one write
  // per pipe read: under load a read holds a few packets, and a syscall each is what the
  // agent would spend its time on. A stop, a rotation and close write at once.
  private flushSoon(): void {
    if (this.state !== 'writing' || this.batch.packets.length === 0) return;
    if (this.batch.bytes >= FLUSH_BYTES) return void this.flush();
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      if (this.state === 'writing') this.flush();
    }, FLUSH_MS);
  }

  /** The netns is proven: create the directory, write what was held, write from now on. */
  verified(): void {
    if (this.state !== 'holding') return;
    this.state = 'writing';
    const { captureUID, generation, podUID, podName } = this.label;
    makeSessionDir(this.dir, { captureUID, generation, podUID, podName });
    // watchers first: a live reader gets the packets held during verification too
    for (const watcher of this.watchers) watcher.verified?.();
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const packet of held) this.writeOne(packet);
    if (this.state === 'writing') this.flush();
  }

  /** Told when the writer starts writing (its netns proven) and when it closes. Returns the unsubscribe. */
  watch(watcher: { verified?(): void; closed?(): void }): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  /** Packets whose timestamp is after `stopNs` are not written; those before still are, as they arrive. */
  cut(stopNs: bigint): void {
    if (this.cutNs === undefined || stopNs < this.cutNs) this.cutNs = stopNs;
  }

  /** Whether a packet after the cut has arrived, so every packet before it has (tcpdump delivers in order). */
  get pastCut(): boolean {
    return this.cutNs !== undefined && this.newestNs > this.cutNs;
  }

  /** Follow the packets written from now on. Returns the unsubscribe. */
  follow(listener: FeedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get counts(): WriterCounts {
    return { packets: this.packets, bytes: this.files.reduce((sum, f) => sum + f.bytes, 0), files: this.files.length };
  }

  get writing(): boolean {
    return this.state === 'writing';
  }

  /** No more packets; an unverified writer leaves nothing behind. */
  close(): WriterCounts {
    if (this.state === 'holding') this.held = [];
    if (this.state === 'writing') this.flush();
    const wasOpen = this.state !== 'closed';
    this.state = 'closed';
    this.closeFile();
    this.listeners.clear();
    if (wasOpen) for (const watcher of this.watchers) watcher.closed?.();
    this.watchers.clear();
    return this.counts;
  }

  private writeOne(packet: Packet): void {
    if (this.state !== 'writing') return;
    if (this.limitReached || (this.cutNs !== undefined && packet.timestampNs > this.cutNs)) {
      this.discarded++;
      return;
    }
    const size = enhancedPacketSize(packet.data.length);
    const fileBytes = this.fileBytes + this.batch.bytes;
    if (this.fd === undefined || (this.limits.fileSizeBytes !== undefined && fileBytes > this.header!.length && fileBytes + size > this.limits.fileSizeBytes)) {
      if (!this.flush()) return;
      try {
        this.nextFile();
      } catch (err) {
        return this.failed(err as NodeJS.ErrnoException);
      }
    }
    this.batch.packets.push(packet);
    this.batch.bytes += size;
    if (this.limits.maxPackets !== undefined && this.packets + this.batch.packets.length >= this.limits.maxPackets) {
      this.limitReached = true;
      this.hooks.onLimit?.();
    }
  }

  // One write, into one buffer, per pipe chunk: at 100k packets/s a syscall or an allocation
  // per packet is what the agent would spend its time on.
  // Returns false when the write failed; what reached the disk ends on a whole block.
  private flush(): boolean {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const { cutNs } = this;
    // a cut that came while these waited applies to them too
    const batched = this.batch.packets;
    const packets = cutNs === undefined ? batched : batched.filter((p) => p.timestampNs <= cutNs);
    this.discarded += batched.length - packets.length;
    this.batch = { packets: [], bytes: 0 };
    if (packets.length === 0) return true;
    const bytes = packets.reduce((sum, p) => sum + enhancedPacketSize(p.data.length), 0);
    const buf = Buffer.allocUnsafe(bytes);
    let end = 0;
    for (const packet of packets) end = writeEnhancedPacket(buf, end, 0, packet);
    let at = 0;
    try {
      while (at < buf.length) at += writeSync(this.fd!, buf, at, buf.length - at);
    } catch (err) {
      let whole = 0;
      let kept = 0;
      while (kept < packets.length && whole + enhancedPacketSize(packets[kept]!.data.length) <= at) whole += enhancedPacketSize(packets[kept++]!.data.length);
      this.record(whole, packets.slice(0, kept));
      this.failed(err as NodeJS.ErrnoException);
      return false;
    }
    this.record(buf.length, packets);
    return true;
  }

  private record(bytes: number, written: readonly Packet[]): void {
    this.fileBytes += bytes;
    this.files.at(-1)!.bytes = this.fileBytes;
    this.packets += written.length;
    for (const packet of written) for (const listener of this.listeners) if (!listener(packet)) this.listeners.delete(listener);
  }

  private writeAll(buf: Buffer): void {
    let at = 0;
    while (at < buf.length) at += writeSync(this.fd!, buf, at, buf.length - at);
    this.fileBytes += buf.length;
    this.files.at(-1)!.bytes = this.fileBytes;
  }

  private nextFile(): void {
    this.closeFile();
    this.sequence++;
    const name = captureFileName(this.sequence);
    this.fd = openSync(join(this.dir, name), 'wx', 0o600);
    this.files.push({ name, bytes: 0 });
    this.fileBytes = 0;
    this.writeAll(this.header!);
    const keep = this.limits.fileSizeBytes !== undefined ? this.limits.fileCount : undefined;
    while (keep !== undefined && this.files.length > keep) {
      const oldest = this.files.shift()!;
      unlinkSync(join(this.dir, oldest.name));
    }
  }

  private closeFile(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  private failed(err: NodeJS.ErrnoException): void {
    // closed for packets; close() still follows and tells the watchers
    this.state = 'failed';
    // a block cut short would make the whole file look truncated to tshark
    if (this.fd !== undefined) {
      try {
        ftruncateSync(this.fd, this.fileBytes);
      } catch {
        // the file keeps its partial block; readers stop at it
      }
    }
    this.closeFile();
    this.hooks.onWriteError?.(err);
  }
}
