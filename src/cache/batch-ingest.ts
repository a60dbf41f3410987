/**
 * Many small store paths in one upload (`POST /api/v1/paths`, firn's own client only). For a
 * closure of hundreds of small paths, two requests per path cost the server more than the
 * paths themselves; one request carries them all. Each entry is still exactly the two PUTs a
 * Nix client would send: its file goes through ingestNar, then its narinfo through
 * ingestNarInfo, with every check and error code of theirs. The format: batch-wire.ts.
 */
import { mapLimit } from '../concurrency.ts';
import { FirnError, firnError } from '../errors.ts';
import { MAX_NARINFO_BYTES, parseNarInfo } from '../nix/narinfo.ts';
import { parseStorePath } from '../nix/store-path.ts';
import type { CacheIndex, NarRecord } from './cache-index.ts';
import type { BlobStore } from './blob-store.ts';
import { ingestNar } from './nar-ingest.ts';
import { ingestNarInfo } from './narinfo-ingest.ts';
import type { SecretKey } from '../nix/signing.ts';
import { LENGTH_BYTES, MAX_BATCH_ENTRIES } from './batch-wire.ts';

export {
  encodeBatchEntry,
  MAX_BATCH_BYTES,
  MAX_BATCH_ENTRIES,
  PATH_BATCH_CONTENT_TYPE,
} from './batch-wire.ts';

/** NARs verified and written at once, so that their fsyncs overlap. */
const NAR_CONCURRENCY = 8;

export interface BatchEntry {
  /** Position in the batch, from 0. */
  readonly index: number;
  /** Byte offset of the entry (its narinfo length field) in the body. */
  readonly offset: number;
  readonly narinfo: string;
  /** The NAR file as it would be PUT at /nar/<file name>; a view into the body. */
  readonly file: Buffer;
}

export interface BatchLimits {
  readonly maxEntries?: number;
  readonly maxNarInfoBytes?: number;
}

/**
 * Splits a whole batch body into entries, or refuses it as a whole: nothing may be stored from
 * a body that is not exactly what the client meant to send.
 */
export function parseBatch(body: Buffer, limits: BatchLimits = {}): BatchEntry[] {
  const maxEntries = limits.maxEntries ?? MAX_BATCH_ENTRIES;
  const maxNarInfoBytes = limits.maxNarInfoBytes ?? MAX_NARINFO_BYTES;
  if (body.length === 0) throw framingError(0, 0, 'the batch has no entries');
  const entries: BatchEntry[] = [];
  let at = 0;
  while (at < body.length) {
    const index = entries.length;
    const offset = at;
    if (index >= maxEntries) {
      throw framingError(index, offset, `the batch has more than ${maxEntries} entries`);
    }
    const narinfoLength = readLength(body, at, index, 'narinfo');
    at += LENGTH_BYTES;
    if (narinfoLength === 0) throw framingError(index, offset, 'its narinfo length is 0');
    if (narinfoLength > maxNarInfoBytes) {
      throw framingError(
        index,
        offset,
        `its narinfo length ${narinfoLength} exceeds the limit of ${maxNarInfoBytes} bytes`,
      );
    }
    const narinfo = takeBytes(body, at, narinfoLength, index, 'narinfo');
    at += narinfoLength;
    const fileLength = readLength(body, at, index, 'NAR file');
    at += LENGTH_BYTES;
    const file = takeBytes(body, at, fileLength, index, 'NAR file');
    at += fileLength;
    entries.push({ index, offset, narinfo: narinfo.toString('utf8'), file });
  }
  return entries;
}

function readLength(body: Buffer, at: number, index: number, what: string): number {
  if (body.length - at < LENGTH_BYTES) {
    throw framingError(
      index,
      at,
      `the body ends inside the ${what} length (${body.length - at} of ${LENGTH_BYTES} bytes)`,
    );
  }
  return body.readUInt32BE(at);
}

function takeBytes(body: Buffer, at: number, length: number, index: number, what: string): Buffer {
  if (length > body.length - at) {
    throw framingError(
      index,
      at,
      `its ${what} of ${length} bytes runs past the end of the body (${body.length - at} bytes left)`,
    );
  }
  return body.subarray(at, at + length);
}

function framingError(index: number, offset: number, problem: string): FirnError {
  return firnError(
    'FIRN_E_BAD_REQUEST',
    `path batch entry ${index} at byte ${offset}: ${problem}; nothing was stored`,
    {
      hint: 'each entry is <u32 BE narinfo length><narinfo><u32 BE file length><NAR file>, and the body ends right after the last one',
      details: { entry: index, offset },
    },
  );
}

export interface BatchIngestDeps {
  readonly blobs: BlobStore;
  readonly index: CacheIndex;
  readonly signingKey: SecretKey;
  readonly storeDir: string;
  readonly requireReferences: boolean;
  /** Largest NAR file accepted (max-nar-size). */
  readonly maxNarSize: number;
}

