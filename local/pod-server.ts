// The process of a simulated pod, run by plain `node` inside the pod's network namespace:
// HTTP on TCP port 80 and the pod's other TCP container ports. UDP is left to the kernel
// (datagrams to the pod are dropped there, cheaply, even at flood rates). It answers with
// the pod's identity, so a client can tell which instance holds an IP.
// Prints "ready" once every port is bound; exits on SIGTERM.
// Only Node built-ins and erasable TypeScript: it runs without a loader.

import { createServer } from 'node:http';

const ports = (value: string | undefined): number[] => (value ? value.split(',').filter(Boolean).map(Number) : []);

const identity = JSON.stringify({
  namespace: process.env.POD_NAMESPACE,
  name: process.env.POD_NAME,
  uid: process.env.POD_UID,
});

const http = ports(process.env.TCP_PORTS).map(
  (port) =>
    new Promise<() => void>((resolve, reject) => {
      const server = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${identity}\n`);
      });
      server.once('error', reject);
      server.listen(port, '0.0.0.0', () => resolve(() => server.close()));
    }),
);

Promise.all(http).then(
  (closers) => {
    process.once('SIGTERM', () => {
      for (const close of closers) close();
      process.exit(0);
    });
    process.stdout.write('ready\n');
  },
  (err: Error) => {
    process.stderr.write(`pod-server: ${err.message}\n`);
    process.exit(1);
  },
);
