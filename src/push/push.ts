/**
 * Pushing closures: ask the cache once which paths it lacks, skip what an upstream cache has,
 * then upload the rest with a few NARs in flight at once. Each narinfo goes up only after its
 * own NAR and its references' narinfos, so the cache never holds half a closure, and a path
 * counts as stored only once the cache said so.
 */
import { FirnError, firnError } from '../errors.ts';
import type { CacheClient } from './cache-client.ts';
import { hashPartOf, referencesFirst } from './closure.ts';
import type { Emit } from './events.ts';
import {
  BATCH_MAX_BYTES,
  BATCH_MAX_ENTRIES,
  batchEntry,
  entryBytes,
  postBatch,
  type BatchEntry,
  type BatchOutcome,
} from './batch-upload.ts';
import { Batcher } from './batcher.ts';
import { askMissing, presentUpstream } from './missing.ts';
import { prepareNar, type NarOptions, type PreparedNar } from './nar-prepare.ts';
import { uploadNar, uploadNarInfo } from './nar-upload.ts';
import { physicalPath, type LocalStore, type PathInfo, type PathInfoSource } from './path-info.ts';

export interface PushContext {
  readonly client: CacheClient;
  readonly source: PathInfoSource;
  readonly store: LocalStore;
  readonly nar: NarOptions;
  /** NARs packed and uploaded at once. */
  readonly jobs: number;
  /** Small paths per batch request (firn serve only); 0: none, each path by itself. */
  readonly batchPaths: number;
  readonly upstreams: readonly CacheClient[];
  /** HEAD each NAR before sending it (worth it after an interrupted run). */
  readonly checkNarFirst: boolean;
  readonly emit: Emit;
  readonly signal?: AbortSignal | undefined;
}

export interface PushResult {
  /** Paths the cache holds now (found there or uploaded) or an upstream serves. */
  readonly confirmed: ReadonlySet<string>;
  readonly uploaded: number;
  readonly narBytes: number;
  readonly fileBytes: number;
  /** Paths not stored, and why. */
  readonly failures: ReadonlyMap<string, FirnError>;
  /** Set when the push stopped early (cache unreachable, token refused, aborted). */
  readonly fatal: unknown;
}

/** NARs at least this large start first: they take longest and wait on disk, not in memory. */
const LARGE_NAR = 16 * 1024 * 1024;

export async function pushClosure(roots: readonly string[], ctx: PushContext): Promise<PushResult> {
  const started = performance.now();
  const infos = await ctx.source.closure(roots);
  const ordered = referencesFirst(infos);
  const asked = await askMissing(
    ctx.client,
    ordered.map((info) => hashPartOf(info.path)),
    ctx.signal,
  );
  const missing = new Set(asked.missing);
  const upstream =
    ctx.upstreams.length === 0 || missing.size === 0
      ? new Set<string>()
      : await presentUpstream(ctx.upstreams, [...missing], ctx.signal);
  const toUpload = ordered.filter((info) => {
    const hashPart = hashPartOf(info.path);
    return missing.has(hashPart) && !upstream.has(hashPart);
  });
  const uploading = new Set(toUpload);
  const confirmed = new Set(
    ordered.filter((info) => !uploading.has(info)).map((info) => info.path),
  );
  ctx.emit({
    event: 'plan',
    roots: roots.length,
    closure: ordered.length,
    present: ordered.length - missing.size,
    upstream: upstream.size,
    upload: toUpload.length,
    narBytes: toUpload.reduce((sum, info) => sum + info.narSize, 0),
  });
  // Only firn serve answers the bulk query, and only firn serve takes batches.
  const run = new UploadRun(ctx, toUpload, confirmed, asked.bulk && ctx.batchPaths > 0);
  await run.finished();
  ctx.emit({
    event: 'done',
    uploaded: run.uploaded,
    failed: run.failures.size,
    narBytes: run.narBytes,
    fileBytes: run.fileBytes,
    seconds: (performance.now() - started) / 1000,
  });
  return {
    confirmed,
    uploaded: run.uploaded,
    narBytes: run.narBytes,
    fileBytes: run.fileBytes,
    failures: run.failures,
    fatal: run.fatal,
  };
}

/** Turns a result with failures into the one error a command reports. */
export function pushFailure(result: PushResult): FirnError | undefined {
  if (result.fatal !== undefined) {
    return FirnError.is(result.fatal)
      ? result.fatal
      : firnError(
          'FIRN_E_PUSH_FAILED',
          `the push stopped: ${result.fatal instanceof Error ? result.fatal.message : JSON.stringify(result.fatal)}`,
        );
  }
  const failures = [...result.failures.values()];
  const first = failures.find((error) => !error.message.startsWith('not uploaded: its reference'));
  if (first === undefined) return undefined;
  if (failures.length === 1) return first;
  return firnError(
    'FIRN_E_PUSH_FAILED',
    `${failures.length} paths were not stored; the first failure: ${first.message}`,
    { hint: first.hint, details: { paths: [...result.failures.keys()] } },
  );
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  promise.catch(() => {
    // Observed by whoever awaits it; a path nobody waits for must not crash the process.
  });
  return { promise, resolve, reject };
}

