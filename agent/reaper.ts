// Records of running tcpdumps, kept on disk so the next agent process can find any that
// outlived this one. tcpdump is started with a parent-death signal and normally dies with
// the agent; this is the second line: on start-up the agent kills every recorded tcpdump
// that still runs. A PID is only trusted together with its start time, so a recycled PID
// (now some other process) is never killed.

import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../kube/log.ts';
import { SESSION_MARK } from './tcpdump.ts';

export interface RunningRecord {
  pid: number;
  /** /proc/<pid>/stat field 22: clock ticks after boot when the process started */
  startTicks: string;
  sessionId: string;
  namespace: string;
  name: string;
  pcUID: string;
  podUID: string;
  dir: string;
}

export const runningFile = (dataDir: string): string => join(dataDir, '.agent', 'running.json');

/** Start time and command name of a process, or undefined once it has exited; synchronous, so a record can be written the moment a process is spawned. */
export function processIdentityNow(pid: number, procRoot = '/proc'): { startTicks: string; comm: string } | undefined {
  try {
    return parseStat(readFileSync(join(procRoot, String(pid), 'stat'), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The SESSION_MARK value (agent/tcpdump.ts) of a session's tcpdump: its environment names
 * the data dir it belongs to, so an agent finds its own tcpdumps that have no record (the
 * agent died between spawn and record) and never touches another agent's.
 */
export const sessionMark = (dataDir: string, sessionId: string): string => `${dataDir}|${sessionId}`;

/** The pids of tcpdump processes whose environment carries a mark of `dataDir`. */
export async function markedTcpdumps(dataDir: string, procRoot = '/proc'): Promise<number[]> {
  const prefix = `${SESSION_MARK}=${sessionMark(dataDir, '')}`;
  const pids = (await readdir(procRoot)).filter((entry) => /^[0-9]+$/.test(entry)).map(Number);
  return pids.filter((pid) => {
    try {
      if (readFileSync(join(procRoot, String(pid), 'comm'), 'utf8').trim() !== 'tcpdump') return false;
      return readFileSync(join(procRoot, String(pid), 'environ'), 'latin1').split('\0').some((v) => v.startsWith(prefix));
    } catch {
      return false; // exited while looked at, or not ours to read
    }
  });
}

/** `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields count from the last `)`. */
export function parseStat(text: string): { startTicks: string; comm: string } | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // after ") " come fields 3 (state) onwards; starttime is field 22
  const startTicks = text.slice(close + 2).split(' ')[22 - 3];
  return startTicks ? { startTicks, comm: text.slice(open + 1, close) } : undefined;
}

/** The running.json of this agent: rewritten whole (write, then rename) on every change. */
export class RunningFile {
  private readonly records = new Map<number, RunningRecord>();
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {}

  add(record: RunningRecord): Promise<void> {
    this.records.set(record.pid, record);
    return this.save();
  }

  remove(pid: number): Promise<void> {
    if (!this.records.delete(pid)) return this.saving;
    return this.save();
  }

  get size(): number {
    return this.records.size;
  }

  private save(): Promise<void> {
    const content = JSON.stringify([...this.records.values()], null, 2);
    this.saving = this.saving.then(() => writeRecords(this.dataDir, content)).catch((err: unknown) => {
      this.log.warn({ err: String(err), file: runningFile(this.dataDir) }, 'cannot record running tcpdumps');
    });
    return this.saving;
  }
}

async function writeRecords(dataDir: string, content: string): Promise<void> {
  const file = runningFile(dataDir);
  await mkdir(join(dataDir, '.agent'), { recursive: true, mode: 0o700 });
  await writeFile(`${file}.tmp`, content, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

async function readRecords(dataDir: string): Promise<RunningRecord[]> {
  try {
    const parsed = JSON.parse(await readFile(runningFile(dataDir), 'utf8')) as unknown;
    return Array.isArray(parsed) ? (parsed as RunningRecord[]).filter((r) => Number.isInteger(r?.pid) && typeof r.startTicks === 'string') : [];
  } catch {
    return [];
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Kills every tcpdump a previous agent left: each recorded one that still runs as that
 * very process (same PID, same start time, command tcpdump), and each tcpdump marked with
 * this data dir that has no record. SIGTERM, SIGKILL after `graceMs`; a process that does
 * not go within `killWaitMs` after that (stuck in D state) is reported and left: start-up
 * must not hang on it. Then empties the record. Returns what was found alive.
 */
export async function reapStale(
  dataDir: string,
  { procRoot = '/proc', log, graceMs = 2000, killWaitMs = 3000 }: { procRoot?: string; log: Logger; graceMs?: number; killWaitMs?: number },
): Promise<(RunningRecord | { pid: number; startTicks: string; unrecorded: true })[]> {
  const recorded = (await readRecords(dataDir)).filter((record) => isThatProcess(record, procRoot));
  const known = new Set(recorded.map((record) => record.pid));
  const unrecorded = (await markedTcpdumps(dataDir, procRoot))
    .filter((pid) => !known.has(pid))
    .flatMap((pid) => {
      const now = processIdentityNow(pid, procRoot);
      return now ? [{ pid, startTicks: now.startTicks, unrecorded: true as const }] : [];
    });
  const found = [...recorded, ...unrecorded];
  for (const target of found) {
    const bindings = 'namespace' in target ? { namespace: target.namespace, name: target.name, podUID: target.podUID, session: target.sessionId, pid: target.pid } : { pid: target.pid, unrecorded: true };
    log.warn(bindings, 'tcpdump of a previous agent still runs, stopping it');
    signal(target.pid, 'SIGTERM');
    if (await goneWithin(target, procRoot, graceMs)) continue;
    signal(target.pid, 'SIGKILL');
    if (!(await goneWithin(target, procRoot, killWaitMs))) log.error(bindings, 'tcpdump of a previous agent did not exit after SIGKILL (uninterruptible?); going on without it');
  }
  await writeRecords(dataDir, '[]');
  return found;
}

function isThatProcess(record: { pid: number; startTicks: string }, procRoot: string): boolean {
  const now = processIdentityNow(record.pid, procRoot);
  return now !== undefined && now.startTicks === record.startTicks && now.comm === 'tcpdump';
}

async function goneWithin(record: { pid: number; startTicks: string }, procRoot: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (isThatProcess(record, procRoot)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
