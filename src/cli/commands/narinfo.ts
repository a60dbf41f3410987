/**
 * `firn narinfo sign` and `firn narinfo verify`: the signature half of a binary cache, usable
 * on any `file://` cache or single narinfo, with Nix's key formats.
 */
import type { Readable } from 'node:stream';
import { FirnError, firnError } from '../../errors.ts';
import {
  MAX_NARINFO_BYTES,
  parseNarInfoBytes,
  serializeNarInfo,
  type NarInfo,
} from '../../nix/narinfo.ts';
import {
  parsePublicKey,
  readPublicKeyFile,
  readSecretKeyFile,
  verifyNarInfo,
  withSignature,
  type PublicKey,
} from '../../nix/signing.ts';
import { DEFAULT_STORE_DIR } from '../../nix/store-path.ts';
import { dispatchSubcommand, parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const STORE_DIR_OPTION =
  '--store-dir DIR       the Nix store directory (default: $NIX_STORE_DIR or /nix/store)';

const SIGN_HELP: CommandHelp = {
  usage: 'firn narinfo sign --key SECRET_FILE < NARINFO > SIGNED',
  description:
    'Read a narinfo on standard input and write it, signed with the secret key, to standard\n' +
    'output. A signature by a key of the same name is replaced; others are kept. The output\n' +
    'is byte for byte what `nix store sign` writes.',
  options: [
    '--key SECRET_FILE     secret key file (from firn key generate or Nix)',
    STORE_DIR_OPTION,
  ],
  examples: ['firn narinfo sign --key cache.secret < abc….narinfo > signed.narinfo'],
};

const VERIFY_HELP: CommandHelp = {
  usage: 'firn narinfo verify --trusted-key PUBLIC_KEY [--trusted-key …] < NARINFO',
  description:
    'Check that a narinfo on standard input carries a valid signature by one of the trusted\n' +
    'keys, as Nix does before it accepts a substitute. Prints the name of the key that\n' +
    'verified and exits 0; exits non-zero (FIRN_E_SIGNATURE_INVALID) when none does.',
  options: [
    '--trusted-key KEY     a public key as name:base64, or a file holding one (repeatable)',
    STORE_DIR_OPTION,
  ],
  examples: [
    'firn narinfo verify --trusted-key cache.public < abc….narinfo',
    "firn narinfo verify --trusted-key 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=' < x.narinfo",
  ],
};

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    { usage: 'firn narinfo COMMAND', description: 'Sign and verify narinfo files.' },
    {
      sign: { summary: 'add a signature to a narinfo', run: sign },
      verify: { summary: 'check a narinfo against trusted public keys', run: verify },
    },
  );
}

async function sign(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    SIGN_HELP,
    { key: { type: 'string' }, 'store-dir': { type: 'string' } },
    { min: 0, max: 0 },
  );
  if (!args) return 0;
  const keyFile = args.values.key;
  if (keyFile === undefined) throw usageError(SIGN_HELP, '--key SECRET_FILE is required');
  const key = await readSecretKeyFile(keyFile);
  const info = await readNarInfo(ctx, args.values['store-dir']);
  ctx.stdout.write(serializeNarInfo(withSignature(info, key)));
  return 0;
}

async function verify(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    VERIFY_HELP,
    { 'trusted-key': { type: 'string', multiple: true }, 'store-dir': { type: 'string' } },
    { min: 0, max: 0 },
  );
  if (!args) return 0;
  const keyArgs = args.values['trusted-key'] ?? [];
  if (keyArgs.length === 0) throw usageError(VERIFY_HELP, 'at least one --trusted-key is required');
  const trusted: PublicKey[] = [];
  for (const arg of keyArgs) trusted.push(await trustedKey(arg));
  const info = await readNarInfo(ctx, args.values['store-dir']);
  const key = verifyNarInfo(info, trusted);
  if (key === undefined) throw notVerified(info, trusted);
  ctx.stdout.write(`${key.name}\n`);
  return 0;
}

/** A key given as text, or else the file holding one. */
async function trustedKey(arg: string): Promise<PublicKey> {
  try {
    return parsePublicKey(arg);
  } catch (error) {
    if (!FirnError.is(error)) throw error;
  }
  try {
    return await readPublicKeyFile(arg);
  } catch (error) {
    if (!FirnError.is(error) || error.code !== 'FIRN_E_FILE_NOT_FOUND') throw error;
    throw firnError(
      'FIRN_E_FILE_NOT_FOUND',
      `--trusted-key ${JSON.stringify(arg)} is neither a public key nor an existing file`,
      {
        cause: error,
        hint: 'give the key as name:base64 (as in trusted-public-keys) or a file holding it',
      },
    );
  }
}

async function readNarInfo(
  ctx: CommandContext,
  storeDirOption: string | undefined,
): Promise<NarInfo> {
  const storeDir = storeDirOption ?? ctx.env.NIX_STORE_DIR ?? DEFAULT_STORE_DIR;
  const bytes = await readBounded(ctx.stdin, MAX_NARINFO_BYTES);
  try {
    return parseNarInfoBytes(bytes, { storeDir });
  } catch (error) {
    if (!FirnError.is(error)) throw error;
    throw firnError(error.code, `standard input: ${error.message}`, {
      cause: error,
      details: error.details,
      hint:
        error.hint ?? 'is the input a narinfo file (Key: value lines, as a binary cache serves)?',
    });
  }
}

/** Reads a stream to its end, stopping with FIRN_E_INPUT_TOO_LARGE past `maxBytes`. */
async function readBounded(stream: Readable, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    total += bytes.length;
    if (total > maxBytes) {
      throw firnError('FIRN_E_INPUT_TOO_LARGE', `standard input is larger than ${maxBytes} bytes`, {
        hint: 'a narinfo is a few hundred bytes; is this the NAR itself?',
      });
    }
    chunks.push(bytes);
  }
  return Buffer.concat(chunks, total);
}

function notVerified(info: NarInfo, trusted: readonly PublicKey[]): FirnError {
  const trustedNames = trusted.map((key) => key.name);
  const signers = info.sigs.map((sig) => sig.slice(0, sig.indexOf(':')));
  const matching = signers.filter((name) => trustedNames.includes(name));
  let reason: string;
  if (signers.length === 0) reason = 'it has no signatures';
  else if (matching.length === 0) {
    reason = `it is signed only by ${signers.map((name) => `'${name}'`).join(', ')}, none of them trusted`;
  } else {
    reason = `the signature by '${matching[0] ?? ''}' does not verify (the narinfo changed after signing, or the key differs)`;
  }
  return firnError(
    'FIRN_E_SIGNATURE_INVALID',
    `${info.storePath} lacks a valid signature: ${reason}`,
    {
      hint: `trusted keys: ${trustedNames.join(', ')}`,
      details: { storePath: info.storePath, signers, trusted: trustedNames },
    },
  );
}
