// The discovery documents the aggregator and kubectl read: one group, one version, the
// subresources of PacketCapture it serves. `packetcaptures` itself is listed (kubectl
// api-resources shows only resources with a verb, and never subresources) but answers only
// with a pointer to its subresources; the PacketCapture objects stay the CRD's, as
// packetcapture.dev ranks first by its APIService priority (cdk8s/api-server.ts).

import { API_GROUP, API_VERSION, KIND, PLURAL, subresourceName, SUBRESOURCES } from './api.ts';

const groupVersion = `${API_GROUP}/${API_VERSION}`;

export const apiGroup = () => ({
  kind: 'APIGroup',
  apiVersion: 'v1',
  name: API_GROUP,
  versions: [{ groupVersion, version: API_VERSION }],
  preferredVersion: { groupVersion, version: API_VERSION },
});

export const apiGroupList = () => ({ kind: 'APIGroupList', apiVersion: 'v1', groups: [apiGroup()] });

export const apiResourceList = () => ({
  kind: 'APIResourceList',
  apiVersion: 'v1',
  groupVersion,
  resources: [
    { name: PLURAL, singularName: '', namespaced: true, kind: KIND, verbs: ['get'] },
    ...Object.values(SUBRESOURCES).map((sub) => ({ name: subresourceName(sub), singularName: '', namespaced: true, kind: KIND, verbs: ['get'] })),
  ],
});
