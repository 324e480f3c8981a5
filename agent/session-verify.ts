// Verify, a session's second stage: the spec becomes a tcpdump (argv, filter, limits), the
// filter compiles in the held netns, and the process started there is proven to run in it
// before anything it captured is kept (tcpdump.ts startTcpdump: the writer holds packets
// until the proof and drops them when it fails). Only a proven process is handed on, so a
// failed verification leaves no file and no count.

import { defer, finalize, from, ignoreElements, map, Observable, ReplaySubject, type ObservableInput } from 'rxjs';
import { DEFAULTS, REASONS } from '../crds/packetcapture.ts';
import { parseDuration, parseQuantity } from '../crds/units.ts';
import type { Logger } from '../kube/log.ts';
import type { InstanceLabel, WriterLimits } from './capture-writer.ts';
import type { Identity } from './identity.ts';
import type { HeldNetns } from './netns.ts';
import type { SessionEnd } from './session-entry.ts';
import type { PodNetns } from './session-resolve.ts';
import type { CaptureProcess, SessionDeps, SessionWriter } from './sessions.ts';
import { buildFilter, CaptureError, tcpdumpArgv } from './tcpdump.ts';

/** The writer's limits from the spec; throws RangeError for a quantity the schema should have refused. */
export function writerLimits(spec: Identity['spec']): WriterLimits {
  const limits = spec.limits ?? {};
  return {
    ...(limits.fileSize !== undefined ? { fileSizeBytes: parseQuantity(limits.fileSize) } : {}),
    ...(limits.fileSize !== undefined && limits.fileCount !== undefined ? { fileCount: limits.fileCount } : {}),
    ...(limits.maxPackets !== undefined ? { maxPackets: limits.maxPackets } : {}),
  };
}

export interface SessionPlan {
  argv: string[];
  /** the spec's filter as one expression, which the filter check compiles */
  filter: string;
  limits: WriterLimits;
  durationMs?: number;
}

/** What the identity's spec asks tcpdump and the writer to do; throws CaptureError(InvalidFilter), or RangeError for a bad quantity. */
export function sessionPlan(identity: Pick<Identity, 'spec' | 'podIPs'>): SessionPlan {
  const { spec, podIPs } = identity;
  return {
    argv: tcpdumpArgv(spec, { podIPs }),
    filter: buildFilter(spec.filter, podIPs),
    limits: writerLimits(spec),
    ...(spec.limits?.duration ? { durationMs: parseDuration(spec.limits.duration) } : {}),
  };
}

/** Completes when tcpdump compiles `filter` in the held netns; fails InvalidFilter with tcpdump's message when it does not. */
export function checkFilter(filter: string, netns: HeldNetns, compile: SessionDeps['compileFilter']): Observable<never> {
  return from(compile(filter, netns)).pipe(
    map((compiled) => {
      if (!compiled.ok) throw new CaptureError(REASONS.InvalidFilter, `tcpdump rejects the filter "${filter}": ${compiled.message}`);
    }),
    ignoreElements(),
  );
}

/**
 * The process `start` begins, once it is up and proven. A start cannot be called back: one
 * whose subscriber left while it was in flight goes to `abandoned` once it is up, to be stopped.
 */
export function startedProcess(start: () => ObservableInput<CaptureProcess>, abandoned: (proc: CaptureProcess) => void): Observable<CaptureProcess> {
  return new Observable<CaptureProcess>((subscriber) => {
    from(start()).subscribe({
      next: (proc) => (subscriber.closed ? abandoned(proc) : subscriber.next(proc)),
      error: (err: unknown) => subscriber.error(err),
      complete: () => subscriber.complete(),
    });
  });
}

/** A proven tcpdump and the writer that keeps its packets. */
export interface Started {
  kind: 'started';
  proc: CaptureProcess;
  writer: SessionWriter;
  /** the writer's own reason to end the session (its limit, a write that failed), replayed */
  writerEnd$: Observable<SessionEnd>;
  /** the netns it captures, and the pod's processes seen in it */
  inode: number;
  pids: readonly number[];
}

export interface LaunchRequest {
  identity: Identity;
  sessionId: string;
  dir: string;
  plan: SessionPlan;
  log: Logger;
  agentVersion: string;
}

/** The pcapng header's description of this session's instance. */
export function instanceLabel({ identity, sessionId, plan, agentVersion }: LaunchRequest): InstanceLabel {
  return {
    namespace: identity.namespace,
    name: identity.name,
    captureUID: identity.pcUID,
    generation: identity.generation,
    podName: identity.podName,
    podUID: identity.podUID,
    node: identity.node,
    podIPs: identity.podIPs,
    sessionId,
    filter: plan.argv.at(-1)!,
    snapLen: identity.spec.limits?.snapLen ?? DEFAULTS.snapLen,
    agentVersion,
  };
}

/** The end a write the node refused gives: DiskFull for a full disk or quota, else Error. */
export function writeFailure(dir: string, err: NodeJS.ErrnoException): SessionEnd {
  return {
    reason: err.code === 'ENOSPC' || err.code === 'EDQUOT' ? REASONS.DiskFull : REASONS.Error,
    message: `writing ${dir} failed (${err.code ?? err.message}); the packets after it were not kept, so the session was stopped`,
    failed: true,
  };
}

/**
 * A writer for the session and tcpdump started in the held netns, writing to it, handed on
 * once proven. The netns stays open until the start has settled, however this ends.
 */
export function startVerified(
  request: LaunchRequest,
  held: PodNetns,
  deps: Pick<SessionDeps, 'writer' | 'start'>,
  abandoned: (proc: CaptureProcess) => void,
): Observable<Started> {
  return defer(() => {
    const { identity, sessionId, dir, plan, log } = request;
    // the first of them ends the session; a limit reached by the packets held until the proof is replayed once it runs
    const writerEnd = new ReplaySubject<SessionEnd>(1);
    const endByWriter = (end: SessionEnd) => {
      writerEnd.next(end);
      writerEnd.complete();
    };
    const writer = deps.writer({
      dir,
      limits: plan.limits,
      label: instanceLabel(request),
      onLimit: () => endByWriter({ reason: REASONS.PacketLimit }),
      onWriteError: (err) => endByWriter(writeFailure(dir, err)),
    });
    const release = held.retain();
    const start = () => from(deps.start({ identity, sessionId, dir, netns: held.netns, writer, argv: plan.argv, log })).pipe(finalize(release));
    return startedProcess(start, abandoned).pipe(
      map((proc): Started => ({ kind: 'started', proc, writer, writerEnd$: writerEnd.asObservable(), inode: held.netns.inode, pids: held.pids })),
    );
  });
}
