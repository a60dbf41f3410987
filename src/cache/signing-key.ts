/**
 * The cache's own signing key. It is made on first start and never leaves the cache box:
 * builders push unsigned paths and the cache signs what it has verified.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fromFsError } from '../errors.ts';
import {
  formatPublicKey,
  generateSecretKey,
  publicKeyOf,
  readSecretKeyFile,
  writeSecretKeyFile,
  type SecretKey,
} from '../nix/signing.ts';

export function keyPaths(dataDir: string): { secret: string; public: string } {
  return {
    secret: join(dataDir, 'keys', 'cache.secret'),
    public: join(dataDir, 'keys', 'cache.public'),
  };
}

export interface LoadedKey {
  readonly key: SecretKey;
  readonly created: boolean;
  /** Set when the secret file was readable by others; firn tightened it to 0600. */
  readonly tightened: boolean;
}

export async function loadOrCreateSigningKey(dataDir: string, name: string): Promise<LoadedKey> {
  const paths = keyPaths(dataDir);
  await mkdir(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  let info;
  try {
    info = await stat(paths.secret);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw fromFsError(error, paths.secret, 'read');
  }
  if (info === undefined) {
    const key = generateSecretKey(name);
    await writeSecretKeyFile(paths.secret, key);
    await writeFile(paths.public, formatPublicKey(publicKeyOf(key)) + '\n', { mode: 0o644 });
    return { key, created: true, tightened: false };
  }
  const tightened = (info.mode & 0o077) !== 0;
  if (tightened) await chmod(paths.secret, 0o600);
  const key = await readSecretKeyFile(paths.secret);
  const publicLine = formatPublicKey(publicKeyOf(key)) + '\n';
  const onDisk = await readFile(paths.public, 'utf8').catch(() => '');
  if (onDisk !== publicLine) await writeFile(paths.public, publicLine, { mode: 0o644 });
  return { key, created: false, tightened };
}
