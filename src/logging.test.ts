import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { createLogDestination } from './logging.ts';

function tempFile(t: { after: (fn: () => void) => void }): { file: string; fd: number } {
  const dir = mkdtempSync(join(tmpdir(), 'firn-logging-'));
  const file = join(dir, 'log');
  const fd = openSync(file, 'a');
  t.after(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });
  return { file, fd };
}

test('lines come out whole and in order, batched, once flushed', async (t) => {
  const { file, fd } = tempFile(t);
  const destination = createLogDestination(fd);
  const lines = Array.from(
    { length: 5000 },
    (_, i) => `{"n":${i},"text":"é ✓ ${'x'.repeat(i % 50)}"}\n`,
  );
  for (const [i, line] of lines.entries()) {
    assert.equal(destination.write(line), true);
    // Let some batches go out while more lines arrive.
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise<void>((resolve, reject) => {
    destination.flush((error) => {
      if (error === undefined) resolve();
      else reject(error);
    });
  });
  assert.equal(readFileSync(file, 'utf8'), lines.join(''));
  assert.equal(destination.dropped, 0);
});

test('beyond maxBytes lines are dropped, not queued; flushSync writes the rest', (t) => {
  const { file, fd } = tempFile(t);
  const destination = createLogDestination(fd, { maxBytes: 100 });
  const line = `${'a'.repeat(39)}\n`;
  assert.equal(destination.write(line), true);
  assert.equal(destination.write(line), true);
  assert.equal(destination.write(line), false);
  assert.equal(destination.dropped, 1);
  destination.flushSync();
  assert.equal(readFileSync(file, 'utf8'), line + line);
  // The queue is empty again: new lines fit.
  assert.equal(destination.write(line), true);
  destination.flushSync();
  assert.equal(readFileSync(file, 'utf8'), line + line + line);
});

test('pino writes through it, and flush() with a callback waits for the write', async (t) => {
  const { file, fd } = tempFile(t);
  const logger = pino({ level: 'info', base: null, timestamp: false }, createLogDestination(fd));
  logger.info({ reqId: 'req-1', status: 200 }, 'GET / 200');
  logger.debug('not written');
  await new Promise<void>((resolve) => {
    logger.flush(() => {
      resolve();
    });
  });
  assert.equal(
    readFileSync(file, 'utf8'),
    '{"level":30,"reqId":"req-1","status":200,"msg":"GET / 200"}\n',
  );
});
