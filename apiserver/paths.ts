// Request path -> what is asked for (pure). The raw path, never a normalised one: a `..` or
// an encoded `/` is refused, not resolved, so no request can name another capture's files.
//   /apis, /apis/<group>, /apis/<group>/<version>                                  discovery
//   /apis/<group>/<version>/namespaces/<ns>/packetcaptures/<name>/files             every instance, session, file
//   .../files/<podUID>/<session>/<file>                                             one file (Range)
//   /apis/<group>/<version>/namespaces/<ns>/packetcaptures/<name>/stream            the live pcapng stream

import { API_GROUP, API_VERSION, PLURAL, SUBRESOURCES, type Subresource } from './api.ts';

/** One path segment: Kubernetes names, UIDs, session ids and file names are all of this shape. */
export const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export type ApiRequest =
  | { kind: 'discovery'; document: 'groups' | 'group' | 'resources' }
  /** the capture itself, which the CRD serves: answered with where its files are */
  | { kind: 'capture'; namespace: string; name: string }
  | { kind: 'list'; namespace: string; name: string; subresource: Subresource }
  | { kind: 'file'; namespace: string; name: string; subresource: Subresource; podUID: string; session: string; file: string }
  | { kind: 'invalid'; message: string }
  | { kind: 'unknown' };

export function parseApiPath(rawPath: string): ApiRequest {
  const path = rawPath.split('?')[0]!;
  let parts: string[];
  try {
    parts = path.split('/').slice(1).map(decodeURIComponent);
  } catch {
    return { kind: 'invalid', message: 'malformed path' };
  }
  if (parts.at(-1) === '') parts.pop();
  if (parts[0] !== 'apis') return { kind: 'unknown' };
  if (parts.length === 1) return { kind: 'discovery', document: 'groups' };
  if (parts[1] !== API_GROUP) return { kind: 'unknown' };
  if (parts.length === 2) return { kind: 'discovery', document: 'group' };
  if (parts[2] !== API_VERSION) return { kind: 'unknown' };
  if (parts.length === 3) return { kind: 'discovery', document: 'resources' };
  const [, , , namespaces, namespace, plural, name, sub, ...rest] = parts;
  if (namespaces !== 'namespaces' || plural !== PLURAL || !namespace) return { kind: 'unknown' };
  if (name && sub === undefined) return { kind: 'capture', namespace, name };
  const subresource = Object.values(SUBRESOURCES).find((s) => s === sub);
  if (!name || !subresource) return { kind: 'unknown' };
  const names = [namespace, name, ...rest];
  if (!names.every((s) => SEGMENT.test(s))) return { kind: 'invalid', message: `not a name: ${JSON.stringify(names.find((s) => !SEGMENT.test(s)))}` };
  if (rest.length === 0) return { kind: 'list', namespace, name, subresource };
  if (rest.length !== 3) {
    return { kind: 'invalid', message: `expected .../${PLURAL}/${name}/${subresource} or .../${subresource}/<podUID>/<session>/<file>` };
  }
  const [podUID, session, file] = rest as [string, string, string];
  return { kind: 'file', namespace, name, subresource, podUID, session, file };
}
