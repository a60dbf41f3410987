/**
 * Picks how `firn push` and `firn drain` show progress: a redrawn bar on a terminal, one plain
 * line per event otherwise (journals, CI logs), or NDJSON on stdout with `--json`.
 */
import type { Writable } from 'node:stream';
import type { PushEvent } from '../../push/events.ts';
import { jsonReporter } from './push-json.ts';
import { plainReporter } from './push-plain.ts';
import { ttyReporter } from './push-tty.ts';

export interface PushReporter {
  emit(event: PushEvent): void;
  /** NAR bytes packed so far grew by `narBytes` (only a progress bar cares). */
  progress?(narBytes: number): void;
  /** Stops redrawing and leaves the terminal clean. */
  close(): void;
}

export function createPushReporter(options: {
  json: boolean;
  stdout: Writable;
  stderr: Writable;
  /** A progress bar only where someone watches it. */
  progress: boolean;
}): PushReporter {
  if (options.json) return jsonReporter(options.stdout);
  const tty = (options.stderr as { isTTY?: boolean }).isTTY === true;
  return tty && options.progress ? ttyReporter(options.stderr) : plainReporter(options.stderr);
}
