/**
 * The outputs of a derivation the hook reported. Nix 2.8.0 runs post-build-hook with OUT_PATHS
 * set but empty (NixOS/nix#6446), so the drain reads them from the `.drv` file named by
 * DRV_PATH. Floating content-addressed outputs have no path in the `.drv`; for those Nix is asked.
 */
import { readFile } from 'node:fs/promises';
import { firnError } from '../errors.ts';
import { parseDerivation } from '../nix/derivation.ts';
import { runChecked } from '../process/run.ts';
import { physicalPath, type LocalStore } from './path-info.ts';

export async function derivationOutputs(
  store: LocalStore,
  drvPath: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string[]> {
  let text: Buffer;
  try {
    text = await readFile(physicalPath(store, drvPath));
  } catch (error) {
    throw firnError(
      'FIRN_E_PATH_NOT_IN_STORE',
      `cannot read the derivation ${drvPath}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const outputs = [...parseDerivation(text, { storeDir: store.storeDir }).outputs.values()];
  if (outputs.every((output) => output.path !== '')) return outputs.map((output) => output.path);
  const storeArgs = store.root === '/' ? [] : ['--store', store.root];
  const result = await runChecked('nix-store', [...storeArgs, '--query', '--outputs', drvPath], {
    env,
  });
  return result.stdout
    .toString('utf8')
    .split('\n')
    .filter((line) => line.startsWith('/'));
}
