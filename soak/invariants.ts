// What the soak holds the product to (pure): each check takes what was observed and says
// what violates it. Times are epoch milliseconds.

import type { SessionMeta } from '../agent/files.ts';
import type { PacketCapture, Phase } from '../crds/packetcapture.ts';
import { foreignFrames, type Frame } from '../local/packets.ts';

// ---- intervals ---------------------------------------------------------------------

export interface Interval {
  from: number;
  to: number;
}

/** Sorted, merged, without empty intervals. */
export function union(intervals: readonly Interval[]): Interval[] {
  const sorted = intervals.filter((i) => i.to > i.from).sort((a, b) => a.from - b.from);
  const merged: Interval[] = [];
  for (const i of sorted) {
    const last = merged.at(-1);
    if (last && i.from <= last.to) last.to = Math.max(last.to, i.to);
    else merged.push({ ...i });
  }
  return merged;
}

/** The parts of `within` that no hole covers. */
export function subtract(within: readonly Interval[], holes: readonly Interval[]): Interval[] {
  let parts = union(within);
  for (const hole of union(holes)) {
    parts = parts.flatMap((p) => {
      if (hole.to <= p.from || hole.from >= p.to) return [p];
      return [
        ...(hole.from > p.from ? [{ from: p.from, to: hole.from }] : []),
        ...(hole.to < p.to ? [{ from: hole.to, to: p.to }] : []),
      ];
    });
  }
  return parts;
}

export const clip = (intervals: readonly Interval[], to: Interval): Interval[] =>
  union(intervals.map((i) => ({ from: Math.max(i.from, to.from), to: Math.min(i.to, to.to) })));

export const longest = (intervals: readonly Interval[]): number => Math.max(0, ...intervals.map((i) => i.to - i.from));

// ---- packets of another instance ---------------------------------------------------

/** A frame as tshark reads it, with its capture time in epoch ms. */
export interface TimedFrame extends Frame {
  time: number;
}

/** A pod instance (one UID) and when it had a sandbox on the node. */
export interface InstanceLife {
  uid: string;
  name: string;
  ip: string;
  /** when the node first saw it bound (before its sandbox existed) */
  from: number;
  /** when its last sandbox was removed; unset while it runs */
  to?: number;
}

/** Timestamps of the kernel's capture and of this process's clock differ by less than this. */
export const CLOCK_SLACK_MS = 1_000;

/**
 * The frames of a file taken from `instance` that belong to another: by address
 * (local/packets.ts), or captured while the instance had no sandbox, when only another
 * instance (one that took its IP, say) could have been on the wire.
 */
export function framesOfAnother<T extends TimedFrame>(frames: readonly T[], instance: InstanceLife): T[] {
  const byAddress = new Set(foreignFrames(frames, instance.ip));
  const outside = (f: T) => f.time < instance.from - CLOCK_SLACK_MS || (instance.to !== undefined && f.time > instance.to + CLOCK_SLACK_MS);
  return frames.filter((f) => byAddress.has(f) || outside(f));
}

// ---- every targeted instance captured ------------------------------------------------

/** The rule: an instance targeted this long without a fault in between must have been captured. */
export const MIN_TARGETED_MS = 2_000;

export interface TargetedInstance {
  uid: string;
  /** while it ran: from Running to the DELETE sent for it (or the end of the run) */
  life: Interval;
  /** while a capture without limits selected it (created, not yet deleted) */
  targeted: Interval[];
}

/**
 * Instances that spent MIN_TARGETED_MS at a stretch running, targeted and outside every
 * disruption (agent or API server down, and their recovery), yet have no session file
 * with a packet in it.
 */
export function uncapturedInstances(instances: readonly TargetedInstance[], disruptions: readonly Interval[], withPackets: ReadonlySet<string>): string[] {
  return instances
    .filter((i) => longest(subtract(clip(i.targeted, i.life), disruptions)) >= MIN_TARGETED_MS)
    .filter((i) => !withPackets.has(i.uid))
    .map((i) => i.uid);
}

/** How many instances the rule applied to (the count the report prints). */
export const targetedLongEnough = (instances: readonly TargetedInstance[], disruptions: readonly Interval[]): number =>
  instances.filter((i) => longest(subtract(clip(i.targeted, i.life), disruptions)) >= MIN_TARGETED_MS).length;

// ---- no tcpdump outlives its reason --------------------------------------------------

export type Staleness = 'instance gone' | 'capture deleted' | 'older generation' | 'no session directory';

export interface World {
  /** whether the pod instance still has a sandbox on the node */
  instanceRuns(uid: string): boolean;
  /** capture UID -> its metadata.generation, for every capture that exists */
  captures: ReadonlyMap<string, number>;
}

