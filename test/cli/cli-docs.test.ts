import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { COMMANDS } from '../../src/cli/commands.ts';
import { CLI_DOCS_URL, COMMAND_PATHS, helpText, renderCliDocs } from '../../scripts/cli-docs.ts';

test('docs/cli.md is generated from the current --help texts', async () => {
  const current = await readFile(CLI_DOCS_URL, 'utf8');
  assert.equal(current, await renderCliDocs(), 'run: node scripts/cli-docs.ts --write');
});

test('the reference covers every command in the command table, each with a usage line', async () => {
  for (const command of COMMANDS) {
    assert.ok(
      COMMAND_PATHS.some((path) => path[0] === command.name),
      `${command.name} is missing from scripts/cli-docs.ts`,
    );
  }
  for (const path of COMMAND_PATHS) {
    assert.match(
      await helpText(path),
      new RegExp(`^Usage: firn ${path.join(' ')}`),
      path.join(' '),
    );
  }
});