/**
 * Failures that trying again cannot fix: the cache refused the upload (a 4xx other than auth),
 * or the store path does not match its recorded hash. A drain gives such entries up.
 */
export function isPermanent(error: unknown): boolean {
  if (!FirnError.is(error)) return false;
  if (error.code === 'FIRN_E_UPLOAD_HASH_MISMATCH') return true;
  if (error.details?.permanent === true) return true;
  const status = error.details?.status;
  return (
    error.code === 'FIRN_E_PUSH_FAILED' &&
    typeof status === 'number' &&
    status >= 400 &&
    status < 500
  );
}

/** Errors after which no other request can succeed either. */
function isFatal(error: unknown): boolean {
  if (!FirnError.is(error)) return true;
  return (
    error.code === 'FIRN_E_CACHE_UNREACHABLE' ||
    error.code === 'FIRN_E_CACHE_TLS' ||
    error.code === 'FIRN_E_AUTH_REQUIRED' ||
    error.code === 'FIRN_E_AUTH_FORBIDDEN' ||
    error.code === 'FIRN_E_IO'
  );
}

/** Batches on the wire at once: one being answered while the next fills up. */
const BATCHES_IN_FLIGHT = 2;

class UploadRun {
  uploaded = 0;
  narBytes = 0;
  fileBytes = 0;
  fatal: unknown;
  readonly failures = new Map<string, FirnError>();
  readonly #ctx: PushContext;
  readonly #abort = new AbortController();
  readonly #signal: AbortSignal;
  readonly #nars = new Map<string, Deferred<PreparedNar>>();
  readonly #stored = new Map<string, Promise<void>>();
  readonly #confirmed: ReadonlySet<string>;
  /** Small paths go to the cache in batches, until it turns out not to take them. */
  #batcher: Batcher<BatchEntry, BatchOutcome> | undefined;
  readonly #all: Promise<unknown>;

