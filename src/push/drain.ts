/**
 * Emptying the spool: claim entries, push the closures of their outputs (one bulk missing
 * query, parallel uploads, narinfos after their references), upload their build logs, and
 * remove an entry only once the cache confirmed every path it names. Anything unconfirmed goes
 * back to pending/ for the next round; a drain that is killed leaves its claims, which the next
 * drain takes back.
 */
import { watch } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FirnError, firnError } from '../errors.ts';
import { readBuildLog, uploadBuildLog } from './build-log.ts';
import { derivationOutputs } from './drv-outputs.ts';
import type { Emit } from './events.ts';
import type { NarOptions } from './nar-prepare.ts';
import { mapLimit, sleep } from '../concurrency.ts';
import { isPermanent, pushClosure, pushFailure, type PushContext } from './push.ts';
import {
  claim,
  complete,
  fail,
  leave,
  ownerId,
  pendingNames,
  recoverStale,
  release,
  removeTorn,
  spoolDirs,
  type ClaimedEntry,
} from './spool.ts';

export interface DrainContext extends Omit<PushContext, 'checkNarFirst' | 'nar' | 'emit'> {
  readonly spool: string;
  readonly nar: Omit<NarOptions, 'tmpDir'>;
  readonly emit: Emit;
  /** Entries taken per round. */
  readonly batch?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface DrainSummary {
  /** Entries removed because everything they name is in the cache. */
  readonly done: number;
  /** Entries moved to failed/ (their paths are gone from the store). */
  readonly failed: number;
  /** Entries left in pending/ for a later run. */
  readonly left: number;
  readonly uploaded: number;
  /** Why entries were left, when some were. */
  readonly error: FirnError | undefined;
}

const DEFAULT_BATCH = 1000;
/** A hook's temp file this old belongs to a hook that died mid-write. */
const TORN_AGE_MS = 60 * 60 * 1000;
const LOG_ERROR_CODES_TO_RETRY = new Set([
  'FIRN_E_CACHE_UNREACHABLE',
  'FIRN_E_CACHE_TLS',
  'FIRN_E_AUTH_REQUIRED',
  'FIRN_E_AUTH_FORBIDDEN',
]);

/** Drains until the spool is empty or a round leaves entries behind. */
export async function drainOnce(ctx: DrainContext): Promise<DrainSummary> {
  const owner = ownerId();
  const recovered = recoverStale(ctx.spool, owner);
  removeTorn(ctx.spool, TORN_AGE_MS);
  const tmpDir = join(spoolDirs(ctx.spool).tmp, owner);
  await mkdir(tmpDir, { recursive: true });
  let done = 0;
  let failed = 0;
  let uploaded = 0;
  let error: FirnError | undefined;
  let first = true;
  while (error === undefined && ctx.signal?.aborted !== true) {
    const entries = claim(ctx.spool, owner, ctx.batch ?? DEFAULT_BATCH);
    if (entries.length === 0) break;
    const round = await drainEntries(ctx, entries, tmpDir, first ? recovered : 0);
    first = false;
    done += round.done;
    failed += round.failed;
    uploaded += round.uploaded;
    error = round.error;
  }
  leave(ctx.spool, owner);
  if (ctx.signal?.aborted === true && error === undefined)
    error = firnError('FIRN_E_PUSH_FAILED', 'the drain was stopped before the spool was empty');
  return { done, failed, left: pendingNames(ctx.spool).length, uploaded, error };
}

/** Drains, then waits for new entries, until `ctx.signal` aborts. Backs off while the cache fails. */
export async function drainForever(
  ctx: DrainContext,
  pollIntervalMs: number,
  maxBackoffMs = 300_000,
): Promise<void> {
  let backoff = 0;
  const stopped = (): boolean => ctx.signal?.aborted === true;
  while (!stopped()) {
    let summary: DrainSummary;
    try {
      summary = await drainOnce(ctx);
    } catch (error) {
      // A spool or store that cannot be read now (full disk, nix missing) may be fixed later.
      if (!FirnError.is(error)) throw error;
      summary = { done: 0, failed: 0, left: 1, uploaded: 0, error };
    }
    if (stopped()) break;
    if (summary.error !== undefined && summary.left > 0) {
      backoff = Math.min(maxBackoffMs, backoff === 0 ? pollIntervalMs : backoff * 2);
      ctx.emit({
        event: 'warning',
        message: `spool entries wait: ${summary.error.message}; next try in ${backoff < 1000 ? `${backoff} ms` : `${Math.round(backoff / 1000)} s`}`,
      });
      await sleep(backoff, ctx.signal).catch(() => undefined);
    } else {
      backoff = 0;
      await waitForEntries(spoolDirs(ctx.spool).pending, pollIntervalMs, ctx.signal);
    }
  }
}

interface RoundResult {
  done: number;
  failed: number;
  uploaded: number;
  error: FirnError | undefined;
}

async function drainEntries(
  ctx: DrainContext,
  entries: readonly ClaimedEntry[],
  tmpDir: string,
  recovered: number,
): Promise<RoundResult> {
  let failed = 0;
  const giveUp = (claimed: ClaimedEntry, reason: string): void => {
    fail(ctx.spool, claimed, reason);
    ctx.emit({ event: 'entry', entry: claimed.name, status: 'failed', reason });
    failed++;
  };
  let live: LiveEntry[];
  try {
    live = await entryPaths(ctx, entries, giveUp);
  } catch (error) {
    release(ctx.spool, entries);
    throw error;
  }
  const roots = unique(live.flatMap(({ paths }) => paths));
  ctx.emit({ event: 'drain', entries: entries.length, paths: roots.length, recovered });
  let result;
  try {
    result = await pushClosure(roots, { ...ctx, nar: { ...ctx.nar, tmpDir }, checkNarFirst: true });
  } catch (error) {
    release(
      ctx.spool,
      live.map(({ claimed }) => claimed),
    );
    if (FirnError.is(error)) return { done: 0, failed, uploaded: 0, error };
    throw error;
  }
  let error = pushFailure(result);
  const stored = live.filter(({ paths }) => paths.every((path) => result.confirmed.has(path)));
  const logFailures = await uploadLogs(
    ctx,
    stored.map(({ claimed }) => claimed),
  );
  let done = 0;
  for (const { claimed, paths } of live) {
    const logError = logFailures.get(claimed.name);
    if (stored.some((entry) => entry.claimed === claimed) && logError === undefined) {
      complete(ctx.spool, claimed);
      ctx.emit({ event: 'entry', entry: claimed.name, status: 'done' });
      done++;
    } else if (logError === undefined && givenUp(paths, result.failures) !== undefined) {
      giveUp(claimed, reasonOf(givenUp(paths, result.failures)));
    } else {
      release(ctx.spool, [claimed]);
      error ??= logError;
      ctx.emit({
        event: 'entry',
        entry: claimed.name,
        status: 'retry-later',
        reason: (logError ?? error)?.message ?? 'not all paths were stored',
      });
    }
  }
  return { done, failed, uploaded: result.uploaded, error };
}

/**
 * The reason to give an entry up: some of its paths failed, and every one of those failures is
 * one that retrying cannot fix (the cache refused them, or the store path is damaged).
 */
function givenUp(
  paths: readonly string[],
  failures: ReadonlyMap<string, FirnError>,
): FirnError | undefined {
  const own = paths.flatMap((path) => {
    const failure = failures.get(path);
    return failure === undefined ? [] : [failure];
  });
  if (own.length === 0 || !own.every(isPermanent)) return undefined;
  return (
    own.find((failure) => !failure.message.startsWith('not uploaded: its reference')) ?? own[0]
  );
}

/** A failure's message, with the failure of the reference behind it when it has one. */
function reasonOf(failure: FirnError | undefined): string {
  if (failure === undefined) return 'not stored';
  const cause = failure.cause;
  return cause instanceof Error ? `${failure.message}: ${cause.message}` : failure.message;
}

interface LiveEntry {
  readonly claimed: ClaimedEntry;
  /** The store paths to push for it. */
  readonly paths: readonly string[];
}

/**
 * The paths of each entry that the store still holds: its OUT_PATHS, or (Nix 2.8.0 leaves
 * OUT_PATHS empty) the outputs of its derivation. Entries with nothing left to push are given up.
 */
async function entryPaths(
  ctx: DrainContext,
  entries: readonly ClaimedEntry[],
  giveUp: (claimed: ClaimedEntry, reason: string) => void,
): Promise<LiveEntry[]> {
  const named: LiveEntry[] = [];
  for (const claimed of entries) {
    const { outPaths, drvPath } = claimed.entry;
    if (outPaths.length > 0 || drvPath === undefined) {
      named.push({ claimed, paths: outPaths });
      continue;
    }
    try {
      named.push({ claimed, paths: await derivationOutputs(ctx.store, drvPath, ctx.env) });
    } catch (error) {
      if (!FirnError.is(error)) throw error;
      giveUp(claimed, `cannot find the outputs of ${drvPath}: ${error.message}`);
    }
  }
  const valid = await ctx.source.valid(unique(named.flatMap(({ paths }) => paths)));
  const live: LiveEntry[] = [];
  for (const entry of named) {
    const fromDrv = entry.claimed.entry.outPaths.length === 0;
    const gone = entry.paths.filter((path) => !valid.has(path));
    // A derivation's outputs need not all exist (only some may have been built); the paths a
    // hook named must.
    const paths = entry.paths.filter((path) => valid.has(path));
    if ((fromDrv && paths.length > 0) || (!fromDrv && gone.length === 0)) {
      live.push({ claimed: entry.claimed, paths });
    } else {
      giveUp(entry.claimed, `no longer in the local store (garbage-collected?): ${gone.join(' ')}`);
    }
  }
  return live;
}

/**
 * Uploads the build logs of `entries`. A log the cache refuses is reported and given up (the
 * paths matter more); one that could not be sent at all keeps its entry for a later round.
 */
async function uploadLogs(
  ctx: DrainContext,
  entries: readonly ClaimedEntry[],
): Promise<Map<string, FirnError>> {
  const failures = new Map<string, FirnError>();
  await mapLimit(entries, ctx.jobs, async (claimed) => {
    const drvPath = claimed.entry.drvPath;
    if (drvPath === undefined) return;
    try {
      const text = await readBuildLog(ctx.store, drvPath, ctx.env);
      if (text === undefined) return;
      await uploadBuildLog(ctx.client, drvPath, text, ctx.signal);
      ctx.emit({ event: 'log', drv: drvPath, bytes: text.length });
    } catch (error) {
      if (FirnError.is(error) && LOG_ERROR_CODES_TO_RETRY.has(error.code)) {
        failures.set(claimed.name, error);
      } else {
        ctx.emit({
          event: 'warning',
          message: `the build log of ${drvPath} was not uploaded: ${error instanceof Error ? error.message : String(error)}`,
        });
      }
    }
  });
  return failures;
}

function unique(paths: readonly string[]): string[] {
  return [...new Set(paths)];
}

/** Resolves when something lands in `dir`, after `ms`, or when `signal` aborts. */
function waitForEntries(dir: string, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    let watcher: ReturnType<typeof watch> | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      watcher?.close();
      signal?.removeEventListener('abort', finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
    try {
      watcher = watch(dir, (_event, name) => {
        if (name !== null && !name.startsWith('.')) finish();
      });
      watcher.on('error', () => undefined);
    } catch {
      // no pending/ yet, or no inotify: the timer still wakes us
    }
  });
}
