// `kubectl pcap fetch --merge FILE`: the fetched files of a capture as one file.

import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { CAPTURE_FILE } from '../../agent/files.ts';
import { mergeCaptureFiles, type MergeFormat, type MergeResult } from '../../pcapng/merge.ts';

/** Merges the capture files among `paths` (other fetched files are left out) into `out`. */
export async function mergeInto(out: string, paths: readonly string[], format: MergeFormat, comments: readonly string[]): Promise<MergeResult> {
  const files = paths.filter((path) => CAPTURE_FILE.test(path.split('/').at(-1) ?? ''));
  const stream = createWriteStream(out);
  try {
    return await mergeCaptureFiles(files, stream, { format, comments });
  } finally {
    stream.end();
    await finished(stream);
  }
}
