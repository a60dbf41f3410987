/** `firn nar pack|unpack|ls`: NAR archives like `nix-store --dump/--restore` and `nix store ls`. */
import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { fromFsError } from '../../errors.ts';
import type { NarEvent } from '../../nix/nar-reader.ts';
import { dispatchSubcommand, parseCommandArgs, usageError, type CommandHelp } from '../args.ts';
import type { CommandContext } from '../context.ts';

const packHelp: CommandHelp = {
  usage: 'firn nar pack PATH',
  description:
    'Write the NAR of PATH (a file, symlink or directory tree) to stdout, byte for byte what\n`nix-store --dump PATH` writes.',
  examples: ['firn nar pack ./result > result.nar', 'firn nar pack ./dir | firn nar ls -'],
};

const unpackHelp: CommandHelp = {
  usage: 'firn nar unpack DEST',
  description:
    'Read a NAR from stdin and restore it as DEST, which must not exist yet (its parent must).\nThe NAR is checked as it is read; on any error DEST is removed and nothing else is touched.',
  examples: ['firn nar unpack ./copy < result.nar', 'firn nar pack ./a | firn nar unpack ./b'],
};

const lsHelp: CommandHelp = {
  usage: 'firn nar ls FILE [--json]',
  description:
    'List the entries of the NAR in FILE (`-` for stdin), one line per entry with type, size and\npath like `nix store ls -lR`; with --json print the `.ls` listing a binary cache serves.',
  options: ['--json   print the `.ls` JSON listing (as `write-nar-listing=1` writes it)'],
  examples: ['firn nar ls result.nar', 'firn nar ls --json - < result.nar'],
};

/** Writes `chunks` to `out`, waiting whenever `out` asks for a pause. */
async function writeAll(chunks: AsyncIterable<Buffer>, out: Writable): Promise<void> {
  for await (const chunk of chunks) {
    if (!out.write(chunk)) await once(out, 'drain');
  }
}

async function pack(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, packHelp, {}, { min: 1, max: 1 });
  if (args === undefined) return 0;
  if ((ctx.stdout as Partial<NodeJS.WriteStream>).isTTY === true) {
    throw usageError(packHelp, 'refusing to write a binary NAR to a terminal');
  }
  // Each subcommand loads only its own modules: startup is a good part of packing a small tree.
  const { writeNar } = await import('../../nix/nar-writer.ts');
  await writeNar(args.positionals[0] ?? '', ctx.stdout);
  return 0;
}

async function unpack(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, unpackHelp, {}, { min: 1, max: 1 });
  if (args === undefined) return 0;
  const { unpackNar } = await import('../../nix/nar-unpack.ts');
  await unpackNar(ctx.stdin, args.positionals[0] ?? '');
  return 0;
}

function openInput(ctx: CommandContext, file: string): Readable {
  if (file === '-') return ctx.stdin;
  return createReadStream(file, { highWaterMark: 1024 * 1024 });
}

async function ls(ctx: CommandContext): Promise<number> {
  const args = parseCommandArgs(ctx, lsHelp, { json: { type: 'boolean' } }, { min: 1, max: 1 });
  if (args === undefined) return 0;
  const file = args.positionals[0] ?? '';
  const [{ readNar }, { NarListingBuilder, formatListingLine }] = await Promise.all([
    import('../../nix/nar-reader.ts'),
    import('../../nix/nar-listing.ts'),
  ]);
  const events = readNar(openInput(ctx, file));
  try {
    if (args.values.json === true) {
      const builder = new NarListingBuilder();
      for await (const event of events) builder.add(event);
      ctx.stdout.write(builder.finish());
    } else {
      await writeAll(lines(events, formatListingLine), ctx.stdout);
    }
  } catch (error) {
    // A stream error on the named file (missing, unreadable) carries an fs code.
    if ((error as NodeJS.ErrnoException).syscall !== undefined)
      throw fromFsError(error, file, 'read');
    throw error;
  }
  return 0;
}

/** The text listing, gathered into chunks of a few KiB rather than one write per line. */
async function* lines(
  events: AsyncIterable<NarEvent>,
  formatListingLine: (event: NarEvent) => Buffer | undefined,
): AsyncGenerator<Buffer> {
  let batch: Buffer[] = [];
  let size = 0;
  for await (const event of events) {
    const line = formatListingLine(event);
    if (line === undefined) continue;
    batch.push(line);
    size += line.length;
    if (size >= 64 * 1024) {
      yield Buffer.concat(batch);
      batch = [];
      size = 0;
    }
  }
  if (batch.length > 0) yield Buffer.concat(batch);
}

export function run(ctx: CommandContext): Promise<number> {
  return dispatchSubcommand(
    ctx,
    { usage: 'firn nar pack|unpack|ls …', description: 'Pack, unpack and list NAR archives.' },
    {
      pack: { summary: 'write the NAR of a path to stdout (like nix-store --dump)', run: pack },
      unpack: { summary: 'restore a NAR from stdin into a new path', run: unpack },
      ls: { summary: 'list the entries of a NAR (--json for the .ls listing)', run: ls },
    },
  );
}
