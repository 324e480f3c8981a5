// The product on a real node: kubelet + containerd + bridge CNI, the shipped image, and
// dist/ applied as a user applies it. The controller and the agent run as pods; the tests
// act only as a user or the kubelet's world would (kubectl, killing processes on the
// host) and read the capture files back with tshark.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DEFAULT_DATA_DIR, type SessionStatus } from '../../crds/packetcapture.ts';
import { applyObjects } from '../../kube/apply.ts';
import { checkFile, readPcap as readHttpPcap } from '../../local/demo.ts';
import { complete } from '../../local/fabric.ts';
import { clientPod, startRealCluster, webStatefulSet, workloadContainer, type RealCluster } from '../../local/real-cluster.ts';
import { createCapture, deleteCapture, getCapture, sessionsOnDisk, waitSession } from '../support/captures.ts';
import { startControlPlane, type ControlPlane } from '../../local/control-plane.ts';
import { assertLocalRoute, nodeTcpdumps, pauseOf, podProcesses } from '../../local/real-node.ts';
import { createNamespace, getPod, kubectl as kubectlOn, listPods, realNodeAvailable, waitReady, WAIT, type PodView } from './support.ts';

/** CapEff bits of the DaemonSet's capabilities: SETGID 6, SETUID 7, NET_ADMIN 12, NET_RAW 13, SYS_PTRACE 19, SYS_ADMIN 21 */
const AGENT_CAPS = (1n << 6n) | (1n << 7n) | (1n << 12n) | (1n << 13n) | (1n << 19n) | (1n << 21n);

