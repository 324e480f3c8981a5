// The progress bar of `kubectl pcap fetch` (cli/pcap/progress.ts): drawn on a terminal only.

import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { bytes, fetchProgress } from '../../cli/pcap/progress.ts';

/** A stream that records what is written to it, a terminal when `tty`. */
function stream(tty: boolean) {
  const s = Object.assign(new PassThrough(), { isTTY: tty, columns: 100 });
  const written: string[] = [];
  s.on('data', (chunk: Buffer) => written.push(chunk.toString()));
  return { s, text: () => written.join('') };
}

describe('fetch progress', () => {
  it('says byte counts as people read them', () => {
    expect([bytes(0), bytes(999), bytes(1536), bytes(20 * 2 ** 20), bytes(3 * 2 ** 40)]).toEqual(['0 B', '999 B', '1.5 KiB', '20.0 MiB', '3.0 TiB']);
  });

  it('draws nothing when stderr is not a terminal, and prints the lines as they come', () => {
    const out = stream(false);
    const err = stream(false);
    const progress = fetchProgress(out.s, err.s);
    progress.update(512, 1024);
    progress.say('downloaded  a.pcap');
    progress.stop();
    expect(err.text()).toBe('');
    expect(out.text()).toBe('downloaded  a.pcap\n');
  });

  it('on a terminal, draws bytes of the total and keeps the lines above the bar', () => {
    const tty = stream(true);
    const progress = fetchProgress(tty.s, tty.s);
    progress.update(3 * 2 ** 20, 4 * 2 ** 20);
    progress.say('downloaded  a.pcap');
    progress.stop();
    expect(tty.text()).toContain('75% | 3.0 MiB of 4.0 MiB');
    expect(tty.text()).toContain('downloaded  a.pcap\n');
  });

  it('with stdout redirected, the lines go there and the bar stays on the terminal', () => {
    const out = stream(false);
    const err = stream(true);
    const progress = fetchProgress(out.s, err.s);
    progress.update(1, 2);
    progress.say('downloaded  a.pcap');
    progress.stop();
    expect(out.text()).toBe('downloaded  a.pcap\n');
    expect(err.text()).toContain('50% | 1 B of 2 B');
    expect(err.text()).not.toContain('a.pcap');
  });
});
