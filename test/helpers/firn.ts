/** Runs the real `bin/firn` as a user would, and returns its exit code and output. */
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from '../../src/process/run.ts';

export const FIRN_BIN = fileURLToPath(new URL('../../bin/firn', import.meta.url));

export function firn(
  args: readonly string[],
  options: { input?: string | Uint8Array; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  const env = { ...process.env, ...options.env };
  return run(FIRN_BIN, args, {
    env,
    ...(options.input === undefined ? {} : { input: options.input }),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
}
