// The progress bar of `kubectl pcap fetch`, drawn by cli-progress on stderr, only when stderr
// is a terminal: piped or redirected, fetch prints its per-file lines and nothing else.

import { MultiBar, Presets, type SingleBar } from 'cli-progress';

export interface FetchProgress {
  /** fetch's onProgress: bytes here of the files' total */
  update(done: number, total: number): void;
  /** prints a line to `out`, above the bar when both are on the terminal */
  say(line: string): void;
  /** removes the bar */
  stop(): void;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** A byte count as people read it: 999 B, 1.5 KiB, 20.0 MiB. */
export function bytes(n: number): string {
  let unit = 0;
  while (n >= 1024 && unit < UNITS.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[unit]}`;
}

type Stream = NodeJS.WritableStream & { isTTY?: boolean };

export function fetchProgress(out: Stream = process.stdout, err: Stream = process.stderr): FetchProgress {
  const print = (line: string) => void out.write(`${line}\n`);
  if (err.isTTY !== true) return { update: () => {}, say: print, stop: () => {} };
  const bars = new MultiBar(
    {
      stream: err,
      format: '{bar} {percentage}% | {value} of {total}',
      formatValue: (v, _options, type) => (type === 'value' || type === 'total' ? bytes(v) : String(v)),
      // a hidden cursor would stay hidden after Ctrl-C
      hideCursor: false,
      clearOnComplete: true,
    },
    Presets.shades_classic,
  );
  let bar: SingleBar | undefined;
  return {
    update(done, total) {
      bar ??= bars.create(total, 0);
      bar.setTotal(total);
      bar.update(done);
    },
    // a line written to the terminal under the bar would be drawn over
    say: out.isTTY === true ? (line) => bars.log(`${line}\n`) : print,
    stop() {
      bars.update(); // writes the lines said since the last redraw
      bars.stop();
    },
  };
}
