import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

const SA_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export const inCluster = (): boolean => !!process.env.KUBERNETES_SERVICE_HOST && existsSync(SA_TOKEN);

/** The kubeconfig the user has, if any: KUBECONFIG, ~/.kube/config, or the pod's service account. */
export function configuredCluster(): string | undefined {
  if (process.env.KUBECONFIG) return `KUBECONFIG=${process.env.KUBECONFIG}`;
  const home = join(homedir(), '.kube', 'config');
  if (existsSync(home)) return home;
  if (inCluster()) return 'in-cluster service account';
  return undefined;
}

/** --kubeconfig wins, then in-cluster config inside a pod, then KUBECONFIG / ~/.kube/config. */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else if (inCluster()) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) {
    throw new Error('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  }
  return kc;
}
