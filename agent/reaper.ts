// Records of running tcpdumps, kept on disk so the next agent process can find any that
// outlived this one. tcpdump is started with a parent-death signal and normally dies with
// the agent; this is the second line: on start-up the agent kills every recorded tcpdump
// that still runs. A PID is only trusted together with its start time, so a recycled PID
// (now some other process) is never killed.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../kube/log.ts';

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

/** Start time and command name of a process, or undefined once it has exited. */
export async function processIdentity(pid: number, procRoot = '/proc'): Promise<{ startTicks: string; comm: string } | undefined> {
  let text: string;
  try {
    text = await readFile(join(procRoot, String(pid), 'stat'), 'utf8');
  } catch {
    return undefined;
  }
  return parseStat(text);
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
 * Kills every tcpdump a previous agent recorded that still runs as that very process (same
 * PID, same start time, command tcpdump): SIGTERM, SIGKILL after `graceMs`. Then empties
 * the record. Returns the records whose process was found alive and killed.
 */
export async function reapStale(
  dataDir: string,
  { procRoot = '/proc', log, graceMs = 2000 }: { procRoot?: string; log: Logger; graceMs?: number },
): Promise<RunningRecord[]> {
  const reaped: RunningRecord[] = [];
  const isThatProcess = async (record: RunningRecord) => {
    const now = await processIdentity(record.pid, procRoot);
    return now !== undefined && now.startTicks === record.startTicks && now.comm === 'tcpdump';
  };
  for (const record of await readRecords(dataDir)) {
    if (!(await isThatProcess(record))) continue;
    const bindings = { namespace: record.namespace, name: record.name, podUID: record.podUID, session: record.sessionId, pid: record.pid };
    log.warn(bindings, 'tcpdump of a previous agent still runs, stopping it');
    signal(record.pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while ((await isThatProcess(record)) && Date.now() < deadline) await sleep(50);
    if (await isThatProcess(record)) signal(record.pid, 'SIGKILL');
    while (await isThatProcess(record)) await sleep(20);
    reaped.push(record);
  }
  await writeRecords(dataDir, '[]');
  return reaped;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
