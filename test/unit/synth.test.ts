// dist/ is what users apply and Argo CD syncs, so it must be exactly what the cdk8s app
// produces now (run `npm run synth` after changing cdk8s/ or crds/), and what it produces
// must keep the properties the design relies on.

import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_DATA_DIR, GROUP, PLURAL } from '../../crds/packetcapture.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST = join(ROOT, 'dist');
const TSX = join(ROOT, 'node_modules/tsx/dist/cli.mjs');
const CLUSTER_SCOPED = new Set(['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'APIService']);

/** Runs the app as `cdk8s synth` does (cdk8s.yaml), into `outdir`, with `env` on top. */
async function synth(outdir: string, env: Record<string, string> = {}): Promise<void> {
  const { PACKET_CAPTURE_IMAGE: _ignored, ...inherited } = process.env;
  await promisify(execFile)(process.execPath, [TSX, 'cdk8s/main.ts'], {
    cwd: ROOT,
    env: { ...inherited, CDK8S_OUTDIR: outdir, CDK8S_RECORD_CONSTRUCT_METADATA: 'false', ...env },
  });
}

async function readDir(dir: string): Promise<Map<string, string>> {
  const files = (await readdir(dir)).sort();
  return new Map(await Promise.all(files.map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const)));
}

// Loosely typed: the assertions below say what they expect of each object.
type Obj = any;

/** The Kubernetes objects of the manifests (not the kustomization beside them). */
const objectsOf = (files: Map<string, string>): Obj[] =>
  [...files]
    .filter(([file]) => file.endsWith('.k8s.yaml'))
    .flatMap(([, text]) => parseAllDocuments(text).map((d) => d.toJS() as Obj));

describe('cdk8s synth', () => {
  let work: string;
  let fresh: Map<string, string>;
  let custom: Obj[];
  let objects: Obj[];
  const find = (kind: string, name: string): Obj => {
    const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
    if (!found) throw new Error(`no ${kind} ${name} in the synthesized manifests`);
    return found;
  };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'synth-'));
    await Promise.all([
      synth(join(work, 'default')),
      synth(join(work, 'custom'), { PACKET_CAPTURE_IMAGE: 'registry.example/pcap:dev' }),
    ]);
    fresh = await readDir(join(work, 'default'));
    custom = objectsOf(await readDir(join(work, 'custom')));
    objects = objectsOf(fresh);
  }, 120_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('writes exactly what dist/ holds (run `npm run synth` when this fails)', async () => {
    const committed = await readDir(DIST);
    expect([...committed.keys()]).toEqual([...fresh.keys()]);
    for (const [file, text] of fresh) expect(committed.get(file), file).toBe(text);
  });

  it('puts the CRD in a file of its own, so it can be applied first', () => {
    const crdFiles = [...fresh].filter(([, text]) => text.includes('kind: CustomResourceDefinition'));
    expect(crdFiles).toHaveLength(1);
    expect(parseAllDocuments(crdFiles[0]![1]).map((d) => (d.toJS() as Obj).kind)).toEqual(['CustomResourceDefinition']);
    expect(find('CustomResourceDefinition', `${PLURAL}.${GROUP}`).spec.versions[0].subresources).toEqual({ status: {} });
  });

  it('gives cluster-scoped objects no namespace and the rest packet-capture-system', () => {
    for (const o of objects) {
      const where = `${o.kind} ${o.metadata.name}`;
      if (CLUSTER_SCOPED.has(o.kind)) expect(o.metadata, where).not.toHaveProperty('namespace');
      // the one object elsewhere: the packet-capture API's right to read the front-proxy CA, where it lives
      else if (o.metadata.name === 'packet-capture-api:extension-apiserver-authentication-reader') expect(o.metadata.namespace, where).toBe('kube-system');
      else expect(o.metadata.namespace, where).toBe('packet-capture-system');
    }
    expect(objects.map((o) => o.kind)).toEqual(expect.arrayContaining([...CLUSTER_SCOPED]));
  });

  it('runs the controller as one unprivileged replica that can reach the API server', () => {
    const deployment = find('Deployment', 'packet-capture-controller');
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    expect(deployment.spec.replicas).toBe(1);
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(pod.serviceAccountName).toBe('packet-capture-controller');
    expect(container.args).toEqual(['controller', '--leader-elect']);
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true,
      privileged: false,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.resources).toEqual({
      requests: { cpu: '50m', memory: '256Mi' },
      limits: { cpu: '500m', memory: '1024Mi' },
    });
    expect(container.env).toContainEqual({ name: 'NODE_OPTIONS', value: '--max-old-space-size=512 --max-semi-space-size=4' });
    expect(container.livenessProbe.httpGet).toMatchObject({ path: '/healthz', port: 8080 });
    expect(container.readinessProbe.httpGet).toMatchObject({ path: '/readyz', port: 8080 });
  });

  it("runs the agent on every node in the host's PID namespace with capabilities, not privileged", () => {
    const daemonSet = find('DaemonSet', 'packet-capture-agent');
    const pod = daemonSet.spec.template.spec;
    const [container] = pod.containers;
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).not.toBe(true);
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(container.args).toEqual(['agent', '--metrics-port', '8081', '--data-port', '8444']);
    expect(container.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE', 'SETUID', 'SETGID'] },
    });
    expect(container.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(container.ports).toEqual([
      { name: 'http', containerPort: 8081 },
      { name: 'data', containerPort: 8444 },
    ]);
    expect(container.resources).toEqual({ requests: { cpu: '20m', memory: '256Mi' }, limits: { cpu: '500m', memory: '1024Mi' } });
    expect(container.env).toContainEqual({ name: 'NODE_OPTIONS', value: '--max-old-space-size=256 --max-semi-space-size=4' });
    const data = pod.volumes.find((v: Obj) => v.hostPath);
    expect(data.hostPath.path).toBe(DEFAULT_DATA_DIR);
    expect(container.volumeMounts).toContainEqual({ name: data.name, mountPath: DEFAULT_DATA_DIR });
  });

  it('selects pods by their component labels only', () => {
    for (const [kind, name] of [
      ['Deployment', 'packet-capture-controller'],
      ['DaemonSet', 'packet-capture-agent'],
    ] as const) {
      const workload = find(kind, name);
      expect(workload.spec.template.metadata.labels).toEqual(workload.spec.selector.matchLabels);
      const service = objects.find((o) => o.kind === 'Service' && o.metadata.name.startsWith(name));
      expect(service.spec.selector).toEqual(workload.spec.selector.matchLabels);
    }
    expect(find('Service', 'packet-capture-agent').spec.clusterIP).toBe('None');
  });

  it('lets the agent write status but not spec, and read no Secrets', () => {
    const rules: Obj[] = find('ClusterRole', 'packet-capture-agent').rules;
    const verbsOn = (resource: string) => rules.filter((r) => r.resources.includes(resource)).flatMap((r) => r.verbs);
    expect(verbsOn(PLURAL).sort()).toEqual(['get', 'list', 'watch']);
    expect(verbsOn(`${PLURAL}/status`).sort()).toEqual(['get', 'patch']);
    expect(verbsOn('secrets')).toEqual([]);
    expect(rules.flatMap((r) => r.resources)).not.toContain('*');
  });

  it("admits only the API's pods to the agents' data port, and reads the data CA by name alone", () => {
    const policy = find('NetworkPolicy', 'packet-capture-agent-data');
    expect(policy.spec.podSelector.matchLabels).toEqual(find('DaemonSet', 'packet-capture-agent').spec.selector.matchLabels);
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    const toData = policy.spec.ingress.filter((rule: Obj) => rule.ports.some((p: Obj) => p.port === 8444));
    expect(toData).toEqual([{ from: [{ podSelector: { matchLabels: find('Deployment', 'packet-capture-api').spec.selector.matchLabels } }], ports: [{ protocol: 'TCP', port: 8444 }] }]);
    const agentRole: Obj[] = find('Role', 'packet-capture-agent').rules;
    expect(agentRole.filter((r) => r.resources.includes('configmaps'))).toEqual([{ apiGroups: [''], resources: ['configmaps'], resourceNames: ['packet-capture-data-ca'], verbs: ['get'] }]);
    expect(agentRole.flatMap((r) => r.resources)).not.toContain('secrets');
    const apiRole: Obj[] = find('Role', 'packet-capture-api').rules;
    const onSecrets = apiRole.filter((r) => r.resources.includes('secrets'));
    // reading and updating only its own Secret; create cannot name one
    expect(onSecrets).toEqual([
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['packet-capture-data-ca'], verbs: ['get', 'update'] },
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    ]);
  });

  it('folds packet-capture-edit into admin and edit, and packet-capture-view into view', () => {
    expect(find('ClusterRole', 'packet-capture-edit').metadata.labels).toMatchObject({
      'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
      'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
    });
    const view = find('ClusterRole', 'packet-capture-view');
    expect(view.metadata.labels).toMatchObject({ 'rbac.authorization.k8s.io/aggregate-to-view': 'true' });
    expect(view.metadata.labels).not.toHaveProperty(['rbac.authorization.k8s.io/aggregate-to-edit']);
    expect(view.rules).toEqual([{ apiGroups: [GROUP], resources: [PLURAL], verbs: ['get', 'list', 'watch'] }]);
  });

  it('takes the image from PACKET_CAPTURE_IMAGE when set', () => {
    const images = (objs: Obj[]) =>
      objs
        .filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')
        .flatMap((o) => o.spec.template.spec.containers.map((c: Obj) => c.image));
    expect(images(objects)).toEqual(Array(3).fill('ghcr.io/packet-capture/packet-capture:0.1.0'));
    expect(images(custom)).toEqual(Array(3).fill('registry.example/pcap:dev'));
  });
});

