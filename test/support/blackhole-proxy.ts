// A TCP pass-through to the API server that can be told to black-hole: connections stay
// open and nothing comes back, the failure no error reports. A client behind it sees what
// a dropped flow looks like (a NAT or load balancer that forgot the connection, a
// partition without resets), and only its own timeouts can tell.

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export class BlackholeProxy {
  private readonly pairs = new Set<{ client: Socket; upstream?: Socket; dead: boolean }>();
  private holing = false;
  private server?: Server;
  port = 0;

  /** Connections accepted so far; a test can tell a client reconnected. */
  accepted = 0;

  async start(target: URL): Promise<void> {
    this.server = createServer((client) => {
      this.accepted++;
      const pair: { client: Socket; upstream?: Socket; dead: boolean } = { client, dead: this.holing };
      this.pairs.add(pair);
      client.on('error', () => client.destroy());
      client.on('close', () => {
        pair.upstream?.destroy();
        this.pairs.delete(pair);
      });
      // accepted but never answered; read and dropped, so the client's writes do not stall
      if (pair.dead) return void client.resume();
      const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
      pair.upstream = upstream;
      upstream.on('error', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      // forward while the pair is alive; once black-holed, bytes are dropped both ways
      client.on('data', (chunk: Buffer) => void (pair.dead || upstream.write(chunk)));
      upstream.on('data', (chunk: Buffer) => void (pair.dead || client.write(chunk)));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  /**
   * From now on nothing passes: open connections go silent both ways and new ones are
   * accepted and never answered. A connection black-holed stays so after `heal`, as a
   * forgotten flow does; only connections made after it reach the API server.
   */
  blackhole(): void {
    this.holing = true;
    for (const pair of this.pairs) pair.dead = true;
  }

  /** New connections are forwarded again. */
  heal(): void {
    this.holing = false;
  }

  async stop(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream?.destroy();
    }
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** The same credentials, reaching the API server through this proxy. */
  kubeConfig(kc: KubeConfig): KubeConfig {
    const proxied = new KubeConfig();
    proxied.loadFromOptions({
      clusters: kc.clusters.map((c) => ({ ...c, server: `https://127.0.0.1:${this.port}` })),
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
    });
    return proxied;
  }
}
