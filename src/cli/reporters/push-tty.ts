/**
 * A progress bar on a terminal: paths and bytes done, rate and time left, redrawn at most ten
 * times a second on one line; retries, failures and warnings scroll above it.
 */
import type { Writable } from 'node:stream';
import type { PushEvent } from '../../push/events.ts';
import { describe, formatBytes, formatSeconds } from './push-format.ts';
import type { PushReporter } from './push-reporter.ts';

const REDRAW_MS = 100;
const BAR_WIDTH = 24;

export function ttyReporter(out: Writable): PushReporter {
  let totalPaths = 0;
  let totalBytes = 0;
  let donePaths = 0;
  let doneBytes = 0;
  let started = performance.now();
  let shown = false;
  /** Between a plan and its done: only then is there a bar to draw. */
  let active = false;
  const clear = (): void => {
    if (shown) out.write('\r\x1b[K');
    shown = false;
  };
  const draw = (): void => {
    if (!active || totalPaths === 0) return;
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? doneBytes / seconds : 0;
    const left = rate > 0 ? (totalBytes - doneBytes) / rate : Infinity;
    const fraction = totalBytes > 0 ? doneBytes / totalBytes : donePaths / totalPaths;
    const filled = Math.min(BAR_WIDTH, Math.round(fraction * BAR_WIDTH));
    const bar = '#'.repeat(filled) + '-'.repeat(BAR_WIDTH - filled);
    out.write(
      `\r\x1b[K[${bar}] ${donePaths}/${totalPaths} paths  ${formatBytes(doneBytes)}/${formatBytes(totalBytes)}  ${formatBytes(rate)}/s  ETA ${formatSeconds(left)}`,
    );
    shown = true;
  };
  const timer = setInterval(draw, REDRAW_MS);
  timer.unref();
  const print = (line: string): void => {
    clear();
    out.write(`${line}\n`);
    draw();
  };
  return {
    emit(event: PushEvent) {
      switch (event.event) {
        case 'plan':
          totalPaths += event.upload;
          totalBytes += event.narBytes;
          if (donePaths === 0) started = performance.now();
          active = true;
          print(describe(event) ?? '');
          return;
        case 'nar':
          return;
        case 'uploaded':
          donePaths++;
          return;
        case 'done':
          active = false;
          clear();
          out.write(`${describe(event) ?? ''}\n`);
          return;
        case 'entry':
          if (event.status === 'done') return;
          break;
        case 'log':
          return;
      }
      const line = describe(event);
      if (line !== undefined) print(line);
    },
    progress(narBytes: number) {
      // Bytes count as they are packed; a path counts once its narinfo is stored.
      doneBytes += narBytes;
    },
    close() {
      clearInterval(timer);
      clear();
    },
  };
}
