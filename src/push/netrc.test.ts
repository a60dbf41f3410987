import assert from 'node:assert/strict';
import { test } from 'node:test';
import { netrcEntryFor, parseNetrc } from './netrc.ts';

test('finds the machine entry for a host, case-insensitively, else default', () => {
  const entries = parseNetrc(
    [
      '# the cache',
      'machine Cache.example login firn password firn_abc',
      'machine other.example login bob password other',
      'default login anon password guest',
    ].join('\n'),
  );
  assert.deepEqual(netrcEntryFor(entries, 'cache.example'), {
    machine: 'cache.example',
    login: 'firn',
    password: 'firn_abc',
  });
  assert.equal(netrcEntryFor(entries, 'OTHER.example')?.password, 'other');
  assert.equal(netrcEntryFor(entries, 'unknown.example')?.password, 'guest');
});

test('entries may span lines or share one; the first match wins', () => {
  const entries = parseNetrc(
    'machine a\n  login x\n  password one machine a login y password two\nmachine b password three',
  );
  assert.equal(netrcEntryFor(entries, 'a')?.password, 'one');
  assert.equal(netrcEntryFor(entries, 'b')?.password, 'three');
  assert.equal(netrcEntryFor(entries, 'b')?.login, undefined);
  assert.equal(netrcEntryFor(entries, 'c'), undefined);
});

test('quoted values, comments and macdef bodies', () => {
  const entries = parseNetrc(
    [
      'machine q login "a user" password "p\\"w d"',
      '# machine commented password no',
      'macdef init',
      'machine inside password fake',
      '',
      'machine after password real',
    ].join('\n'),
  );
  assert.equal(netrcEntryFor(entries, 'q')?.password, 'p"w d');
  assert.equal(netrcEntryFor(entries, 'q')?.login, 'a user');
  assert.equal(netrcEntryFor(entries, 'commented'), undefined);
  assert.equal(netrcEntryFor(entries, 'inside'), undefined);
  assert.equal(netrcEntryFor(entries, 'after')?.password, 'real');
});

test('empty and truncated files give nothing, not an error', () => {
  assert.deepEqual(parseNetrc(''), []);
  assert.deepEqual(parseNetrc('machine'), []);
  assert.equal(netrcEntryFor(parseNetrc('machine h login u password'), 'h')?.password, undefined);
});