export type EntryOutcome =
  | {
      readonly status: 'created' | 'present';
      readonly storePath: string;
      /** The stored NAR, and whether this entry wrote it. */
      readonly nar: NarRecord;
      readonly narCreated: boolean;
    }
  | {
      readonly status: 'refused';
      readonly storePath: string | null;
      /** An unexpected failure is FIRN_E_INTERNAL here, with the original as its cause. */
      readonly error: FirnError;
      /** Set when the entry's NAR was stored before its narinfo was refused. */
      readonly nar?: NarRecord;
      readonly narCreated?: boolean;
    };

/** What the entry's two PUT URLs would have been, read from its narinfo. */
type Prepared =
  | {
      readonly ok: true;
      readonly storePath: string;
      readonly hashPart: string;
      readonly fileName: string;
    }
  | { readonly ok: false; readonly storePath: string | null; readonly error: FirnError };

type NarOutcome =
  | { readonly ok: true; readonly record: NarRecord; readonly created: boolean }
  | { readonly ok: false; readonly error: FirnError };

/**
 * Stores every entry as its two PUTs would. NARs are verified and written a few at a time;
 * then the narinfos are committed strictly in entry order, so an entry may reference a path
 * an earlier entry of the same batch stores. A refused entry does not stop
 * the others. Returns one outcome per entry, in entry order.
 */
export async function ingestBatch(
  deps: BatchIngestDeps,
  entries: readonly BatchEntry[],
  options: { readonly uploadedBy?: string | undefined } = {},
): Promise<EntryOutcome[]> {
  const prepared = entries.map((entry) => ({ entry, target: prepare(entry, deps.storeDir) }));
  // storeNar reports failures as outcomes, so one refused NAR stops none of the others.
  const nars = await mapLimit(prepared, NAR_CONCURRENCY, ({ entry, target }) =>
    target.ok ? storeNar(deps, target.fileName, entry.file) : Promise.resolve(undefined),
  );
  const outcomes: EntryOutcome[] = [];
  for (const [i, { entry, target }] of prepared.entries()) {
    if (!target.ok) {
      outcomes.push({ status: 'refused', storePath: target.storePath, error: target.error });
      continue;
    }
    const stored = nars[i];
    if (stored === undefined) throw new Error('a prepared batch entry has no NAR upload');
    if (!stored.ok) {
      outcomes.push({ status: 'refused', storePath: target.storePath, error: stored.error });
      continue;
    }
    outcomes.push(await commitNarInfo(deps, entry, target, stored, options.uploadedBy));
  }
  return outcomes;
}

function prepare(entry: BatchEntry, storeDir: string): Prepared {
  try {
    const info = parseNarInfo(entry.narinfo, { storeDir });
    const { hashPart } = parseStorePath(info.storePath, storeDir);
    const fileName = /^nar\/([^/?#]+)$/.exec(info.url)?.[1];
    if (fileName === undefined) {
      const error = firnError(
        'FIRN_E_BAD_REQUEST',
        `narinfo for ${info.storePath} names URL ${info.url}, not nar/<file name>; a batch entry's NAR must be its own file`,
        { hint: 'batch entries name their NAR as nar/<file hash>.nar[.xz|.zst|…]' },
      );
      return { ok: false, storePath: info.storePath, error };
    }
    return { ok: true, storePath: info.storePath, hashPart, fileName };
  } catch (error) {
    return { ok: false, storePath: null, error: asEntryError(error) };
  }
}

async function storeNar(
  deps: BatchIngestDeps,
  fileName: string,
  file: Buffer,
): Promise<NarOutcome> {
  try {
    const result = await ingestNar(deps, {
      fileName,
      body: bodyOf(file),
      maxBytes: deps.maxNarSize,
      sizeHint: file.length,
    });
    return { ok: true, record: result.record, created: result.created };
  } catch (error) {
    return { ok: false, error: asEntryError(error) };
  }
}

async function commitNarInfo(
  deps: BatchIngestDeps,
  entry: BatchEntry,
  target: { readonly storePath: string; readonly hashPart: string },
  nar: { readonly record: NarRecord; readonly created: boolean },
  uploadedBy: string | undefined,
): Promise<EntryOutcome> {
  const stored = { nar: nar.record, narCreated: nar.created };
  try {
    const result = await ingestNarInfo(deps, {
      hashPart: target.hashPart,
      text: entry.narinfo,
      uploadedBy,
    });
    return {
      status: result.created ? 'created' : 'present',
      storePath: result.storePath,
      ...stored,
    };
  } catch (error) {
    return {
      status: 'refused',
      storePath: target.storePath,
      error: asEntryError(error),
      ...stored,
    };
  }
}

/** The file as a request body delivers it: one chunk, or none at all when it is empty. */
function bodyOf(file: Buffer): AsyncIterable<Buffer> {
  const chunks = file.length > 0 ? [file] : [];
  return {
    [Symbol.asyncIterator]: () => {
      const iterator = chunks.values();
      return { next: () => Promise.resolve(iterator.next()) };
    },
  };
}

/** A refusal as the PUT would have answered it; anything unexpected is FIRN_E_INTERNAL. */
function asEntryError(error: unknown): FirnError {
  if (FirnError.is(error)) return error;
  return firnError('FIRN_E_INTERNAL', 'internal error while storing this entry', {
    cause: error,
  });
}
