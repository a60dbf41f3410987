/**
 * Failed builds' logs go to the cache's `/log/<drv>`, where `nix log --store <cache> <drv>` and
 * the dashboard read them. The coordinator captured the log from the builder's serve session;
 * uploading needs a push token (FIRN_TOKEN). A log that cannot be uploaded never changes the
 * outcome of the build: the tail is printed either way.
 */
import { basename } from 'node:path';

/** Returns the log's URL, or undefined when it was not stored (no token, refused, unreachable). */
export async function uploadBuildLog(options: {
  readonly cacheUrl: string;
  readonly drvPath: string;
  readonly log: string;
  readonly token: string | undefined;
  readonly fetch?: typeof fetch;
}): Promise<string | undefined> {
  if (options.token === undefined || options.log === '') return undefined;
  const url = `${options.cacheUrl}/log/${basename(options.drvPath)}`;
  try {
    const response = await (options.fetch ?? fetch)(url, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${options.token}`,
        'content-type': 'text/plain; charset=utf-8',
      },
      body: options.log,
    });
    return response.ok ? url : undefined;
  } catch {
    return undefined;
  }
}

/** The last `lines` lines of `text`. */
export function logTail(text: string, lines = 25): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
