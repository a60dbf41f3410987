/**
 * The one error catalogue. Every error a user can reach carries a stable `FIRN_E_…` code from
 * this table; `docs/errors.md` documents each code and `src/errors.test.ts` keeps the two in
 * sync. Codes are never renamed or reused: a retired code stays reserved.
 *
 * Programmer errors (a broken invariant inside firn) stay plain `Error` and reach the user as
 * FIRN_E_INTERNAL with a request to file a bug.
 */

export interface ErrorSpec {
  /** One line: what kind of failure this is. The thrown message adds the specifics. */
  readonly summary: string;
  /** Process exit code when this error ends a CLI command. */
  readonly exit: number;
  /** HTTP status when this error ends a request. */
  readonly status: number;
}

const USAGE = 2;
const DATA = 65; // EX_DATAERR: the input was malformed
const NOINPUT = 66; // EX_NOINPUT: a named input does not exist
const SOFTWARE = 70; // EX_SOFTWARE: a bug in firn
const CANTCREAT = 73; // EX_CANTCREAT: cannot create an output
const IOERR = 74;
const UNAVAILABLE = 69;
const NOPERM = 77;
const CONFIG = 78;

export const ERRORS = {
  // ── general ──────────────────────────────────────────────────────────────
  FIRN_E_INTERNAL: {
    summary: 'An unexpected internal error (a bug in firn)',
    exit: SOFTWARE,
    status: 500,
  },
  FIRN_E_USAGE: { summary: 'The command line is not valid', exit: USAGE, status: 400 },
  FIRN_E_UNKNOWN_COMMAND: { summary: 'No such command', exit: USAGE, status: 400 },
  FIRN_E_FILE_NOT_FOUND: {
    summary: 'A named file or directory does not exist',
    exit: NOINPUT,
    status: 404,
  },
  FIRN_E_FILE_EXISTS: {
    summary: 'An output file or directory already exists',
    exit: CANTCREAT,
    status: 409,
  },
  FIRN_E_IO: { summary: 'Reading or writing a file failed', exit: IOERR, status: 500 },
  FIRN_E_SUBPROCESS: {
    summary: 'A program firn ran (nix, ssh, xz, …) failed',
    exit: UNAVAILABLE,
    status: 502,
  },
  FIRN_E_CONFIG_INVALID: {
    summary: 'A configuration file, variable or flag is not valid',
    exit: CONFIG,
    status: 500,
  },
  FIRN_E_INPUT_TOO_LARGE: {
    summary: 'An input is larger than firn accepts for its kind',
    exit: DATA,
    status: 413,
  },

  // ── hashes and store paths ───────────────────────────────────────────────
  FIRN_E_BASE32_INVALID: { summary: 'A nix-base32 string is malformed', exit: DATA, status: 400 },
  FIRN_E_HASH_INVALID: {
    summary: 'A hash string is malformed or has the wrong length',
    exit: DATA,
    status: 400,
  },
  FIRN_E_HASH_ALGO_UNSUPPORTED: {
    summary: 'A hash algorithm firn does not support',
    exit: DATA,
    status: 400,
  },
  FIRN_E_STORE_PATH_INVALID: { summary: 'A store path is malformed', exit: DATA, status: 400 },

  // ── NAR ──────────────────────────────────────────────────────────────────
  FIRN_E_NAR_TRUNCATED: {
    summary: 'A NAR ended before its root object was complete',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_BAD_MAGIC: {
    summary: 'The input does not start with the NAR magic "nix-archive-1"',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_BAD_PADDING: {
    summary: 'A NAR string is followed by non-zero padding',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_UNEXPECTED_TOKEN: {
    summary: 'A NAR holds a tag where another was required',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_BAD_NAME: {
    summary: 'A NAR directory entry has a forbidden name',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_UNSORTED: {
    summary: 'NAR directory entries are not sorted or not unique',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_LIMIT: {
    summary: 'A NAR length, depth or count exceeds a safety limit',
    exit: DATA,
    status: 400,
  },
  FIRN_E_NAR_TRAILING_DATA: { summary: 'Bytes follow the end of a NAR', exit: DATA, status: 400 },
  FIRN_E_NAR_UNSUPPORTED_FILE: {
    summary: 'A file type NAR cannot hold (socket, device, FIFO)',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UNPACK_UNSAFE: {
    summary: 'Unpacking would write outside the destination',
    exit: DATA,
    status: 400,
  },

  // ── narinfo, keys, signatures ────────────────────────────────────────────
  FIRN_E_NARINFO_INVALID: {
    summary: 'A narinfo is malformed (the message names the line)',
    exit: DATA,
    status: 400,
  },
  FIRN_E_KEY_INVALID: { summary: 'A signing key is malformed', exit: DATA, status: 400 },
  FIRN_E_SIGNATURE_INVALID: {
    summary: 'No valid signature by the trusted key',
    exit: 1,
    status: 400,
  },

  // ── derivations and machines files ───────────────────────────────────────
  FIRN_E_DRV_INVALID: { summary: 'A .drv file is not a valid derivation', exit: DATA, status: 400 },
  FIRN_E_MACHINES_INVALID: {
    summary: 'A machines file line is not valid',
    exit: DATA,
    status: 400,
  },

  // ── cache server ─────────────────────────────────────────────────────────
  FIRN_E_NOT_FOUND: { summary: 'The cache has no such object', exit: NOINPUT, status: 404 },
  FIRN_E_BAD_REQUEST: { summary: 'A request is malformed', exit: DATA, status: 400 },
  FIRN_E_AUTH_REQUIRED: {
    summary: 'A token is needed for this request',
    exit: NOPERM,
    status: 401,
  },
  FIRN_E_AUTH_FORBIDDEN: {
    summary: 'The token lacks the scope this request needs',
    exit: NOPERM,
    status: 403,
  },
  FIRN_E_UPLOAD_HASH_MISMATCH: {
    summary: 'An upload does not hash to what it claims',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UPLOAD_SIZE_MISMATCH: {
    summary: 'An upload does not have the size it claims',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UPLOAD_NAR_MISSING: {
    summary: 'A narinfo names a NAR the cache does not have',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UPLOAD_REFERENCE_MISSING: {
    summary: 'A narinfo references paths the cache does not have',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UPLOAD_PATH_MISMATCH: {
    summary: 'A narinfo StorePath does not match its URL',
    exit: DATA,
    status: 400,
  },
  FIRN_E_UPLOAD_CONFLICT: {
    summary: 'A different object is already stored under this name',
    exit: DATA,
    status: 409,
  },
  FIRN_E_UPLOAD_ABORTED: {
    summary: 'The client stopped sending an upload before it was whole',
    exit: IOERR,
    status: 400,
  },
  FIRN_E_RANGE_INVALID: { summary: 'A Range header cannot be satisfied', exit: DATA, status: 416 },
  FIRN_E_TOKEN_UNKNOWN: { summary: 'No token with that name or id', exit: NOINPUT, status: 404 },
  FIRN_E_STORE_BUSY: {
    summary: 'The cache store is locked or busy',
    exit: UNAVAILABLE,
    status: 503,
  },

  // ── push ─────────────────────────────────────────────────────────────────
  FIRN_E_PATH_NOT_IN_STORE: {
    summary: 'A path to push is not a valid path in the local Nix store',
    exit: NOINPUT,
    status: 404,
  },
  FIRN_E_CACHE_UNREACHABLE: {
    summary: 'The cache did not answer, even after retries',
    exit: UNAVAILABLE,
    status: 502,
  },
  FIRN_E_CACHE_TLS: {
    summary: "The cache's TLS certificate is not trusted",
    exit: UNAVAILABLE,
    status: 502,
  },
  FIRN_E_PUSH_FAILED: {
    summary: 'The cache refused an upload, or some paths were not stored',
    exit: UNAVAILABLE,
    status: 502,
  },
  FIRN_E_SPOOL: { summary: 'The upload spool cannot be read or written', exit: IOERR, status: 500 },

  // ── fleet ────────────────────────────────────────────────────────────────
  FIRN_E_FLEET_INVALID: {
    summary: 'The fleet inventory (firn.toml) is not valid',
    exit: CONFIG,
    status: 500,
  },
  FIRN_E_FLEET_HOST_UNKNOWN: {
    summary: 'A host or @tag names no host in the fleet inventory',
    exit: USAGE,
    status: 404,
  },

  // ── build ────────────────────────────────────────────────────────────────
  FIRN_E_BUILD_NO_BUILDER: {
    summary: 'No builder in the fleet can build a derivation (system or features)',
    exit: UNAVAILABLE,
    status: 503,
  },
  FIRN_E_BUILD_FAILED: { summary: 'One or more derivations failed to build', exit: 1, status: 500 },
  FIRN_E_BUILD_EVAL: {
    summary: 'Evaluating a flake installable failed or gave no derivation',
    exit: 1,
    status: 400,
  },
  FIRN_E_BUILDER_PROTOCOL: {
    summary: 'A builder broke the nix-store --serve protocol or its connection',
    exit: UNAVAILABLE,
    status: 502,
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface FirnErrorOptions {
  /** What to do next, shown under the message. */
  readonly hint?: string | undefined;
  readonly cause?: unknown;
  /** Machine-readable facts (offsets, paths, expected/actual values) for --json and logs. */
  readonly details?: Readonly<Record<string, unknown>> | undefined;
}

const FIRN_ERROR = Symbol.for('firn.error');

/** A failure a user can reach: it carries a stable code, a message with context and a hint. */
export class FirnError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Readonly<Record<string, unknown>> | undefined;
  readonly [FIRN_ERROR] = true;

  constructor(code: ErrorCode, message: string, options: FirnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FirnError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  get httpStatus(): number {
    return ERRORS[this.code].status;
  }

  /** Works across duplicated module copies, like undici's Symbol.for checks. */
  static is(value: unknown): value is FirnError {
    return typeof value === 'object' && value !== null && FIRN_ERROR in value;
  }
}

/** Shorthand for the common case: `throw firnError('FIRN_E_…', 'what happened', { hint })`. */
export function firnError(code: ErrorCode, message: string, options?: FirnErrorOptions): FirnError {
  return new FirnError(code, message, options);
}

/** Maps Node's filesystem errors on a named path to the catalogue; anything else is rethrown. */
export function fromFsError(error: unknown, path: string, action: string): FirnError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') {
    return firnError('FIRN_E_FILE_NOT_FOUND', `cannot ${action} ${path}: it does not exist`, {
      cause: error,
    });
  }
  if (code === 'EEXIST') {
    return firnError('FIRN_E_FILE_EXISTS', `cannot ${action} ${path}: it already exists`, {
      cause: error,
      hint: 'choose a path that does not exist yet, or remove the old one first',
    });
  }
  const reason = error instanceof Error ? error.message : String(error);
  return firnError('FIRN_E_IO', `cannot ${action} ${path}: ${reason}`, { cause: error });
}
