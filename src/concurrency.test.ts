import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sleep } from './concurrency.ts';

test('sleep ends early with the abort reason', async () => {
  const controller = new AbortController();
  const started = performance.now();
  const slept = sleep(10_000, controller.signal);
  controller.abort(new Error('stop'));
  await assert.rejects(slept, /stop/);
  assert.ok(performance.now() - started < 1000);
  await assert.rejects(sleep(1, controller.signal), /stop/);
});
