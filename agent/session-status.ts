// Session updates -> this node's status.sessions entries, by ONE writer. Each agent owns
// its node's entries (server-side apply with its own field manager, list-map keyed by id)
// and applies the full list every time: running ones plus the last SESSION_HISTORY ended
// ones per capture. Entries it leaves out are removed by the apply.

import type { KubeConfig } from '@kubernetes/client-node';
import {
  agentFieldManager,
  API_VERSION,
  GROUP,
  KIND,
  PLURAL,
  REASONS,
  SESSION_HISTORY,
  VERSION,
  type PacketCapture,
  type SessionStatus,
} from '../crds/packetcapture.ts';
import type { Logger } from '../kube/log.ts';
import { StatusWriter, type StatusTarget } from '../kube/status.ts';
import type { Snapshot } from '../kube/watch.ts';
import type { CaptureRef, SessionUpdate } from './sessions.ts';

const isLive = (s: SessionStatus): boolean => s.state === 'Pending' || s.state === 'Running';

/**
 * This node's entries of a capture as the agent finds them when it starts: an entry still
 * Pending or Running belongs to a previous agent process, whose tcpdump is gone (killed
 * with it, or reaped): it ended with AgentRestart.
 */
export function adoptEntries(capture: PacketCapture, node: string, now: string): SessionStatus[] {
  return (capture.status?.sessions ?? [])
    .filter((s) => s.nodeName === node)
    .map((s) => {
      if (!isLive(s)) return s;
      const { reason: _reason, ...rest } = s;
      return {
        ...rest,
        state: 'Ended' as const,
        endReason: REASONS.AgentRestart,
        endTime: now,
        message: `the agent on ${node} restarted; tcpdump was stopped with it`,
      };
    });
}

/** Live entries and the newest SESSION_HISTORY finished ones, oldest first. */
export function retainedEntries(entries: Iterable<SessionStatus>, history = SESSION_HISTORY): SessionStatus[] {
  const all = [...entries];
  const finished = all
    .filter((s) => !isLive(s))
    .sort((a, b) => compare(a.endTime ?? '', b.endTime ?? '') || compare(a.id, b.id))
    .slice(-history);
  return inStatusOrder([...finished, ...all.filter(isLive)]);
}

/** Chronological, sessions that have not started last: one order for what we write and what we read back. */
export function inStatusOrder(entries: SessionStatus[]): SessionStatus[] {
  const key = (s: SessionStatus) => s.startTime ?? s.endTime ?? '~';
  return [...entries].sort((a, b) => compare(key(a), key(b)) || compare(a.id, b.id));
}

/** Code-point order: RFC 3339 times in UTC sort as strings, and '~' after all of them. */
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const capturePath = (namespace: string, name: string) => `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}/${name}`;

interface CaptureEntries {
  target: StatusTarget;
  entries: Map<string, SessionStatus>;
  /** this node's entries in the latest snapshot */
  observed: SessionStatus[];
  lastWrite: number;
  writing: boolean;
  /** a change arrived while writing or before the throttle allowed a write */
  dirty: boolean;
  urgent: boolean;
  timer?: NodeJS.Timeout;
}

export interface SessionStatusOptions {
  kubeConfig: KubeConfig;
  node: string;
  log: Logger;
  /** progress (packets, bytes) is written at most this often per capture; state changes at once */
  throttleMs?: number;
  /** after a failed write */
  retryMs?: number;
}

/**
 * Folds session updates into per-capture entry lists and applies them to /status. Feed it
 * every capture snapshot (`observe`) before the session updates derived from it (`update`).
 */
