import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';

export type Route = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;

export interface OpsServer {
  server: Server;
  port: number;
  registry: Registry;
  close(): Promise<void>;
}

/**
 * /healthz (the process is alive), /readyz (its watches have synced) and /metrics, plus any
 * extra routes a component needs (the agent serves capture files here). One per process.
 */
export async function startOpsServer(opts: {
  port: number;
  host?: string;
  registry?: Registry;
  ready: () => boolean;
  routes?: Route[];
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
      for (const route of opts.routes ?? []) if (await route(req, res)) return;
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
