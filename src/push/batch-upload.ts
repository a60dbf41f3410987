/**
 * Many small paths in one request to firn's own cache (`POST /api/v1/paths`): each entry is a
 * narinfo and its NAR file, framed by 32-bit big-endian lengths, and the cache checks each as
 * if it came by the two PUTs `nix copy` sends, committing narinfos in entry order (so an entry
 * may reference an earlier one). On a closure of hundreds of small paths this saves both ends
 * two HTTP exchanges per path. Any other cache answers 404/405; the caller then falls back.
 */
import { encodeBatchEntry, PATH_BATCH_CONTENT_TYPE } from '../cache/batch-wire.ts';
import { FirnError, firnError } from '../errors.ts';
import type { CacheClient } from './cache-client.ts';
import type { PreparedNar } from './nar-prepare.ts';
import { narInfoText } from './nar-upload.ts';
import type { PathInfo } from './path-info.ts';

const BATCH_PATH = 'api/v1/paths';
/** What one request carries at most; the cache takes up to MAX_BATCH_BYTES (64 MiB). */
export const BATCH_MAX_BYTES = 8 * 1024 * 1024;
export const BATCH_MAX_ENTRIES = 1000;

export interface BatchEntry {
  readonly info: PathInfo;
  readonly nar: PreparedNar;
  /** The narinfo, as it is sent. */
  readonly text: Buffer;
}

export function batchEntry(info: PathInfo, nar: PreparedNar): BatchEntry {
  return { info, nar, text: Buffer.from(narInfoText(info, nar)) };
}

/** Per entry: stored now, already there, or refused (a permanent failure for that path). */
export type BatchOutcome =
  | { readonly status: 'created' | 'present' }
  | { readonly status: 'refused'; readonly error: FirnError };

/** The bytes an entry adds to a batch. */
export function entryBytes(entry: BatchEntry): number {
  return 8 + entry.text.length + entry.nar.fileSize;
}

function encodeBatch(entries: readonly BatchEntry[]): Buffer {
  return Buffer.concat(
    entries.flatMap(({ info, nar, text }) => {
      const file = nar.body();
      if (!Buffer.isBuffer(file)) throw new Error(`${info.path}: only in-memory NARs are batched`);
      return encodeBatchEntry(text, file);
    }),
  );
}

/**
 * Sends one batch. Returns one outcome per entry, in order, or undefined when the cache has no
 * batch endpoint (it is not firn, or an older one).
 */
export async function postBatch(
  client: CacheClient,
  entries: readonly BatchEntry[],
  signal?: AbortSignal,
): Promise<BatchOutcome[] | undefined> {
  const body = encodeBatch(entries);
  const spec = {
    method: 'POST',
    path: BATCH_PATH,
    headers: { 'content-type': PATH_BATCH_CONTENT_TYPE, 'content-length': body.length },
    body: () => body,
    signal,
  } as const;
  const response = await client.request(spec);
  if (response.status === 404 || response.status === 405) return undefined;
  if (response.status !== 200) throw client.refusal(spec, response);
  const results = parseResults(response.body);
  if (results?.length !== entries.length) {
    throw client.refusal(spec, {
      status: 200,
      body: Buffer.from(`answered without one result per path (${entries.length} sent)`),
    });
  }
  return results.map((result, index) => outcomeOf(client, result, entries[index]?.info.path));
}

interface WireResult {
  readonly status?: unknown;
  readonly code?: unknown;
  readonly message?: unknown;
  readonly hint?: unknown;
  readonly httpStatus?: unknown;
}

function parseResults(body: Buffer): WireResult[] | undefined {
  try {
    const results = (JSON.parse(body.toString('utf8')) as { results?: unknown }).results;
    if (!Array.isArray(results)) return undefined;
    return results.filter((item): item is WireResult => typeof item === 'object' && item !== null);
  } catch {
    return undefined;
  }
}

function outcomeOf(client: CacheClient, result: WireResult, path = '?'): BatchOutcome {
  if (result.status === 'created' || result.status === 'present') return { status: result.status };
  const code = typeof result.code === 'string' ? result.code : undefined;
  const message = typeof result.message === 'string' ? result.message : 'refused';
  const hint = typeof result.hint === 'string' ? result.hint : undefined;
  // The status the path's own PUT would have had.
  const status = typeof result.httpStatus === 'number' ? result.httpStatus : 400;
  // Shaped like a refused PUT (client.refusal), so callers treat both the same way.
  const error = firnError(
    'FIRN_E_PUSH_FAILED',
    `the cache at ${client.url} refused ${path} with HTTP ${status}: ${message}${code === undefined ? '' : ` (${code})`}`,
    {
      hint,
      details: { status, serverCode: code, request: BATCH_PATH, permanent: status < 500 },
    },
  );
  return { status: 'refused', error };
}
