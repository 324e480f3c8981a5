// The packet-capture API component: loads the front-proxy trust from kube-system, serves
// the aggregated API (server.ts), and picks up a new front-proxy CA or serving certificate
// without a restart (both are re-read every REFRESH_MS; a change applies to new connections).
// It owns the data CA (data-ca.ts) by which the agents know it.

import { readFile } from 'node:fs/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeRequest } from '../kube/http.ts';
import type { Logger } from '../kube/log.ts';
import { AUTH_CONFIGMAP, requestHeaderConfig, type RequestHeaderConfig } from './authn.ts';
import { DataCredentials } from './data-ca.ts';
import { startApiServer, type ApiServer } from './server.ts';

const REFRESH_MS = 60_000;

export interface ApiComponentOptions {
  kubeConfig: KubeConfig;
  systemNamespace: string;
  /** PEM files of the serving certificate (the APIService's caBundle must have signed it) */
  certFile: string;
  keyFile: string;
  port: number;
  host?: string;
  log: Logger;
  refreshMs?: number;
}

export async function loadRequestHeaderConfig(kc: KubeConfig): Promise<RequestHeaderConfig> {
  const cm = await kubeRequest<{ data?: Record<string, string> }>(kc, 'GET', `/api/v1/namespaces/${AUTH_CONFIGMAP.namespace}/configmaps/${AUTH_CONFIGMAP.name}`);
  return requestHeaderConfig(cm.data);
}

export async function runApiComponent(opts: ApiComponentOptions): Promise<ApiServer> {
  const load = async () => ({
    requestHeader: await loadRequestHeaderConfig(opts.kubeConfig),
    cert: await readFile(opts.certFile, 'utf8'),
    key: await readFile(opts.keyFile, 'utf8'),
  });
  let current = await load();
  // the data CA lives with this component, in the namespace the agents read it from
  const data = await DataCredentials.start({ kubeConfig: opts.kubeConfig, namespace: opts.systemNamespace, log: opts.log });
  const server = await startApiServer({ ...current, dataClient: () => data.current(), kubeConfig: opts.kubeConfig, systemNamespace: opts.systemNamespace, port: opts.port, host: opts.host, log: opts.log });
  opts.log.info({ port: server.port }, 'packet-capture API serving');
  const timer = setInterval(() => {
    load().then(
      (next) => {
        if (JSON.stringify(next) === JSON.stringify(current)) return;
        current = next;
        server.reload(next);
        opts.log.info('front-proxy CA or serving certificate changed; new connections use it');
      },
      (err: unknown) => opts.log.warn({ err: String(err) }, 'cannot re-read the front-proxy CA or serving certificate; keeping the ones loaded'),
    );
  }, opts.refreshMs ?? REFRESH_MS);
  timer.unref();
  return {
    ...server,
    close: async () => {
      clearInterval(timer);
      data.close();
      await server.close();
    },
  };
}
