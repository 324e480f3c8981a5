// Vitest global setup of the integration and e2e projects: ONE control plane per run,
// shared by both. Each project runs its global setup in its own module graph, so the
// one instance is kept on globalThis and stopped when the last project tears down.

import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import {
  BinariesUnavailable,
  startControlPlane,
  type ControlPlane,
  type ControlPlaneInfo,
} from '../../local/control-plane.ts';
import { inCI } from './require.ts';

export interface SharedControlPlane extends ControlPlaneInfo {
  /** HTTP over this unix socket: POST /restart-apiserver (the API server is our child, not the tests') */
  controlSocket: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** the admin kubeconfig of the shared control plane (absent when it is unavailable) */
    kubeconfig: string;
    controlPlane: SharedControlPlane | { unavailable: string };
  }
}

interface Shared {
  projects: number;
  started: Promise<{ cp: ControlPlane; control: Server; info: SharedControlPlane } | { unavailable: string }>;
}

const KEY = Symbol.for('packet-capture.test-control-plane');
const registry = globalThis as { [KEY]?: Shared };

function serveControl(cp: ControlPlane, socket: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/restart-apiserver') {
      cp.restartApiServer().then(
        () => res.writeHead(204).end(),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(socket, () => resolve(server)));
}

async function start(): Promise<Awaited<Shared['started']>> {
  let cp: ControlPlane;
  try {
    cp = await startControlPlane({ controllers: true, packetCaptureApi: true });
  } catch (err) {
    if (err instanceof BinariesUnavailable && !inCI()) return { unavailable: err.message };
    throw err;
  }
  // tests waiting on a dead controller-manager would only time out; say why up front
  void cp.died.then((why) => console.error(`the shared control plane lost a component: ${why}`));
  const controlSocket = join(cp.dataDir, 'control.sock');
  const control = await serveControl(cp, controlSocket);
  const { server, kubeconfigPath, dataDir, binDir, etcdUrl, pkiDir } = cp;
  return { cp, control, info: { server, kubeconfigPath, dataDir, binDir, etcdUrl, pkiDir, controlSocket } };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const shared = (registry[KEY] ??= { projects: 0, started: start() });
  shared.projects++;
  const started = await shared.started;
  if ('unavailable' in started) {
    project.provide('controlPlane', started);
  } else {
    project.provide('kubeconfig', started.info.kubeconfigPath);
    project.provide('controlPlane', started.info);
  }
  return async () => {
    if (--shared.projects > 0) return;
    delete registry[KEY];
    if ('unavailable' in started) return;
    await new Promise((resolve) => started.control.close(resolve));
    await rm(started.info.controlSocket, { force: true });
    await started.cp.stop();
  };
}
