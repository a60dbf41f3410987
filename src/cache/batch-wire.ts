/**
 * The wire format of firn's batch upload (`POST /api/v1/paths`), shared by the cache that reads
 * it (batch-ingest.ts) and `firn push` that writes it (src/push/batch-upload.ts): entries, each
 * `N` (u32 big-endian) · narinfo (N bytes, UTF-8) · `F` (u32 big-endian) · NAR file (F bytes,
 * compressed as the narinfo says). The body ends exactly after an entry. Nothing else in here,
 * so the pusher loads none of the cache's code.
 */

export const PATH_BATCH_CONTENT_TYPE = 'application/x-firn-paths';
/** Largest batch body; larger closures are several batches (and large paths are single PUTs). */
export const MAX_BATCH_BYTES = 64 * 1024 * 1024;
export const MAX_BATCH_ENTRIES = 10_000;
export const LENGTH_BYTES = 4;

/** One entry in the wire format, as pieces to send in order (no copy of the file). */
export function encodeBatchEntry(narinfo: string | Uint8Array, file: Uint8Array): Uint8Array[] {
  const text = typeof narinfo === 'string' ? Buffer.from(narinfo, 'utf8') : narinfo;
  const narinfoLength = Buffer.alloc(LENGTH_BYTES);
  narinfoLength.writeUInt32BE(text.length);
  const fileLength = Buffer.alloc(LENGTH_BYTES);
  fileLength.writeUInt32BE(file.length);
  return [narinfoLength, text, fileLength, file];
}
