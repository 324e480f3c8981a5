import { describe, expect, it } from 'vitest';
import { agentsFrom } from '../../apiserver/agents.ts';
import { API_GROUP } from '../../apiserver/api.ts';
import { identityFrom, requestHeaderConfig } from '../../apiserver/authn.ts';
import { accessReview } from '../../apiserver/authz.ts';
import { parseApiPath } from '../../apiserver/paths.ts';
import { StreamMerger } from '../../apiserver/merge.ts';
import { failure } from '../../apiserver/status.ts';
import { BlockReader, enhancedPacket, interfaceDescription, sectionHeader } from '../../pcapng/blocks.ts';
import { DATA_CERT_ANNOTATION, DATA_URL_ANNOTATION } from '../../agent/serve.ts';
import { AGENT_LEASE_LABEL } from '../../controller/agents.ts';

const base = `/apis/${API_GROUP}/v1alpha1/namespaces/shop/packetcaptures/web`;

describe('parseApiPath', () => {
  it.each([
    ['/apis', { kind: 'discovery', document: 'groups' }],
    [`/apis/${API_GROUP}`, { kind: 'discovery', document: 'group' }],
    [`/apis/${API_GROUP}/v1alpha1/`, { kind: 'discovery', document: 'resources' }],
    [`${base}/files`, { kind: 'list', namespace: 'shop', name: 'web', subresource: 'files' }],
    [`${base}/files?timeout=32s`, { kind: 'list', namespace: 'shop', name: 'web', subresource: 'files' }],
    [`${base}/files/uid-1/g1-s/capture-1.pcapng`, { kind: 'file', namespace: 'shop', name: 'web', subresource: 'files', podUID: 'uid-1', session: 'g1-s', file: 'capture-1.pcapng' }],
    [base, { kind: 'capture', namespace: 'shop', name: 'web' }],
    [`${base}/stream`, { kind: 'list', namespace: 'shop', name: 'web', subresource: 'stream' }],
    [`/apis/other.dev/v1/namespaces/shop/packetcaptures/web/files`, { kind: 'unknown' }],
    [`/apis/${API_GROUP}/v1/namespaces/shop/packetcaptures/web/files`, { kind: 'unknown' }],
    [`${base}/exec`, { kind: 'unknown' }],
    ['/healthz', { kind: 'unknown' }],
  ])('%s', (path, expected) => {
    expect(parseApiPath(path)).toEqual(expected);
  });

  it.each([`${base}/files/..%2F..%2Fother/s/f`, `${base}/files/uid/../f`, `${base}/files/uid/s`, `${base}/files/%E0%A4%A`, `${base}/files/a/b/c/d`])(
    '%s is refused, never resolved',
    (path) => {
      expect(parseApiPath(path).kind).toBe('invalid');
    },
  );
});

describe('front-proxy authentication', () => {
  const config = requestHeaderConfig({
    'requestheader-client-ca-file': '-----BEGIN CERTIFICATE-----',
    'requestheader-allowed-names': '["front-proxy-client"]',
    'requestheader-username-headers': '["X-Remote-User"]',
    'requestheader-group-headers': '["X-Remote-Group"]',
    'requestheader-extra-headers-prefix': '["X-Remote-Extra-"]',
  });
  // as Node parses them: one entry per header line, two X-Remote-Group lines stay two groups
  const headersDistinct = { 'x-remote-user': ['erin'], 'x-remote-group': ['devs', 'system:authenticated'], 'x-remote-extra-scopes%2fa': ['x'] };

  it('takes the identity from the headers of a verified front-proxy connection', () => {
    expect(identityFrom({ headersDistinct }, { authorized: true, commonName: 'front-proxy-client' }, config)).toEqual({
      user: 'erin',
      groups: ['devs', 'system:authenticated'],
      extra: { 'scopes/a': ['x'] },
    });
  });

  it.each([
    ['an unverified certificate', { authorized: false, commonName: 'front-proxy-client' }],
    ['another name of the CA', { authorized: true, commonName: 'someone' }],
  ])('ignores the headers over %s', (_, peer) => {
    expect(identityFrom({ headersDistinct }, peer, config)).toBeUndefined();
  });

  it('says what the API server lacks when it does not aggregate', () => {
    expect(() => requestHeaderConfig({ 'client-ca-file': 'x' })).toThrow(/--requestheader-client-ca-file/);
  });
});

