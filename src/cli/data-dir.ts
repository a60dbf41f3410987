import { defaultDataDir } from '../config/serve-config.ts';

/** `--data`, else FIRN_DATA, else the same default `firn serve` uses. */
export function resolveDataDir(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  if (flag !== undefined && flag !== '') return flag;
  const fromEnv = env.FIRN_DATA;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : defaultDataDir(env);
}

export const DATA_OPTION_HELP =
  '--data DIR   the cache data directory (default: FIRN_DATA, else as for firn serve)';
