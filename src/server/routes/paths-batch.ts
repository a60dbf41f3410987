/**
 * `POST /api/v1/paths`: firn push's batch of small store paths in one request (format and
 * semantics in src/cache/batch-ingest.ts). Every entry is checked as its NAR PUT and narinfo
 * PUT would be; the answer lists each entry's fate. A client that finds no such route (404, 405)
 * falls back to the PUTs.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  MAX_BATCH_BYTES,
  PATH_BATCH_CONTENT_TYPE,
  ingestBatch,
  parseBatch,
  type EntryOutcome,
} from '../../cache/batch-ingest.ts';
import { FirnError, firnError } from '../../errors.ts';
import { requestToken, requireScope } from '../auth.ts';
import { readBody } from '../body.ts';
import type { ServerContext } from '../context.ts';

interface EntryResult {
  readonly storePath: string | null;
  readonly status: 'created' | 'present' | 'refused';
  readonly code?: string;
  readonly httpStatus?: number;
  readonly message?: string;
  readonly hint?: string;
}

export function registerPathsBatch(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/api/v1/paths', async (request, reply) => {
    await requireScope(ctx.auth, request, 'push');
    const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
    if (type !== PATH_BATCH_CONTENT_TYPE) {
      throw firnError('FIRN_E_BAD_REQUEST', `a path batch is sent as ${PATH_BATCH_CONTENT_TYPE}`, {
        hint: `send Content-Type: ${PATH_BATCH_CONTENT_TYPE}`,
      });
    }
    const entries = parseBatch(await readBatch(request));
    const outcomes = await ingestBatch(
      {
        blobs: ctx.cache.blobs,
        index: ctx.cache.index,
        signingKey: ctx.cache.signingKey,
        storeDir: ctx.config.storeDir,
        requireReferences: ctx.config.requireReferences,
        maxNarSize: ctx.config.maxNarSize,
      },
      entries,
      { uploadedBy: requestToken(request)?.name },
    );
    const results = outcomes.map((outcome, index) => report(ctx, request, outcome, index));
    return reply.send({ results });
  });
}

/** The whole body, within the batch limit; a client that hangs up midway stores nothing. */
async function readBatch(request: FastifyRequest): Promise<Buffer> {
  try {
    return await readBody(request.raw, MAX_BATCH_BYTES, 'a path batch');
  } catch (error) {
    if (FirnError.is(error) || request.raw.complete) throw error;
    throw firnError('FIRN_E_UPLOAD_ABORTED', 'the client hung up before the path batch was whole', {
      cause: error,
    });
  }
}

/** Metrics and the log line of one entry, as its two PUTs would have had them, and its result. */
function report(
  ctx: ServerContext,
  request: FastifyRequest,
  outcome: EntryOutcome,
  index: number,
): EntryResult {
  if (outcome.nar !== undefined) ctx.metrics.bytesIn.inc(outcome.nar.fileSize);
  if (outcome.status !== 'refused') {
    request.log.info(
      {
        entry: index,
        storePath: outcome.storePath,
        nar: outcome.nar.key,
        narSize: outcome.nar.narSize,
        created: outcome.status === 'created',
      },
      outcome.status === 'created' ? 'path added' : 'path already present',
    );
    return { storePath: outcome.storePath, status: outcome.status };
  }
  const { error } = outcome;
  ctx.metrics.refusedUploads.inc({ reason: error.code });
  const internal = error.code === 'FIRN_E_INTERNAL';
  if (internal) {
    request.log.error(
      { entry: index, storePath: outcome.storePath, err: error.cause ?? error },
      'batch entry failed',
    );
  } else {
    request.log.info(
      { entry: index, storePath: outcome.storePath, code: error.code, reason: error.message },
      'path refused',
    );
  }
  return {
    storePath: outcome.storePath,
    status: 'refused',
    code: error.code,
    // What the entry's own PUT would have been answered: ≥ 500 is worth trying again.
    httpStatus: error.httpStatus,
    message: error.message,
    ...(error.hint === undefined ? {} : { hint: error.hint }),
  };
}
