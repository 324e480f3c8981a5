// Stop means stop: a capture whose filter is edited under steady traffic keeps, in the old
// generation's files, every packet up to the stop instant (its endTime) and none after it,
// checked packet by packet against a raw tcpdump running in the same netns all along.
// Also measured: spec edit -> the old tcpdump's exit.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { REASONS } from '../../crds/packetcapture.ts';
import { complete } from '../../local/fabric.ts';
import { udpFlood } from '../../local/netns-host.ts';
import { sessionsOnDisk } from '../support/captures.ts';
import {
  agentE2eAvailable,
  createCapture,
  createPod,
  deleteCapture,
  exitTime,
  now,
  patchCaptureSpec,
  summary,
  tcpdumpsOf,
  useAgentOnNode,
  WAIT,
  waitSession,
} from './support/agent-harness.ts';

const EDITS = 5;
const PORTS = [34000, 34001];

/** Kernel timestamps (ns since the epoch) and UDP destination ports of the packets in a file. */
async function packetsIn(file: string): Promise<{ t: bigint; port: number }[]> {
  const run = await complete('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'udp.dstport', '-E', 'occurrence=f']);
  if (run.code !== 0) throw new Error(`tshark -r ${file}: ${run.stderr}`);
  return run.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [time = '', port = ''] = line.split('\t');
      const [s, frac = ''] = time.split('.');
      return { t: BigInt(s!) * 1_000_000_000n + BigInt(frac.padEnd(9, '0').slice(0, 9)), port: Number(port) };
    });
}

describe.runIf(agentE2eAvailable)('stop means stop', () => {
  const { ns, nodeName, kc, dataDir, node, host } = useAgentOnNode('stopcut');
  const scratch = mkdtemp(join(tmpdir(), 'pc-stopcut-'));
  afterAll(async () => rm(await scratch, { recursive: true, force: true }));

  it('a filter edited under steady traffic: the old session keeps every packet up to the stop instant and none after it', { timeout: 300_000 }, async () => {
    const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
    // the reference: tcpdump by hand in the same netns, for the whole test
    const raw = join(await scratch, 'raw.pcap');
    const reference = spawn('nsenter', [`--net=${node().podNetns(pod.uid)!.netnsPath}`, '--', 'tcpdump', '-i', 'any', '-y', 'LINUX_SLL2', '-n', '-U', '-Z', 'root', '--time-stamp-precision=nano', '-w', raw, 'udp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve) => reference.stderr!.on('data', (c: Buffer) => /listening on/.test(String(c)) && resolve()));
    // both ports at 400 pps each, for the whole test
    const floods = PORTS.map((port) => udpFlood(host(), pod.ip, port, { packets: 400 * (EDITS * 3 + 6), ratePps: 400 }));

    // odd generations take all UDP, even ones one port; null removes the port in the merge patch
    const filterOf = (generation: number) => ({ protocol: 'UDP' as const, port: (generation % 2 === 0 ? PORTS[1] : null) as number | undefined });
    await createCapture(kc(), ns.name, 'cut', { target: { podName: 'web-0' }, filter: { protocol: 'UDP' } });
    const editToExit: number[] = [];
    const editToCut: number[] = [];
    const cuts = new Map<string, { cutNs: bigint; generation: number }>();
    for (let generation = 1; generation <= EDITS; generation++) {
      const running = await waitSession(kc(), ns.name, 'cut', (s) => s.generation === generation && s.state === 'Running', `generation ${generation} Running`);
      const [tcpdump] = await vi.waitFor(async () => {
        const all = await tcpdumpsOf(dataDir());
        expect(all.map((t) => t.session)).toEqual([running.id]);
        return all;
      }, WAIT);
      await new Promise((r) => setTimeout(r, 2000));
      const exited = exitTime(tcpdump!.pid);
      const editAt = now();
      await patchCaptureSpec(kc(), ns.name, 'cut', { filter: filterOf(generation + 1) });
      editToExit.push((await exited) - editAt);
      const ended = await waitSession(kc(), ns.name, 'cut', (s) => s.id === running.id && s.state === 'Ended', `generation ${generation} Ended`);
      expect(ended.endReason).toBe(REASONS.SpecChanged);
      editToCut.push(Date.parse(ended.endTime!) - editAt);
      cuts.set(ended.id, { cutNs: BigInt(Date.parse(ended.endTime!)) * 1_000_000n, generation });
    }
    await deleteCapture(kc(), ns.name, 'cut');
    await Promise.all(floods);
    await vi.waitFor(async () => expect(await tcpdumpsOf(dataDir())).toEqual([]), WAIT);
    reference.kill('SIGTERM');
    await new Promise((r) => reference.once('exit', r));

    const rawPackets = await packetsIn(raw);
    const sessions = (await sessionsOnDisk(dataDir(), ns.name, 'cut')).filter((session) => cuts.has(session.sessionId));
    expect(sessions).toHaveLength(EDITS);
    let after = 0;
    let lost = 0;
    let kept = 0;
    for (const session of sessions) {
      const { cutNs, generation } = cuts.get(session.sessionId)!;
      const packets = (await Promise.all(session.files.map(packetsIn))).flat();
      kept += packets.length;
      after += packets.filter((p) => p.t > cutNs).length;
      // every packet the raw tcpdump saw between this session's first packet and its stop
      // instant, that this generation's filter matches, is in its files
      const matches = (p: { port: number }) => generation % 2 === 1 || p.port === PORTS[1];
      const keptAt = new Set(packets.map((p) => p.t));
      lost += rawPackets.filter((p) => matches(p) && p.t >= packets[0]!.t && p.t <= cutNs && !keptAt.has(p.t)).length;
    }
    console.log(
      [
        `stop cut, ${EDITS} filter edits under steady traffic: ${kept} packets kept by the old generations, ${after} after their stop instant, ${lost} lost before it`,
        `  spec edit -> old tcpdump exited: ${summary(editToExit)}`,
        `  spec edit -> stop instant (endTime): ${summary(editToCut)}`,
      ].join('\n'),
    );
    expect(after).toBe(0);
    expect(lost).toBe(0);
    expect(kept).toBeGreaterThan(EDITS * 500);
  });
});
