/**
 * The framing of Nix's serialise.hh, as `nix-store --serve` speaks it: integers are u64
 * little-endian, a string is its u64 length, the bytes and zero padding to a multiple of 8,
 * and a list or set is a u64 count followed by its strings.
 */
import type { Readable } from 'node:stream';

export function u64(value: number | bigint): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeBigUInt64LE(BigInt(value));
  return buffer;
}

export function str(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const padding = (8 - (bytes.length % 8)) % 8;
  return Buffer.concat([u64(bytes.length), bytes, Buffer.alloc(padding)]);
}

export function strings(values: Iterable<string>): Buffer {
  const list = [...values];
  return Buffer.concat([u64(list.length), ...list.map(str)]);
}

/** Strings Nix sends are bounded by what a store path or a log message needs. */
const MAX_STRING = 64 * 1024 * 1024;

/**
 * Reads frames from a stream. Each read waits until enough bytes arrived; once the owner calls
 * `fail` (the peer is gone), every waiting and later read that lacks bytes rejects with it.
 */
export class WireReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: (() => void) | undefined;
  private ended: Error | undefined;

  constructor(stream: Readable) {
    stream.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.wake();
    });
    stream.on('error', () => {
      // Reported by the owner through fail(), with the peer's own last words.
    });
  }

  fail(error: Error): void {
    this.ended ??= error;
    this.wake();
  }

  async read(length: number): Promise<Buffer> {
    while (this.buffered < length) {
      if (this.ended !== undefined) throw this.ended;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    const all =
      this.chunks.length === 1 ? (this.chunks[0] ?? Buffer.alloc(0)) : Buffer.concat(this.chunks);
    const out = all.subarray(0, length);
    const rest = all.subarray(length);
    this.chunks = rest.length === 0 ? [] : [rest];
    this.buffered = rest.length;
    return out;
  }

  async u64(): Promise<number> {
    const value = (await this.read(8)).readBigUInt64LE();
    if (value > BigInt(Number.MAX_SAFE_INTEGER))
      throw new Error(`serve protocol: integer ${value} too large`);
    return Number(value);
  }

  async bool(): Promise<boolean> {
    return (await this.u64()) !== 0;
  }

  async string(): Promise<string> {
    const length = await this.u64();
    if (length > MAX_STRING) throw new Error(`serve protocol: string of ${length} bytes`);
    const padded = length + ((8 - (length % 8)) % 8);
    return (await this.read(padded)).subarray(0, length).toString('utf8');
  }

  async strings(): Promise<string[]> {
    const count = await this.u64();
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(await this.string());
    return out;
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
}
