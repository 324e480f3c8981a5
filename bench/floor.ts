// The floor under the switch latency, measured in the same run: how long the API server
// takes to deliver a write to a watch, and how long tcpdump takes to start in a netns and
// be verified there, with nothing of ours around either.

import type { KubeConfig } from '@kubernetes/client-node';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { startTcpdump } from '../agent/tcpdump.ts';
import { kubeRequest, MERGE_PATCH } from '../kube/http.ts';
import { createLogger } from '../kube/log.ts';
import { watchSnapshots } from '../kube/watch.ts';
import { now, waitFor } from './harness.ts';
import { summarize, type Summary } from './stats.ts';

/** ms from sending a PATCH to watchSnapshots' onEvent seeing the patched object. */
export async function watchEventLatency(kc: KubeConfig, namespace: string, rounds: number): Promise<Summary> {
  const path = `/api/v1/namespaces/${namespace}/configmaps`;
  await kubeRequest(kc, 'POST', path, { body: { metadata: { name: 'bench-floor' }, data: { round: '-1' } } });
  const seen = new Map<string, number>();
  let listed = false;
  const log = createLogger('bench-floor');
  log.level = 'warn';
  const sub = watchSnapshots(kc, {
    path,
    log,
    onEvent: (_type, obj) => {
      const round = (obj as { data?: { round?: string } }).data?.round;
      if (round !== undefined && !seen.has(round)) seen.set(round, now());
    },
  }).subscribe(() => (listed = true));
  try {
    // onEvent sees watch events only; the first snapshot is the list
    await waitFor('the floor watch to list', () => (listed ? true : undefined), { timeoutMs: 30_000 });
    const samples: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const sent = now();
      await kubeRequest(kc, 'PATCH', `${path}/bench-floor`, { contentType: MERGE_PATCH, body: { data: { round: String(i) } } });
      samples.push((await waitFor('the patched configmap on the watch', () => seen.get(String(i)), { everyMs: 1 })) - sent);
    }
    return summarize(samples);
  } finally {
    sub.unsubscribe();
    await kubeRequest(kc, 'DELETE', `${path}/bench-floor`).catch(() => undefined);
  }
}

/** ms from spawning tcpdump (setpriv, nsenter) to it capturing, verified in the netns of `pid`. */
export async function tcpdumpStartLatency(netnsPath: string, rounds: number): Promise<Summary> {
  const log = createLogger('bench-floor');
  log.level = 'warn';
  const samples: number[] = [];
  // nothing is kept: the sink drops every packet
  const sink = { push: () => undefined, verified: () => undefined, cut: () => undefined, pastCut: false, close: () => undefined };
  for (let i = 0; i < rounds; i++) {
    const fd = openSync(netnsPath, 'r');
    const netns = { fd, pid: 0, inode: fstatSync(fd).ino, close: () => closeSync(fd) };
    try {
      const proc = await startTcpdump({ netns, argv: ['-i', 'any', '-n', '-Z', 'root', '-w', '-'], sink, mark: 'bench-floor', log });
      samples.push(proc.verifiedAt.getTime() - proc.startedAt.getTime());
      await proc.stop({ graceMs: 1000 });
    } finally {
      netns.close();
    }
  }
  return summarize(samples);
}
