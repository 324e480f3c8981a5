// What kube/watch.ts makes of each way a watch can fail, in the shapes the failures really
// take: KubeError from our own requests and ERROR events, and what client-node 2.0.1's
// Watch hands its done callback (node_modules/@kubernetes/client-node/dist/watch.js).

import { describe, expect, it } from 'vitest';
import { KubeError } from '../../kube/http.ts';
import { watchFailure } from '../../kube/watch.ts';

/** client-node's answer to a watch request that got a status other than 200 */
const watchAnswered = (status: number, statusText: string) => Object.assign(new Error(statusText), { statusCode: status });
/** client-node's inactivity (and connect) timeout */
const watchTimedOut = () => new DOMException('The operation was aborted due to timeout', 'TimeoutError');

describe('watchFailure', () => {
  it.each([
    ['an ERROR event with a 410 Status (resourceVersion compacted)', new KubeError(410, 'Expired', 'watch /api/v1/pods: too old resource version')],
    ['a 410 answer to the list', new KubeError(410, 'Gone', 'GET /api/v1/pods: 410 gone')],
    ['a 410 answer to the watch request itself', watchAnswered(410, 'Gone')],
  ])('relists after %s', (_what, err) => {
    expect(watchFailure(err)).toBe('expired');
  });

  it('takes a watch that heard nothing, not even a bookmark, for silent', () => {
    expect(watchFailure(watchTimedOut())).toBe('silent');
  });

  it.each([
    ['a 500 answer to the watch request', watchAnswered(500, 'Internal Server Error')],
    ['a 429 answer to the watch request', watchAnswered(429, 'Too Many Requests')],
    ['an ERROR event with a 500 Status', new KubeError(500, 'InternalError', 'watch /api/v1/pods: etcd unavailable')],
    ['a refused connection', new TypeError('fetch failed')],
    ['a list that got no answer in time', new Error('GET /api/v1/pods: no answer from the API server in 30000 ms')],
    ['an abort by the subscriber going away', new DOMException('This operation was aborted', 'AbortError')],
    ['nothing at all', undefined],
  ])('backs off and re-opens after %s', (_what, err) => {
    expect(watchFailure(err)).toBe('failed');
  });
});
