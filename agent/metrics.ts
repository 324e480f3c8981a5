// The agent's Prometheus metrics, derived from the session updates it already emits.

import { Counter, Gauge, Registry } from 'prom-client';
import type { SessionStatus } from '../crds/packetcapture.ts';
import type { SessionUpdate } from './sessions.ts';

/**
 * How long a capture's drop series outlives its last session on this node: longer than any
 * scrape interval, so every Prometheus scraping the agent sees the final count before the
 * series goes and a node's series stay bounded by the captures it ran recently.
 */
export const DROPS_RETENTION_MS = 10 * 60_000;

type CaptureLabels = { capture_namespace: string; capture_name: string };

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly running = new Gauge({ name: 'packetcapture_agent_sessions_running', help: 'tcpdump sessions running now', registers: [this.registry] });
  private readonly pending = new Gauge({
    name: 'packetcapture_agent_sessions_pending',
    help: 'sessions waiting for their pod (e.g. NetnsNotFound)',
    registers: [this.registry],
  });
  private readonly started = new Counter({ name: 'packetcapture_agent_sessions_started_total', help: 'tcpdump sessions started', registers: [this.registry] });
  private readonly ended = new Counter({
    name: 'packetcapture_agent_sessions_ended_total',
    help: 'sessions ended, by end reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly failed = new Counter({
    name: 'packetcapture_agent_sessions_failed_total',
    help: 'sessions that could not capture, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly packets = new Counter({ name: 'packetcapture_agent_packets_total', help: 'packets written by tcpdump', registers: [this.registry] });
  private readonly bytes = new Counter({ name: 'packetcapture_agent_bytes_total', help: 'bytes of capture files written', registers: [this.registry] });
  readonly reaped = new Counter({
    name: 'packetcapture_agent_reaped_total',
    help: 'tcpdumps of a previous agent process found running at start-up and killed',
    registers: [this.registry],
  });
  private readonly droppedByKernel = new Counter({
    name: 'packetcapture_agent_packets_dropped_by_kernel_total',
    help: 'packets the kernel dropped because tcpdump did not read them in time, by capture',
    labelNames: ['capture_namespace', 'capture_name'],
    registers: [this.registry],
    collect: () => this.forgetIdleCaptures(),
  });

  private readonly seen = new Map<string, SessionStatus>();
  /** by "namespace/name": the sessions of that capture not yet Ended or Failed */
  private readonly liveSessions = new Map<string, Set<string>>();
  /** by "namespace/name": captures with no live session here, and since when */
  private readonly idleSince = new Map<string, { labels: CaptureLabels; at: number }>();
  private readonly now: () => number;

  constructor({ statusWrites, now = Date.now }: { statusWrites: () => number; now?: () => number }) {
    this.now = now;
    new Gauge({
      name: 'packetcapture_agent_status_writes',
      help: 'session status applies sent since the agent started',
      registers: [this.registry],
      collect() {
        this.set(statusWrites());
      },
    });
  }

  observe({ capture, session }: SessionUpdate): void {
    const before = this.seen.get(session.id);
    if (before?.state !== session.state) {
      if (before?.state === 'Running') this.running.dec();
      if (before?.state === 'Pending') this.pending.dec();
      if (session.state === 'Running') {
        this.running.inc();
        this.started.inc();
      }
      if (session.state === 'Pending') this.pending.inc();
      if (session.state === 'Ended') this.ended.inc({ reason: session.endReason ?? 'Unknown' });
      if (session.state === 'Failed') this.failed.inc({ reason: session.reason ?? 'Unknown' });
    }
    this.packets.inc(Math.max(0, (session.packets ?? 0) - (before?.packets ?? 0)));
    this.bytes.inc(Math.max(0, (session.bytes ?? 0) - (before?.bytes ?? 0)));
    const finished = session.state === 'Ended' || session.state === 'Failed';
    const labels = { capture_namespace: capture.namespace, capture_name: capture.name };
    // an increase of 0 still creates the series, so the first drops are an increase Prometheus sees
    this.droppedByKernel.inc(labels, Math.max(0, (session.droppedByKernel ?? 0) - (before?.droppedByKernel ?? 0)));
    this.trackCapture(labels, session.id, finished);
    if (finished) this.seen.delete(session.id);
    else this.seen.set(session.id, session);
  }

  private trackCapture(labels: CaptureLabels, sessionId: string, finished: boolean): void {
    const key = `${labels.capture_namespace}/${labels.capture_name}`;
    const live = this.liveSessions.get(key) ?? new Set<string>();
    if (finished) live.delete(sessionId);
    else live.add(sessionId);
    if (live.size > 0) {
      this.liveSessions.set(key, live);
      this.idleSince.delete(key);
    } else {
      this.liveSessions.delete(key);
      if (!this.idleSince.has(key)) this.idleSince.set(key, { labels, at: this.now() });
      // also here, not only at scrape time: an agent nobody scrapes must not grow either
      this.forgetIdleCaptures();
    }
  }

  private forgetIdleCaptures(): void {
    for (const [key, { labels, at }] of this.idleSince) {
      if (this.now() - at < DROPS_RETENTION_MS) continue;
      this.droppedByKernel.remove(labels);
      this.idleSince.delete(key);
    }
  }
}
