import type { LabelSelector, LabelSelectorRequirement } from '../crds/packetcapture.ts';

type Labels = Readonly<Record<string, string>> | undefined;

function requirementMatches(req: LabelSelectorRequirement, labels: Labels): boolean {
  const has = labels !== undefined && Object.hasOwn(labels, req.key);
  const value = has ? labels[req.key] : undefined;
  switch (req.operator) {
    case 'In':
      return has && (req.values ?? []).includes(value!);
    case 'NotIn':
      // as in Kubernetes: a pod without the key is "not in" any set
      return !has || !(req.values ?? []).includes(value!);
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default:
      // an operator the schema should have rejected selects nothing rather than everything
      return false;
  }
}

/**
 * Kubernetes LabelSelector semantics: every matchLabels pair and every matchExpressions
 * requirement must hold; an empty selector matches every pod.
 */
export function selectorMatches(selector: LabelSelector, labels: Labels): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels?.[key] !== value || !Object.hasOwn(labels, key)) return false;
  }
  return (selector.matchExpressions ?? []).every((req) => requirementMatches(req, labels));
}

/** `app=web,tier in (a,b)` — for messages, in kubectl's selector syntax. */
export function describeSelector(selector: LabelSelector): string {
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const req of selector.matchExpressions ?? []) {
    const values = `(${(req.values ?? []).join(',')})`;
    if (req.operator === 'In') parts.push(`${req.key} in ${values}`);
    else if (req.operator === 'NotIn') parts.push(`${req.key} notin ${values}`);
    else if (req.operator === 'Exists') parts.push(req.key);
    else parts.push(`!${req.key}`);
  }
  return parts.length > 0 ? parts.join(',') : '<everything>';
}
