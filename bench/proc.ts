// What /proc says about processes and the machine: RSS, CPU time, netns inodes.

import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { cpus, release, totalmem } from 'node:os';
import type { Machine } from './shape.ts';

const TICKS_PER_SECOND = 100;

/** Fields of /proc/<pid>/stat after the command (which may hold spaces and parentheses). */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime in seconds from a /proc/<pid>/stat line (fields 14 and 15). */
export function cpuSecondsFromStat(stat: string): number {
  const f = statFields(stat);
  // f[0] is field 3 (state), so field n is f[n - 3]
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
}

export const ppidFromStat = (stat: string): number => Number(statFields(stat)[1]);

/** A `Vm...:   1234 kB` line of /proc/<pid>/status in MB. */
export function statusMb(status: string, field: 'VmRSS' | 'VmHWM'): number | undefined {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) / 1024 : undefined;
}

export interface ProcSample {
  rssMb: number;
  peakRssMb: number;
  cpuS: number;
}

export async function sample(pid: number): Promise<ProcSample | undefined> {
  try {
    const [status, stat] = await Promise.all([readFile(`/proc/${pid}/status`, 'utf8'), readFile(`/proc/${pid}/stat`, 'utf8')]);
    return { rssMb: statusMb(status, 'VmRSS') ?? 0, peakRssMb: statusMb(status, 'VmHWM') ?? 0, cpuS: cpuSecondsFromStat(stat) };
  } catch {
    return undefined;
  }
}

/**
 * The process's peak resident memory since the last call (or its start), in MB, and a new
 * peak from now on: the kernel's high-water mark, reset by writing 5 to clear_refs (root),
 * so a phase's peak is exact rather than whatever a sampler happened to see.
 */
export async function peakSinceLast(pid: number): Promise<number | undefined> {
  try {
    const peak = statusMb(await readFile(`/proc/${pid}/status`, 'utf8'), 'VmHWM');
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    return peak;
  } catch {
    return undefined;
  }
}

export interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
}

export async function processes(): Promise<ProcInfo[]> {
  const pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d)).map(Number);
  const infos = await Promise.all(
    pids.map(async (pid) => {
      try {
        const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
        return { pid, ppid: ppidFromStat(stat), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) };
      } catch {
        return undefined;
      }
    }),
  );
  return infos.filter((i): i is ProcInfo => i !== undefined);
}

/** The tcpdump processes whose parent is `parent` (the agent execs them via setpriv and nsenter). */
export async function tcpdumpChildren(parent: number): Promise<number[]> {
  return (await processes()).filter((p) => p.ppid === parent && p.comm === 'tcpdump').map((p) => p.pid);
}

export async function isTcpdump(pid: number): Promise<boolean> {
  try {
    return (await readFile(`/proc/${pid}/comm`, 'utf8')).trim() === 'tcpdump';
  } catch {
    return false;
  }
}

export async function netnsInode(pid: number): Promise<number | undefined> {
  try {
    const m = /^net:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export async function machine(): Promise<Machine> {
  const list = cpus();
  return {
    cpuModel: list[0]?.model.trim() || 'unknown',
    cores: list.length,
    memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
  };
}
