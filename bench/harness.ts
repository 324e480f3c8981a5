// Shared plumbing of the bench phases: a teardown stack that also runs on Ctrl-C, the
// control plane with the CRD installed, and the controller and agent as child processes
// (so their RSS and CPU are their own), whose JSON log lines are kept for timing.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { KubeConfig } from '@kubernetes/client-node';
import { AGENT_LEASE_LABEL } from '../controller/agents.ts';
import { applyObjects, readManifests } from '../kube/apply.ts';
import { isConflict, kubeRequest } from '../kube/http.ts';
import { microTime } from '../kube/lease.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const SYSTEM_NAMESPACE = 'packet-capture-system';
const CRDS = fileURLToPath(new URL('../dist/packet-capture-crds.k8s.yaml', import.meta.url));

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** Epoch milliseconds with sub-millisecond precision, comparable with SimulatedNode's event times. */
export const now = (): number => performance.timeOrigin + performance.now();

// ---- teardown ----------------------------------------------------------------------------

const teardowns: { what: string; fn: () => Promise<unknown> }[] = [];

/** Registers `fn` to run at teardown, newest first; returns it so callers can run it early (once). */
export function defer(what: string, fn: () => Promise<unknown>): () => Promise<void> {
  let ran: Promise<void> | undefined;
  const once = () => (ran ??= fn().then(() => undefined));
  teardowns.push({ what, fn: once });
  return once;
}

export async function teardownAll(): Promise<void> {
  while (teardowns.length > 0) {
    const { what, fn } = teardowns.pop()!;
    try {
      await Promise.race([fn(), sleep(30_000).then(() => Promise.reject(new Error('timed out after 30 s')))]);
    } catch (err) {
      console.error(`bench: teardown of ${what} failed: ${String(err)}`);
    }
  }
}

// ---- waiting -----------------------------------------------------------------------------

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, { timeoutMs = 60_000, everyMs = 20 } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

// ---- cluster objects ---------------------------------------------------------------------

export async function installCrds(kc: KubeConfig): Promise<void> {
  const crds = await readManifests(CRDS);
  await applyObjects(kc, crds, { fieldManager: 'bench' });
  for (const crd of crds) {
    await waitFor(`CRD ${crd.metadata!.name} Established`, async () => {
      const got = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(
        kc,
        'GET',
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata!.name}`,
      );
      return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ? true : undefined;
    }, { everyMs: 100 });
  }
}

const ignoreConflict = (err: unknown) => {
  if (!isConflict(err)) throw err;
};

/** A namespace with the `default` ServiceAccount pods need (no controller-manager creates it here). */
export async function createNamespace(kc: KubeConfig, name: string): Promise<void> {
  await kubeRequest(kc, 'POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } }).catch(ignoreConflict);
  await kubeRequest(kc, 'POST', `/api/v1/namespaces/${name}/serviceaccounts`, { body: { metadata: { name: 'default' } } }).catch(ignoreConflict);
}

/** The presence Lease an agent on `node` would keep, valid for an hour: the controller then sees a live agent. */
export async function fakeAgentLease(kc: KubeConfig, node: string): Promise<void> {
  await kubeRequest(kc, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases`, {
    body: {
      metadata: { name: `agent-${node}`, labels: { [AGENT_LEASE_LABEL]: 'true' } },
      spec: { holderIdentity: node, leaseDurationSeconds: 3600, renewTime: microTime(Date.now()) },
    },
  }).catch(ignoreConflict);
}

export interface PodSpecOptions {
  name: string;
  node: string;
  labels?: Record<string, string>;
}

export const podBody = ({ name, node, labels }: PodSpecOptions) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, labels },
  spec: {
    nodeName: node,
    terminationGracePeriodSeconds: 1,
    containers: [{ name: 'app', image: 'registry.invalid/bench:1', ports: [{ containerPort: 80 }] }],
  },
});

// ---- child processes ---------------------------------------------------------------------

export interface LogRecord {
  /** epoch ms of the line (pino isoTime) */
  at: number;
  msg?: string;
  [key: string]: unknown;
}

/** A component (`packet-capture controller|agent ...`) in its own process, its JSON log kept. */
let compiledCli: string | undefined;

/**
 * Builds the CLI as the image has it (scripts/build, the esbuild bundle, ~2 s) and runs every
 * later Component from it: memory and CPU are then the shipped program's, not tsx's loader's
 * and its compile cache's on top.
 */
export async function useCompiledCli(): Promise<void> {
  const out = join(ROOT, '.local', 'bench-build');
  await promisify(execFile)(join(ROOT, 'scripts', 'build'), ['-o', out], { cwd: ROOT });
  compiledCli = join(out, 'cli', 'packet-capture.js');
}

export class Component {
  readonly records: LogRecord[] = [];
  readonly exited: Promise<number | null>;
  private stderr = '';

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    let partial = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          this.records.push({ ...rec, at: Date.parse(String(rec.time)) });
        } catch {
          // not a log line (e.g. a warning from node)
        }
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4000)));
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  /**
   * Runs the CLI under node 24 in one process (no npx or tsx wrapper around it, so the pid
   * is the component's own), dying with the bench (parent-death signal): the compiled
   * JavaScript after useCompiledCli(), as the image runs it, else the sources under tsx.
   */
  static start(name: string, args: string[], env: Record<string, string> = {}): Component {
    const entry = compiledCli ? [compiledCli] : ['--import', 'tsx', 'cli/packet-capture.ts'];
    const child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', process.execPath, ...entry, ...args], {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const c = new Component(name, child);
    defer(name, () => c.stop());
    return c;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The first record from index `from` on that matches, waiting for it. */
  async waitLog(pred: (r: LogRecord) => boolean, { from = 0, timeoutMs = 60_000 } = {}): Promise<LogRecord> {
    let i = from;
    let exitCode: number | null | undefined;
    void this.exited.then((code) => (exitCode = code));
    return waitFor(
      `${this.name} to log a matching line`,
      () => {
        for (; i < this.records.length; i++) if (pred(this.records[i]!)) return this.records[i];
        if (exitCode !== undefined) throw new Error(`${this.name} exited (${exitCode}): ${this.stderr.trim() || this.tail()}`);
        return undefined;
      },
      { timeoutMs, everyMs: 10 },
    );
  }

  private tail(): string {
    return this.records.slice(-3).map((r) => `${r.msg} ${JSON.stringify(r.err ?? '')}`).join('; ');
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const killed = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(killed);
  }
}
