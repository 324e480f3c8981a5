// Verify: the spec's plan, the filter check in the held netns, and a start that is handed on only once proven.

import pino from 'pino';
import { firstValueFrom, of, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { PodNetns } from '../../agent/session-resolve.ts';
import { checkFilter, sessionPlan, startedProcess, startVerified, writeFailure } from '../../agent/session-verify.ts';
import type { CaptureProcess, SessionDeps, WriterRequest } from '../../agent/sessions.ts';
import { CaptureError } from '../../agent/tcpdump.ts';
import { REASONS } from '../../crds/packetcapture.ts';
import { NODE } from './agent-fixtures.ts';

const identity = { pcUID: 'pc', namespace: 'shop', name: 'web', generation: 1, podUID: 'uid-a', podName: 'web-0', podIP: '10.0.0.1', podIPs: ['10.0.0.1'], node: NODE, spec: { target: {} } };
const netns = { fd: 3, pid: 7, inode: 42, close: () => undefined };
const fakeWriter = () => ({ push: () => undefined, verified: () => undefined, cut: () => undefined, pastCut: false, counts: { packets: 0, files: 0, bytes: 0 }, close: () => ({ packets: 0, files: 0, bytes: 0 }) });
const proc = (pid: number): CaptureProcess => ({ pid, startedAt: new Date(0), verifiedAt: new Date(1), exited: new Subject(), stop: () => of({ code: 0, signal: null, stats: {}, stderrTail: '' }) });

describe('sessionPlan', () => {
  it("turns the spec into tcpdump's argv, the filter it checks, the writer's limits and the duration", () => {
    const plan = sessionPlan({ ...identity, spec: { target: {}, filter: { port: 80 }, limits: { fileSize: '1Mi', fileCount: 3, maxPackets: 9, duration: '2m' } } });
    expect(plan.filter).toBe('port 80');
    expect(plan.argv.at(-1)).toContain('port 80');
    expect(plan.limits).toEqual({ fileSizeBytes: 1024 * 1024, fileCount: 3, maxPackets: 9 });
    expect(plan.durationMs).toBe(120_000);
  });

  it('a quantity the schema should have refused is a RangeError, a filter it cannot express an InvalidFilter', () => {
    expect(() => sessionPlan({ ...identity, spec: { target: {}, limits: { fileSize: 'ten megs' } } })).toThrow(RangeError);
    expect(() => sessionPlan({ ...identity, podIPs: [], spec: { target: {}, filter: { direction: 'Ingress' } } })).toThrow(CaptureError);
  });
});

describe('checkFilter', () => {
  it("completes when tcpdump compiles it in the held netns, fails InvalidFilter with tcpdump's message when not", async () => {
    const compiledIn: number[] = [];
    const compile: SessionDeps['compileFilter'] = (expression, held) => (compiledIn.push(held.inode), of(expression === 'tcp' ? { ok: true as const } : { ok: false as const, message: 'syntax error' }));
    await expect(firstValueFrom(checkFilter('tcp', netns, compile), { defaultValue: 'done' })).resolves.toBe('done');
    await expect(firstValueFrom(checkFilter('tcp and (', netns, compile))).rejects.toEqual(new CaptureError(REASONS.InvalidFilter, 'tcpdump rejects the filter "tcp and (": syntax error'));
    expect(compiledIn).toEqual([42, 42]);
  });
});

describe('startedProcess', () => {
  it('a start whose session left while it was in flight is handed over to be stopped once it is up', () => {
    const up = new Subject<CaptureProcess>();
    const abandoned: number[] = [];
    const seen: number[] = [];
    const sub = startedProcess(() => up, (p) => abandoned.push(p.pid)).subscribe((p) => seen.push(p.pid));
    sub.unsubscribe();
    up.next(proc(100));
    expect(seen).toEqual([]);
    expect(abandoned).toEqual([100]);
  });
});

describe('startVerified', () => {
  const held = (closed: string[]): PodNetns => {
    let holders = 0;
    return {
      netns,
      pids: [7],
      retain: () => {
        holders++;
        return () => --holders === 0 && closed.push('closed');
      },
    };
  };

  it('keeps the netns open until the start has settled, and hands on the proven process with its netns', async () => {
    const closed: string[] = [];
    const up = new Subject<CaptureProcess>();
    const writers: WriterRequest[] = [];
    const deps = { writer: (request: WriterRequest) => (writers.push(request), fakeWriter()), start: () => up };
    const request = { identity, sessionId: 's1', dir: '/data/s1', plan: sessionPlan(identity), log: pino({ level: 'silent' }), agentVersion: 'v' };
    const started = firstValueFrom(startVerified(request, held(closed), deps, () => undefined));
    expect(writers[0]).toMatchObject({ dir: '/data/s1', label: { podUID: 'uid-a', sessionId: 's1', agentVersion: 'v' } });
    expect(closed).toEqual([]);
    up.next(proc(100));
    up.complete();
    await expect(started).resolves.toMatchObject({ kind: 'started', inode: 42, pids: [7], proc: { pid: 100 } });
    expect(closed).toEqual(['closed']);
  });

  it("replays the writer's first end to whoever looks after the start: a limit reached by the held packets still ends the session", async () => {
    const up = new Subject<CaptureProcess>();
    let request: WriterRequest | undefined;
    const deps = { writer: (r: WriterRequest) => ((request = r), fakeWriter()), start: () => up };
    const plan = sessionPlan(identity);
    const started = firstValueFrom(startVerified({ identity, sessionId: 's1', dir: '/d', plan, log: pino({ level: 'silent' }), agentVersion: 'v' }, held([]), deps, () => undefined));
    request!.onLimit();
    request!.onWriteError(Object.assign(new Error('full'), { code: 'ENOSPC' }));
    up.next(proc(100));
    await expect(firstValueFrom((await started).writerEnd$)).resolves.toEqual({ reason: REASONS.PacketLimit });
  });
});

describe('writeFailure', () => {
  it('a full disk or quota is DiskFull, anything else Error, both failures naming the directory', () => {
    expect(writeFailure('/d', Object.assign(new Error('x'), { code: 'EDQUOT' }))).toMatchObject({ reason: REASONS.DiskFull, failed: true });
    expect(writeFailure('/d', Object.assign(new Error('x'), { code: 'EIO' }))).toMatchObject({ reason: REASONS.Error, failed: true, message: expect.stringMatching(/^writing \/d failed \(EIO\)/) });
  });
});
