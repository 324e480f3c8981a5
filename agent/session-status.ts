// Session updates -> this node's status.sessions entries and status.nodes record, by ONE
// writer. Each agent owns its node's entries and record (server-side apply with its own
// field manager, list-maps keyed by id and nodeName) and applies them in full every time:
// running entries plus the last ended ones per capture (its share of MAX_SESSIONS), and
// the record that keeps what decisions need after those entries drop off. Entries it leaves
// out are removed by the apply.

import type { KubeConfig } from '@kubernetes/client-node';
import { recordSession } from '../crds/lifecycle.ts';
import {
  agentFieldManager,
  API_VERSION,
  GROUP,
  KIND,
  MAX_LIMITED_PER_NODE,
  MAX_SESSIONS,
  PLURAL,
  REASONS,
  SESSION_HISTORY,
  VERSION,
  type NodeRecord,
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

/**
 * How many entries this node may write for a capture: half an equal part of MAX_SESSIONS
 * among the nodes with entries. Each node trims to its share when its snapshot shows more
 * nodes, so the half left over is room for the nodes that joined since the snapshot: the
 * sum stays within the CRD's maxItems unless the nodes more than double between a
 * snapshot and the write. Up to 25 nodes each keep the full SESSION_HISTORY.
 */
export function sessionShare(capture: PacketCapture | undefined, node: string): number {
  const nodes = new Set([node, ...(capture?.status?.sessions ?? []).map((s) => s.nodeName)]);
  return Math.floor(MAX_SESSIONS / (2 * nodes.size));
}

/**
 * Live entries and the newest SESSION_HISTORY finished ones, oldest first, within `share`:
 * history gives way to live entries first, and live entries past the share (more sessions
 * on one node than status can list) are left out, their progress with them.
 */
export function retainedEntries(entries: Iterable<SessionStatus>, share = MAX_SESSIONS, history = SESSION_HISTORY): SessionStatus[] {
  const all = [...entries];
  const live = inStatusOrder(all.filter(isLive)).slice(0, share);
  const keep = Math.max(0, Math.min(history, share - live.length));
  const finished = all
    .filter((s) => !isLive(s))
    .sort((a, b) => compare(a.endTime ?? '', b.endTime ?? '') || compare(a.id, b.id));
  return inStatusOrder([...(keep > 0 ? finished.slice(-keep) : []), ...live]);
}

/**
 * At most `max` limited instances: past it, those the controller no longer lists as
 * targets (gone or not running: never captured again) drop first, oldest first, then the
 * oldest of the rest.
 */
export function capLimited(limited: string[], targeted: ReadonlySet<string>, max = MAX_LIMITED_PER_NODE): string[] {
  let excess = limited.length - max;
  if (excess <= 0) return limited;
  return limited.filter((uid) => targeted.has(uid) || excess-- <= 0).slice(-max);
}

/** `session` folded into this node's record of the capture, the record kept within its cap. */
export function nextRecord(record: NodeRecord | undefined, session: SessionStatus, capture: PacketCapture | undefined): NodeRecord {
  const next = recordSession(record, session);
  if (!next.limitedPods) return next;
  const targeted = new Set((capture?.status?.targets ?? []).map((t) => t.podUID));
  return { ...next, limitedPods: capLimited(next.limitedPods, targeted) };
}

const recordOf = (capture: PacketCapture | undefined, node: string): NodeRecord | undefined =>
  capture?.status?.nodes?.find((r) => r.nodeName === node);

/** Chronological, sessions that have not started last: one order for what we write and what we read back. */
export function inStatusOrder(entries: SessionStatus[]): SessionStatus[] {
  const key = (s: SessionStatus) => s.startTime ?? s.endTime ?? '~';
  return [...entries].sort((a, b) => compare(key(a), key(b)) || compare(a.id, b.id));
}

/** Code-point order: RFC 3339 times in UTC sort as strings, and '~' after all of them. */
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const capturePath = (namespace: string, name: string) => `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}/${name}`;

/** The part of status this node's agent owns. */
interface Written {
  sessions: SessionStatus[];
  nodes: NodeRecord[];
}

interface CaptureEntries {
  target: StatusTarget;
  entries: Map<string, SessionStatus>;
  /** this node's record: what decisions need of the entries, kept when they drop off */
  record?: NodeRecord;
}

/**
 * Progress (packets, bytes, files) of a running session reaches status at most twice a
 * minute: every status write goes to every watcher of PacketCaptures (the controller, GitOps
 * tools) and is a row in the API server's etcd. Starts and ends are written at once; live
 * counters are the agent's metrics and the live stream, not status.
 */
export const PROGRESS_THROTTLE_MS = 30_000;

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
 * Folds session updates into per-capture entry lists and hands them to the status writer.
 * Feed it every capture snapshot (`observe`) before the session updates derived from it
 * (`update`).
 */
export class SessionStatusWriter {
  private readonly captures = new Map<string, CaptureEntries>();
  private readonly writer: StatusWriter<Written>;
  private latest: Snapshot<PacketCapture> = new Map();

  constructor(private readonly opts: SessionStatusOptions) {
    this.writer = new StatusWriter(opts.kubeConfig, agentFieldManager(opts.node), {
      minIntervalMs: opts.throttleMs ?? PROGRESS_THROTTLE_MS,
      retry: {
        ms: opts.retryMs ?? 2000,
        onError: (target, err) =>
          opts.log.warn({ namespace: target.namespace, name: target.name, err: String(err) }, 'cannot write session status, retrying'),
      },
    });
  }

  get writes(): number {
    return this.writer.writes;
  }

  observe(captures: Snapshot<PacketCapture>): void {
    this.latest = captures;
    for (const capture of captures.values()) {
      const state = this.stateOf(capture.metadata);
      const record = recordOf(capture, this.opts.node);
      this.writer.observe(state.target, {
        sessions: inStatusOrder((capture.status?.sessions ?? []).filter((s) => s.nodeName === this.opts.node)),
        nodes: record ? [record] : [],
      });
      // someone else's edit, or our write lost: the apply puts our entries back
      this.hand(state, false);
    }
    for (const uid of this.captures.keys()) {
      if (captures.has(uid)) continue;
      this.captures.delete(uid);
      this.writer.forget(uid);
    }
  }

  update({ capture, session }: SessionUpdate): void {
    const state = this.stateOf(capture);
    const previous = state.entries.get(session.id);
    state.entries.set(session.id, session);
    state.record = nextRecord(state.record, session, this.latest.get(capture.uid));
    this.hand(state, previous?.state !== session.state || previous?.reason !== session.reason);
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }

  stop(): void {
    this.writer.stop();
  }

  private stateOf(ref: CaptureRef | PacketCapture['metadata']): CaptureEntries {
    let state = this.captures.get(ref.uid);
    if (state) return state;
    const seen = this.latest.get(ref.uid);
    const record = recordOf(seen, this.opts.node);
    state = {
      target: { path: capturePath(ref.namespace, ref.name), apiVersion: API_VERSION, kind: KIND, name: ref.name, namespace: ref.namespace, uid: ref.uid },
      entries: new Map(seen ? adoptEntries(seen, this.opts.node, new Date().toISOString()).map((s) => [s.id, s]) : []),
      ...(record ? { record } : {}),
    };
    this.captures.set(ref.uid, state);
    return state;
  }

  private hand(state: CaptureEntries, urgent: boolean): void {
    const sessions = retainedEntries(state.entries.values(), sessionShare(this.latest.get(state.target.uid), this.opts.node));
    // the entries map stays as long as what we report
    state.entries = new Map(sessions.map((s) => [s.id, s]));
    this.writer.set(state.target, { sessions, nodes: state.record ? [state.record] : [] }, urgent);
  }
}
