import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_DURATION_S, durationKey, MemoryDurations, SqliteDurations } from './durations.ts';

test('durationKey drops a trailing version', () => {
  assert.equal(durationKey('linux-6.1.55'), 'linux');
  assert.equal(durationKey('hello-2.12'), 'hello');
  assert.equal(durationKey('python3.11-numpy-1.26.0'), 'python3.11-numpy');
  assert.equal(durationKey('nixos-system-opi01-23.11pre-git'), 'nixos-system-opi01');
  assert.equal(durationKey('config'), 'config');
});

test('SqliteDurations learns per name and system and survives a reopen', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'firn-durations-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'sub', 'durations.sqlite');
  const first = new SqliteDurations(file);
  assert.equal(first.estimate('linux-6.1', 'aarch64-linux'), DEFAULT_DURATION_S);
  first.record('linux-6.1', 'aarch64-linux', 100);
  first.record('linux-6.2', 'aarch64-linux', 50);
  first.record('linux-6.1', 'x86_64-linux', 10);
  first.record('bogus', 'x86_64-linux', Number.NaN);
  first.close();
  const second = new SqliteDurations(file, { defaultSeconds: 3 });
  assert.equal(second.estimate('linux-6.3', 'aarch64-linux'), 75);
  assert.equal(second.estimate('linux-6.3', 'x86_64-linux'), 10);
  assert.equal(second.estimate('bogus', 'x86_64-linux'), 3);
  second.close();
});

test('MemoryDurations uses known values and the default', () => {
  const model = new MemoryDurations({ kernel: 8 }, 2);
  assert.equal(model.estimate('kernel-6.1'), 8);
  assert.equal(model.estimate('other'), 2);
  model.record('other', 'x', 4);
  assert.equal(model.estimate('other'), 4);
});
