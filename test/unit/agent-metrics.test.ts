// The agent's metrics (agent/metrics.ts) as a scrape reads them, from the session updates
// the agent emits: kernel drops are counted per capture, and a capture's series goes once
// it has had no session on the node for a while, so a long-lived agent's series stay bounded.

import { describe, expect, it } from 'vitest';
import { AgentMetrics, DROPS_RETENTION_MS } from '../../agent/metrics.ts';
import type { CaptureRef } from '../../agent/sessions.ts';
import type { SessionStatus } from '../../crds/packetcapture.ts';
import { NS, session } from './agent-fixtures.ts';

const DROPS = 'packetcapture_agent_packets_dropped_by_kernel_total';
const web: CaptureRef = { uid: 'pc-1', namespace: NS, name: 'web' };
const db: CaptureRef = { uid: 'pc-2', namespace: NS, name: 'db' };

function agentMetrics() {
  const clock = { now: 0 };
  const metrics = new AgentMetrics({ statusWrites: () => 0, now: () => clock.now });
  const update = (capture: CaptureRef, s: Partial<SessionStatus> & Pick<SessionStatus, 'id'>) => metrics.observe({ capture, session: session(s) });
  /** the drop counter's series as a scrape sees them, by "namespace/name" */
  const drops = async () => {
    const metric = await metrics.registry.getSingleMetric(DROPS)!.get();
    return Object.fromEntries(metric.values.map((v) => [`${v.labels.capture_namespace}/${v.labels.capture_name}`, v.value]));
  };
  return { clock, update, drops };
}

describe('packetcapture_agent_packets_dropped_by_kernel_total', () => {
  it("adds each session's increase of droppedByKernel to its capture, summing the capture's sessions", async () => {
    const { update, drops } = agentMetrics();
    update(web, { id: 's1', state: 'Running', droppedByKernel: 3 });
    update(web, { id: 's1', state: 'Running', droppedByKernel: 10 });
    update(web, { id: 's2', state: 'Running', droppedByKernel: 4 });
    update(db, { id: 's3', state: 'Running', droppedByKernel: 1 });
    expect(await drops()).toEqual({ [`${NS}/web`]: 14, [`${NS}/db`]: 1 });
  });

  it('counts the drops reported with the final entry of a session', async () => {
    const { update, drops } = agentMetrics();
    update(web, { id: 's1', state: 'Running', droppedByKernel: 2 });
    update(web, { id: 's1', state: 'Ended', droppedByKernel: 7 });
    expect(await drops()).toEqual({ [`${NS}/web`]: 7 });
  });

  it('has a zero series for a capture as soon as a session of it is seen, so its first drops are an increase', async () => {
    const { update, drops } = agentMetrics();
    update(web, { id: 's1', state: 'Pending' });
    expect(await drops()).toEqual({ [`${NS}/web`]: 0 });
  });

  it("keeps a capture's series while any session of it runs and for the retention after the last one ends, then drops it", async () => {
    const { clock, update, drops } = agentMetrics();
    update(web, { id: 's1', state: 'Running', droppedByKernel: 5 });
    update(web, { id: 's2', state: 'Running' });
    clock.now = 1_000;
    update(web, { id: 's1', state: 'Ended', droppedByKernel: 5 });
    clock.now = 1_000 + 2 * DROPS_RETENTION_MS;
    expect(await drops()).toEqual({ [`${NS}/web`]: 5 });

    update(web, { id: 's2', state: 'Failed' });
    clock.now += DROPS_RETENTION_MS - 1;
    expect(await drops()).toEqual({ [`${NS}/web`]: 5 });
    clock.now += 1;
    expect(await drops()).toEqual({});
  });

  it('a new session of an idle capture keeps its series past the retention', async () => {
    const { clock, update, drops } = agentMetrics();
    update(web, { id: 's1', state: 'Ended', droppedByKernel: 1 });
    update(web, { id: 's2', state: 'Running' });
    clock.now = 2 * DROPS_RETENTION_MS;
    expect(await drops()).toEqual({ [`${NS}/web`]: 1 });
  });
});
