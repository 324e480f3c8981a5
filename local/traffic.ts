// Traffic generators run by plain `node` inside a traffic host's network namespace
// (see netns-host.ts); each prints one JSON line with what it did.
//   http <ip> <port> <count> <concurrency> <timeoutMs>   one TCP connection per request
//   udp  <ip> <port> <packets> <ratePps> <payloadBytes>   paced datagrams
// Only Node built-ins and erasable TypeScript: it runs without a loader.

import { createSocket } from 'node:dgram';
import { request } from 'node:http';

const [mode, ip = '', ...rest] = process.argv.slice(2);
const [port = 0, a = 0, b = 0, c = 0] = rest.map(Number);

function get(timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function http(count: number, concurrency: number, timeoutMs: number) {
  const bodies: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let started = 0;
  let ok = 0;
  const worker = async () => {
    while (started < count) {
      started++;
      try {
        const body = await get(timeoutMs);
        bodies[body] = (bodies[body] ?? 0) + 1;
        ok++;
      } catch (err) {
        const message = (err as Error).message;
        errors[message] = (errors[message] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  return { ok, failed: count - ok, bodies, errors };
}

/**
 * Sends `packets` datagrams at `ratePps`: every tick sends what is due by then, so timer
 * jitter changes the burst size, not the average rate. The socket stays unconnected so the
 * ICMP port-unreachable answers of a pod that does not listen fail no send.
 */
function udp(packets: number, ratePps: number, payloadBytes: number) {
  return new Promise<{ sent: number; failed: number; durationMs: number }>((resolve) => {
    const socket = createSocket('udp4');
    const payload = Buffer.alloc(payloadBytes, 0x61);
    const start = performance.now();
    let sent = 0;
    let failed = 0;
    const finish = () => {
      socket.close();
      resolve({ sent, failed, durationMs: performance.now() - start });
    };
    const tick = () => {
      const due = Math.min(packets, Math.floor(((performance.now() - start) * ratePps) / 1000));
      while (sent < due) {
        sent++;
        // callbacks run in order: the last one runs once every datagram reached the kernel
        const last = sent === packets;
        socket.send(payload, port, ip, (err) => {
          if (err) failed++;
          if (last) finish();
        });
      }
      if (sent < packets) setTimeout(tick, 2);
    };
    if (packets > 0) tick();
    else finish();
  });
}

const result = mode === 'http' ? await http(a, b, c) : mode === 'udp' ? await udp(a, b, c) : undefined;
if (!result) {
  process.stderr.write(`usage: traffic.ts http|udp <ip> <port> ...; got ${mode}\n`);
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
