/**
 * Argument parsing for every command: node:util parseArgs in strict mode, `--help` handled
 * in one place, and mistakes turned into FIRN_E_USAGE with the usage text as the hint.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { firnError } from '../errors.ts';
import type { CommandContext } from './context.ts';

export interface CommandHelp {
  /** e.g. `firn nar pack PATH` */
  readonly usage: string;
  readonly description: string;
  /** Lines such as `--json   print JSON`; shown under "Options:". */
  readonly options?: readonly string[];
  readonly examples?: readonly string[];
}

export function renderHelp(help: CommandHelp): string {
  const parts = [`Usage: ${help.usage}`, '', help.description];
  if (help.options !== undefined && help.options.length > 0) {
    parts.push('', 'Options:', ...help.options.map((line) => `  ${line}`));
  }
  parts.push('  -h, --help   show this help');
  if (help.examples !== undefined && help.examples.length > 0) {
    parts.push('', 'Examples:', ...help.examples.map((line) => `  ${line}`));
  }
  return parts.join('\n') + '\n';
}

export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false;
    if (arg === '--help' || arg === '-h') return true;
  }
  return false;
}

export interface ParsedArgs<O extends ParseArgsOptionsConfig> {
  readonly values: ReturnType<
    typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>
  >['values'];
  readonly positionals: string[];
}

/**
 * Parses `ctx.argv` against `options`; checks the positional count. Returns undefined after
 * printing help when `--help` was asked for, so commands end with `if (!args) return 0`.
 */
export function parseCommandArgs<O extends ParseArgsOptionsConfig>(
  ctx: CommandContext,
  help: CommandHelp,
  options: O,
  positionals: { readonly min: number; readonly max: number },
): ParsedArgs<O> | undefined {
  if (wantsHelp(ctx.argv)) {
    ctx.stdout.write(renderHelp(help));
    return undefined;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...ctx.argv], options, allowPositionals: true, strict: true });
  } catch (error) {
    throw usageError(help, error instanceof Error ? error.message : String(error));
  }
  const count = parsed.positionals.length;
  if (count < positionals.min) throw usageError(help, 'missing argument');
  if (count > positionals.max) {
    throw usageError(help, `unexpected argument '${parsed.positionals[positionals.max] ?? ''}'`);
  }
  return { values: parsed.values, positionals: parsed.positionals };
}

export function usageError(help: CommandHelp, message: string): Error {
  return firnError('FIRN_E_USAGE', message, { hint: `usage: ${help.usage} (see --help)` });
}

/** Picks the subcommand (`firn nar pack …` → `pack`) and hands it the rest of the arguments. */
export async function dispatchSubcommand(
  ctx: CommandContext,
  group: { readonly usage: string; readonly description: string },
  subcommands: Readonly<
    Record<
      string,
      { readonly summary: string; readonly run: (ctx: CommandContext) => Promise<number> }
    >
  >,
): Promise<number> {
  const [name, ...rest] = ctx.argv;
  const entries = Object.entries(subcommands);
  const groupHelp = (): string =>
    `Usage: ${group.usage}\n\n${group.description}\n\nCommands:\n` +
    entries.map(([sub, { summary }]) => `  ${sub.padEnd(10)} ${summary}`).join('\n') +
    '\n';
  if (name === undefined || name === '--help' || name === '-h') {
    (name === undefined ? ctx.stderr : ctx.stdout).write(groupHelp());
    return name === undefined ? 2 : 0;
  }
  const sub = subcommands[name];
  if (sub === undefined) {
    throw firnError('FIRN_E_UNKNOWN_COMMAND', `unknown subcommand '${name}'`, {
      hint: `one of: ${entries.map(([key]) => key).join(', ')} (see ${group.usage.split(' ').slice(0, 2).join(' ')} --help)`,
    });
  }
  return sub.run({ ...ctx, argv: rest });
}
