// What the soak reads off the machine: capture files (tshark), session directories, the
// agent's running tcpdumps and the components' memory.

import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CAPTURE_FILE, readSessionMeta, type SessionMeta } from '../agent/files.ts';
import { markedTcpdumps, sessionMark } from '../agent/reaper.ts';
import { SESSION_MARK } from '../agent/tcpdump.ts';
import type { TimedFrame } from './invariants.ts';

const FIELDS = ['frame.time_epoch', 'ip.src', 'ip.dst', 'ipv6.src', 'ipv6.dst', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4', 'arp.opcode'];

/**
 * The frames of a capture file. A tcpdump killed with its agent (kill -9) or stopped
 * mid-write leaves a last packet cut short: tshark then exits non-zero after printing every
 * whole one, which are what counts.
 */
export function readFrames(file: string): Promise<TimedFrame[]> {
  const args = ['-r', file, '-T', 'fields', ...FIELDS.flatMap((f) => ['-e', f]), '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,'];
  return new Promise((resolve, reject) => {
    execFile('tshark', args, { maxBuffer: 512 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && !/cut short in the middle of a packet/.test(stderr)) return reject(new Error(`tshark -r ${file}: ${stderr.trim() || err.message}`));
      const list = (value: string | undefined) => (value ? value.split(',').filter(Boolean) : []);
      resolve(
        stdout
          .split('\n')
          .filter(Boolean)
          .map((line) => {
            const [time, src, dst, src6, dst6, arpSrc, arpDst, opcode] = line.split('\t');
            // the first occurrence is the outer header's (ICMP errors quote another)
            const outer = list(src).length > 0 ? [list(src)[0], list(dst)[0]] : [list(src6)[0], list(dst6)[0]];
            return {
              time: Number(time) * 1000,
              ...(outer[0] !== undefined && outer[1] !== undefined ? { src: outer[0], dst: outer[1] } : {}),
              arpIps: [...list(arpSrc), ...list(arpDst)],
              ...(opcode ? { arpOpcode: Number(list(opcode)[0]) } : {}),
            };
          }),
      );
    });
  });
}

export interface SessionDir {
  dir: string;
  capture: string;
  podUID: string;
  sessionId: string;
  meta: SessionMeta;
}

const entries = (dir: string) => readdir(dir).catch(() => [] as string[]);

/**
 * Adds the session directories of `namespace`'s captures that are not in `known` yet
 * (keyed by path); a directory's SESSION_FILE is written once, so it is read once.
 */
export async function findSessionDirs(dataDir: string, namespace: string, known: Map<string, SessionDir>): Promise<void> {
  const base = join(dataDir, namespace);
  for (const capture of await entries(base)) {
    for (const podUID of (await entries(join(base, capture))).filter((e) => !e.startsWith('.'))) {
      for (const sessionId of await entries(join(base, capture, podUID))) {
        const dir = join(base, capture, podUID, sessionId);
        if (known.has(dir)) continue;
        const meta = await readSessionMeta(dir);
        // written the instant the session starts: without it yet, look again next time
        if (meta) known.set(dir, { dir, capture, podUID, sessionId, meta });
      }
    }
  }
}

export const captureFiles = async (dir: string): Promise<string[]> =>
  (await entries(dir)).filter((f) => CAPTURE_FILE.test(f)).map((f) => join(dir, f));

export interface RunningTcpdump {
  pid: number;
  sessionId: string;
}

/** The tcpdumps the agent of `dataDir` started (its own or an earlier incarnation's), with their session. */
export async function runningTcpdumps(dataDir: string): Promise<RunningTcpdump[]> {
  const mark = `${SESSION_MARK}=${sessionMark(dataDir, '')}`;
  const found: RunningTcpdump[] = [];
  for (const pid of await markedTcpdumps(dataDir)) {
    try {
      const environ = (await readFile(`/proc/${pid}/environ`, 'latin1')).split('\0');
      const value = environ.find((v) => v.startsWith(mark));
      if (value) found.push({ pid, sessionId: value.slice(mark.length) });
    } catch {
      // exited while we looked
    }
  }
  return found;
}
