/** Plain lines, one per event, for logs and pipes: `firn push: uploaded /nix/store/…`. */
import type { Writable } from 'node:stream';
import type { PushEvent } from '../../push/events.ts';
import { describe } from './push-format.ts';
import type { PushReporter } from './push-reporter.ts';

export function plainReporter(out: Writable): PushReporter {
  return {
    emit(event: PushEvent) {
      const line = describe(event);
      if (line !== undefined) out.write(`firn: ${line}\n`);
    },
    close() {
      // nothing buffered
    },
  };
}
