// The aggregated API's HTTPS server: every request is authenticated (front proxy), every
// capture request authorized (SubjectAccessReview) before any agent is asked, and every
// failure is a Status. One request, one decision, logged with who and what. Files are
// proxied from the agent that has them; the live stream is merged from all (stream.ts).

import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../kube/log.ts';
import { agentFilePath, agentGet, agentWithFile, listAgents, listCapture, type Agent, type ClientCredentials } from './agents.ts';
import { GROUP } from '../crds/packetcapture.ts';
import { API_GROUP, API_VERSION, KIND, PLURAL, subresourcePath } from './api.ts';
import { identityFrom, peerOf, type RequestHeaderConfig } from './authn.ts';
import { authorize, forbiddenMessage } from './authz.ts';
import { apiGroup, apiGroupList, apiResourceList } from './discovery.ts';
import { parseApiPath } from './paths.ts';
import { serveMergedStream } from './stream.ts';
import { failure, type Status, type StatusReason } from './status.ts';

export interface ApiServerOptions {
  kubeConfig: KubeConfig;
  /** where the agents' presence Leases are; undefined: every namespace */
  systemNamespace: string | undefined;
  /** PEM of the serving certificate and key */
  cert: string;
  key: string;
  requestHeader: RequestHeaderConfig;
  /** the client certificate for the agents' data ports (data-ca.ts) */
  dataClient: ClientCredentials;
  port: number;
  host?: string;
  log: Logger;
}

export interface ApiServer {
  server: Server;
  port: number;
  /** a new front-proxy CA or serving certificate, for connections from now on */
  reload(tls: { cert?: string; key?: string; requestHeader?: RequestHeaderConfig }): void;
  close(): Promise<void>;
}

const json = (res: ServerResponse, code: number, body: unknown): void => {
  res.statusCode = code;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
};

const fail = (res: ServerResponse, reason: StatusReason, message: string, details?: Status['details']): void => {
  const status = failure(reason, message, details);
  json(res, status.code, status);
};

/** Headers of an agent's file answer that mean the same to our client. */
const PASSED_HEADERS = ['content-type', 'content-length', 'content-range', 'accept-ranges', 'content-disposition', 'last-modified'];

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  let requestHeader = opts.requestHeader;
  let serving = { cert: opts.cert, key: opts.key };
  const { log } = opts;
  const secureContext = () => ({ ...serving, ca: requestHeader.ca, requestCert: true, rejectUnauthorized: false });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const who = identityFrom(req, peerOf(req), requestHeader);
    if (!who) return fail(res, 'Unauthorized', 'Unauthorized: this API is served only through the Kubernetes API server');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return fail(res, 'MethodNotAllowed', `the server does not allow this method on the requested resource: ${req.method}`);
    }
    const asked = parseApiPath(req.url ?? '/');
    switch (asked.kind) {
      case 'unknown':
        return fail(res, 'NotFound', 'the server could not find the requested resource');
      case 'invalid':
        return fail(res, 'BadRequest', asked.message);
      case 'discovery':
        return json(res, 200, asked.document === 'groups' ? apiGroupList() : asked.document === 'group' ? apiGroup() : apiResourceList());
      case 'capture':
        return fail(res, 'NotFound', `this API serves a capture's subresources (${subresourcePath(asked.namespace, asked.name, 'files')}); the ${KIND} itself is ${GROUP}'s`);
    }
    const what = { namespace: asked.namespace, name: asked.name, subresource: asked.subresource };
    const decision = await authorize(opts.kubeConfig, who, what);
    const line = { user: who.user, namespace: what.namespace, name: what.name, subresource: what.subresource };
    if (!decision.allowed) {
      log.info({ ...line, reason: decision.reason }, 'request forbidden');
      return fail(res, 'Forbidden', forbiddenMessage(who, what), { name: what.name, group: API_GROUP, kind: PLURAL });
    }
    if (asked.subresource === 'stream') {
      if (asked.kind !== 'list') return fail(res, 'NotFound', `a stream has no parts: ${subresourcePath(asked.namespace, asked.name, 'stream')}`);
      log.info(line, 'stream opened');
      return serveMergedStream({ kubeConfig: opts.kubeConfig, systemNamespace: opts.systemNamespace, client: opts.dataClient, namespace: asked.namespace, name: asked.name, res, log });
    }
    const agents = await listAgents(opts.kubeConfig, opts.systemNamespace);
    if (asked.kind === 'list') {
      const listing = await listCapture(agents, opts.dataClient, asked.namespace, asked.name);
      log.debug({ ...line, nodes: listing.nodes.length }, 'capture listed');
      return json(res, 200, { kind: 'PacketCaptureFiles', apiVersion: `${API_GROUP}/${API_VERSION}`, metadata: { namespace: asked.namespace, name: asked.name }, ...listing });
    }
    const { podUID, session, file } = asked;
    const agent = await agentWithFile(agents, opts.dataClient, asked.namespace, asked.name, podUID, session, file);
    if (!agent) return fail(res, 'NotFound', `no file ${podUID}/${session}/${file} of ${KIND} ${asked.namespace}/${asked.name} on any node`, { name: asked.name, group: API_GROUP, kind: PLURAL });
    await proxyFile(req, res, agent, agentFilePath(asked.namespace, asked.name, podUID, session, file), line);
  };

  const proxyFile = async (req: IncomingMessage, res: ServerResponse, agent: Agent, path: string, line: object) => {
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    const upstream = await agentGet(agent, path, opts.dataClient, { headers: req.headers.range ? { range: req.headers.range } : {}, signal: abort.signal });
    if (upstream.statusCode === 416) {
      upstream.resume();
      res.setHeader('content-range', String(upstream.headers['content-range'] ?? ''));
      return fail(res, 'RequestedRangeNotSatisfiable', `range ${req.headers.range} is past the end of the file`);
    }
    if (upstream.statusCode !== 200 && upstream.statusCode !== 206) {
      upstream.resume();
      return fail(res, 'ServiceUnavailable', `the agent of node ${agent.node} answered ${upstream.statusCode}`);
    }
    res.statusCode = upstream.statusCode;
    for (const h of PASSED_HEADERS) if (upstream.headers[h] !== undefined) res.setHeader(h, upstream.headers[h]!);
    log.info({ ...line, node: agent.node, path, range: req.headers.range }, 'file served');
    if (req.method === 'HEAD') {
      upstream.resume();
      return void res.end();
    }
    // a client that goes away mid-file ends both sides; fetch resumes from what it has
    await pipeline(upstream, res).catch(() => undefined);
  };

  const server = createServer(secureContext(), (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn({ err: String(err), path: req.url }, 'request failed');
      if (!res.headersSent) fail(res, 'ServiceUnavailable', `cannot answer: ${(err as Error).message}`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', resolve);
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    reload(tls) {
      if (tls.requestHeader) requestHeader = tls.requestHeader;
      if (tls.cert && tls.key) serving = { cert: tls.cert, key: tls.key };
      server.setSecureContext(secureContext());
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
