// PacketCaptures as tests create, edit, delete and wait on them, and their session
// directories on disk: no control plane of its own, so any suite can use it.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CAPTURE_FILE } from '../../agent/files.ts';
import type { KubeConfig } from '@kubernetes/client-node';
import { vi } from 'vitest';
import { API_VERSION, GROUP, KIND, PLURAL, VERSION, type PacketCapture, type PacketCaptureSpec, type SessionStatus } from '../../crds/packetcapture.ts';
import { isNotFound, kubeRequest, MERGE_PATCH } from '../../kube/http.ts';

const WAIT = { timeout: 60_000, interval: 50 };

const capturesPath = (ns: string) => `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}`;

export async function createCapture(kc: KubeConfig, ns: string, name: string, spec: PacketCaptureSpec): Promise<PacketCapture> {
  return kubeRequest<PacketCapture>(kc, 'POST', capturesPath(ns), {
    body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: ns }, spec },
  });
}

export const getCapture = (kc: KubeConfig, ns: string, name: string): Promise<PacketCapture> =>
  kubeRequest<PacketCapture>(kc, 'GET', `${capturesPath(ns)}/${name}`);

export async function patchCaptureSpec(kc: KubeConfig, ns: string, name: string, spec: Partial<PacketCaptureSpec>): Promise<PacketCapture> {
  return kubeRequest<PacketCapture>(kc, 'PATCH', `${capturesPath(ns)}/${name}`, { contentType: MERGE_PATCH, body: { spec } });
}

/** Deletes a capture and waits until it is gone (finalizer removed, if any). */
export async function deleteCapture(kc: KubeConfig, ns: string, name: string): Promise<void> {
  await kubeRequest(kc, 'DELETE', `${capturesPath(ns)}/${name}`).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
  await vi.waitFor(async () => {
    const gone = await getCapture(kc, ns, name).then(
      () => false,
      (err: unknown) => {
        if (isNotFound(err)) return true;
        throw err;
      },
    );
    if (!gone) throw new Error(`capture ${ns}/${name} still exists`);
  }, WAIT);
}

/** Waits until the capture's status shows a session matching `match`, and returns it. */
export async function waitSession(
  kc: KubeConfig,
  ns: string,
  name: string,
  match: (s: SessionStatus) => boolean,
  what: string,
  timeout = WAIT.timeout,
): Promise<SessionStatus> {
  return vi.waitFor(
    async () => {
      const sessions = (await getCapture(kc, ns, name)).status?.sessions ?? [];
      const found = sessions.find(match);
      if (!found) throw new Error(`no session ${what} in ${JSON.stringify(sessions, null, 1)}`);
      return found;
    },
    { ...WAIT, timeout },
  );
}

export interface SessionOnDisk {
  podUID: string;
  sessionId: string;
  dir: string;
  files: string[];
}

/** Every session directory of a capture under `dataDir`, with its capture files. */
export async function sessionsOnDisk(dataDir: string, ns: string, name: string): Promise<SessionOnDisk[]> {
  const result: SessionOnDisk[] = [];
  const base = join(dataDir, ns, name);
  for (const podUID of await readdir(base).catch(() => [] as string[])) {
    if (podUID.startsWith('.')) continue;
    for (const sessionId of await readdir(join(base, podUID))) {
      const dir = join(base, podUID, sessionId);
      const files = (await readdir(dir)).filter((f) => CAPTURE_FILE.test(f)).map((f) => join(dir, f));
      result.push({ podUID, sessionId, dir, files });
    }
  }
  return result;
}
