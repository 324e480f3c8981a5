// The agent's Prometheus metrics, derived from the session updates it already emits.

import { Counter, Gauge, Registry } from 'prom-client';
import type { SessionStatus } from '../crds/packetcapture.ts';
import type { SessionUpdate } from './sessions.ts';

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

  private readonly seen = new Map<string, SessionStatus>();

  constructor({ statusWrites }: { statusWrites: () => number }) {
    new Gauge({
      name: 'packetcapture_agent_status_writes',
      help: 'session status applies sent since the agent started',
      registers: [this.registry],
      collect() {
        this.set(statusWrites());
      },
    });
  }

  observe({ session }: SessionUpdate): void {
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
    if (session.state === 'Ended' || session.state === 'Failed') this.seen.delete(session.id);
    else this.seen.set(session.id, session);
  }
}
