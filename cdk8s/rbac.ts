// Who may do what. Each component's ServiceAccount gets exactly the verbs its code uses;
// users get PacketCaptures through the built-in admin/edit/view roles by aggregation, so a
// cluster admin binds nothing new. Plain RBAC objects rather than cdk8s-plus roles, whose
// output carries `resourceNames: []` and `apiGroup: ""` that GitOps diffs then trip over.

import { k8s } from 'cdk8s-plus-28';
import { Construct } from 'constructs';
import { API_GROUP, subresourceName, SUBRESOURCES } from '../apiserver/api.ts';
import { GROUP, PLURAL } from '../crds/packetcapture.ts';

export type Rule = k8s.PolicyRule;

export const PACKETCAPTURES = { apiGroups: [GROUP], resources: [PLURAL] };
export const PACKETCAPTURES_STATUS = { apiGroups: [GROUP], resources: [`${PLURAL}/status`] };
/** setting metadata.finalizers through an update needs this on top of update itself */
export const PACKETCAPTURES_FINALIZERS = { apiGroups: [GROUP], resources: [`${PLURAL}/finalizers`] };
/** the packet-capture API's subresources (apiserver/): a capture's files */
export const PACKETCAPTURE_PAYLOADS = { apiGroups: [API_GROUP], resources: Object.values(SUBRESOURCES).map(subresourceName) };
export const PODS = { apiGroups: [''], resources: ['pods'] };
/** client libraries write either API of Events; both are granted so either works */
export const EVENTS = { apiGroups: ['', 'events.k8s.io'], resources: ['events'] };
export const LEASES = { apiGroups: ['coordination.k8s.io'], resources: ['leases'] };
export const CONFIGMAPS = { apiGroups: [''], resources: ['configmaps'] };
export const SECRETS = { apiGroups: [''], resources: ['secrets'] };

export interface Account {
  name: string;
  namespace: string;
}

const subject = (account: Account): k8s.Subject => ({ kind: 'ServiceAccount', ...account });

/** A ClusterRole with these rules, bound to the account cluster-wide, both named `name`. */
export function grantClusterWide(scope: Construct, name: string, account: Account, rules: Rule[]): void {
  new k8s.KubeClusterRole(scope, `${name}-clusterrole`, { metadata: { name }, rules });
  new k8s.KubeClusterRoleBinding(scope, `${name}-clusterrolebinding`, {
    metadata: { name },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
    subjects: [subject(account)],
  });
}

/** A Role with these rules in the account's namespace, bound to it there, both named `name`. */
export function grantInNamespace(scope: Construct, name: string, account: Account, rules: Rule[]): void {
  const metadata = { name, namespace: account.namespace };
  new k8s.KubeRole(scope, `${name}-role`, { metadata, rules });
  new k8s.KubeRoleBinding(scope, `${name}-rolebinding`, {
    metadata,
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [subject(account)],
  });
}

/**
 * packet-capture-edit and packet-capture-view, folded into admin/edit and view. Reading a
 * capture's payloads (`get packetcaptures/files` of the packet-capture API) is in edit and
 * admin only: viewing a capture's status is not reading the packets it holds.
 */
export class UserRoles extends Construct {
  constructor(scope: Construct, id: string) {
    super(scope, id);
    new k8s.KubeClusterRole(this, 'edit', {
      metadata: {
        name: 'packet-capture-edit',
        labels: {
          'rbac.authorization.k8s.io/aggregate-to-admin': 'true',
          'rbac.authorization.k8s.io/aggregate-to-edit': 'true',
        },
      },
      rules: [
        { ...PACKETCAPTURES, verbs: ['create', 'update', 'patch', 'delete', 'get', 'list', 'watch'] },
        { ...PACKETCAPTURE_PAYLOADS, verbs: ['get'] },
      ],
    });
    new k8s.KubeClusterRole(this, 'view', {
      metadata: { name: 'packet-capture-view', labels: { 'rbac.authorization.k8s.io/aggregate-to-view': 'true' } },
      rules: [{ ...PACKETCAPTURES, verbs: ['get', 'list', 'watch'] }],
    });
  }
}
