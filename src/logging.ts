/**
 * Where `firn serve` writes its JSON log lines: batched, asynchronous and bounded.
 *
 * pino's own asynchronous destination (sonic-boom) appends each line to a string of up to 16 KiB
 * and measures that string's UTF-8 length on every write, which flattens it again and again: at
 * 30,000 access lines a second that was a quarter of the server's CPU and hundreds of MB of
 * garbage (peak RSS 250 MB). Here a line is pushed onto an array; once per event-loop turn the
 * lines are joined and written with one asynchronous write, so the server never waits for its
 * log. When the log cannot keep up, lines beyond `maxBytes` are dropped, not buffered forever.
 */
import { write, writeSync } from 'node:fs';

const RETRY_MS = 5;

export interface LogDestination {
  /** Takes one complete line; false when it was dropped. */
  write(line: string): boolean;
  /** Writes what is queued; `done` runs once it is out. */
  flush(done?: (error?: Error) => void): void;
  /** Writes what is queued synchronously (process exit). */
  flushSync(): void;
  /** Lines dropped so far because the output was too slow. */
  readonly dropped: number;
}

export function createLogDestination(
  fd: number,
  options: { readonly maxBytes?: number } = {},
): LogDestination {
  const maxBytes = options.maxBytes ?? 8 * 1024 * 1024;
  let queue: string[] = [];
  // UTF-16 length: cheap, and within a factor of 3 of the bytes, which is enough for a bound.
  let queued = 0;
  let scheduled = false;
  let writing = false;
  let dropped = 0;
  let waiting: ((error?: Error) => void)[] = [];

  const take = (): Buffer => {
    const text = queue.length === 1 ? (queue[0] ?? '') : queue.join('');
    queue = [];
    queued = 0;
    return Buffer.from(text, 'utf8');
  };

  const settle = (error?: Error): void => {
    if (queue.length > 0 && error === undefined) return;
    const callbacks = waiting;
    waiting = [];
    for (const callback of callbacks) callback(error);
  };

  const writeOut = (buffer: Buffer, offset: number): void => {
    write(fd, buffer, offset, buffer.length - offset, null, (error, written) => {
      if (error?.code === 'EAGAIN') {
        // A non-blocking pipe (stdout once node has touched it) that is full: try again soon.
        setTimeout(() => {
          writeOut(buffer, offset);
        }, RETRY_MS);
        return;
      }
      if (error !== null) {
        // Nowhere to report a log failure but the log: drop the batch and carry on.
        writing = false;
        settle(error);
        return;
      }
      if (offset + written < buffer.length) {
        writeOut(buffer, offset + written);
        return;
      }
      writing = false;
      if (queue.length > 0) start();
      else settle();
    });
  };

  const start = (): void => {
    scheduled = false;
    if (writing || queue.length === 0) return;
    writing = true;
    writeOut(take(), 0);
  };

  const destination: LogDestination = {
    write(line) {
      if (queued + line.length > maxBytes) {
        dropped++;
        return false;
      }
      queue.push(line);
      queued += line.length;
      if (!scheduled && !writing) {
        scheduled = true;
        setImmediate(start);
      }
      return true;
    },
    flush(done) {
      if (done !== undefined) {
        if (!writing && queue.length === 0) {
          done();
          return;
        }
        waiting.push(done);
      }
      if (!writing) start();
    },
    flushSync() {
      if (queue.length === 0) return;
      const buffer = take();
      let offset = 0;
      let attempts = 0;
      while (offset < buffer.length) {
        try {
          offset += writeSync(fd, buffer, offset);
        } catch (error) {
          // At exit a full non-blocking pipe gets a few more chances, then the rest is lost.
          if ((error as NodeJS.ErrnoException).code !== 'EAGAIN' || ++attempts > 1000) return;
        }
      }
    },
    get dropped() {
      return dropped;
    },
  };
  // process.exit() leaves no turn for the asynchronous write: what is queued goes out now.
  process.once('exit', () => {
    destination.flushSync();
  });
  return destination;
}
