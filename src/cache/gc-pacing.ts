/**
 * Node allocates a new Buffer for every socket read and every piece of decompressor output,
 * and V8 frees that memory only when it collects the small objects holding it: on its own, that
 * happens once external memory has grown by tens of MiB. A 2 GiB upload then raised the server's
 * RSS by ~80 MB of garbage. One young-generation collection per 8 MiB of upload bytes (across
 * all uploads) keeps the garbage to a few MiB: measured on a 2 GiB upload, peak RSS 174–187 →
 * 132–138 MB for ~4% more CPU. The collection needs `--expose-gc`, which bin/firn passes; without
 * it (node run by hand), nothing happens.
 */
const PACE_BYTES = 8 * 1024 * 1024;

type Collect = (options: { type: 'minor' }) => void;
const collect = (globalThis as { gc?: Collect }).gc;
let sinceCollect = 0;

/** Counts bytes that passed through short-lived buffers; collects when enough have. */
export function noteTransientBytes(bytes: number): void {
  if (collect === undefined) return;
  sinceCollect += bytes;
  if (sinceCollect < PACE_BYTES) return;
  sinceCollect = 0;
  collect({ type: 'minor' });
}
