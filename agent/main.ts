// The node agent: watches in, tcpdump sessions and status entries out. Everything a
// session does to the node goes through the process layer (netns.ts, tcpdump.ts,
// files.ts); this file only wires it to the streams and keeps the node tidy.

import { resolve as resolvePath } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { firstValueFrom, ReplaySubject, share, tap, type Observable, type Subscription } from 'rxjs';
import { DEFAULT_DATA_DIR, type PacketCapture } from '../crds/packetcapture.ts';
import { startOpsServer, type OpsServer } from '../kube/health.ts';
import type { Logger } from '../kube/log.ts';
import { watchSnapshots, type Snapshot } from '../kube/watch.ts';
import { readDataCaBundle } from '../apiserver/data-ca.ts';
import { nodeCaptures } from './capture-scope.ts';
import { CaptureWriter } from './capture-writer.ts';
import { startDataServer, type DataServer } from './data-server.ts';
import { enforceDiskCap, pruneDeleted } from './files.ts';
import { isCapturable, type Pod } from './identity.ts';
import { isTarget } from '../controller/targets.ts';
import { LiveFeeds } from './live-feeds.ts';
import { startAgentLease, type AgentLease } from './lease.ts';
import { AgentMetrics } from './metrics.ts';
import { findPodNetns, holdNetns, recheckPodNetns } from './netns.ts';
import { processIdentityNow, reapStale, RunningFile, sessionMark } from './reaper.ts';
import { DATA_CERT_ANNOTATION, DATA_URL_ANNOTATION, filesRoute } from './serve.ts';
import { SessionStatusWriter } from './session-status.ts';
import { sessionUpdates, type SessionDeps, type SessionTiming } from './sessions.ts';
import { streamRoute } from './stream.ts';
import { compileFilter, startTcpdump } from './tcpdump.ts';
import pkg from '../package.json' with { type: 'json' };

export interface AgentOptions {
  kubeConfig: KubeConfig;
  nodeName: string;
  dataDir?: string;
  /** namespace of the agent presence Lease */
  namespace: string;
  /** /healthz, /readyz and /metrics; 0 picks a free port */
  metricsPort: number;
  /** capture files and streams, mutual TLS, for the packet-capture API only (default 0: a free port) */
  dataPort?: number;
  /** where the data CA's ConfigMap is (apiserver/data-ca.ts); default: `namespace` */
  trustNamespace?: string;
  /** how often the data CA is re-read and the data port's certificate checked (default 60 s) */
  trustRefreshMs?: number;
  procRoot?: string;
  log: Logger;
  /** files of a deleted capture are kept this long (default 24 h) */
  retentionMs?: number;
  /** ended sessions are removed, oldest first, while the data dir holds more than this */
  diskCapBytes?: number;
  /** how often retention and the disk cap run (default 60 s) */
  housekeepingMs?: number;
  /** re-derive everything from the current snapshots this often (default 30 s) */
  resyncMs?: number;
  /** a watch silent this long, not even a bookmark, is re-listed (default 90 s: kube/watch.ts) */
  watchSilentMs?: number;
  timing?: Partial<SessionTiming>;
  /** status progress writes per capture at most this often (default 30 s: PROGRESS_THROTTLE_MS) */
  statusThrottleMs?: number;
  leaseRenewMs?: number;
  /** the address the packet-capture API reaches this agent's data port at (default: POD_IP, else loopback) */
  advertiseAddress?: string;
}

export interface AgentHandle {
  /** resolves when both watches have delivered their first complete list */
  ready: Promise<void>;
  /** the port /healthz, /readyz and /metrics listen on */
  port: number;
  /** the data port (files and streams, mutual TLS) */
  dataPort: number;
  metrics: AgentMetrics;
  /** ends every session (AgentShutdown), waits for every tcpdump to exit, writes the final status */
  stop(reason?: string): Promise<void>;
}

/** The version the agent's files name as their writer. */
const AGENT_VERSION = pkg.version;

