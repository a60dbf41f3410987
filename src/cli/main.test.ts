import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { main } from './main.ts';

async function runMain(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const code = await main(argv, { stdin: new PassThrough(), stdout, stderr, env });
  return { code, stdout: out, stderr: err };
}

test('--version prints the package version', async () => {
  const result = await runMain(['--version']);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /^firn \d+\.\d+\.\d+\n$/);
});

test('--help lists every command', async () => {
  const result = await runMain(['--help']);
  assert.equal(result.code, 0);
  for (const name of ['serve', 'cache', 'nar', 'hash', 'key', 'narinfo', 'drv'])
    assert.match(result.stdout, new RegExp(`^  ${name} `, 'm'));
});

test('no command prints help to stderr and exits 2', async () => {
  const result = await runMain([]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /Usage: firn/);
});

test('an unknown command is a usage error with a code and a hint, no stack', async () => {
  const result = await runMain(['frobnicate']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /unknown command 'frobnicate' \[FIRN_E_UNKNOWN_COMMAND\]/);
  assert.match(result.stderr, /^hint: /m);
  assert.doesNotMatch(result.stderr, /\n\s+at /);
});

test('an unknown global option is refused', async () => {
  const result = await runMain(['--frob']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /FIRN_E_USAGE/);
});

test('every command answers --help with its usage', async () => {
  for (const name of ['serve', 'cache', 'nar', 'hash', 'key', 'narinfo', 'drv']) {
    const result = await runMain([name, '--help']);
    assert.equal(result.code, 0, `${name} --help: ${result.stderr}`);
    assert.match(result.stdout, /Usage: firn /, name);
  }
});

test('a bad flag on a command is a usage error naming the flag; --debug adds the stack', async () => {
  const plain = await runMain(['cache', 'gc', '--bogus']);
  assert.equal(plain.code, 2);
  assert.match(plain.stderr, /bogus.*\[FIRN_E_USAGE\]/);
  assert.doesNotMatch(plain.stderr, /\n\s+at /);
  const debug = await runMain(['--debug', 'cache', 'gc', '--bogus']);
  assert.equal(debug.code, 2);
  assert.match(debug.stderr, /\n\s+at /);
});
