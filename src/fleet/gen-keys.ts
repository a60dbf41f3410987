/**
 * The public keys a builder lets in: given on the command line (`--authorized-key`, a key line
 * or a file of them), or else read from `<ssh-key>.pub` beside each builder's private key, the
 * way ssh-keygen lays them out. Every key is checked, so a fingerprint or a private key pasted
 * by mistake never reaches a generated file.
 *
 * API: `authorizedKeysFor(hosts, { explicit, env }) → Map<hostName, string[]>`, for the builders
 * among `hosts` (only their keys are read).
 */
import { readFile } from 'node:fs/promises';
import { firnError, fromFsError } from '../errors.ts';
import { expandHome, hasRole, type Host } from './inventory.ts';
import { formatSshPublicKey, parseSshPublicKey } from './ssh-host-key.ts';

export async function authorizedKeysFor(
  hosts: readonly Host[],
  options: { readonly explicit: readonly string[]; readonly env: NodeJS.ProcessEnv },
): Promise<Map<string, string[]>> {
  const result = new Map<string, string[]>();
  const builders = hosts.filter((host) => hasRole(host, 'builder'));
  if (builders.length === 0) return result;
  if (options.explicit.length > 0) {
    const keys: string[] = [];
    for (const given of options.explicit) keys.push(...(await keysFrom(given, options.env)));
    for (const builder of builders) result.set(builder.name, keys);
    return result;
  }
  const cache = new Map<string, string[]>();
  for (const builder of builders) {
    const key = builder.ssh.key;
    if (key === undefined) {
      throw firnError(
        'FIRN_E_USAGE',
        `builder ${builder.name} has no ssh-key in the inventory, so firn cannot tell which public key to authorize`,
        {
          hint: 'set ssh-key in [defaults] (its .pub file is read), or pass --authorized-key FILE',
        },
      );
    }
    const file = `${expandHome(key, options.env)}.pub`;
    let keys = cache.get(file);
    if (keys === undefined) {
      keys = await keysFromFile(file, `the public half of ssh-key ${key}`);
      cache.set(file, keys);
    }
    result.set(builder.name, keys);
  }
  return result;
}

async function keysFrom(given: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const inline = parseSshPublicKey(given);
  if (inline.ok) return [withComment(given)];
  return keysFromFile(expandHome(given, env), '--authorized-key');
}

async function keysFromFile(file: string, what: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const mapped = fromFsError(error, file, `read ${what}`);
    throw firnError(mapped.code, mapped.message, {
      cause: error,
      hint: 'pass the public key that may log in to the builders with --authorized-key FILE (or the key line itself)',
    });
  }
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (lines.length === 0) {
    throw firnError('FIRN_E_CONFIG_INVALID', `${file} (${what}) holds no public key`);
  }
  return lines.map((line, index) => {
    const parsed = parseSshPublicKey(line);
    if (!parsed.ok) {
      const secret = line.includes('PRIVATE KEY');
      throw firnError(
        'FIRN_E_CONFIG_INVALID',
        `${file}, line ${index + 1} (${what}): ${secret ? 'this is a PRIVATE key' : `the key ${parsed.problem}`}`,
        { hint: 'give the .pub file, whose line starts with "ssh-ed25519 AAAA…"' },
      );
    }
    return withComment(line);
  });
}

/** Keep the key's comment (it names whose key it is in authorized_keys); drop extra spaces. */
function withComment(line: string): string {
  const fields = line.trim().split(/\s+/);
  const parsed = parseSshPublicKey(line);
  if (!parsed.ok) return line.trim();
  const comment = fields.slice(2).join(' ');
  return comment === ''
    ? formatSshPublicKey(parsed.key)
    : `${formatSshPublicKey(parsed.key)} ${comment}`;
}
