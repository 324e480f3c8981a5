// The start-up reaper against real processes: a copy of `sleep` named tcpdump stands in for
// a tcpdump a crashed agent left behind (the reaper goes by PID, start time and name).

import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStat, processIdentityNow, reapStale, RunningFile, runningFile, sessionMark, type RunningRecord } from '../../agent/reaper.ts';
import { SESSION_MARK } from '../../agent/tcpdump.ts';

const log = pino({ level: 'silent' });

describe('parseStat', () => {
  it('finds the start time after a command name holding spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[22 - 3] = '987654';
    expect(parseStat(`4242 (tcp dump) (x)) ${fields.join(' ')}`)).toEqual({ comm: 'tcp dump) (x)', startTicks: '987654' });
    expect(parseStat('garbage')).toBeUndefined();
  });
});

describe('reapStale', () => {
  let dir: string;
  let fakeTcpdump: string;
  const children: ChildProcess[] = [];

  const startFake = async (env?: NodeJS.ProcessEnv): Promise<ChildProcess> => {
    const child = spawn(fakeTcpdump, ['3600'], { stdio: 'ignore', ...(env ? { env: { ...process.env, ...env } } : {}) });
    children.push(child);
    await expect.poll(async () => (processIdentityNow(child.pid!))?.comm).toBe('tcpdump');
    return child;
  };
  const record = (pid: number, startTicks: string): RunningRecord => ({
    pid,
    startTicks,
    sessionId: 's',
    namespace: 'shop',
    name: 'web',
    pcUID: 'pc',
    podUID: 'u',
    dir: '/x',
  });
  const alive = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'agent-reaper-'));
    fakeTcpdump = join(dir, 'tcpdump');
    await copyFile('/bin/sleep', fakeTcpdump);
    const { chmod } = await import('node:fs/promises');
    await chmod(fakeTcpdump, 0o755);
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('kills a recorded tcpdump that still runs, and empties the record', async () => {
    const dataDir = join(dir, 'kill');
    const child = await startFake();
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const running = new RunningFile(dataDir, log);
    await running.add(record(child.pid!, (processIdentityNow(child.pid!))!.startTicks));
    const reaped = await reapStale(dataDir, { log, graceMs: 500 });
    expect(reaped.map((r) => r.pid)).toEqual([child.pid]);
    await exited;
    expect(JSON.parse(await readFile(runningFile(dataDir), 'utf8'))).toEqual([]);
  });

  it('never kills a process whose PID was reused (another start time) or that is not tcpdump', async () => {
    const dataDir = join(dir, 'spare');
    const reused = await startFake();
    const other = spawn('sleep', ['3600'], { stdio: 'ignore' });
    children.push(other);
    await expect.poll(async () => (processIdentityNow(other.pid!))?.comm).toBe('sleep');
    await mkdir(join(dataDir, '.agent'), { recursive: true });
    await writeFile(
      runningFile(dataDir),
      JSON.stringify([record(reused.pid!, '1'), record(other.pid!, (processIdentityNow(other.pid!))!.startTicks), record(2 ** 22 + 7, '5')]),
    );
    expect(await reapStale(dataDir, { log, graceMs: 200 })).toEqual([]);
    expect(alive(reused)).toBe(true);
    expect(alive(other)).toBe(true);
  });

  it('kills a tcpdump marked with its data dir that has no record (the agent died between spawn and record), and only that one', async () => {
    const dataDir = join(dir, 'unrecorded');
    const orphan = await startFake({ [SESSION_MARK]: sessionMark(dataDir, 'g1-aaaa-1') });
    const othersAgent = await startFake({ [SESSION_MARK]: sessionMark(join(dir, 'another-agent'), 'g1-aaaa-2') });
    const exited = new Promise((resolve) => orphan.once('exit', resolve));
    const reaped = await reapStale(dataDir, { log, graceMs: 500 });
    expect(reaped).toEqual([{ pid: orphan.pid, startTicks: expect.any(String), unrecorded: true }]);
    await exited;
    expect(alive(othersAgent)).toBe(true);
  });

  it('does not wait for ever on a tcpdump that signals cannot end: start-up goes on', async () => {
    const dataDir = join(dir, 'stuck');
    // a zombie whose parent never reaps it stands in for a process in D state: it stays, whatever it is sent
    const parent = spawn('bash', ['-c', `${fakeTcpdump} 3600 & echo $!; exec sleep 3600`], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(parent);
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (chunk: Buffer) => resolve(Number(String(chunk).trim()))));
    await expect.poll(() => processIdentityNow(pid)?.comm).toBe('tcpdump');
    // until bash has exec'd sleep, bash itself would reap the killed child
    await expect.poll(() => processIdentityNow(parent.pid!)?.comm).toBe('sleep');
    const startTicks = processIdentityNow(pid)!.startTicks;
    process.kill(pid, 'SIGKILL');
    await expect.poll(async () => (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]![0]).toBe('Z');
    await new RunningFile(dataDir, log).add(record(pid, startTicks));
    const started = Date.now();
    const reaped = await reapStale(dataDir, { log, graceMs: 100, killWaitMs: 200 });
    expect(reaped.map((r) => r.pid)).toEqual([pid]);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('starts clean without a record file', async () => {
    expect(await reapStale(join(dir, 'none'), { log })).toEqual([]);
  });

  it('RunningFile keeps exactly the processes that run', async () => {
    const dataDir = join(dir, 'file');
    const running = new RunningFile(dataDir, log);
    await running.add(record(11, '1'));
    await running.add(record(12, '2'));
    await running.remove(11);
    expect((JSON.parse(await readFile(runningFile(dataDir), 'utf8')) as RunningRecord[]).map((r) => r.pid)).toEqual([12]);
  });
});
