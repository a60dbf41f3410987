import { openIndex } from '../../cache/cache.ts';
import { createToken, isTokenScope } from '../../cache/tokens.ts';
import { firnError } from '../../errors.ts';
import { dispatchSubcommand, parseCommandArgs, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';
import { DATA_OPTION_HELP, resolveDataDir } from '../data-dir.ts';

const createHelp: CommandHelp = {
  usage: 'firn cache token create --name NAME --scope push|read|admin [--data DIR] [--json]',
  description:
    'Create an access token. It is printed once, as the last line, and stored only as a hash.\n' +
    'push: upload (and read); read: read a private cache; admin: everything.',
  options: [
    DATA_OPTION_HELP,
    '--name NAME  a label for the token (unique)',
    '--scope S    push, read or admin',
    '--json       print {id,name,scope,token}',
  ],
  examples: ['firn cache token create --name builder1 --scope push'],
};
const listHelp: CommandHelp = {
  usage: 'firn cache token list [--data DIR] [--json]',
  description: 'List tokens (never their secrets).',
  options: [DATA_OPTION_HELP, '--json       print JSON'],
};
const revokeHelp: CommandHelp = {
  usage: 'firn cache token revoke ID_OR_NAME [--data DIR]',
  description: 'Revoke a token; requests that present it are refused at once.',
  options: [DATA_OPTION_HELP],
};

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    {
      usage: 'firn cache token create|list|revoke …',
      description: 'Manage access tokens of a firn cache.',
    },
    {
      create: { summary: 'create a token (printed once)', run: create },
      list: { summary: 'list tokens', run: list },
      revoke: { summary: 'revoke a token', run: revoke },
    },
  );
}

async function create(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    createHelp,
    {
      data: { type: 'string' },
      name: { type: 'string' },
      scope: { type: 'string' },
      json: { type: 'boolean' },
    },
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  const { name, scope } = args.values;
  if (name === undefined || !/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    throw firnError('FIRN_E_USAGE', '--name is required: 1-64 letters, digits, . _ @ -', {
      hint: `usage: ${createHelp.usage}`,
    });
  }
  if (scope === undefined || !isTokenScope(scope)) {
    throw firnError('FIRN_E_USAGE', '--scope must be push, read or admin', {
      hint: `usage: ${createHelp.usage}`,
    });
  }
  const dataDir = resolveDataDir(args.values.data, ctx.env);
  const { index, created } = await openIndex(dataDir, { create: true });
  if (created) {
    ctx.stderr.write(
      `note: there was no cache in ${dataDir}; made its index there (\`firn serve --data ${dataDir}\` will use it)\n`,
    );
  }
  try {
    const { record, token } = await createToken(index, name, scope);
    if (args.values.json === true) {
      ctx.stdout.write(
        JSON.stringify({ id: record.id, name: record.name, scope: record.scope, token }) + '\n',
      );
    } else {
      ctx.stderr.write(
        `created ${scope} token '${name}' (id ${record.id}); it is shown only now:\n`,
      );
      ctx.stdout.write(`${token}\n`);
    }
  } finally {
    await index.close();
  }
  return 0;
}

async function list(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(
    ctx,
    listHelp,
    { data: { type: 'string' }, json: { type: 'boolean' } },
    { min: 0, max: 0 },
  );
  if (args === undefined) return 0;
  const { index } = await openIndex(resolveDataDir(args.values.data, ctx.env), { create: false });
  try {
    const tokens = await index.listTokens();
    if (args.values.json === true) {
      ctx.stdout.write(JSON.stringify(tokens) + '\n');
      return 0;
    }
    if (tokens.length === 0)
      ctx.stderr.write('no tokens; create one with `firn cache token create`\n');
    for (const token of tokens) {
      const used =
        token.lastUsedAt === undefined
          ? 'never used'
          : `last used ${new Date(token.lastUsedAt).toISOString()}`;
      ctx.stdout.write(
        `${token.id}  ${token.name.padEnd(20)} ${token.scope.padEnd(6)} created ${new Date(token.createdAt).toISOString()}, ${used}\n`,
      );
    }
  } finally {
    await index.close();
  }
  return 0;
}

async function revoke(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, revokeHelp, { data: { type: 'string' } }, { min: 1, max: 1 });
  if (args === undefined) return 0;
  const target = args.positionals[0] ?? '';
  const { index } = await openIndex(resolveDataDir(args.values.data, ctx.env), { create: false });
  try {
    if (!(await index.revokeToken(target))) {
      throw firnError('FIRN_E_TOKEN_UNKNOWN', `no token with id or name '${target}'`, {
        hint: 'see firn cache token list',
      });
    }
    ctx.stderr.write(`revoked token '${target}'\n`);
  } finally {
    await index.close();
  }
  return 0;
}