export class SessionStatusWriter {
  private readonly captures = new Map<string, CaptureEntries>();
  private readonly writer: StatusWriter<{ sessions: SessionStatus[] }>;
  private readonly throttleMs: number;
  private readonly retryMs: number;
  private latest: Snapshot<PacketCapture> = new Map();
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly opts: SessionStatusOptions) {
    this.writer = new StatusWriter(opts.kubeConfig, agentFieldManager(opts.node));
    this.throttleMs = opts.throttleMs ?? 2000;
    this.retryMs = opts.retryMs ?? 2000;
  }

  get writes(): number {
    return this.writer.writes;
  }

  observe(captures: Snapshot<PacketCapture>): void {
    this.latest = captures;
    for (const capture of captures.values()) {
      const state = this.stateOf(capture.metadata);
      state.observed = inStatusOrder((capture.status?.sessions ?? []).filter((s) => s.nodeName === this.opts.node));
      // someone else's edit, or our write lost: the apply below puts our entries back
      this.schedule(state, false);
    }
    for (const [uid, state] of this.captures) {
      if (captures.has(uid) || state.writing) continue;
      clearTimeout(state.timer);
      this.captures.delete(uid);
      this.writer.forget(uid);
    }
  }

  update({ capture, session }: SessionUpdate): void {
    const state = this.stateOf(capture);
    const previous = state.entries.get(session.id);
    state.entries.set(session.id, session);
    const changedState = previous?.state !== session.state || previous?.reason !== session.reason;
    this.schedule(state, changedState);
  }

  /** Writes everything pending now and waits for it: the last act of a stopping agent. */
  async flush(): Promise<void> {
    for (const state of this.captures.values()) {
      if (state.dirty || state.timer) {
        clearTimeout(state.timer);
        state.timer = undefined;
        this.schedule(state, true);
      }
    }
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.captures.values()) clearTimeout(state.timer);
  }

  private stateOf(ref: CaptureRef | PacketCapture['metadata']): CaptureEntries {
    let state = this.captures.get(ref.uid);
    if (state) return state;
    const seen = this.latest.get(ref.uid);
    state = {
      target: { path: capturePath(ref.namespace, ref.name), apiVersion: API_VERSION, kind: KIND, name: ref.name, namespace: ref.namespace, uid: ref.uid },
      entries: new Map(seen ? adoptEntries(seen, this.opts.node, new Date().toISOString()).map((s) => [s.id, s]) : []),
      observed: [],
      lastWrite: 0,
      writing: false,
      dirty: false,
      urgent: false,
    };
    this.captures.set(ref.uid, state);
    return state;
  }

  private schedule(state: CaptureEntries, urgent: boolean): void {
    if (this.stopped) return;
    state.dirty = true;
    state.urgent ||= urgent;
    if (state.writing) return;
    const wait = state.urgent ? 0 : Math.max(0, state.lastWrite + this.throttleMs - Date.now());
    if (wait === 0) {
      clearTimeout(state.timer);
      state.timer = undefined;
      this.write(state);
    } else {
      state.timer ??= setTimeout(() => {
        state.timer = undefined;
        this.write(state);
      }, wait);
    }
  }

  private write(state: CaptureEntries): void {
    const desired = retainedEntries(state.entries.values());
    // the entries map stays as long as what we report
    state.entries = new Map(desired.map((s) => [s.id, s]));
    state.dirty = false;
    state.urgent = false;
    state.writing = true;
    const done = this.writer
      .apply(state.target, { sessions: desired }, { sessions: state.observed })
      .then(
        (wrote) => {
          if (wrote) state.lastWrite = Date.now();
        },
        (err: unknown) => {
          this.opts.log.warn({ namespace: state.target.namespace, name: state.target.name, err: String(err) }, 'cannot write session status, retrying');
          state.dirty = true;
          state.timer ??= setTimeout(() => {
            state.timer = undefined;
            this.schedule(state, true);
          }, this.retryMs);
        },
      )
      .finally(() => {
        state.writing = false;
        this.inFlight.delete(done);
        if (state.dirty && !state.timer) this.schedule(state, state.urgent);
      });
    this.inFlight.add(done);
  }
}
