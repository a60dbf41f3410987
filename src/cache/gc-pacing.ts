/**
 * Node allocates a new Buffer for every socket read and every piece of decompressor output,
 * and V8 frees that memory only when it collects the small objects holding it: on its own, that
 * happens once external memory has grown by tens of MiB. A 2 GiB upload then raised the server's
 * RSS by ~80 MB of garbage. One young-generation collection per 8 MiB of upload bytes (across
 * all uploads) keeps the garbage to a few MiB: measured on a 2 GiB upload, peak RSS 174–187 →
 * 133–150 MB for a few percent more CPU.
 *
 * Collections on demand need V8's `gc` function, which only `--expose-gc` provides. That flag on
 * the command line costs every firn command ~15 ms of start-up (measured on `firn hook`), so the
 * long-running commands that upload or verify turn it on at run time instead.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const PACE_BYTES = 8 * 1024 * 1024;

type Collect = (options: { type: 'minor' }) => void;
let collect: Collect | undefined;
let sinceCollect = 0;

/** Turns pacing on for this process (firn serve, firn cache verify). */
export function enableGcPacing(): void {
  if (collect !== undefined) return;
  setFlagsFromString('--expose-gc');
  collect = runInNewContext('gc') as Collect;
}

/** Counts bytes that passed through short-lived buffers; collects when enough have. */
export function noteTransientBytes(bytes: number): void {
  if (collect === undefined) return;
  sinceCollect += bytes;
  if (sinceCollect < PACE_BYTES) return;
  sinceCollect = 0;
  collect({ type: 'minor' });
}
