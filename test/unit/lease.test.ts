// Lease plumbing shared by the leader election and the agents' presence (kube/lease.ts), and
// the agent's presence Lease on top of it (agent/lease.ts), with the API server mocked out.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startAgentLease } from '../../agent/lease.ts';
import { AGENT_LEASE_LABEL } from '../../controller/agents.ts';
import { agentFieldManager } from '../../crds/packetcapture.ts';
import { APPLY_PATCH, kubeRequest, type RequestOptions } from '../../kube/http.ts';
import { leasePath, microTime, renewEvery, type Lease } from '../../kube/lease.ts';
import type { Logger } from '../../kube/log.ts';

vi.mock('../../kube/http.ts', async (original) => ({ ...(await original<object>()), kubeRequest: vi.fn() }));
const request = vi.mocked(kubeRequest);

/** a promise and the function that settles it */
const deferred = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

beforeEach(() => vi.useFakeTimers());
afterEach(() => {
  vi.useRealTimers();
  request.mockReset();
});

describe('microTime', () => {
  it('writes six fractional digits, as metav1.MicroTime must be', () => {
    expect(microTime(Date.parse('2026-01-01T00:00:01.234Z'))).toBe('2026-01-01T00:00:01.234000Z');
  });
});

describe('leasePath', () => {
  it('names the collection without a name and one Lease with it', () => {
    expect(leasePath('ns')).toBe('/apis/coordination.k8s.io/v1/namespaces/ns/leases');
    expect(leasePath('ns', 'agent-a')).toBe('/apis/coordination.k8s.io/v1/namespaces/ns/leases/agent-a');
  });
});

describe('renewEvery', () => {
  it('waits a whole period after a slow run settles before the next, never running two at once', async () => {
    const runs: ReturnType<typeof deferred>[] = [];
    const renewal = renewEvery(1000, () => {
      runs.push(deferred());
      return runs.at(-1)!.promise;
    });
    await vi.advanceTimersByTimeAsync(5000);
    expect(runs).toHaveLength(1);
    runs[0]!.resolve();
    await renewal.first;
    await vi.advanceTimersByTimeAsync(999);
    expect(runs).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toHaveLength(2);
    runs[1]!.resolve();
    await renewal.stop();
  });

  it('stop settles only once the run in flight has, and no run starts after it', async () => {
    const run = deferred();
    let runs = 0;
    const renewal = renewEvery(1000, () => (runs++, run.promise));
    let stopped = false;
    void renewal.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(false);
    run.resolve();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(stopped).toBe(true);
    expect(runs).toBe(1);
  });
});

describe('startAgentLease', () => {
  const logger = () => ({ info: vi.fn(), warn: vi.fn() });
  const start = (log: ReturnType<typeof logger>, annotations: () => Record<string, string>) =>
    startAgentLease({ kubeConfig: {} as never, node: 'node-a', namespace: 'sys', log: log as unknown as Logger, renewMs: 1000, annotations });

  it('applies agent-<node> with the agent field manager, the agent label and the annotations as they are at each renewal', async () => {
    request.mockResolvedValue({});
    let url = 'https://a:1';
    const lease = start(logger(), () => ({ url }));
    await lease.first;
    url = 'https://a:2';
    await vi.advanceTimersByTimeAsync(1000);
    lease.stop();

    expect(request).toHaveBeenCalledTimes(2);
    const [, method, path, options] = request.mock.calls[1]!;
    const { body, ...rest } = options as RequestOptions & { body: Lease };
    expect([method, path]).toEqual(['PATCH', leasePath('sys', 'agent-node-a')]);
    expect(rest).toEqual({ contentType: APPLY_PATCH, query: { fieldManager: agentFieldManager('node-a'), force: true }, timeoutMs: 1000 });
    expect(body.metadata).toEqual({ name: 'agent-node-a', namespace: 'sys', labels: { [AGENT_LEASE_LABEL]: 'true' }, annotations: { url: 'https://a:2' } });
    expect(body.spec).toMatchObject({ holderIdentity: 'node-a', leaseDurationSeconds: 30 });
    // acquireTime is when the agent started, not when it last renewed
    expect(body.spec?.acquireTime).toBe((request.mock.calls[0]![3] as { body: Lease }).body.spec?.acquireTime);
  });

  it('warns once while renewals fail, says so when one lands again, and renewNow reports which it was', async () => {
    request.mockRejectedValue(new Error('connection refused'));
    const log = logger();
    const lease = start(log, () => ({}));
    await lease.first;
    await vi.advanceTimersByTimeAsync(2000);
    expect(await lease.renewNow()).toBe(false);
    expect(log.warn).toHaveBeenCalledTimes(1);

    request.mockResolvedValue({});
    expect(await lease.renewNow()).toBe(true);
    await vi.advanceTimersByTimeAsync(1000);
    lease.stop();
    expect(log.info).toHaveBeenCalledTimes(1);
    expect(log.info).toHaveBeenCalledWith({ lease: 'agent-node-a', namespace: 'sys' }, 'agent lease renewed again');
  });

  it('renews no more once stopped', async () => {
    request.mockResolvedValue({});
    const lease = start(logger(), () => ({}));
    await lease.first;
    lease.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(request).toHaveBeenCalledTimes(1);
  });
});
