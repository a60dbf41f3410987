/**
 * NarDigest's three ways of checking an upload (inline for uncompressed NARs, one-call
 * decompression for small bodies, a decompression stream otherwise) must report the same facts,
 * and refuse the same broken input.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { zstdCompressSync } from 'node:zlib';
import { FirnError } from '../errors.ts';
import { encodeStrings } from '../nix/nar-format.ts';
import type { Compression } from './compression.ts';
import { NarDigest, type NarFacts } from './nar-digest.ts';

function fileNar(contents: Uint8Array): Buffer {
  return Buffer.concat([
    encodeStrings('nix-archive-1', '(', 'type', 'regular'),
    encodeStrings('contents', contents, ')'),
  ]);
}

const sha256 = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest();

/** Feeds `file` in chunks of `chunk` bytes, as an HTTP body would arrive. */
async function measure(
  file: Buffer,
  compression: Compression,
  options: { sizeHint?: number; chunk?: number; maxBytes?: number } = {},
): Promise<NarFacts> {
  const digest = new NarDigest(
    compression,
    options.maxBytes ?? Number.MAX_SAFE_INTEGER,
    options.sizeHint,
  );
  const chunk = options.chunk ?? 64 * 1024;
  const pieces: Buffer[] = [];
  for (let at = 0; at < file.length; at += chunk) pieces.push(file.subarray(at, at + chunk));
  const passed: Buffer[] = [];
  for await (const piece of digest.through(Readable.from(pieces))) passed.push(piece);
  assert.deepEqual(Buffer.concat(passed), file, 'the bytes pass through unchanged');
  return digest.result();
}

function assertFacts(facts: NarFacts, file: Buffer, nar: Buffer): void {
  assert.deepEqual(facts.fileHash, sha256(file));
  assert.equal(facts.fileSize, file.length);
  assert.deepEqual(facts.narHash, sha256(nar));
  assert.equal(facts.narSize, nar.length);
}

describe('NarDigest', () => {
  const nar = fileNar(randomBytes(5000));
  const zst = zstdCompressSync(nar);

  test('an uncompressed NAR: its file hash is its NAR hash', async () => {
    assertFacts(await measure(nar, 'none', { sizeHint: nar.length, chunk: 7 }), nar, nar);
  });

  test('a small zstd body (declared size) and a streamed one give the same facts', async () => {
    assertFacts(await measure(zst, 'zstd', { sizeHint: zst.length, chunk: 100 }), zst, nar);
    assertFacts(await measure(zst, 'zstd'), zst, nar);
  });

  test('a small body with a large NAR inside falls back to streaming', async () => {
    const big = fileNar(Buffer.alloc(10 * 1024 * 1024));
    const file = zstdCompressSync(big);
    assert.ok(file.length < 256 * 1024, 'compresses well');
    assertFacts(await measure(file, 'zstd', { sizeHint: file.length }), file, big);
  });

  test('a body larger than it declared is still measured whole', async () => {
    const random = fileNar(randomBytes(1024 * 1024));
    const file = zstdCompressSync(random);
    assertFacts(await measure(file, 'zstd', { sizeHint: 1000 }), file, random);
  });

  for (const [name, compression, file] of [
    ['uncompressed', 'none', nar.subarray(0, nar.length - 8)],
    ['small zstd', 'zstd', zstdCompressSync(nar.subarray(0, nar.length - 8))],
  ] as const) {
    test(`a truncated NAR (${name}) is refused as not a NAR`, async () => {
      await assert.rejects(measure(file, compression, { sizeHint: file.length }), (error) => {
        assert.ok(FirnError.is(error));
        assert.match(error.code, /^FIRN_E_NAR_/);
        assert.match(error.message, /not a valid NAR/);
        return true;
      });
    });
  }

  test('a small body that is not zstd is refused as not decompressing', async () => {
    const garbage = randomBytes(3000);
    await assert.rejects(measure(garbage, 'zstd', { sizeHint: garbage.length }), (error) => {
      assert.ok(FirnError.is(error));
      assert.equal(error.code, 'FIRN_E_UPLOAD_HASH_MISMATCH');
      assert.match(error.message, /does not decompress/);
      return true;
    });
  });

  test('a body over the limit is refused', async () => {
    await assert.rejects(measure(nar, 'none', { maxBytes: 100 }), (error) => {
      assert.ok(FirnError.is(error));
      assert.equal(error.code, 'FIRN_E_INPUT_TOO_LARGE');
      return true;
    });
  });
});
