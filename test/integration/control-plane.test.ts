import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { Watch } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { KubeError, kubeRequest } from '../../kube/http.ts';
import { apiServerVersion, startControlPlane } from '../../local/control-plane.ts';
import { cluster, controlPlaneAvailable, useNamespace } from '../support/cluster.ts';

/** Processes whose command line mentions `text`, e.g. a control plane's data dir. */
async function processesMentioning(text: string): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d));
  const cmdlines = await Promise.all(pids.map((pid) => readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')));
  return pids.filter((_, i) => cmdlines[i]!.includes(text)).map(Number);
}

interface SelfSubjectReview {
  status: { userInfo: { username: string; groups?: string[] } };
}

const whoAmI = (kc: Parameters<typeof kubeRequest>[0]) =>
  kubeRequest<SelfSubjectReview>(kc, 'POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
  }).then((r) => r.status.userInfo);

describe.runIf(controlPlaneAvailable)('local control plane', () => {
  const ns = useNamespace('control-plane');

  it('/version reports the gitVersion of the kube-apiserver binary it runs', async () => {
    const { kubeConfig, info } = cluster();
    const version = await kubeRequest<{ gitVersion: string }>(kubeConfig, 'GET', '/version');
    expect(version.gitVersion).toBe(await apiServerVersion(info.binDir));
  });

  it('stop() leaves no processes and no temp dirs behind', async () => {
    const cp = await startControlPlane({ controllers: true, binDir: cluster().info.binDir });
    const running = await processesMentioning(cp.dataDir);
    // etcd, kube-apiserver, kube-controller-manager, kube-scheduler
    expect(running).toHaveLength(4);
    await cp.stop();
    expect(await processesMentioning(cp.dataDir)).toEqual([]);
    expect(running.filter((pid) => existsSync(`/proc/${pid}`))).toEqual([]);
    expect(existsSync(cp.dataDir)).toBe(false);
  });

  it('a minted kubeconfig authenticates as the certificate user and groups', async () => {
    const kc = await cluster().mintKubeconfig({ user: 'alice', groups: ['team-a', 'team-b'] });
    const user = await whoAmI(kc);
    expect(user.username).toBe('alice');
    expect(user.groups).toEqual(expect.arrayContaining(['team-a', 'team-b', 'system:authenticated']));
  });

  it('a service account kubeconfig authenticates as that service account', async () => {
    const { kubeConfig, serviceAccountKubeconfig } = cluster();
    await kubeRequest(kubeConfig, 'POST', `/api/v1/namespaces/${ns.name}/serviceaccounts`, {
      body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'robot' } },
    });
    const user = await whoAmI(await serviceAccountKubeconfig(ns.name, 'robot'));
    expect(user.username).toBe(`system:serviceaccount:${ns.name}:robot`);
  });

  const configMaps = () => `/api/v1/namespaces/${ns.name}/configmaps`;

  /** Writes a ConfigMap twice; returns the resourceVersion between the writes. */
  async function writeTwice(name: string): Promise<string> {
    const { kubeConfig } = cluster();
    const body = (n: string) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { n } });
    const created = await kubeRequest<{ metadata: { resourceVersion: string } }>(kubeConfig, 'POST', configMaps(), {
      body: body('0'),
    });
    await kubeRequest(kubeConfig, 'PUT', `${configMaps()}/${name}`, { body: body('1') });
    return created.metadata.resourceVersion;
  }

  it('restarting the API server ends open watches; watching from before the restart is 410 Gone', async () => {
    const { kubeConfig, restartApiServer } = cluster();
    const before = await writeTwice('before-restart');
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    // resolves once the server has answered, so the restart below cuts an open watch
    await new Watch(kubeConfig).watch(configMaps(), {}, () => {}, end);
    await restartApiServer();
    await ended;

    const events: { type: string; code?: number }[] = [];
    await new Promise<void>((resolve, reject) => {
      void new Watch(kubeConfig)
        .watch(configMaps(), { resourceVersion: before }, (type, obj: { code?: number }) => events.push({ type, code: obj.code }), resolve)
        .catch(reject);
    });
    expect(events).toContainEqual({ type: 'ERROR', code: 410 });
  });

  it('after compacting etcd and a restart, listing at an older resourceVersion is 410 Gone', async () => {
    const { kubeConfig, compactEtcd, restartApiServer } = cluster();
    const before = await writeTwice('before-compaction');
    expect(await compactEtcd()).toBeGreaterThan(Number(before));
    await restartApiServer();
    const old = kubeRequest(kubeConfig, 'GET', configMaps(), {
      query: { resourceVersion: before, resourceVersionMatch: 'Exact' },
    });
    await expect(old).rejects.toBeInstanceOf(KubeError);
    await expect(old).rejects.toMatchObject({ statusCode: 410 });
  });
});
