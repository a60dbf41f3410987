/**
 * Renders docs/cli.md from the commands' own --help texts, so the reference cannot drift from
 * the code. `node scripts/cli-docs.ts --write` rewrites the file; test/cli/cli-docs.test.ts fails
 * when it is stale.
 */
import { writeFile } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import { main } from '../src/cli/main.ts';

/** Every command a user can run, in the order the reference lists them. */
export const COMMAND_PATHS: readonly (readonly string[])[] = [
  ['serve'],
  ['cache', 'token', 'create'],
  ['cache', 'token', 'list'],
  ['cache', 'token', 'revoke'],
  ['cache', 'key'],
  ['cache', 'gc'],
  ['cache', 'verify'],
  ['push'],
  ['gen', 'nix-conf'],
  ['gen', 'machines'],
  ['gen', 'nixos'],
  ['doctor'],
  ['build'],
  ['hook'],
  ['drain'],
  ['nar', 'pack'],
  ['nar', 'unpack'],
  ['nar', 'ls'],
  ['hash', 'path'],
  ['hash', 'convert'],
  ['key', 'generate'],
  ['key', 'public'],
  ['narinfo', 'sign'],
  ['narinfo', 'verify'],
  ['drv', 'show'],
];

export const CLI_DOCS_URL = new URL('../docs/cli.md', import.meta.url);

export async function helpText(path: readonly string[]): Promise<string> {
  const stdout = new PassThrough();
  let text = '';
  stdout.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  await main([...path, '--help'], {
    stdin: new PassThrough(),
    stdout,
    stderr: new PassThrough(),
    env: {},
  });
  return text;
}

export async function renderCliDocs(): Promise<string> {
  const parts = [
    '# Command-line reference',
    '',
    'Generated from `firn … --help` by `node scripts/cli-docs.ts --write`; a test keeps it current.',
    '',
    'Global options go before the command: `--debug` (stack traces on errors; also `FIRN_DEBUG=1`),',
    '`--version`, `--help`. Every error ends with a `FIRN_E_…` code explained in `errors.md`; exit',
    'codes are listed there too.',
    '',
  ];
  for (const path of COMMAND_PATHS) {
    parts.push(`## firn ${path.join(' ')}`, '', '```', (await helpText(path)).trimEnd(), '```', '');
  }
  return parts.join('\n');
}

if (process.argv.includes('--write')) {
  await writeFile(CLI_DOCS_URL, await renderCliDocs());
}
