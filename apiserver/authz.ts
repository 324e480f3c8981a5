// May this user do this: a SubjectAccessReview in the capture's namespace, for the
// subresource asked (verb get on packetcaptures/files), as the API server would ask its own
// authorizer. The API server already checked the same attributes before forwarding; asking
// again means nothing reaches a capture's files on the strength of the headers alone.

import type { KubeConfig } from '@kubernetes/client-node';
import { kubeRequest } from '../kube/http.ts';
import { API_GROUP, PLURAL, type Subresource } from './api.ts';
import type { UserInfo } from './authn.ts';

export interface Attributes {
  namespace: string;
  name: string;
  subresource: Subresource;
}

export interface AccessReview {
  apiVersion: 'authorization.k8s.io/v1';
  kind: 'SubjectAccessReview';
  spec: {
    user: string;
    groups: string[];
    extra: Record<string, string[]>;
    resourceAttributes: { namespace: string; verb: 'get'; group: string; resource: string; subresource: string; name: string };
  };
}

export function accessReview(who: UserInfo, what: Attributes): AccessReview {
  return {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SubjectAccessReview',
    spec: {
      user: who.user,
      groups: who.groups,
      extra: who.extra,
      resourceAttributes: { namespace: what.namespace, verb: 'get', group: API_GROUP, resource: PLURAL, subresource: what.subresource, name: what.name },
    },
  };
}

/** The sentence a 403 says: who, which verb on what, where. */
export const forbiddenMessage = (who: UserInfo, what: Attributes): string =>
  `${PLURAL}.${API_GROUP} "${what.name}" is forbidden: User "${who.user}" cannot get resource "${PLURAL}/${what.subresource}" in API group "${API_GROUP}" in the namespace "${what.namespace}"`;

export async function authorize(kc: KubeConfig, who: UserInfo, what: Attributes): Promise<{ allowed: boolean; reason?: string }> {
  const review = await kubeRequest<{ status?: { allowed?: boolean; reason?: string } }>(kc, 'POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    body: accessReview(who, what),
  });
  return { allowed: review.status?.allowed === true, reason: review.status?.reason };
}
