// The live packets of this node's sessions, by capture: what a stream of a capture reads.
// A session joins when its netns is proven (its writer starts writing) and leaves when
// its writer closes; a reader sees each session it was there for as one instance.

import type { Packet } from '../pcapng/blocks.ts';
import type { CaptureWriter, InstanceLabel } from './capture-writer.ts';

export interface FeedReader {
  /** a session of the capture started (or was running when the reader came) */
  instance(label: InstanceLabel): void;
  /** false when the reader cannot keep up: it is then dropped, never the capture */
  packet(label: InstanceLabel, packet: Packet): boolean;
  /** the session ended */
  ended(label: InstanceLabel): void;
  /** the reader was dropped for being slow */
  dropped(): void;
}

const keyOf = (label: Pick<InstanceLabel, 'namespace' | 'name'>) => `${label.namespace}/${label.name}`;

export class LiveFeeds {
  private readonly live = new Map<string, Set<CaptureWriter>>();
  private readonly readers = new Map<string, Set<FeedReader>>();
  private readonly unfollow = new Map<FeedReader, Map<CaptureWriter, () => void>>();

  /** A session's writer: it is on the feed from verification to close. */
  add(writer: CaptureWriter): void {
    const key = keyOf(writer.label);
    writer.watch({
      verified: () => {
        let writers = this.live.get(key);
        if (!writers) this.live.set(key, (writers = new Set()));
        writers.add(writer);
        for (const reader of this.readers.get(key) ?? []) this.attach(reader, writer);
      },
      closed: () => {
        // a writer closed before its netns was proven was never on the feed
        if (!this.live.get(key)?.has(writer)) return;
        this.live.get(key)!.delete(writer);
        if (this.live.get(key)?.size === 0) this.live.delete(key);
        for (const reader of this.readers.get(key) ?? []) {
          this.unfollow.get(reader)?.get(writer)?.();
          this.unfollow.get(reader)?.delete(writer);
          reader.ended(writer.label);
        }
      },
    });
  }

  /** Follows every session of the capture on this node, now and to come. Returns the unsubscribe. */
  follow(namespace: string, name: string, reader: FeedReader): () => void {
    const key = keyOf({ namespace, name });
    let readers = this.readers.get(key);
    if (!readers) this.readers.set(key, (readers = new Set()));
    readers.add(reader);
    this.unfollow.set(reader, new Map());
    for (const writer of this.live.get(key) ?? []) this.attach(reader, writer);
    return () => this.detach(key, reader);
  }

  /** sessions live for the capture now */
  sessions(namespace: string, name: string): number {
    return this.live.get(keyOf({ namespace, name }))?.size ?? 0;
  }

  private attach(reader: FeedReader, writer: CaptureWriter): void {
    reader.instance(writer.label);
    const stop = writer.follow((packet) => {
      if (reader.packet(writer.label, packet)) return true;
      // the writer forgets this listener on false; the reader loses every other session too
      queueMicrotask(() => {
        this.detach(keyOf(writer.label), reader);
        reader.dropped();
      });
      return false;
    });
    this.unfollow.get(reader)?.set(writer, stop);
  }

  private detach(key: string, reader: FeedReader): void {
    for (const stop of this.unfollow.get(reader)?.values() ?? []) stop();
    this.unfollow.delete(reader);
    this.readers.get(key)?.delete(reader);
    if (this.readers.get(key)?.size === 0) this.readers.delete(key);
  }
}
