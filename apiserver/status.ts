// Errors as the Kubernetes API answers them: a metav1.Status with a reason word, so kubectl
// and client libraries print them like any other API error.

/** metav1.StatusReason values this API answers with, each with its HTTP code. */
export const STATUS_REASONS = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  /** a Range past the end of the file; Content-Range then says the file's size */
  RequestedRangeNotSatisfiable: 416,
  InternalError: 500,
  /** no agent could be asked: said with which node and why */
  ServiceUnavailable: 503,
} as const;
export type StatusReason = keyof typeof STATUS_REASONS;

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: StatusReason;
  details?: { name?: string; group?: string; kind?: string };
  code: number;
}

export function failure(reason: StatusReason, message: string, details?: Status['details']): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code: STATUS_REASONS[reason] };
}
