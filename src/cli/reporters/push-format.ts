/** The words push and drain reporters share. */
import { formatBytes } from '../../config/sizes.ts';
import type { PushEvent } from '../../push/events.ts';

export { formatBytes };

export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(Math.round(seconds % 60)).padStart(2, '0')} min`;
}

/** One line for an event, or undefined for events shown only as progress. */
export function describe(event: PushEvent): string | undefined {
  switch (event.event) {
    case 'plan':
      return `${event.closure} paths in the closure of ${event.roots}: ${event.present} in the cache${event.upstream > 0 ? `, ${event.upstream} upstream` : ''}, ${event.upload} to upload (${formatBytes(event.narBytes)})`;
    case 'nar':
      return undefined;
    case 'uploaded':
      return `uploaded ${event.path} (${formatBytes(event.narSize)}, ${formatBytes(event.fileSize)} compressed${event.narSent ? '' : ', NAR was there already'})`;
    case 'retry':
      return `retry ${event.attempt}/${event.retries} in ${formatSeconds(event.delayMs / 1000)}: ${event.request}: ${event.reason}`;
    case 'failed':
      return `not stored: ${event.path}: ${event.message} [${event.code}]`;
    case 'done':
      return `pushed ${event.uploaded} paths (${formatBytes(event.narBytes)} NAR, ${formatBytes(event.fileBytes)} sent) in ${formatSeconds(event.seconds)}${event.failed > 0 ? `; ${event.failed} not stored` : ''}`;
    case 'log':
      return `uploaded the build log of ${event.drv} (${formatBytes(event.bytes)})`;
    case 'drain':
      return `draining ${event.entries} spool entries naming ${event.paths} paths${event.recovered > 0 ? ` (${event.recovered} taken back from a drain that stopped)` : ''}`;
    case 'entry':
      return event.status === 'done'
        ? undefined
        : `spool entry ${event.entry}: ${event.status === 'failed' ? 'moved to failed/' : 'kept for later'}: ${event.reason ?? ''}`;
    case 'warning':
      return `warning: ${event.message}`;
  }
}