describe('authorization', () => {
  it('asks for get on the subresource, by name, in the capture namespace', () => {
    expect(accessReview({ user: 'erin', groups: ['devs'], extra: {} }, { namespace: 'shop', name: 'web', subresource: 'files' }).spec).toEqual({
      user: 'erin',
      groups: ['devs'],
      extra: {},
      resourceAttributes: { namespace: 'shop', verb: 'get', group: API_GROUP, resource: 'packetcaptures', subresource: 'files', name: 'web' },
    });
  });

  it('errors are Status objects with a reason and its code', () => {
    expect(failure('Forbidden', 'no')).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'no', reason: 'Forbidden', code: 403 });
  });
});

describe('agentsFrom', () => {
  const now = Date.parse('2026-01-01T00:01:00Z');
  const lease = (node: string, renewTime: string, url?: string, cert: string | undefined = url && `PEM of ${node}`) => ({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: `agent-${node}`,
      uid: node,
      labels: { [AGENT_LEASE_LABEL]: 'true' },
      annotations: { ...(url ? { [DATA_URL_ANNOTATION]: url } : {}), ...(cert ? { [DATA_CERT_ANNOTATION]: cert } : {}) } as Record<string, string>,
    },
    spec: { holderIdentity: node, leaseDurationSeconds: 30, renewTime },
  });

  it('keeps live agents that publish a URL and the certificate to pin, by node', () => {
    expect(
      agentsFrom(
        [
          lease('b', '2026-01-01T00:00:50Z', 'https://10.0.0.2:8444/'),
          lease('a', '2026-01-01T00:00:55Z', 'https://10.0.0.1:8444'),
          lease('stale', '2026-01-01T00:00:00Z', 'https://x'),
          lease('old', '2026-01-01T00:00:59Z'),
          // an agent that names no certificate cannot be told from an impostor
          lease('unpinned', '2026-01-01T00:00:59Z', 'https://10.0.0.3:8444', ''),
        ],
        now,
      ),
    ).toEqual([
      { node: 'a', url: 'https://10.0.0.1:8444', cert: 'PEM of a' },
      { node: 'b', url: 'https://10.0.0.2:8444', cert: 'PEM of b' },
    ]);
  });
});

describe('StreamMerger', () => {
  const section = sectionHeader({ comments: [] });
  const idb = (name: string) => interfaceDescription({ linkType: 276, snapLen: 262144, name });
  const epb = (id: number, byte: number) => enhancedPacket(id, { timestampNs: 1n, originalLength: 1, data: Buffer.from([byte]) });
  const blocks = (...raw: Buffer[]) => new BlockReader().push(Buffer.concat(raw));

  it("numbers every source's interfaces into one sequence and points each packet at its own", () => {
    const merger = new StreamMerger();
    const out = [
      ...blocks(section, idb('web-0/u1'), epb(0, 1)).map((b) => merger.take('node-a', b)),
      ...blocks(section, idb('db-0/u9'), idb('web-0/u2'), epb(1, 2), epb(0, 3)).map((b) => merger.take('node-b', b)),
      // node-a's agent restarted: its section starts again, its interface is a new one
      ...blocks(section, idb('web-0/u1'), epb(0, 4)).map((b) => merger.take('node-a', b)),
    ].filter((b): b is Buffer => !!b);
    const merged = new BlockReader().push(Buffer.concat([section, ...out]));
    const names: string[] = [];
    const packets: [number, number][] = [];
    for (const b of merged) {
      if (b.type === 'interface') names.push(b.info.name);
      if (b.type === 'packet') packets.push([b.interfaceId, b.packet.data[0]!]);
    }
    expect(names).toEqual(['web-0/u1', 'db-0/u9', 'web-0/u2', 'web-0/u1']);
    expect(packets).toEqual([[0, 1], [2, 2], [1, 3], [3, 4]]);
    expect(merger.interfaceCount).toBe(4);
  });

  it('refuses a packet of an interface its source never described', () => {
    const merger = new StreamMerger();
    const [s, p] = blocks(section, epb(0, 1));
    merger.take('node-a', s!);
    expect(() => merger.take('node-a', p!)).toThrow(/never described/);
  });
});