  constructor(
    ctx: PushContext,
    toUpload: readonly PathInfo[],
    confirmed: Set<string>,
    batches: boolean,
  ) {
    this.#ctx = ctx;
    this.#confirmed = confirmed;
    this.#signal =
      ctx.signal === undefined
        ? this.#abort.signal
        : AbortSignal.any([ctx.signal, this.#abort.signal]);
    if (batches) {
      this.#batcher = new Batcher({
        send: (entries) => this.#sendBatch(entries),
        sizeOf: entryBytes,
        keyOf: (entry) => entry.info.path,
        maxEntries: Math.min(ctx.batchPaths, BATCH_MAX_ENTRIES),
        maxBytes: BATCH_MAX_BYTES,
        maxInFlight: BATCHES_IN_FLIGHT,
      });
    }
    for (const info of toUpload) this.#nars.set(info.path, deferred());
    const queue = [
      ...toUpload.filter((info) => info.narSize >= LARGE_NAR).sort((a, b) => b.narSize - a.narSize),
      ...toUpload.filter((info) => info.narSize < LARGE_NAR),
    ];
    const workers = Array.from({ length: Math.max(1, Math.min(ctx.jobs, queue.length)) }, () =>
      this.#narWorker(queue),
    );
    // In references-first order, so each path finds its references' promises already made.
    for (const info of toUpload) {
      const stored = this.#store(info).then(() => {
        confirmed.add(info.path);
      });
      stored.catch(() => {
        // recorded in failures
      });
      this.#stored.set(info.path, stored);
    }
    this.#all = Promise.allSettled([...workers, ...this.#stored.values()]);
  }

  async finished(): Promise<void> {
    await this.#all;
  }

  async #narWorker(queue: PathInfo[]): Promise<void> {
    for (let info = queue.shift(); info !== undefined; info = queue.shift()) {
      const nar = this.#nars.get(info.path);
      if (nar === undefined) continue;
      if (this.#signal.aborted) {
        nar.reject(this.#signal.reason);
        continue;
      }
      let prepared: PreparedNar | undefined;
      try {
        prepared = await prepareNar(info, physicalPath(this.#ctx.store, info.path), this.#ctx.nar);
        // A small NAR travels in a batch with its narinfo, once its references are stored.
        if (prepared.small && this.#batcher !== undefined) {
          nar.resolve(prepared);
          continue;
        }
        const sent = await this.#putNar(info, prepared);
        nar.resolve(Object.assign(prepared, { sent }));
      } catch (error) {
        await prepared?.dispose();
        nar.reject(error);
      }
    }
  }

  async #putNar(info: PathInfo, prepared: PreparedNar): Promise<boolean> {
    const sent = await uploadNar(this.#ctx.client, info, prepared, {
      checkFirst: this.#ctx.checkNarFirst,
      signal: this.#signal,
    });
    this.#ctx.emit({
      event: 'nar',
      path: info.path,
      narSize: prepared.narSize,
      fileSize: prepared.fileSize,
      sent,
    });
    return sent;
  }

  async #store(info: PathInfo): Promise<void> {
    const started = performance.now();
    let nar: (PreparedNar & { sent?: boolean }) | undefined;
    try {
      nar = await this.#nars.get(info.path)?.promise;
      if (nar === undefined) throw new Error(`no NAR job for ${info.path}`);
      const batched = nar.small && nar.sent === undefined && this.#batcher !== undefined;
      const entry = batched ? batchEntry(info, nar) : undefined;
      const { batched: outcome } = await this.#referencesStored(info, entry);
      try {
        if (outcome !== undefined) {
          const result = await outcome;
          if (result.status === 'refused') throw result.error;
          nar.sent = true;
        } else {
          nar.sent ??= await this.#putNar(info, nar);
          await uploadNarInfo(this.#ctx.client, info, nar, this.#signal);
        }
      } catch (error) {
        if (!FirnError.is(error) || error.details?.serverCode !== 'FIRN_E_UPLOAD_CONFLICT')
          throw error;
        // Another machine stored this path first, from a build that came out different. The cache
        // keeps the first; the path is there for everyone who asks.
        this.#ctx.emit({
          event: 'warning',
          message: `${info.path} is already in the cache from a different build (not reproducible?); the cache keeps its copy`,
        });
        return;
      }
      this.uploaded++;
      this.narBytes += nar.narSize;
      if (nar.sent) this.fileBytes += nar.fileSize;
      this.#ctx.emit({
        event: 'uploaded',
        path: info.path,
        narSize: nar.narSize,
        fileSize: nar.fileSize,
        narSent: nar.sent,
        ms: Math.round(performance.now() - started),
      });
    } catch (error) {
      this.#fail(info.path, error);
      throw error;
    } finally {
      await nar?.dispose();
    }
  }

  /**
   * Waits until every reference being uploaded is stored. A batched path need not wait for
   * references queued in the open batch when it fits there too: the cache commits them first.
   * Such a path is added to the batch here, in the same turn as the last look at the batch, so
   * that batch cannot leave in between; `batched` is then its outcome. (Undefined when the path
   * goes by PUT: not small, or the cache turned batches down while it waited.)
   */
  async #referencesStored(
    info: PathInfo,
    entry: BatchEntry | undefined,
  ): Promise<{ batched?: Promise<BatchOutcome> }> {
    for (;;) {
      const batcher = entry === undefined ? undefined : this.#batcher;
      const queued = (ref: string): boolean =>
        entry !== undefined &&
        batcher !== undefined &&
        batcher.hasRoom(entry) &&
        batcher.isQueued(ref);
      const waitFor = info.references.filter(
        (ref) =>
          ref !== info.path && this.#stored.has(ref) && !this.#confirmed.has(ref) && !queued(ref),
      );
      if (waitFor.length === 0) {
        return entry === undefined || batcher === undefined ? {} : { batched: batcher.add(entry) };
      }
      for (const ref of waitFor) {
        try {
          await this.#stored.get(ref);
        } catch (refError) {
          throw firnError(
            'FIRN_E_PUSH_FAILED',
            `not uploaded: its reference ${ref} was not stored`,
            {
              cause: refError,
              details: { permanent: isPermanent(refError) },
            },
          );
        }
      }
    }
  }

  /** One batch to the cache; if it takes none, these entries and all later paths go one by one. */
  async #sendBatch(entries: readonly BatchEntry[]): Promise<BatchOutcome[]> {
    const outcomes = await postBatch(this.#ctx.client, entries, this.#signal);
    if (outcomes !== undefined) return outcomes;
    this.#batcher = undefined;
    // In order, NAR then narinfo: an entry may reference an earlier one.
    const results: BatchOutcome[] = [];
    for (const { info, nar } of entries) {
      try {
        await this.#putNar(info, nar);
        await uploadNarInfo(this.#ctx.client, info, nar, this.#signal);
        results.push({ status: 'created' });
      } catch (error) {
        if (!FirnError.is(error) || isFatal(error)) throw error;
        results.push({ status: 'refused', error });
      }
    }
    return results;
  }

  #fail(path: string, error: unknown): void {
    const failure = FirnError.is(error)
      ? error
      : firnError(
          'FIRN_E_PUSH_FAILED',
          `not uploaded: ${error instanceof Error ? error.message : String(error)}`,
        );
    this.failures.set(path, failure);
    // One report of a fatal error: every request after it fails for the same reason.
    if (this.fatal !== undefined) return;
    if (isFatal(error)) {
      this.fatal = error;
      this.#abort.abort(error);
    }
    this.#ctx.emit({ event: 'failed', path, code: failure.code, message: failure.message });
  }
}