/** Why a tcpdump of session `meta` should not run any more, if it should not. */
export function staleness(meta: SessionMeta | undefined, world: World): Staleness | undefined {
  if (!meta) return 'no session directory';
  const generation = world.captures.get(meta.captureUID);
  if (generation === undefined) return 'capture deleted';
  if (!world.instanceRuns(meta.podUID)) return 'instance gone';
  if (meta.generation < generation) return 'older generation';
  return undefined;
}

/** A stale tcpdump may take this long to go, counted from when it became stale or the last disruption ended. */
export const STALE_GRACE_MS = 10_000;

export interface StaleViolation {
  pid: number;
  reason: Staleness;
  staleMs: number;
}

/**
 * Follows tcpdumps that are stale across checks: one stale for STALE_GRACE_MS of quiet
 * time (after `quietSince`, the end of the last disruption) is a violation, reported once.
 */
export class StaleTracker {
  private readonly since = new Map<number, number>();
  private readonly reported = new Set<number>();

  observe(now: number, stale: ReadonlyMap<number, Staleness>, quietSince: number): StaleViolation[] {
    for (const pid of this.since.keys()) if (!stale.has(pid)) this.since.delete(pid);
    const found: StaleViolation[] = [];
    for (const [pid, reason] of stale) {
      const since = this.since.get(pid) ?? now;
      this.since.set(pid, since);
      if (now - Math.max(since, quietSince) >= STALE_GRACE_MS && !this.reported.has(pid)) {
        this.reported.add(pid);
        found.push({ pid, reason, staleMs: now - since });
      }
    }
    return found;
  }
}

// ---- captures reach the state their spec implies --------------------------------------

export interface ExpectedState {
  phase: Phase;
  /** the pod UIDs in status.targets, when the phase implies any */
  targets?: readonly string[];
}

/** How the capture differs from what its spec and the pods imply, or undefined. */
export function stateMismatch(capture: PacketCapture, expected: ExpectedState): string | undefined {
  const status = capture.status;
  if (!status || status.observedGeneration !== capture.metadata.generation) {
    return `observedGeneration ${status?.observedGeneration} != generation ${capture.metadata.generation}`;
  }
  if (status.phase !== expected.phase) return `phase ${status.phase ?? 'unset'}, expected ${expected.phase}`;
  if (expected.targets) {
    const got = (status.targets ?? []).map((t) => t.podUID).sort();
    const want = [...expected.targets].sort();
    if (got.join() !== want.join()) return `targets [${got.join(', ')}], expected [${want.join(', ')}]`;
  }
  return undefined;
}

// ---- no write rejected ---------------------------------------------------------------

/** A component's log line, as bench/harness.ts keeps them. */
export interface LogLine {
  at: number;
  msg?: string;
  err?: unknown;
}

// 404 (gone meanwhile), 409 (changed meanwhile) and 429 (slow down) are answers to retry
// on; any other 4xx to a write of a PacketCapture means the API server refused what we sent
const RETRYABLE = new Set([404, 409, 429]);
const CAPTURE_WRITE = /\b(PATCH|PUT|POST) (\S*\/packetcaptures\/\S*): (4\d\d)\b/;

/** Log lines that report a write of a PacketCapture (status or finalizer) the API server rejected. */
export function rejectedWrites<T extends LogLine>(lines: readonly T[]): T[] {
  return lines.filter((l) => {
    const m = CAPTURE_WRITE.exec(typeof l.err === 'string' ? l.err : '');
    return m !== null && !RETRYABLE.has(Number(m[3]));
  });
}

// ---- memory flat ---------------------------------------------------------------------

export interface MemorySample {
  at: number;
  rssMb: number;
}

export interface MemoryGrowth {
  /** highest RSS in the first third after warm-up */
  baselineMb: number;
  /** lowest RSS in the last third: what the process cannot give back */
  finalMb: number;
  grew: boolean;
}

/** Start-up and the first sessions (transpiling, JIT, pools) are not a leak. */
export const MEMORY_WARMUP_MS = 30_000;
const MIN_SAMPLES = 6;

/**
 * Whether one process's RSS grew: the lowest of its last third above the highest of its
 * first third (after warm-up) by more than 32 MB and 25%. Undefined with too few samples.
 */
export function memoryGrowth(samples: readonly MemorySample[]): MemoryGrowth | undefined {
  if (samples.length === 0) return undefined;
  const warm = samples.filter((s) => s.at >= samples[0]!.at + MEMORY_WARMUP_MS);
  if (warm.length < MIN_SAMPLES) return undefined;
  const third = Math.floor(warm.length / 3);
  const baselineMb = Math.max(...warm.slice(0, third).map((s) => s.rssMb));
  const finalMb = Math.min(...warm.slice(-third).map((s) => s.rssMb));
  return { baselineMb, finalMb, grew: finalMb > baselineMb + Math.max(32, baselineMb * 0.25) };
}
