// The files the agent writes describe themselves: a file copied anywhere names its capture
// and pod instance; a ring of files each stands alone; the files of a capture whose pod
// was recreated merge into one timeline where each packet's interface is its instance;
// and the live stream of a capture follows it across a recreation.

import { subresourcePath } from '../../apiserver/api.ts';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { listSessionFiles } from '../../agent/files.ts';
import { kubeStream } from '../../kube/http.ts';
import { complete } from '../../local/fabric.ts';
import { tcpRequests } from '../../local/netns-host.ts';
import { mergeCaptureFiles } from '../../pcapng/merge.ts';
import { BlockReader } from '../../pcapng/blocks.ts';
import { sessionsOnDisk } from '../support/captures.ts';
import { agentE2eAvailable, createCapture, createPod, deleteCapture, deletePod, tcpdumpsOf, useAgentOnNode, WAIT, waitSession } from './support/agent-harness.ts';

const tshark = async (args: string[]): Promise<string> => {
  const run = await complete('tshark', args);
  if (run.code !== 0) throw new Error(`tshark ${args.join(' ')}: ${run.stderr}`);
  return run.stdout;
};

describe.runIf(agentE2eAvailable)('self-describing capture files', () => {
  const { ns, nodeName, kc, dataDir, host, agent } = useAgentOnNode('pcapng');
  const scratch = mkdtemp(join(tmpdir(), 'pc-pcapng-'));
  afterAll(async () => rm(await scratch, { recursive: true, force: true }));
  /**
   * A deleted capture's last files are still drained and written after the delete: their
   * header is there at once, their packets once the session's tcpdump has stopped.
   */
  const untilStopped = (sessions: string[]) => vi.waitFor(async () => expect((await tcpdumpsOf(dataDir())).filter((t) => sessions.includes(t.session))).toEqual([]), WAIT);

  it('a file copied out of its directory still names its capture, pod instance, node and filter', async () => {
    const pod = await createPod(kc(), ns.name, 'named-0', nodeName);
    await createCapture(kc(), ns.name, 'named', { target: { podName: 'named-0' }, filter: { protocol: 'TCP', port: 80 } });
    const running = await waitSession(kc(), ns.name, 'named', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running');
    expect((await tcpRequests(host(), pod.ip, 80, 5)).ok).toBe(5);
    await deleteCapture(kc(), ns.name, 'named');
    await untilStopped([running.id]);
    const [file] = await vi.waitFor(async () => {
      const files = await listSessionFiles(running.path!);
      expect(files, `files in ${running.path}: ${JSON.stringify(await complete('ls', ['-la', running.path!]))}`).toHaveLength(1);
      return files;
    }, WAIT);
    const copy = join(await scratch, 'anywhere.pcapng');
    await copyFile(join(running.path!, file!.name), copy);

    const info = await tshark(['-r', copy, '-q', '-z', 'io,phs']).then(() => complete('capinfos', [copy]));
    expect(info.stdout).toContain(`packetcapture.dev/pod: ${ns.name}/named-0 uid=${pod.uid} node=${nodeName} ips=${pod.ip}`);
    expect(info.stdout).toMatch(new RegExp(`packetcapture.dev/capture: ${ns.name}/named uid=\\S+ generation=1`));
    expect(info.stdout).toContain('packetcapture.dev/filter: (tcp and port 80) and not link[10] == 3');
    const interfaces = await tshark(['-r', copy, '-T', 'fields', '-e', 'frame.interface_name']);
    expect(new Set(interfaces.split('\n').filter(Boolean))).toEqual(new Set([`named-0/${pod.uid}`]));
  });

  it('a ring of 3 files under steady traffic: the oldest are replaced and each file stands alone with the header', async () => {
    const pod = await createPod(kc(), ns.name, 'ring-0', nodeName);
    await createCapture(kc(), ns.name, 'ring', { target: { podName: 'ring-0' }, filter: { protocol: 'TCP', port: 80 }, limits: { fileSize: '4Ki', fileCount: 3 } });
    const running = await waitSession(kc(), ns.name, 'ring', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running');
    expect((await tcpRequests(host(), pod.ip, 80, 60)).ok).toBe(60);
    const ended = await vi.waitFor(async () => {
      const session = await waitSession(kc(), ns.name, 'ring', (s) => s.id === running.id, 'progress');
      expect(session.packets).toBeGreaterThanOrEqual(60 * 8);
      return session;
    }, WAIT);
    await deleteCapture(kc(), ns.name, 'ring');

    const files = await listSessionFiles(running.path!);
    expect(files).toHaveLength(3);
    expect(ended.files).toBe(3);
    expect(ended.bytes).toBeLessThanOrEqual(3 * 4096);
    const numbers = files.map((f) => Number(/^capture-(\d+)\.pcapng$/.exec(f.name)![1]));
    expect(numbers[0]).toBeGreaterThan(1); // the first files of the ring were replaced
    expect(numbers).toEqual([numbers[0]!, numbers[0]! + 1, numbers[0]! + 2]);
    for (const file of files) {
      const path = join(running.path!, file.name);
      expect(file.size).toBeLessThanOrEqual(4096);
      expect((await complete('capinfos', [path])).stdout).toContain(`uid=${pod.uid}`);
      expect(Number((await tshark(['-r', path, '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').length)).toBeGreaterThan(0);
    }
  });

  it('the merged file of a capture whose pod was recreated 5 times maps every answer to the instance it names', { timeout: 300_000 }, async () => {
    await createCapture(kc(), ns.name, 'merge', { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 } });
    const uids: string[] = [];
    for (let round = 0; round < 6; round++) {
      const pod = await createPod(kc(), ns.name, 'web-0', nodeName);
      uids.push(pod.uid);
      await waitSession(kc(), ns.name, 'merge', (s) => s.podUID === pod.uid && s.state === 'Running', `Running for ${pod.uid}`);
      expect((await tcpRequests(host(), pod.ip, 80, 10)).ok).toBe(10);
      if (round < 5) await deletePod(kc(), ns.name, 'web-0', pod.uid);
    }
    await deleteCapture(kc(), ns.name, 'merge');
    const sessions = await vi.waitFor(async () => {
      const onDisk = await sessionsOnDisk(dataDir(), ns.name, 'merge');
      expect(new Set(onDisk.filter((s) => s.files.length > 0).map((s) => s.podUID))).toEqual(new Set(uids));
      return onDisk;
    }, WAIT);
    await untilStopped(sessions.map((s) => s.sessionId));

    const files = sessions.flatMap((s) => s.files);
    const merged = join(await scratch, 'merged.pcapng');
    const result = await vi.waitFor(async () => {
      const out = createWriteStream(merged);
      const merging = await mergeCaptureFiles(files, out, { comments: [`packetcapture.dev/capture: ${ns.name}/merge`] });
      await new Promise<void>((resolve) => out.end(resolve));
      // every instance is in the merge (a packet lost for good keeps one out, and fails here)
      expect(new Set(merging.interfaces)).toEqual(new Set(uids.map((uid) => `web-0/${uid}`)));
      return merging;
    }, WAIT);

    // every segment the pods sent; the one holding an answer names the instance that answered
    const rows = (await tshark(['-r', merged, '-o', 'tcp.desegment_tcp_streams:FALSE', '-Y', 'tcp.srcport == 80 && tcp.len > 0', '-T', 'fields', '-e', 'frame.interface_name', '-e', 'tcp.payload']))
      .split('\n')
      .filter(Boolean)
      .map((row) => row.split('\t') as [string, string])
      .flatMap(([iface, payload]) => {
        const uid = /"uid":"([^"]+)"/.exec(Buffer.from(payload.replaceAll(':', ''), 'hex').toString())?.[1];
        return uid ? [{ iface, uid }] : [];
      });
    expect(rows).toHaveLength(60);
    for (const { iface, uid } of rows) expect(iface).toBe(`web-0/${uid}`);
    // One timeline: whenever the merge moves from one instance to another, time does not go
    // back. Within one file it may, by a microsecond: packets timestamped on different CPUs
    // reach the ring slightly out of order, and the merge keeps each file's own order.
    const frames = (await tshark(['-r', merged, '-T', 'fields', '-e', 'frame.interface_name', '-e', 'frame.time_epoch']))
      .split('\n')
      .filter(Boolean)
      .map((row) => {
        const [iface, epoch] = row.split('\t') as [string, string];
        const [s, f = ''] = epoch.split('.');
        return { iface, ns: BigInt(s!) * 1_000_000_000n + BigInt(f.padEnd(9, '0').slice(0, 9)) };
      });
    expect(frames.length).toBe(result.packets);
    const backwardsAcrossInstances = frames.filter((frame, i) => i > 0 && frame.iface !== frames[i - 1]!.iface && frame.ns < frames[i - 1]!.ns);
    expect(backwardsAcrossInstances).toEqual([]);
  });

  it('the live stream of a capture follows it across a recreation, a new interface per instance', { timeout: 120_000 }, async () => {
    let pod = await createPod(kc(), ns.name, 'live-0', nodeName);
    await createCapture(kc(), ns.name, 'live', { target: { podName: 'live-0' }, filter: { protocol: 'TCP', port: 80 } });
    await waitSession(kc(), ns.name, 'live', (s) => s.podUID === pod.uid && s.state === 'Running', 'Running');
    const streamed = join(await scratch, 'live.pcapng');
    const file = createWriteStream(streamed);
    const reader = new BlockReader();
    const seen: string[] = [];
    // the user's path: the packet-capture API, which reads the agent's data port
    const abort = new AbortController();
    const live = await kubeStream(kc(), subresourcePath(ns.name, 'live', 'stream'), { signal: abort.signal });
    const reading = (async () => {
      for await (const chunk of live.body as unknown as AsyncIterable<Uint8Array>) {
        file.write(chunk);
        for (const block of reader.push(Buffer.from(chunk))) if (block.type === 'interface') seen.push(block.info.name);
      }
    })().catch(() => undefined);
    const first = pod.uid;
    await vi.waitFor(() => expect(seen).toEqual([`live-0/${first}`]), WAIT);
    expect((await tcpRequests(host(), pod.ip, 80, 5)).ok).toBe(5);
    await deletePod(kc(), ns.name, 'live-0', pod.uid);
    pod = await createPod(kc(), ns.name, 'live-0', nodeName);
    await vi.waitFor(() => expect(seen).toEqual([`live-0/${first}`, `live-0/${pod.uid}`]), WAIT);
    expect((await tcpRequests(host(), pod.ip, 80, 5)).ok).toBe(5);
    await vi.waitFor(async () => {
      const names = (await tshark(['-r', streamed, '-Y', 'http.response', '-T', 'fields', '-e', 'frame.interface_name'])).split('\n').filter(Boolean);
      expect(names.filter((n) => n === `live-0/${first}`)).toHaveLength(5);
      expect(names.filter((n) => n === `live-0/${pod.uid}`)).toHaveLength(5);
    }, WAIT);
    abort.abort();
    await reading;
    file.end();
    await deleteCapture(kc(), ns.name, 'live');
  });
});
