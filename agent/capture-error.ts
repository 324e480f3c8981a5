import type { Reason } from '../crds/packetcapture.ts';

/** A failure with the reason word a session reports in status. */
export class CaptureError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
  ) {
    super(message);
    this.name = 'CaptureError';
  }
}
