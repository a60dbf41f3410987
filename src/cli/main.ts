/**
 * The CLI's one error boundary: a FirnError becomes its message, code, hint and exit code (no
 * stack trace unless --debug); anything else is a bug and says so.
 */
import { readFileSync } from 'node:fs';
import { FirnError, firnError } from '../errors.ts';
import { COMMANDS } from './commands.ts';
import type { CommandContext } from './context.ts';

/** Read only when asked: `firn hook` runs once per Nix build, and every millisecond shows. */
function version(): string {
  return (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    }
  ).version;
}

const BUG_URL = 'https://github.com/firn-nix/firn/issues';

function topLevelHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    'Usage: firn [--debug] COMMAND [ARGS…]',
    '',
    'firn: a build farm and binary cache for fleets of NixOS machines.',
    '',
    'Commands:',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Global options:',
    '  --debug      show stack traces and internal details on errors',
    '  --version    print the version',
    '  -h, --help   show this help; `firn COMMAND --help` for a command',
    '',
  ].join('\n');
}

export type MainIo = Omit<CommandContext, 'argv' | 'debug'>;

export async function main(argv: readonly string[], io: MainIo): Promise<number> {
  const args = [...argv];
  let debug = io.env.FIRN_DEBUG === '1';
  while (args[0]?.startsWith('-') === true) {
    const flag = args.shift();
    if (flag === '--debug') debug = true;
    else if (flag === '--version' || flag === '-V') {
      io.stdout.write(`firn ${version()}\n`);
      return 0;
    } else if (flag === '--help' || flag === '-h') {
      io.stdout.write(topLevelHelp());
      return 0;
    } else {
      return reportError(
        firnError('FIRN_E_USAGE', `unknown option '${flag ?? ''}'`, { hint: 'see firn --help' }),
        io,
        debug,
      );
    }
  }
  const name = args.shift();
  if (name === undefined) {
    io.stderr.write(topLevelHelp());
    return 2;
  }
  try {
    const spec = COMMANDS.find((command) => command.name === name);
    if (spec === undefined) {
      throw firnError('FIRN_E_UNKNOWN_COMMAND', `unknown command '${name}'`, {
        hint: 'see firn --help for the list',
      });
    }
    const command = await spec.load();
    return await command.run({ ...io, argv: args, debug });
  } catch (error) {
    return reportError(error, io, debug);
  }
}

function reportError(error: unknown, io: MainIo, debug: boolean): number {
  if (FirnError.is(error)) {
    io.stderr.write(`firn: error: ${error.message} [${error.code}]\n`);
    if (error.hint !== undefined) io.stderr.write(`hint: ${error.hint}\n`);
    if (debug) io.stderr.write(`${error.stack ?? ''}\n${formatCause(error.cause)}`);
    return error.exitCode;
  }
  io.stderr.write(
    `firn: internal error: ${error instanceof Error ? error.message : String(error)} [FIRN_E_INTERNAL]\n`,
  );
  if (debug) io.stderr.write(`${error instanceof Error ? (error.stack ?? '') : ''}\n`);
  else
    io.stderr.write(
      'hint: this is a bug in firn; run again with --debug and report it at ' + BUG_URL + '\n',
    );
  return 70;
}

function formatCause(cause: unknown): string {
  if (cause === undefined) return '';
  return `caused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : JSON.stringify(cause)}\n`;
}
