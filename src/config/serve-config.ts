/**
 * `firn serve`'s settings: one zod schema behind the TOML file, FIRN_* environment variables and
 * flags (flags win over the environment, which wins over the file, which wins over defaults).
 */
import { hostname, homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { firnError } from '../errors.ts';
import { loadLayered } from './layered.ts';
import { parseSize } from './sizes.ts';

const size = z.union([
  z.number().int().nonnegative(),
  z.string().transform((text, ctx) => {
    // A throw here would escape zod and lose the key's name: report it as an issue instead.
    try {
      return parseSize(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: `invalid size '${text}' (write e.g. 500M, 20G)` });
      return z.NEVER;
    }
  }),
]);

export const serveConfigSchema = z.strictObject({
  listen: z.string().describe('HOST:PORT to listen on').default('127.0.0.1:5000'),
  data: z.string().describe('data directory: index, NARs, signing key').optional(),
  'store-dir': z.string().describe('the Nix store directory clients use').default('/nix/store'),
  priority: z
    .number()
    .int()
    .min(0)
    .max(1000)
    .describe('nix-cache-info Priority (lower is preferred)')
    .default(30),
  'want-mass-query': z.boolean().describe('nix-cache-info WantMassQuery').default(true),
  'key-name': z
    .string()
    .regex(/^[^:\s]+$/, 'no colon or whitespace')
    .describe('signing key name')
    .optional(),
  'require-references': z
    .boolean()
    .describe('refuse a narinfo whose references are not in the cache')
    .default(true),
  private: z.boolean().describe('reads need a token with read scope').default(false),
  'max-nar-size': size.describe('largest NAR upload accepted (e.g. "64G")').default(64 * 1024 ** 3),
  'log-level': z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info'),
});

export type ServeConfigInput = z.input<typeof serveConfigSchema>;

export interface ServeConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly storeDir: string;
  readonly priority: number;
  readonly wantMassQuery: boolean;
  readonly keyName: string;
  readonly requireReferences: boolean;
  readonly private: boolean;
  readonly maxNarSize: number;
  readonly logLevel: string;
}

export const SERVE_ENV_KEYS: Readonly<Record<string, keyof ServeConfigInput>> = {
  FIRN_LISTEN: 'listen',
  FIRN_DATA: 'data',
  FIRN_STORE_DIR: 'store-dir',
  FIRN_PRIORITY: 'priority',
  FIRN_KEY_NAME: 'key-name',
  FIRN_PRIVATE: 'private',
  FIRN_REQUIRE_REFERENCES: 'require-references',
  FIRN_MAX_NAR_SIZE: 'max-nar-size',
  FIRN_LOG_LEVEL: 'log-level',
};

/** The default data directory: `$XDG_STATE_HOME/firn`, else `~/.local/state/firn`. */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  const state = env.XDG_STATE_HOME;
  return join(
    state !== undefined && state !== '' ? state : join(homedir(), '.local', 'state'),
    'firn',
  );
}

export async function loadServeConfig(options: {
  file?: string | undefined;
  env: NodeJS.ProcessEnv;
  flags: Partial<Record<keyof ServeConfigInput, string | boolean | undefined>>;
}): Promise<ServeConfig> {
  const config = await loadLayered(
    { schema: serveConfigSchema, section: 'serve', envKeys: SERVE_ENV_KEYS, coerce },
    options,
  );
  const { host, port } = parseListen(config.listen);
  return Object.freeze({
    host,
    port,
    dataDir: config.data ?? defaultDataDir(options.env),
    storeDir: config['store-dir'].replace(/\/+$/, ''),
    priority: config.priority,
    wantMassQuery: config['want-mass-query'],
    keyName: config['key-name'] ?? `${hostname()}-1`,
    requireReferences: config['require-references'],
    private: config.private,
    maxNarSize: config['max-nar-size'],
    logLevel: config['log-level'],
  });
}

const NUMERIC_KEYS = new Set(['priority']);
const BOOLEAN_KEYS = new Set(['private', 'require-references', 'want-mass-query']);

/** Environment values and flags are strings; turn them into what the schema expects. */
function coerce(key: string, value: string): unknown {
  if (NUMERIC_KEYS.has(key) && /^\d+$/.test(value)) return Number(value);
  if (BOOLEAN_KEYS.has(key)) {
    if (['1', 'true', 'yes', 'on'].includes(value.toLowerCase())) return true;
    if (['0', 'false', 'no', 'off'].includes(value.toLowerCase())) return false;
  }
  return value;
}

export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (match === null || port > 65535) {
    throw firnError('FIRN_E_CONFIG_INVALID', `invalid listen address '${listen}'`, {
      hint: 'write HOST:PORT, e.g. 127.0.0.1:5000, 0.0.0.0:5000 or [::]:5000',
    });
  }
  return { host: match[1] ?? (match[2] === '' ? '0.0.0.0' : (match[2] ?? '127.0.0.1')), port };
}
