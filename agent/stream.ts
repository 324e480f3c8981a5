// GET /stream/<namespace>/<name>: a live pcapng stream of a capture's sessions on this
// node, one interface per pod instance (named `<pod>/<uid>`, as in the files), so a
// reader always knows which instance a packet came from. It goes on across recreations
// until the client goes away; a client that cannot keep up is disconnected, the capture
// never slowed.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Route } from './data-server.ts';
import { enhancedPacket, interfaceDescription, sectionHeader } from '../pcapng/blocks.ts';
import { interfaceName, type InstanceLabel } from './capture-writer.ts';
import type { LiveFeeds } from './live-feeds.ts';
import { LINUX_SLL2 } from './tcpdump.ts';

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
/** bytes a client may fall behind before it is cut off */
export const STREAM_BACKLOG_BYTES = 8 * 1024 * 1024;
export const PCAPNG_TYPE = 'application/x-pcapng';

/** Serves the live stream of one capture to one client until it disconnects. */
export function serveStream(feeds: LiveFeeds, namespace: string, name: string, node: string, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': PCAPNG_TYPE, 'cache-control': 'no-store' });
  res.write(sectionHeader({ comments: [`packetcapture.dev/capture: ${namespace}/${name}`, `packetcapture.dev/stream: node ${node}`], os: 'Linux', userappl: 'packet-capture-agent' }));
  const interfaces = new Map<string, number>();
  const send = (block: Buffer): boolean => {
    if (res.writableLength > STREAM_BACKLOG_BYTES) return false;
    res.write(block);
    return true;
  };
  const unfollow = feeds.follow(namespace, name, {
    instance: (label: InstanceLabel) => {
      if (interfaces.has(label.sessionId)) return;
      interfaces.set(label.sessionId, interfaces.size);
      send(
        interfaceDescription({
          linkType: LINUX_SLL2,
          snapLen: label.snapLen,
          name: interfaceName(label),
          description: `pod ${label.namespace}/${label.podName} uid=${label.podUID} on node ${label.node}, ips ${label.podIPs.join(',') || 'none yet'}, session ${label.sessionId}`,
          filter: label.filter,
        }),
      );
    },
    packet: (label, packet) => send(enhancedPacket(interfaces.get(label.sessionId)!, packet)),
    ended: () => undefined,
    dropped: () => res.destroy(),
  });
  req.on('close', unfollow);
  res.on('close', unfollow);
}

/** The /stream route over this node's live feeds. */
export function streamRoute(feeds: LiveFeeds, node: string): Route {
  return async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (!path.startsWith('/stream/')) return false;
    const segments = path.split('/').slice(2);
    if (req.method !== 'GET' || segments.length !== 2 || !segments.every((s) => SEGMENT.test(s))) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'expected GET /stream/<namespace>/<name>' }));
      return true;
    }
    serveStream(feeds, segments[0]!, segments[1]!, node, req, res);
    return true;
  };
}
