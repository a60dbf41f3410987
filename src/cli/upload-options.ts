/** The flags `firn push` and `firn drain` share, and how they become push settings. */
import { loadPushConfig, type PushConfig } from '../config/push-config.ts';
import type { CommandContext } from './context.ts';

export const UPLOAD_OPTIONS = {
  cache: { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean' },
  jobs: { type: 'string' },
  'batch-paths': { type: 'string' },
  compression: { type: 'string' },
  'compression-level': { type: 'string' },
  'compress-min-size': { type: 'string' },
  upstream: { type: 'string', multiple: true },
  store: { type: 'string' },
  retries: { type: 'string' },
  'retry-delay': { type: 'string' },
  'path-info': { type: 'string' },
  config: { type: 'string' },
} as const;

export interface UploadFlagValues {
  readonly cache?: string | undefined;
  readonly jobs?: string | undefined;
  readonly 'batch-paths'?: string | undefined;
  readonly compression?: string | undefined;
  readonly 'compression-level'?: string | undefined;
  readonly 'compress-min-size'?: string | undefined;
  readonly upstream?: string[] | undefined;
  readonly store?: string | undefined;
  readonly retries?: string | undefined;
  readonly 'retry-delay'?: string | undefined;
  readonly 'path-info'?: string | undefined;
  readonly config?: string | undefined;
}

/** Loads the push settings from the shared flags, plus `extra` flags of one command. */
export function loadUploadConfig(
  ctx: CommandContext,
  values: UploadFlagValues,
  extra: Readonly<Record<string, string | undefined>> = {},
): Promise<PushConfig> {
  return loadPushConfig({
    file: values.config ?? ctx.env.FIRN_CONFIG,
    env: ctx.env,
    flags: {
      cache: values.cache,
      jobs: values.jobs,
      'batch-paths': values['batch-paths'],
      compression: values.compression,
      'compression-level': values['compression-level'],
      'compress-min-size': values['compress-min-size'],
      upstreams: values.upstream,
      store: values.store,
      retries: values.retries,
      'retry-delay': values['retry-delay'],
      'path-info': values['path-info'],
      ...extra,
    },
  });
}
