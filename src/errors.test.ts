import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERRORS, FirnError, firnError, fromFsError } from './errors.ts';

const docs = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
/** Codes documented as table rows: `| FIRN_E_X | …`. */
const documented = new Set(
  [...docs.matchAll(/^\| `(FIRN_E_[A-Z0-9_]+)` \|/gm)].map((match) => match[1]),
);

test('every error code in the catalogue is documented in docs/errors.md', () => {
  const missing = Object.keys(ERRORS).filter((code) => !documented.has(code));
  assert.deepEqual(missing, [], `add rows for these codes to docs/errors.md`);
});

test('docs/errors.md documents no code the catalogue lacks', () => {
  const unknown = [...documented].filter((code) => code !== undefined && !(code in ERRORS));
  assert.deepEqual(unknown, []);
});

test('documented exit codes and HTTP statuses match the catalogue', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    const row = new RegExp(`^\\| \`${code}\` \\| ${spec.exit} \\| ${spec.status} \\|`, 'm');
    assert.match(docs, row, `${code} row must say exit ${spec.exit}, HTTP ${spec.status}`);
  }
});

test('codes have the FIRN_E_ prefix and exit codes are never 0', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    assert.match(code, /^FIRN_E_[A-Z0-9_]+$/);
    assert.notEqual(spec.exit, 0);
    assert.ok(spec.status >= 400 && spec.status < 600);
  }
});

test('FirnError carries code, hint, exit code and status; FirnError.is sees through copies', () => {
  const error = firnError('FIRN_E_NAR_TRUNCATED', 'NAR ended at byte 12', {
    hint: 'download it again',
  });
  assert.equal(error.code, 'FIRN_E_NAR_TRUNCATED');
  assert.equal(error.hint, 'download it again');
  assert.equal(error.exitCode, ERRORS.FIRN_E_NAR_TRUNCATED.exit);
  assert.equal(error.httpStatus, 400);
  assert.ok(FirnError.is(error));
  assert.ok(!FirnError.is(new Error('plain')));
  assert.ok(!FirnError.is(null));
});

test('fromFsError maps ENOENT and EEXIST and keeps the path in the message', () => {
  const enoent = Object.assign(new Error('x'), { code: 'ENOENT' });
  assert.equal(fromFsError(enoent, '/a/b', 'read').code, 'FIRN_E_FILE_NOT_FOUND');
  assert.match(fromFsError(enoent, '/a/b', 'read').message, /\/a\/b/);
  const eexist = Object.assign(new Error('x'), { code: 'EEXIST' });
  assert.equal(fromFsError(eexist, '/c', 'create').code, 'FIRN_E_FILE_EXISTS');
  assert.equal(fromFsError(new Error('disk on fire'), '/d', 'write').code, 'FIRN_E_IO');
});
