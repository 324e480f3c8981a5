import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';

export interface OpsServer {
  server: Server;
  port: number;
  registry: Registry;
  close(): Promise<void>;
}

/**
 * /healthz (the process is alive), /readyz (its watches have synced) and /metrics, and
 * nothing else: capture data has a port of its own (agent/data-server.ts). One per process.
 */
export async function startOpsServer(opts: {
  port: number;
  host?: string;
  registry?: Registry;
  ready: () => boolean;
}): Promise<OpsServer> {
  const registry = opts.registry ?? new Registry();
  collectDefaultMetrics({ register: registry });
  const server = createServer(async (req, res) => {
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/healthz') return void res.end('ok');
      if (path === '/readyz') {
        const ok = opts.ready();
        res.statusCode = ok ? 200 : 503;
        return void res.end(ok ? 'ok' : 'not ready');
      }
      if (path === '/metrics') {
        res.setHeader('content-type', registry.contentType);
        return void res.end(await registry.metrics());
      }
      res.statusCode = 404;
      res.end('not found');
    } catch (err) {
      res.statusCode = 500;
      res.end(String(err));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', resolve);
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    registry,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
