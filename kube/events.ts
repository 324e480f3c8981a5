import type { KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { kubeRequest } from './http.ts';
import type { Logger } from './log.ts';

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

/**
 * Core/v1 Events on the object, which is what `kubectl describe` shows. An Event that
 * cannot be written is logged and dropped: it must never stop a reconcile.
 */
export class EventRecorder {
  constructor(
    private readonly kc: KubeConfig,
    private readonly component: string,
    private readonly log: Logger,
    private readonly host?: string,
  ) {}

  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    try {
      await kubeRequest(this.kc, 'POST', `/api/v1/namespaces/${obj.namespace}/events`, {
        body: {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { name: `${obj.name}.${randomBytes(6).toString('hex')}`, namespace: obj.namespace },
          involvedObject: obj,
          reason,
          message,
          type,
          source: { component: this.component, ...(this.host ? { host: this.host } : {}) },
          reportingComponent: this.component,
          reportingInstance: this.host ?? this.component,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (err) {
      this.log.warn({ namespace: obj.namespace, name: obj.name, reason, err: String(err) }, 'could not record event');
    }
  }
}