export async function runAgent(opts: AgentOptions): Promise<AgentHandle> {
  const node = opts.nodeName;
  const dataDir = resolvePath(opts.dataDir ?? DEFAULT_DATA_DIR);
  const procRoot = opts.procRoot ?? '/proc';
  const log = 'node' in opts.log.bindings() ? opts.log : opts.log.child({ node });
  const kc = opts.kubeConfig;

  // Before any new tcpdump: whatever a previous agent process left running is stopped.
  const reaped = await reapStale(dataDir, { procRoot, log });

  const share1 = <T>(source: Observable<T>) => source.pipe(share({ connector: () => new ReplaySubject<T>(1), resetOnRefCountZero: true }));
  const resyncMs = opts.resyncMs ?? 30_000;
  const silentMs = opts.watchSilentMs;
  const pods$ = share1(watchSnapshots<Pod>(kc, { path: '/api/v1/pods', fieldSelector: `spec.nodeName=${node}`, resyncMs, silentMs, log }));
  let localPods: Snapshot<Pod> = new Map();
  const mayConcern = (c: PacketCapture) => [...localPods.values()].some((pod) => isCapturable(pod, node) && isTarget(c, pod));
  const captures$ = share1(nodeCaptures(kc, { node, resyncMs, silentMs, log, mayConcern }));

  const status = new SessionStatusWriter({ kubeConfig: kc, node, log, throttleMs: opts.statusThrottleMs });
  const metrics = new AgentMetrics({ statusWrites: () => status.writes });
  metrics.reaped.inc(reaped.length);
  const running = new RunningFile(dataDir, log);
  // after stop$, the session pipeline ends once every tcpdump has exited and its last entry is out
  const sessionsEnded = new ReplaySubject<void>(1);
  const feeds = new LiveFeeds();
  const liveDirs = new Map<string, string>();
  let latestCaptures: Snapshot<PacketCapture> | undefined;
  let podsSynced = false;

  const deps: SessionDeps = {
    dataDir,
    log,
    timing: opts.timing,
    findNetns: (podUID) => findPodNetns(podUID, { procRoot }),
    checkNetns: (podUID, captured) => recheckPodNetns(podUID, captured, { procRoot }),
    holdNetns: (podUID, lookup) => holdNetns(podUID, lookup, { procRoot }),
    compileFilter: (expression, netns) => compileFilter(expression, { netns }),
    agentVersion: AGENT_VERSION,
    writer: (request) => {
      const writer = new CaptureWriter(request.dir, request.label, request.limits, request);
      feeds.add(writer);
      return writer;
    },
    start: async (request) => {
      const { identity: id } = request;
      let pid: number | undefined;
      const tcpdump = await startTcpdump({
        netns: request.netns,
        argv: request.argv,
        sink: request.writer,
        mark: sessionMark(dataDir, request.sessionId),
        log: request.log,
        // recorded while tcpdump still starts: a record for a process that never captured costs nothing
        onSpawn: (spawned) => {
          pid = spawned;
          const started = processIdentityNow(spawned, procRoot);
          if (started) {
            void running.add({ pid: spawned, startTicks: started.startTicks, sessionId: request.sessionId, namespace: id.namespace, name: id.name, pcUID: id.pcUID, podUID: id.podUID, dir: request.dir });
          }
        },
      }).catch((err: unknown) => {
        if (pid !== undefined) void running.remove(pid);
        throw err;
      });
      void tcpdump.exited.then(() => running.remove(tcpdump.pid));
      return tcpdump;
    },
  };

  const subscriptions: Subscription[] = [];
  // The status writer sees every capture snapshot before the sessions derived from it, so
  // it has adopted this node's earlier entries before a new one arrives.
  subscriptions.push(
    captures$.subscribe((captures) => {
      latestCaptures = captures;
      status.observe(captures);
    }),
  );
  subscriptions.push(
    pods$.subscribe((pods) => {
      localPods = pods;
      podsSynced = true;
    }),
  );

  // replays the stop to a pipeline that starts again after it, so that one starts nothing
  const stop$ = new ReplaySubject<void>(1);
  subscriptions.push(
    sessionUpdates(captures$, pods$, node, stop$, deps, {
      delayMs: 1000,
      onError: (err) => log.error({ err: String(err) }, 'session pipeline failed; its sessions were stopped, starting again'),
    }).pipe(tap({ finalize: () => sessionsEnded.next() })).subscribe((update) => {
      metrics.observe(update);
      const { session } = update;
      if (session.state === 'Running' || session.state === 'Pending') liveDirs.set(session.id, session.path ?? '');
      else liveDirs.delete(session.id);
      status.update(update);
    }),
  );

  const housekeeping = setInterval(() => void keepTidy(), opts.housekeepingMs ?? 60_000);
  const keepTidy = async () => {
    if (!latestCaptures) return;
    try {
      const live = new Map([...latestCaptures.values()].map((c) => [`${c.metadata.namespace}/${c.metadata.name}`, c.metadata.uid]));
      const pruned = await pruneDeleted(dataDir, live, { keepMs: opts.retentionMs ?? 24 * 3600_000 });
      if (pruned.length > 0) log.info({ removed: pruned }, 'removed files of deleted captures');
      if (opts.diskCapBytes !== undefined) {
        const { removed, bytes } = await enforceDiskCap(dataDir, opts.diskCapBytes, new Set(liveDirs.values()));
        if (removed.length > 0) log.warn({ removed, bytes, capBytes: opts.diskCapBytes }, 'disk cap reached, removed the oldest ended sessions');
      }
    } catch (err) {
      log.warn({ err: String(err) }, 'housekeeping of the data dir failed');
    }
  };

  const ready = Promise.all([firstValueFrom(captures$), firstValueFrom(pods$)]).then(() => undefined);
  let server: OpsServer | undefined;
  let data: DataServer;
  // bound below: the data port publishes a renewed certificate through the Lease, which names the port
  let lease: AgentLease | undefined;
  try {
    server = await startOpsServer({ port: opts.metricsPort, registry: metrics.registry, ready: () => latestCaptures !== undefined && podsSynced });
    const trustNamespace = opts.trustNamespace ?? opts.namespace;
    data = await startDataServer({
      port: opts.dataPort ?? 0,
      advertiseAddress: opts.advertiseAddress ?? process.env.POD_IP ?? '127.0.0.1',
      node,
      routes: [filesRoute(dataDir), streamRoute(feeds, node)],
      trust: () => readDataCaBundle(kc, trustNamespace),
      publish: async () => {
        if (!(await lease?.renewNow())) throw new Error('cannot publish the renewed certificate on the agent lease');
      },
      refreshMs: opts.trustRefreshMs,
      log,
    });
  } catch (err) {
    subscriptions.forEach((s) => s.unsubscribe());
    clearInterval(housekeeping);
    await server?.close();
    throw err;
  }
  const ops = server;
  // after the servers, whose address and certificate the Lease tells the packet-capture API
  lease = startAgentLease({
    kubeConfig: kc,
    node,
    namespace: opts.namespace,
    log,
    renewMs: opts.leaseRenewMs,
    annotations: () => ({ [DATA_URL_ANNOTATION]: data.url, [DATA_CERT_ANNOTATION]: data.pinned() }),
  });
  const presence = lease;
  log.info({ dataDir, port: ops.port, dataPort: data.port, reaped: reaped.length }, 'agent started');

  let stopping: Promise<void> | undefined;
  const stop = (reason = 'stop requested') =>
    (stopping ??= (async () => {
      log.info({ reason, sessions: liveDirs.size }, 'agent stopping, ending every session');
      clearInterval(housekeeping);
      stop$.next();
      await firstValueFrom(sessionsEnded);
      await status.flush();
      status.stop();
      presence.stop();
      subscriptions.forEach((s) => s.unsubscribe());
      await Promise.all([ops.close(), data.close()]);
      log.info({ reason }, 'agent stopped');
    })());

  return { ready, port: ops.port, dataPort: data.port, metrics, stop };
}