describe.runIf(realNodeAvailable)('a real node: kubelet + containerd running dist/ as shipped', () => {
  // its own control plane: the node lifecycle controller must run for a real kubelet (it
  // lifts the not-ready taint), and it would evict the shared control plane's simulated pods
  let cp: ControlPlane | undefined;
  const ns = { name: 'real' };
  const kc = () => cp!.kubeConfig;
  const kubectl = (args: readonly string[]) => kubectlOn(cp!, args);
  let real: RealCluster | undefined;
  let client: PodView;

  const agentPod = async (): Promise<PodView> => {
    const pods = (await listPods(kc(), real!.deployed.agent.namespace, 'app.kubernetes.io/component=agent')).filter((p) => !p.metadata.deletionTimestamp);
    expect(pods).toHaveLength(1);
    return pods[0]!;
  };

  /** HTTP requests from the client pod to `ip`, through the kubelet's exec (a real pod's traffic). */
  const requests = async (ip: string, count: number): Promise<string> =>
    kubectl(['exec', '-n', ns.name, 'client', '--', '/bin/busybox', 'sh', '-c', `for i in $(seq ${count}); do /bin/busybox timeout 2 /bin/busybox wget -q -O - http://${ip}/ || echo FAILED; done`]);

  const sessionsOf = async (name: string): Promise<SessionStatus[]> => (await getCapture(kc(), ns.name, name)).status?.sessions ?? [];

  beforeAll(async () => {
    const t0 = Date.now();
    cp = await startControlPlane({ controllers: true, nodeLifecycle: true });
    real = await startRealCluster(cp, kc(), (m) => console.error(`real node: ${m} [${((Date.now() - t0) / 1000).toFixed(1)}s]`));
    await createNamespace(kc(), ns.name);
    await applyObjects(kc(), [webStatefulSet(ns.name), clientPod(ns.name)]);
    client = await waitReady(kc(), ns.name, 'client');
  });

  afterAll(async () => {
    const left = real ? await nodeTcpdumps() : [];
    await real?.stop();
    await cp?.stop();
    expect(left.map((t) => t.argv.join(' '))).toEqual([]);
  });

  it('runs the controller and the agent from dist/, the agent unprivileged with only its capabilities, and finds a pod by UID from inside its container', async () => {
    const agent = await agentPod();
    expect(agent.spec.hostPID).toBe(true);
    const sc = agent.spec.containers[0]!.securityContext as { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
    expect(sc.privileged).toBe(false);
    expect([...(sc.capabilities?.add ?? [])].sort()).toEqual(['NET_ADMIN', 'NET_RAW', 'SETGID', 'SETUID', 'SYS_ADMIN', 'SYS_PTRACE']);
    expect(sc.capabilities?.drop).toEqual(['ALL']);

    // the agent as the kernel sees it: in its container's cgroup, with exactly those capabilities
    const agentProcess = (await podProcesses(agent.metadata.uid)).find((p) => p.argv.includes('agent'));
    expect(agentProcess, 'the agent process in its pod cgroup').toBeDefined();
    const status = await readFile(`/proc/${agentProcess!.pid}/status`, 'utf8');
    expect(BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]}`)).toBe(AGENT_CAPS);

    const web = await waitReady(kc(), ns.name, 'web-0');
    await createCapture(kc(), ns.name, 'first', { target: { podName: 'web-0' } });
    await waitSession(kc(), ns.name, 'first', (s) => s.podUID === web.metadata.uid && s.state === 'Running', `Running for ${web.metadata.uid}`, WAIT.timeout);
    const pause = await pauseOf(web.metadata.uid);
    const tcpdumps = await vi.waitFor(async () => {
      const found = await nodeTcpdumps();
      expect(found).toHaveLength(1);
      return found;
    }, WAIT);
    // tcpdump runs in the agent's container (its cgroup), inside web-0's network namespace
    expect(tcpdumps[0]!.netns).toBe(pause.netns);
    expect(tcpdumps[0]!.cgroup).toContain(`/pod${agent.metadata.uid}/`);
    await deleteCapture(kc(), ns.name, 'first');
    await vi.waitFor(async () => expect(await nodeTcpdumps()).toEqual([]), WAIT);
  });

  it('follows web-0 through a real kubelet: the recreated pod gets a new session under its new UID, and every packet in each file is its own', async () => {
    const first = await waitReady(kc(), ns.name, 'web-0');
    await assertLocalRoute(first.status!.podIP!);
    await createCapture(kc(), ns.name, 'web', { target: { podName: 'web-0' }, filter: { protocol: 'TCP', port: 80 } });
    await waitSession(kc(), ns.name, 'web', (s) => s.podUID === first.metadata.uid && s.state === 'Running', 'Running for the first web-0');
    expect(await requests(first.status!.podIP!, 10)).not.toContain('FAILED');

    const deletedAt = Date.now();
    await kubectl(['delete', 'pod', '-n', ns.name, 'web-0', '--wait=false']);
    const second = await waitReady(kc(), ns.name, 'web-0', first.metadata.uid);
    const session = await waitSession(kc(), ns.name, 'web', (s) => s.podUID === second.metadata.uid && s.state === 'Running', 'Running for the new web-0');
    console.log(`real node: web-0 DELETE -> new instance's session Running ${Date.parse(session.startTime!) - deletedAt} ms`);
    // a real kubelet's old instance is gone (deleted) before its successor exists
    const ended = await waitSession(kc(), ns.name, 'web', (s) => s.podUID === first.metadata.uid && s.state !== 'Running', 'the first instance ended');
    expect(ended.state).toBe('Ended');
    expect(['PodDeleted', 'PodReplaced']).toContain(ended.endReason);
    expect(await requests(second.status!.podIP!, 10)).not.toContain('FAILED');

    // the user's path: kubectl pcap fetch through the API server, then tshark
    const out = await mkdtemp(join(tmpdir(), 'real-node-fetch-'));
    try {
      const cli = await complete(process.execPath, ['bin/kubectl-pcap.mjs', '--kubeconfig', cp!.kubeconfigPath, 'fetch', 'web', '-n', ns.name, '-o', out]);
      expect(cli.code, cli.stderr).toBe(0);
      for (const instance of [first, second]) {
        const dir = join(out, instance.metadata.uid);
        const listing = await complete('find', [dir, '-name', 'capture-*.pcapng', '-type', 'f']);
        const paths = listing.stdout.split('\n').filter(Boolean);
        expect(paths.length, `files of ${instance.metadata.uid}`).toBeGreaterThan(0);
        const packets = (await Promise.all(paths.map(readHttpPcap))).flat();
        const check = checkFile(packets, { uid: instance.metadata.uid, name: 'web-0', node: real!.node.name, ip: instance.status!.podIP! }, [client.status!.podIP!]);
        expect(check.foreign, `foreign packets in ${dir}`).toBe(0);
        expect(Object.keys(check.answeredBy), `answers in ${dir}`).toEqual([instance.metadata.uid]);
        expect(check.answeredBy[instance.metadata.uid]).toBeGreaterThanOrEqual(10);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it('a sandbox the kubelet recreates under the same UID ends the session (NetnsChanged or NetnsGone) and starts one in the new netns, which captures what comes after', async () => {
    const pod = await waitReady(kc(), ns.name, 'web-0');
    const uid = pod.metadata.uid;
    const before = await pauseOf(uid);
    const running = (await sessionsOf('web')).find((s) => s.podUID === uid && s.state === 'Running')!;
    expect(running).toBeDefined();

    process.kill(before.pid, 'SIGKILL');
    const killedAt = Date.now();
    const after = await vi.waitFor(async () => {
      const pause = await pauseOf(uid);
      expect(pause.netns).not.toBe(before.netns);
      return pause;
    }, WAIT);
    const next = await waitSession(kc(), ns.name, 'web', (s) => s.podUID === uid && s.state === 'Running' && s.id !== running.id, 'a new Running session for the same UID');
    console.log(`real node: sandbox killed -> new session Running ${Date.parse(next.startTime!) - killedAt} ms`);
    const old = await waitSession(kc(), ns.name, 'web', (s) => s.id === running.id && s.state !== 'Running', 'the old session ended');
    // NetnsChanged when the new sandbox already runs at the re-check, NetnsGone when the
    // kubelet had killed the old one's containers and not yet made the new one
    expect(old.state).toBe('Ended');
    expect(['NetnsChanged', 'NetnsGone']).toContain(old.endReason);
    await vi.waitFor(async () => expect((await nodeTcpdumps()).map((t) => t.netns)).toEqual([after.netns]), WAIT);

    // the kubelet restarts the pod's containers in the new sandbox, and then reports its IP there
    const restarts = pod.status!.containerStatuses![0]!.restartCount;
    const recreated = await vi.waitFor(async () => {
      const p = await waitReady(kc(), ns.name, 'web-0');
      expect(p.status!.containerStatuses![0]!.restartCount).toBeGreaterThan(restarts);
      return p;
    }, WAIT);
    expect(recreated.metadata.uid).toBe(uid);
    expect(await requests(recreated.status!.podIP!, 10)).not.toContain('FAILED');
    // tcpdump receives packets in blocks the kernel hands over within a second
    await vi.waitFor(async () => {
      const session = (await sessionsOnDisk(DEFAULT_DATA_DIR, ns.name, 'web')).find((s) => s.sessionId === next.id)!;
      const packets = (await Promise.all(session.files.map(readHttpPcap))).flat();
      const check = checkFile(packets, { uid, name: 'web-0', node: real!.node.name, ip: recreated.status!.podIP! }, [client.status!.podIP!]);
      const context = JSON.stringify({ before: pod.status!.podIP, after: recreated.status!.podIP, files: session.files, check });
      expect(check.foreign, context).toBe(0);
      expect(check.answeredBy[uid] ?? 0, context).toBeGreaterThanOrEqual(10);
    }, WAIT);
  });

  it('a container restarted inside the same sandbox keeps its session: same UID, same netns, no packet missing', async () => {
    const pod = await waitReady(kc(), ns.name, 'web-0');
    const uid = pod.metadata.uid;
    const session = (await sessionsOf('web')).find((s) => s.podUID === uid && s.state === 'Running')!;
    const restarts = pod.status!.containerStatuses![0]!.restartCount;
    const app = (await podProcesses(uid)).find((p) => p.comm !== 'pause')!;
    const ip = pod.status!.podIP!;

    // numbered TCP SYNs from the client across the restart: the netns sees each of them
    const sent = 30;
    const traffic = requests(ip, sent);
    await new Promise((r) => setTimeout(r, 300));
    process.kill(app.pid, 'SIGKILL');
    await traffic;
    const restarted = await vi.waitFor(async () => {
      const p = await getPod(kc(), ns.name, 'web-0');
      expect(p.status!.containerStatuses![0]!.restartCount).toBe(restarts + 1);
      return p;
    }, WAIT);
    await waitReady(kc(), ns.name, 'web-0');
    expect(restarted.metadata.uid).toBe(uid);
    const now = await sessionsOf('web');
    expect(now.filter((s) => s.podUID === uid && s.state === 'Running').map((s) => s.id)).toEqual([session.id]);

    // every connection attempt the client made reached the netns, and the capture has it
    const onDisk = (await sessionsOnDisk(DEFAULT_DATA_DIR, ns.name, 'web')).find((s) => s.sessionId === session.id)!;
    await vi.waitFor(async () => {
      const syns = await complete('tshark', ['-r', onDisk.files[0]!, '-Y', `tcp.flags.syn == 1 && tcp.flags.ack == 0 && ip.dst == ${ip}`, '-T', 'fields', '-e', 'tcp.srcport']);
      expect(new Set(syns.stdout.split('\n').filter(Boolean)).size).toBeGreaterThanOrEqual(sent);
    }, WAIT);
  });

  it('an agent pod deleted, or its process SIGKILLed, leaves no tcpdump; the next agent resumes, and earlier files stay fetchable', async () => {
    const pod = await waitReady(kc(), ns.name, 'web-0');
    const uid = pod.metadata.uid;
    for (const how of ['delete', 'kill'] as const) {
      const agent = await agentPod();
      const before = await nodeTcpdumps();
      expect(before).toHaveLength(1);
      const running = (await sessionsOf('web')).find((s) => s.podUID === uid && s.state === 'Running')!;
      if (how === 'delete') {
        await kubectl(['delete', 'pod', '-n', agent.metadata.namespace, agent.metadata.name, '--wait=false']);
      } else {
        const main = (await podProcesses(agent.metadata.uid)).find((p) => p.argv.includes('agent'))!;
        process.kill(main.pid, 'SIGKILL');
      }
      // the old tcpdump is gone, and a new session of the next agent runs in its place
      await vi.waitFor(async () => expect((await nodeTcpdumps()).map((t) => t.pid)).not.toContain(before[0]!.pid), WAIT);
      await waitSession(kc(), ns.name, 'web', (s) => s.podUID === uid && s.state === 'Running' && s.id !== running.id, `a session after the agent was ${how === 'delete' ? 'deleted' : 'killed'}`);
      await vi.waitFor(async () => expect(await nodeTcpdumps()).toHaveLength(1), WAIT);
      const ended = await waitSession(kc(), ns.name, 'web', (s) => s.id === running.id && s.state !== 'Running', 'the old session ended');
      expect(ended.state, JSON.stringify(ended)).toBe('Ended');
    }
    const out = await mkdtemp(join(tmpdir(), 'real-node-fetch-'));
    try {
      const cli = await complete(process.execPath, ['bin/kubectl-pcap.mjs', '--kubeconfig', cp!.kubeconfigPath, 'fetch', 'web', '-n', ns.name, '-o', out]);
      expect(cli.code, cli.stderr).toBe(0);
      const listed = (await complete('find', [out, '-name', 'capture-*.pcapng', '-type', 'f'])).stdout.split('\n').filter(Boolean);
      const onDisk = (await sessionsOnDisk(DEFAULT_DATA_DIR, ns.name, 'web')).filter((s) => s.files.length > 0);
      expect(listed.length).toBeGreaterThanOrEqual(onDisk.length);

      // ...while a pod that asks the agent itself gets nothing: no TLS, no data, on any route
      const ip = (await agentPod()).status!.podIP!;
      const session = onDisk.find((s) => s.podUID === uid)!;
      const file = basename(session.files[0]!);
      const routes = [`/files/${ns.name}/web`, `/files/${ns.name}/web/${uid}`, `/files/${ns.name}/web/${uid}/${session.sessionId}`, `/files/${ns.name}/web/${uid}/${session.sessionId}/${file}`, `/stream/${ns.name}/web`];
      const urls = [...routes.flatMap((r) => [`http://${ip}:8444${r}`, `http://${ip}:8081${r}`]), `http://${ip}:8081/healthz`];
      const script = urls.map((u) => `out=$(/bin/busybox timeout 3 /bin/busybox wget -q -O - ${u} 2>/dev/null); echo "$? \${#out} ${u}"`).join('; ');
      const answers = (await kubectl(['exec', '-n', ns.name, 'client', '--', '/bin/busybox', 'sh', '-c', script])).trim().split('\n').map((line) => {
        const [rc, bytes, url] = line.split(' ');
        return { rc: Number(rc), bytes: Number(bytes), url: url! };
      });
      expect(answers.map((a) => a.url)).toEqual(urls);
      for (const answer of answers) {
        if (answer.url.endsWith('/healthz')) expect(answer, 'the agent is reachable from the pod').toMatchObject({ rc: 0, bytes: 2 });
        else expect(answer, 'no data without the API component').toMatchObject({ bytes: 0 });
        if (!answer.url.endsWith('/healthz')) expect(answer.rc).not.toBe(0);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
    await deleteCapture(kc(), ns.name, 'web');
    await vi.waitFor(async () => expect(await nodeTcpdumps()).toEqual([]), WAIT);
  });

  it('captures a pod from its first packet: numbered UDP from an init container and from the app as it starts', async () => {
    const PACKETS = 50;
    // the node's address: on the bridge, so nothing leaves the machine; nothing listens on port 9
    const target = real!.node.ip;
    const sender = (label: string) => [
      '/bin/busybox',
      'sh',
      '-c',
      `i=1; while [ $i -le ${PACKETS} ]; do echo "${label}-$i"; i=$((i+1)); done | /bin/udp-send ${target} 9; ${label === 'app' ? 'exec /bin/busybox sleep 1000000' : 'true'}`,
    ];
    await createCapture(kc(), ns.name, 'early', { target: { podName: 'early' }, filter: { protocol: 'UDP', port: 9 } });
    await applyObjects(kc(), [
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'early', namespace: ns.name },
        spec: { terminationGracePeriodSeconds: 0, initContainers: [workloadContainer('init', sender('init'))], containers: [workloadContainer('app', sender('app'))] },
      },
    ] as never);
    const pod = await waitReady(kc(), ns.name, 'early');
    await vi.waitFor(async () => {
      const sessions = await sessionsOnDisk(DEFAULT_DATA_DIR, ns.name, 'early');
      expect(sessions.flatMap((s) => s.files).length).toBeGreaterThan(0);
    }, WAIT);
    await new Promise((r) => setTimeout(r, 2_000));
    const files = (await sessionsOnDisk(DEFAULT_DATA_DIR, ns.name, 'early')).filter((s) => s.podUID === pod.metadata.uid).flatMap((s) => s.files);
    const payloads = new Set<string>();
    for (const file of files) {
      const { stdout } = await complete('tshark', ['-r', file, '-Y', 'udp.dstport == 9', '-T', 'fields', '-e', 'data.data']);
      for (const hex of stdout.split('\n').filter(Boolean)) payloads.add(Buffer.from(hex.replaceAll(':', ''), 'hex').toString('latin1').trim());
    }
    const count = (label: string) => [...payloads].filter((p) => p.startsWith(`${label}-`)).length;
    console.log(`real node: startup packets captured: init ${count('init')}/${PACKETS}, app ${count('app')}/${PACKETS}`);
    // both containers' traffic is in the capture; the report above says how much of it
    expect(count('init')).toBeGreaterThan(0);
    expect(count('app')).toBe(PACKETS);
    await deleteCapture(kc(), ns.name, 'early');
  });
});
