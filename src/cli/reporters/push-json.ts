/** `--json`: one JSON object per event and line (NDJSON), with the time it happened. */
import type { Writable } from 'node:stream';
import type { PushEvent } from '../../push/events.ts';
import type { PushReporter } from './push-reporter.ts';

export function jsonReporter(out: Writable): PushReporter {
  return {
    emit(event: PushEvent) {
      out.write(JSON.stringify({ ...event, time: new Date().toISOString() }) + '\n');
    },
    close() {
      // nothing buffered
    },
  };
}
