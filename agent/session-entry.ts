// The one owner of a session's status entry: a session's stages report facts (Pending for
// a reason, Running, progress, the end) and only this fold turns them into the entry the
// status writer upserts, emitting it when it changed.

import { distinctUntilChanged, scan, startWith, type OperatorFunction } from 'rxjs';
import type { Reason, SessionStatus } from '../crds/packetcapture.ts';
import type { WriterCounts } from './capture-writer.ts';
import type { Identity } from './identity.ts';

/** How a session ends: its reason, shown as a failure when `failed`, and for an exact stop the instant after which nothing is kept. */
export interface SessionEnd {
  reason: Reason;
  message?: string;
  /** the stop instant, ns since the epoch */
  cutNs?: bigint;
  failed?: boolean;
}

/** What a tcpdump of the session did: set on its end only when one ran. */
export interface SessionRun {
  startTime: Date;
  path: string;
  counts: WriterCounts;
  droppedByKernel?: number;
}

export type SessionFact =
  | { kind: 'pending'; reason: Reason; message: string }
  | { kind: 'running'; startTime: Date; path: string }
  | { kind: 'progress'; counts: WriterCounts; droppedByKernel?: number }
  | { kind: 'ended'; end: SessionEnd; atMs: number; run?: SessionRun };

/** The entry without its unset fields, so equal entries serialize equally. */
function clean(entry: SessionStatus): SessionStatus {
  return Object.fromEntries(Object.entries(entry).filter(([, v]) => v !== undefined)) as unknown as SessionStatus;
}

/** The entry of a session that has done nothing yet. */
export function firstEntry(identity: Identity, id: string): SessionStatus {
  return clean({ id, podUID: identity.podUID, podName: identity.podName, nodeName: identity.node, generation: identity.generation, state: 'Pending' });
}

const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * The entry after `fact`. An end is Ended, or Failed when `failed`; a session cut at a stop
 * instant ends then (its files hold nothing later); a Pending message stays as the end's
 * explanation unless the end has its own.
 */
export function applyFact(entry: SessionStatus, fact: SessionFact): SessionStatus {
  switch (fact.kind) {
    case 'pending':
      return clean({ ...entry, state: 'Pending', reason: fact.reason, message: fact.message });
    case 'running':
      return clean({ ...entry, state: 'Running', reason: undefined, message: undefined, startTime: fact.startTime.toISOString(), path: fact.path });
    case 'progress':
      return clean({ ...entry, ...fact.counts, droppedByKernel: fact.droppedByKernel ?? entry.droppedByKernel });
    case 'ended': {
      const { end, run } = fact;
      return clean({
        ...entry,
        ...(end.failed ? { state: 'Failed' as const, reason: end.reason, endReason: undefined } : { state: 'Ended' as const, reason: undefined, endReason: end.reason }),
        ...(run ? { startTime: run.startTime.toISOString(), path: run.path, ...run.counts } : {}),
        endTime: iso(end.cutNs !== undefined ? Number(end.cutNs / 1_000_000n) : fact.atMs),
        droppedByKernel: run?.droppedByKernel ?? entry.droppedByKernel,
        message: end.message ?? (entry.state === 'Pending' ? entry.message : undefined),
      });
    }
  }
}

/** The session's entries: `first`, then each one a fact changed. */
export function sessionEntries(first: SessionStatus): OperatorFunction<SessionFact, SessionStatus> {
  return (facts$) =>
    facts$.pipe(
      scan(applyFact, first),
      startWith(first),
      distinctUntilChanged((a, b) => JSON.stringify(a) === JSON.stringify(b)),
    );
}
