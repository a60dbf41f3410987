import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { test } from 'node:test';
import { Batcher } from './batcher.ts';

interface Sent {
  readonly entries: readonly string[];
  answer(results?: readonly string[]): void;
  fail(error: Error): void;
}

/** A batcher over strings whose sends wait until the test answers them. */
function harness(limits: { maxEntries?: number; maxBytes?: number; maxInFlight?: number } = {}) {
  const sent: Sent[] = [];
  const batcher = new Batcher<string, string>({
    send: (entries) =>
      new Promise((resolve, reject) => {
        sent.push({
          entries,
          answer: (results) => {
            resolve(results ?? entries.map((entry) => `ok ${entry}`));
          },
          fail: reject,
        });
      }),
    sizeOf: (entry) => entry.length,
    keyOf: (entry) => entry,
    maxEntries: limits.maxEntries ?? 100,
    maxBytes: limits.maxBytes ?? 1000,
    maxInFlight: limits.maxInFlight ?? 2,
  });
  return { batcher, sent };
}

test('entries added in one turn go out as one batch, answered in order', async () => {
  const { batcher, sent } = harness();
  const results = ['a', 'b', 'c'].map((entry) => batcher.add(entry));
  assert.equal(batcher.isQueued('b'), true);
  assert.equal(sent.length, 0, 'nothing is sent before the turn ends');
  await nextTurn();
  assert.deepEqual(
    sent.map((batch) => batch.entries),
    [['a', 'b', 'c']],
  );
  assert.equal(batcher.isQueued('b'), false);
  sent[0]?.answer();
  assert.deepEqual(await Promise.all(results), ['ok a', 'ok b', 'ok c']);
});

test('a full batch goes at once; an entry that does not fit starts the next', async () => {
  const { batcher, sent } = harness({ maxEntries: 2, maxBytes: 10 });
  void batcher.add('aaaa');
  assert.equal(batcher.hasRoom('bbbb'), true);
  void batcher.add('bbbb');
  assert.equal(batcher.hasRoom('c'), false, 'two entries is full');
  void batcher.add('c');
  assert.deepEqual(
    sent.map((batch) => batch.entries),
    [['aaaa', 'bbbb']],
  );
  assert.equal(batcher.hasRoom('0123456789'), false, 'bytes count too');
  assert.equal(batcher.isQueued('c'), true);
  await nextTurn();
  assert.deepEqual(
    sent.map((batch) => batch.entries),
    [['aaaa', 'bbbb'], ['c']],
  );
  for (const batch of sent) batch.answer();
});

test('while batches are in flight, new entries pile up and go together when one returns', async () => {
  const { batcher, sent } = harness({ maxInFlight: 1 });
  const first = batcher.add('a');
  await nextTurn();
  const later = ['b', 'c', 'd'].map((entry) => batcher.add(entry));
  await nextTurn();
  await nextTurn();
  assert.equal(sent.length, 1, 'the in-flight limit holds the next batch back');
  sent[0]?.answer();
  assert.equal(await first, 'ok a');
  await nextTurn();
  await nextTurn();
  assert.deepEqual(
    sent.map((batch) => batch.entries),
    [['a'], ['b', 'c', 'd']],
  );
  sent[1]?.answer();
  assert.deepEqual(await Promise.all(later), ['ok b', 'ok c', 'ok d']);
});

test('a failed send rejects every entry of that batch, and only those', async () => {
  const { batcher, sent } = harness({ maxEntries: 2 });
  const results = ['a', 'b', 'c'].map((entry) =>
    batcher.add(entry).then(
      (value) => value,
      (error: unknown) => `rejected: ${(error as Error).message}`,
    ),
  );
  await nextTurn();
  sent[0]?.fail(new Error('cache gone'));
  sent[1]?.answer();
  assert.deepEqual(await Promise.all(results), [
    'rejected: cache gone',
    'rejected: cache gone',
    'ok c',
  ]);
});

test('too few results reject the entries left without one', async () => {
  const { batcher, sent } = harness();
  const results = ['a', 'b'].map((entry) =>
    batcher.add(entry).catch((error: unknown) => `rejected: ${(error as Error).message}`),
  );
  await nextTurn();
  sent[0]?.answer(['only one']);
  assert.deepEqual(await Promise.all(results), [
    'only one',
    'rejected: the batch returned too few results',
  ]);
});
