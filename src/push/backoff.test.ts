import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from './backoff.ts';

const policy = { baseMs: 100, maxMs: 1000 };

test('the ceiling doubles each retry up to the maximum; waits come from its upper half', () => {
  assert.equal(
    backoffDelay(policy, 0, () => 0),
    50,
  );
  assert.equal(
    backoffDelay(policy, 0, () => 1),
    100,
  );
  assert.equal(
    backoffDelay(policy, 1, () => 1),
    200,
  );
  assert.equal(
    backoffDelay(policy, 3, () => 1),
    800,
  );
  assert.equal(
    backoffDelay(policy, 4, () => 1),
    1000,
  );
  assert.equal(
    backoffDelay(policy, 4, () => 0),
    500,
  );
  assert.equal(
    backoffDelay(policy, 1000, () => 0.5),
    750,
  );
});

test('jitter spreads the waits of many clients', () => {
  const waits = new Set(Array.from({ length: 50 }, () => backoffDelay(policy, 3)));
  assert.ok(waits.size > 10, `only ${waits.size} distinct waits`);
  for (const wait of waits) assert.ok(wait >= 400 && wait <= 800);
});