describe('npm run synth', () => {
  it("asks no registry for cdk8s-cli's latest version, so it runs offline and prints no upgrade notice", async () => {
    const work = await mkdtemp(join(tmpdir(), 'synth-cli-'));
    try {
      // Any network socket the CLI or its children open fails loudly, as it would offline;
      // a Unix socket (tsx talks to its own over one) is no network request.
      const noNetwork = join(work, 'no-network.cjs');
      await writeFile(
        noNetwork,
        `const { Socket } = require('node:net');
const connect = Socket.prototype.connect;
Socket.prototype.connect = function (...args) {
  const options = Array.isArray(args[0]) ? args[0][0] : args[0];
  if (typeof options !== 'string' && !options?.path) throw new Error('synth opened a network socket');
  return connect.apply(this, args);
};
`,
      );
      const { scripts } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: { synth: string } };
      const [cli, ...args] = scripts.synth.split(/\s+/);
      expect(cli).toBe('cdk8s');
      const { stdout, stderr } = await promisify(execFile)(
        join(ROOT, 'node_modules/.bin/cdk8s'),
        [...args, '--output', join(work, 'dist')],
        // a fresh HOME: no ~/.cdk8s-cli.version, whose cached answer would skip the request
        { cwd: ROOT, env: { ...process.env, HOME: work, NODE_OPTIONS: `--require ${noNetwork}` } },
      );
      expect(stdout + stderr).not.toMatch(/error|new version/i);
      expect((await readdir(join(work, 'dist'))).sort()).toEqual((await readdir(DIST)).sort());
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, 60_000);
});
