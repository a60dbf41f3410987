/**
 * Build logs: Nix keeps one per derivation under `<state>/log/nix/drvs/<2 chars>/<rest>`,
 * bzip2-compressed by default; the cache serves them at `/log/<drv base name>`, where
 * `nix log --store <cache>` reads them.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../process/run.ts';
import type { CacheClient } from './cache-client.ts';
import { baseNameOf } from './closure.ts';
import type { LocalStore } from './path-info.ts';

/** The cache refuses logs over 256 MiB. */
const MAX_LOG_BYTES = 256 * 1024 * 1024;

/** The log text of `drvPath`, or undefined when Nix kept none (substituted, or logs disabled). */
export async function readBuildLog(
  store: LocalStore,
  drvPath: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Buffer | undefined> {
  const base = baseNameOf(drvPath);
  const plain = join(store.root, 'nix/var/log/nix/drvs', base.slice(0, 2), base.slice(2));
  if (existsSync(plain)) return readFile(plain);
  const compressed = `${plain}.bz2`;
  if (!existsSync(compressed)) return undefined;
  const options = { env, maxStdout: MAX_LOG_BYTES };
  try {
    const result = await run('bzip2', ['-dc', compressed], options);
    if (result.code === 0) return result.stdout;
  } catch {
    // no bzip2 here: ask Nix
  }
  const storeArgs = store.root === '/' ? [] : ['--store', store.root];
  const result = await run('nix-store', [...storeArgs, '--read-log', drvPath], options);
  return result.code === 0 ? result.stdout : undefined;
}

export async function uploadBuildLog(
  client: CacheClient,
  drvPath: string,
  text: Buffer,
  signal?: AbortSignal,
): Promise<void> {
  await client.expect(
    {
      method: 'PUT',
      path: `log/${baseNameOf(drvPath)}`,
      headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': text.length },
      body: () => text,
      signal,
    },
    [200, 201],
  );
}
