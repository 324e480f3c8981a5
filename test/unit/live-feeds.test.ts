// The live feed of a capture: sessions join at verification and leave at close; a reader
// sees each as an instance, and a reader that cannot keep up is dropped, never the capture.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CaptureWriter, type InstanceLabel } from '../../agent/capture-writer.ts';
import { LiveFeeds, type FeedReader } from '../../agent/live-feeds.ts';

const LINK = { linkType: 276, snapLen: 262144 };
const label = (podUID: string, sessionId: string, name = 'web'): InstanceLabel => ({
  namespace: 'shop',
  name,
  captureUID: 'pc-1',
  generation: 1,
  podName: 'web-0',
  podUID,
  node: 'node-a',
  podIPs: ['10.0.0.5'],
  sessionId,
  filter: '',
  snapLen: 262144,
  agentVersion: 'test',
});
const packet = (i: number) => ({ timestampNs: BigInt(i), originalLength: 10, data: Buffer.alloc(10, i) });

let dir: string;
beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'pc-feeds-'))));
afterEach(() => rm(dir, { recursive: true, force: true }));

/** The writer writes (and feeds) in batches, at most a few ms after a push. */
const written = () => new Promise((resolve) => setTimeout(resolve, 50));

function recorder(limit = Infinity): FeedReader & { log: string[] } {
  const log: string[] = [];
  let packets = 0;
  return {
    log,
    instance: (l) => log.push(`instance ${l.podUID}`),
    packet: (l, p) => (log.push(`packet ${l.podUID} ${p.timestampNs}`), ++packets < limit),
    ended: (l) => log.push(`ended ${l.podUID}`),
    dropped: () => log.push('dropped'),
  };
}

describe('LiveFeeds', () => {
  it('follows a capture across a recreation: each verified session is an instance; unverified ones never show', async () => {
    const feeds = new LiveFeeds();
    const reader = recorder();
    feeds.follow('shop', 'web', reader);
    const other = new CaptureWriter(join(dir, 'o'), label('x', 's0', 'other'), {});
    feeds.add(other);
    other.verified();
    const a = new CaptureWriter(join(dir, 'a'), label('a', 's1'), {});
    const failed = new CaptureWriter(join(dir, 'f'), label('f', 's2'), {});
    feeds.add(a);
    feeds.add(failed);
    a.push([packet(1)], LINK); // held until verified, then written and fed
    a.verified();
    failed.close();
    other.push([packet(9)], LINK);
    a.close();
    const b = new CaptureWriter(join(dir, 'b'), label('b', 's3'), {});
    feeds.add(b);
    b.verified();
    b.push([packet(2)], LINK);
    await written();
    expect(reader.log).toEqual(['instance a', 'packet a 1', 'ended a', 'instance b', 'packet b 2']);
    expect(feeds.sessions('shop', 'web')).toBe(1);
  });

  it('a reader that joins late sees the running sessions; a slow one is dropped while the capture goes on', async () => {
    const feeds = new LiveFeeds();
    const a = new CaptureWriter(join(dir, 'a'), label('a', 's1'), {});
    feeds.add(a);
    a.verified();
    const slow = recorder(2);
    const fast = recorder();
    feeds.follow('shop', 'web', slow);
    feeds.follow('shop', 'web', fast);
    a.push([packet(1), packet(2), packet(3)], LINK);
    await written();
    a.push([packet(4)], LINK);
    await written();
    expect(slow.log).toEqual(['instance a', 'packet a 1', 'packet a 2', 'dropped']);
    expect(fast.log.filter((l) => l.startsWith('packet'))).toHaveLength(4);
    expect(a.close().packets).toBe(4);
  });
});
