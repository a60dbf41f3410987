/**
 * Settings of `firn push` and `firn drain`: one zod schema behind the `[push]` table of the TOML
 * config file, FIRN_* environment variables and flags (flags win over the environment, which
 * wins over the file, which wins over defaults). `firn hook` reads only `spool`, without zod
 * (src/push/spool-dir.ts).
 */
import { z } from 'zod';
import { loadLayered } from './layered.ts';
import { defaultSpoolDir } from '../push/spool-dir.ts';

const durationMs = z.union([
  z.number().int().nonnegative(),
  z.string().transform((text, ctx) => {
    const ms = parseMs(text);
    if (ms === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `invalid duration '${text}' (write e.g. 250ms, 5s, 2m)`,
      });
      return z.NEVER;
    }
    return ms;
  }),
]);

export const pushConfigSchema = z.strictObject({
  cache: z.string().describe('URL of the cache to push to').optional(),
  'token-file': z.string().describe('file holding a push token').optional(),
  'netrc-file': z
    .string()
    .describe("netrc file to read the token from (Nix's netrc-file)")
    .optional(),
  spool: z.string().describe('spool directory shared by firn hook and firn drain').optional(),
  store: z.string().describe('root of a chroot store; / is the real one').default('/'),
  compression: z.enum(['zstd', 'none']).default('zstd'),
  'compression-level': z.number().int().min(1).max(19).default(3),
  'compress-min-size': z
    .number()
    .int()
    .nonnegative()
    .describe('NARs smaller than this many bytes are sent uncompressed')
    .default(4096),
  jobs: z.number().int().min(1).max(64).describe('NARs uploaded at once').default(4),
  'batch-paths': z
    .number()
    .int()
    .min(0)
    .max(1000)
    .describe('small paths per upload request to firn serve; 0 sends each path by itself')
    .default(1000),
  upstreams: z
    .array(z.string())
    .describe('caches whose paths need not be pushed, e.g. https://cache.nixos.org')
    .default([]),
  retries: z.number().int().min(0).max(100).default(5),
  'retry-delay': durationMs.describe('first backoff ceiling').default(250),
  'retry-max-delay': durationMs.describe('largest backoff').default(15_000),
  'path-info': z.enum(['auto', 'db', 'nix']).describe('where path info comes from').default('auto'),
  'poll-interval': durationMs.describe('how often a drain daemon looks at the spool').default(5000),
});

export type PushConfigInput = z.input<typeof pushConfigSchema>;

export interface PushConfig {
  readonly cache: string | undefined;
  readonly tokenFile: string | undefined;
  readonly netrcFile: string;
  readonly spool: string;
  readonly store: string;
  readonly compression: 'zstd' | 'none';
  readonly compressionLevel: number;
  readonly compressMinSize: number;
  readonly jobs: number;
  readonly batchPaths: number;
  readonly upstreams: readonly string[];
  readonly retries: number;
  readonly retryDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly pathInfo: 'auto' | 'db' | 'nix';
  readonly pollIntervalMs: number;
}

export const PUSH_ENV_KEYS: Readonly<Record<string, keyof PushConfigInput>> = {
  FIRN_CACHE: 'cache',
  FIRN_TOKEN_FILE: 'token-file',
  FIRN_NETRC_FILE: 'netrc-file',
  FIRN_SPOOL: 'spool',
  FIRN_STORE: 'store',
  FIRN_PUSH_JOBS: 'jobs',
  FIRN_UPSTREAMS: 'upstreams',
};

/** Nix's default netrc-file: `$NIX_CONF_DIR/netrc`, `/etc/nix/netrc` without it. */
export function defaultNetrcFile(env: NodeJS.ProcessEnv): string {
  const confDir = env.NIX_CONF_DIR;
  return `${confDir !== undefined && confDir !== '' ? confDir : '/etc/nix'}/netrc`;
}

export async function loadPushConfig(options: {
  file?: string | undefined;
  env: NodeJS.ProcessEnv;
  flags: Partial<Record<keyof PushConfigInput, string | boolean | readonly string[] | undefined>>;
}): Promise<PushConfig> {
  const config = await loadLayered(
    { schema: pushConfigSchema, section: 'push', envKeys: PUSH_ENV_KEYS, coerce },
    options,
  );
  return Object.freeze({
    cache: config.cache,
    tokenFile: config['token-file'],
    netrcFile: config['netrc-file'] ?? defaultNetrcFile(options.env),
    spool: config.spool ?? defaultSpoolDir(options.env),
    store: config.store,
    compression: config.compression,
    compressionLevel: config['compression-level'],
    compressMinSize: config['compress-min-size'],
    jobs: config.jobs,
    batchPaths: config['batch-paths'],
    upstreams: config.upstreams,
    retries: config.retries,
    retryDelayMs: config['retry-delay'],
    retryMaxDelayMs: config['retry-max-delay'],
    pathInfo: config['path-info'],
    pollIntervalMs: config['poll-interval'],
  });
}

const NUMERIC_KEYS = new Set([
  'jobs',
  'batch-paths',
  'compression-level',
  'compress-min-size',
  'retries',
]);

/** Environment values and flags are strings; turn them into what the schema expects. */
function coerce(key: string, value: string): unknown {
  if (NUMERIC_KEYS.has(key) && /^\d+$/.test(value)) return Number(value);
  if (key === 'upstreams') return value.split(/[\s,]+/).filter((url) => url !== '');
  return value;
}

const MS_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `250ms`, `5s`, `2m`, `1h`, or a bare number of milliseconds. */
export function parseMs(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (match?.[1] === undefined) return undefined;
  return Math.round(Number(match[1]) * (MS_UNITS[match[2] ?? 'ms'] ?? 1));
}
