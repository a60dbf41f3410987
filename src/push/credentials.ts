/**
 * Which token a push sends, in this order: `--token-file`, FIRN_TOKEN, the `token-file` setting
 * (FIRN_TOKEN_FILE or the config file), then the netrc file Nix uses for the cache's host.
 */
import { readFile } from 'node:fs/promises';
import { firnError, fromFsError } from '../errors.ts';
import { netrcEntryFor, parseNetrc } from './netrc.ts';

export interface Credentials {
  /** The `Authorization` header value, or undefined to send none. */
  readonly authorization: string | undefined;
  /** Where it came from, for messages. */
  readonly source: string;
}

export async function findCredentials(options: {
  tokenFileFlag?: string | undefined;
  env: NodeJS.ProcessEnv;
  tokenFileSetting?: string | undefined;
  netrcFile: string;
  host: string;
}): Promise<Credentials> {
  if (options.tokenFileFlag !== undefined) {
    return bearer(await readToken(options.tokenFileFlag), `--token-file ${options.tokenFileFlag}`);
  }
  const fromEnv = options.env.FIRN_TOKEN;
  if (fromEnv !== undefined && fromEnv.trim() !== '') return bearer(fromEnv.trim(), 'FIRN_TOKEN');
  if (options.tokenFileSetting !== undefined) {
    return bearer(
      await readToken(options.tokenFileSetting),
      `token-file ${options.tokenFileSetting}`,
    );
  }
  let text: string;
  try {
    text = await readFile(options.netrcFile, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES') {
      return {
        authorization: undefined,
        source: `no token given and no readable ${options.netrcFile}`,
      };
    }
    throw fromFsError(error, options.netrcFile, 'read netrc file');
  }
  const entry = netrcEntryFor(parseNetrc(text), options.host);
  if (entry?.password === undefined) {
    return {
      authorization: undefined,
      source: `no token given and no entry for ${options.host} in ${options.netrcFile}`,
    };
  }
  const basic = Buffer.from(`${entry.login ?? 'firn'}:${entry.password}`).toString('base64');
  return {
    authorization: `Basic ${basic}`,
    source: `the ${options.host} entry of ${options.netrcFile}`,
  };
}

function bearer(token: string, source: string): Credentials {
  return { authorization: `Bearer ${token}`, source };
}

async function readToken(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw fromFsError(error, file, 'read token file');
  }
  const token = text.trim();
  if (token === '' || /\s/.test(token)) {
    throw firnError(
      'FIRN_E_CONFIG_INVALID',
      `token file ${file} must hold one token and nothing else`,
      {
        hint: 'create a token with `firn cache token create --scope push` and save it alone in the file',
      },
    );
  }
  return token;
}
