// The packet-capture API that the Kubernetes API server aggregates (apiserver/): names that
// the server, its RBAC, its APIService and `kubectl pcap` must agree on.

import { GROUP, KIND, PLURAL, VERSION } from '../crds/packetcapture.ts';

/** Reading a capture's payloads, apart from the PacketCapture itself (packetcapture.dev). */
export const API_GROUP = `subresources.${GROUP}`;
export const API_VERSION = VERSION;
export const APISERVICE_NAME = `${API_VERSION}.${API_GROUP}`;

/**
 * The data CA's Secret (its keys, the API component's alone) and ConfigMap (its
 * certificates, which the agents trust), both in the system namespace (data-ca.ts).
 */
export const DATA_CA_NAME = 'packet-capture-data-ca';
/** The only client name an agent's data port admits. */
export const API_CLIENT_CN = 'packet-capture-api';

/**
 * The subresources of a PacketCapture this API serves, each its own RBAC resource
 * (`packetcaptures/files`, `packetcaptures/stream`, verb get): reading payloads is granted
 * apart from reading status.
 */
export const SUBRESOURCES = { files: 'files', stream: 'stream' } as const;
export type Subresource = (typeof SUBRESOURCES)[keyof typeof SUBRESOURCES];

export const subresourceName = (sub: Subresource): string => `${PLURAL}/${sub}`;

/** The path of a capture's subresource, as clients ask the Kubernetes API server for it. */
export const subresourcePath = (namespace: string, name: string, sub: Subresource, ...rest: string[]): string =>
  [`/apis/${API_GROUP}/${API_VERSION}/namespaces`, namespace, PLURAL, name, sub, ...rest].map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join('/');

export { KIND, PLURAL };
