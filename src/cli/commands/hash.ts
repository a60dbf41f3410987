/** `firn hash path|convert`: `nix hash path` and `nix hash to-base16/…/to-sri` in one command. */
import {
  formatDigest,
  formatHash,
  parseHash,
  parseHashAlgorithm,
  type Hash,
  type HashAlgorithm,
  type HashEncoding,
} from '../../nix/hash.ts';
import { dispatchSubcommand, parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const pathHelp: CommandHelp = {
  usage: 'firn hash path PATH… [--type sha256|sha512|sha1|md5] [--base16|--base32|--base64|--sri]',
  description:
    'Print the hash of the NAR serialisation of each PATH, exactly like `nix hash path`\n(default: SRI sha256, e.g. sha256-h4gy…haY=).',
  options: [
    '--type ALGO   hash algorithm: sha256 (default), sha512, sha1 or md5',
    '--base16      print the bare digest in base16 (hex)',
    '--base32      print the bare digest in nix-base32',
    '--base64      print the bare digest in base64',
    '--sri         print ALGO-<base64> (the default)',
  ],
  examples: ['firn hash path ./result', 'firn hash path --base32 /nix/store/…-hello-2.12'],
};

const convertHelp: CommandHelp = {
  usage: 'firn hash convert --to nix32|base16|base64|sri [--type ALGO] HASH…',
  description:
    'Re-encode each HASH (sha256:<any encoding>, SRI, or a bare digest with --type) like\n`nix hash to-base32` and friends: nix32, base16 and base64 print the bare digest.',
  options: [
    '--to ENC      target encoding: nix32 (alias base32), base16, base64 or sri',
    '--type ALGO   algorithm of bare digests; if HASH names one, it must agree',
  ],
  examples: [
    'firn hash convert --to nix32 sha256-h4gyzSK14DjhF7cBN4VY+Km2ytc4Gg5tV6noZdNPhaY=',
    'firn hash convert --to sri --type sha256 878832cd…85a6',
  ],
};

const ENCODING_FLAGS = ['base16', 'base32', 'base64', 'sri'] as const;

function render(hash: Hash, encoding: HashEncoding): string {
  return encoding === 'sri' ? formatHash(hash, 'sri') : formatDigest(hash, encoding);
}

async function hashPath(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    pathHelp,
    {
      type: { type: 'string' },
      base16: { type: 'boolean' },
      base32: { type: 'boolean' },
      base64: { type: 'boolean' },
      sri: { type: 'boolean' },
    },
    { min: 1, max: Infinity },
  );
  if (args === undefined) return 0;
  const chosen = ENCODING_FLAGS.filter((flag) => args.values[flag] === true);
  if (chosen.length > 1) {
    throw usageError(pathHelp, `give only one of --${chosen.join(', --')}`);
  }
  const encoding: HashEncoding = chosen[0] === 'base32' ? 'nix32' : (chosen[0] ?? 'sri');
  const algorithm: HashAlgorithm = parseHashAlgorithm(args.values.type ?? 'sha256');
  const { hashPathNar } = await import('../../nix/nar-writer.ts');
  for (const path of args.positionals) {
    const { hash } = await hashPathNar(path, algorithm);
    ctx.stdout.write(`${render(hash, encoding)}\n`);
  }
  return 0;
}

const TARGETS: Readonly<Record<string, HashEncoding>> = {
  nix32: 'nix32',
  base32: 'nix32',
  base16: 'base16',
  base64: 'base64',
  sri: 'sri',
};

function convert(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    convertHelp,
    { to: { type: 'string' }, type: { type: 'string' } },
    { min: 1, max: Infinity },
  );
  if (args === undefined) return Promise.resolve(0);
  const to = args.values.to;
  if (to === undefined) throw usageError(convertHelp, 'missing --to');
  const encoding = TARGETS[to];
  if (encoding === undefined) {
    throw usageError(convertHelp, `unknown encoding '${to}' (use nix32, base16, base64 or sri)`);
  }
  const type = args.values.type === undefined ? undefined : parseHashAlgorithm(args.values.type);
  const options = type === undefined ? {} : { defaultAlgorithm: type, expected: type };
  const out = args.positionals.map((text) => render(parseHash(text, options), encoding));
  ctx.stdout.write(out.map((line) => `${line}\n`).join(''));
  return Promise.resolve(0);
}

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    { usage: 'firn hash path|convert …', description: 'Hash paths and convert hash encodings.' },
    {
      path: { summary: 'hash the NAR serialisation of paths (like nix hash path)', run: hashPath },
      convert: { summary: 'convert a hash between nix32, base16, base64 and SRI', run: convert },
    },
  );
}
