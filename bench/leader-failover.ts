// How long a leader whose API path hangs keeps leading, and how long until a standby
// leads instead. Each round: a leader behind a proxy and a standby on a healthy path, on
// a fresh Lease with the production timings (lease 15 s, renew deadline 10 s, retry 2 s);
// at a random point of the renew cycle the proxy black-holes (connections stay open,
// nothing answers). Times are measured from the black hole and from the last renewal the
// API server recorded for the leader.
//
//   node_modules/node/bin/node --import tsx bench/leader-failover.ts [--rounds 10] [--kubeconfig F]
//
// Without --kubeconfig it starts its own control plane (etcd + kube-apiserver).

import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { filter, firstValueFrom } from 'rxjs';
import { kubeRequest } from '../kube/http.ts';
import { LeaderElector } from '../kube/leader.ts';
import { createLogger } from '../kube/log.ts';
import { startControlPlane } from '../local/control-plane.ts';
import { BlackholeProxy } from '../test/support/blackhole-proxy.ts';
import { now, sleep } from './harness.ts';
import { summarize, type Summary } from './stats.ts';

const NAMESPACE = 'default';
const RETRY_MS = 2_000;
const LEASE_SECONDS = 15;
const RENEW_DEADLINE_MS = 10_000;

export interface FailoverRound {
  /** black hole -> the hung leader's isLeader false */
  stepDownMs: number;
  /** the leader's last renewal the API server recorded -> its isLeader false */
  stepDownAfterRenewMs: number;
  /** black hole -> the standby's isLeader true: the failover time */
  failoverMs: number;
  /** the hung leader's step-down -> the standby's takeover; negative would be two leaders */
  gapMs: number;
}

const timeOf = (elector: LeaderElector, leading: boolean) => firstValueFrom(elector.isLeader$.pipe(filter((l) => l === leading))).then(() => now());

async function round(direct: KubeConfig, proxy: BlackholeProxy, index: number): Promise<FailoverRound> {
  const name = `bench-failover-${Date.now()}-${index}`;
  const log = createLogger('bench-failover');
  log.level = 'error';
  const timings = { namespace: NAMESPACE, name, leaseDurationSeconds: LEASE_SECONDS, retryPeriodMs: RETRY_MS, renewDeadlineMs: RENEW_DEADLINE_MS, log };
  const hung = new LeaderElector(proxy.kubeConfig(direct), { ...timings, identity: 'hung' });
  const standby = new LeaderElector(direct, { ...timings, identity: 'standby' });
  const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${NAMESPACE}/leases/${name}`;
  try {
    hung.start();
    await timeOf(hung, true);
    standby.start();
    // the standby has seen the record, and the black hole falls anywhere in the renew cycle
    await sleep(RETRY_MS + Math.random() * RETRY_MS);

    let lastRenew = 0;
    let polling = true;
    const poll = (async () => {
      while (polling) {
        const lease = await kubeRequest<{ spec: { holderIdentity?: string; renewTime?: string } }>(direct, 'GET', leasePath).catch(() => undefined);
        if (lease?.spec.holderIdentity === 'hung' && lease.spec.renewTime) lastRenew = Math.max(lastRenew, Date.parse(lease.spec.renewTime));
        await sleep(50);
      }
    })();
    const steppedDown = timeOf(hung, false);
    const tookOver = timeOf(standby, true);
    const holed = now();
    proxy.blackhole();
    const [down, up] = await Promise.all([steppedDown, tookOver]);
    polling = false;
    await poll;
    return { stepDownMs: down - holed, stepDownAfterRenewMs: down - lastRenew, failoverMs: up - holed, gapMs: up - down };
  } finally {
    proxy.heal();
    await standby.stop();
    await hung.stop({ release: false });
    await kubeRequest(direct, 'DELETE', leasePath).catch(() => undefined);
  }
}

export async function leaderFailover(kc: KubeConfig, server: string, rounds: number): Promise<{ rounds: FailoverRound[]; summary: Record<keyof FailoverRound, Summary> }> {
  const proxy = new BlackholeProxy();
  await proxy.start(new URL(server));
  const results: FailoverRound[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const r = await round(kc, proxy, i);
      results.push(r);
      console.log(
        `round ${i + 1}/${rounds}: failover ${r.failoverMs.toFixed(0)} ms; step-down ${r.stepDownMs.toFixed(0)} ms after the black hole, ${r.stepDownAfterRenewMs.toFixed(0)} ms after the last renewal; gap ${r.gapMs.toFixed(0)} ms`,
      );
    }
  } finally {
    await proxy.stop();
  }
  const of = (k: keyof FailoverRound) => summarize(results.map((r) => r[k]));
  return { rounds: results, summary: { stepDownMs: of('stepDownMs'), stepDownAfterRenewMs: of('stepDownAfterRenewMs'), failoverMs: of('failoverMs'), gapMs: of('gapMs') } };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '10' }, kubeconfig: { type: 'string' } } });
  const rounds = Number(values.rounds);
  let stop: (() => Promise<void>) | undefined;
  let kc: KubeConfig;
  if (values.kubeconfig) {
    kc = new KubeConfig();
    kc.loadFromFile(values.kubeconfig);
  } else {
    const cp = await startControlPlane();
    kc = cp.kubeConfig;
    stop = () => cp.stop();
  }
  try {
    const { summary } = await leaderFailover(kc, kc.getCurrentCluster()!.server, rounds);
    console.log(`\nleader failover with a hung leader, ${rounds} rounds (lease ${LEASE_SECONDS} s, renew deadline ${RENEW_DEADLINE_MS} ms, retry ${RETRY_MS} ms, request timeout ${RENEW_DEADLINE_MS / 2} ms), ms:`);
    for (const [what, s] of Object.entries(summary)) console.log(`  ${what.padEnd(22)} median ${s.p50}  p90 ${s.p90}  max ${s.max}`);
  } finally {
    await stop?.();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
