// `npm run cluster`: a local control plane in the foreground for trying things by hand.

import { mkdir } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { startControlPlane } from './control-plane.ts';
import { onPath } from './provision.ts';

export interface ClusterOptions {
  /** where to write the admin kubeconfig, relative to the working directory */
  kubeconfig?: string;
}

/** The kubectl to show the user: theirs on PATH, else the one built with the control plane (it always matches). */
export const kubectlFor = (binDir: string): string => (onPath('kubectl') ? 'kubectl' : join(binDir, 'kubectl'));

export async function runCluster(opts: ClusterOptions = {}): Promise<void> {
  const kubeconfigPath = resolve(opts.kubeconfig ?? '.local/kubeconfig');
  await mkdir(dirname(kubeconfigPath), { recursive: true });
  const cp = await startControlPlane({ controllers: true, kubeconfigPath });
  const shown = relative(process.cwd(), kubeconfigPath);
  console.log(`control plane ready: ${kubectlFor(cp.binDir)} --kubeconfig ${shown} get ns`);

  const stop = async (exitCode: number): Promise<void> => {
    await cp.stop();
    process.exit(exitCode);
  };
  process.once('SIGINT', () => void stop(0));
  process.once('SIGTERM', () => void stop(0));
  const death = await cp.died;
  console.error(`control plane failed: ${death}`);
  await stop(1);
}
