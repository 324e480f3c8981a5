// Traffic-source hosts: a network namespace on the simulated pods' bridge, with an address
// of its own, from which tests and benchmarks reach pods. Everything stays on the bridge
// in 10.244.0.0/16, which has no way off the machine (see fabric.ts). The machine itself
// reaches pods too, from HOST_FABRIC_ADDRESS; a host is a source apart from it.

import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  acquireFabric,
  attachToFabric,
  complete,
  createNetns,
  currentOwner,
  destroySandbox,
  HOST_FABRIC_ADDRESS,
  inNetns,
  netnsPath,
  NETNS_PREFIX,
  releaseFabric,
  run,
  runnableScript,
  type SandboxRecord,
} from './fabric.ts';

const TRAFFIC_SCRIPT = fileURLToPath(new URL('./traffic.ts', import.meta.url));

/** Conventional home of traffic hosts; node subnets use 10.244.0-249.0/24. */
export const HOST_SUBNET_PREFIX = '10.244.250.';

export interface Host {
  readonly name: string;
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly ip: string;
  /** Kills what runs in the namespace and removes it; safe to call twice. */
  destroy(): Promise<void>;
}

/** Whether `address` is a usable host address in 10.244.0.0/16. */
export function isFabricAddress(address: string): boolean {
  const m = /^10\.244\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  return !!m && Number(m[1]) <= 255 && Number(m[2]) >= 1 && Number(m[2]) <= 254;
}

export async function createHost(name: string, ip: string): Promise<Host> {
  if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(name)) {
    throw new Error(`host name ${JSON.stringify(name)} must be lowercase letters, digits and dashes`);
  }
  if (!isFabricAddress(ip)) throw new Error(`host address ${ip} is not inside 10.244.0.0/16`);
  if (ip === HOST_FABRIC_ADDRESS) throw new Error(`host address ${ip} is this machine's own on the fabric`);
  const netnsName = `${NETNS_PREFIX}host-${name}`;
  const record: SandboxRecord = {
    netns: netnsName,
    veth: `vh${createHash('sha256').update(netnsName).digest('hex').slice(0, 11)}`,
    owner: currentOwner(),
  };
  await acquireFabric();
  try {
    await createNetns(record);
    await attachToFabric(record, ip);
  } catch (err) {
    await destroySandbox(record).catch(() => undefined);
    await releaseFabric();
    throw err;
  }
  let destroyed: Promise<void> | undefined;
  return {
    name,
    netnsName,
    netnsPath: netnsPath(netnsName),
    ip,
    destroy: () => (destroyed ??= destroySandbox(record).finally(releaseFabric)),
  };
}

/** Runs `argv` in the host's namespace; resolves with its stdout, rejects if it fails. */
export const exec = (host: Host, argv: readonly string[]): Promise<string> => run('setpriv', inNetns(host.netnsName, argv));

/** Runs traffic.ts in the host's namespace; it prints its result as one JSON line. */
async function traffic<T>(host: Host, args: (string | number)[]): Promise<T> {
  const out = await exec(host, [process.execPath, await runnableScript(TRAFFIC_SCRIPT), ...args.map(String)]);
  return JSON.parse(out) as T;
}

export interface TcpResult {
  ok: number;
  failed: number;
  /** response body -> how many requests got it (a pod answers with its namespace, name and UID) */
  bodies: Record<string, number>;
  errors: Record<string, number>;
}

/** `count` HTTP GETs to targetIp:port, each on its own TCP connection. */
export async function tcpRequests(
  host: Host,
  targetIp: string,
  port: number,
  count: number,
  { concurrency = 4, timeoutMs = 5_000 }: { concurrency?: number; timeoutMs?: number } = {},
): Promise<TcpResult> {
  return traffic<TcpResult>(host, ['http', targetIp, port, count, concurrency, timeoutMs]);
}

/** ICMP echo: how many of `count` requests were answered (never rejects for lost replies). */
export async function ping(host: Host, ip: string, count: number): Promise<{ transmitted: number; received: number }> {
  const result = await complete('setpriv', inNetns(host.netnsName, ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '1', ip]));
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(result.stdout);
  if (!m) throw new Error(`ping ${ip} from ${host.name} failed: ${result.stderr.trim() || result.stdout.trim()}`);
  return { transmitted: Number(m[1]), received: Number(m[2]) };
}

export interface UdpFloodResult {
  /** datagrams handed to the socket */
  sent: number;
  /** of those, how many the socket refused */
  failed: number;
  durationMs: number;
}

export interface UdpFloodOptions {
  packets: number;
  ratePps: number;
  /** UDP payload size; default 64 bytes */
  payloadBytes?: number;
}

/** `packets` UDP datagrams to ip:port at `ratePps`. */
export async function udpFlood(
  host: Host,
  ip: string,
  port: number,
  { packets, ratePps, payloadBytes = 64 }: UdpFloodOptions,
): Promise<UdpFloodResult> {
  return traffic<UdpFloodResult>(host, ['udp', ip, port, packets, ratePps, payloadBytes]);
}
