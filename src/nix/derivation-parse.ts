/**
 * parseDerivation, the entry point for reading `.drv` files: its options, the size limit and
 * UTF-8 decoding (with the offset of the first bad byte). They guard the input before the
 * ATerm reader (`derivation-reader.ts`) sees it, and are separate because they concern bytes,
 * not the ATerm structure.
 */
import type { FirnError } from '../errors.ts';
import { DrvReader, byteLength, drvError } from './derivation-reader.ts';
import type { Derivation } from './derivation-types.ts';
import { DEFAULT_STORE_DIR } from './store-path.ts';

export interface ParseDerivationOptions {
  readonly storeDir?: string;
  /** Largest input accepted, in bytes. */
  readonly maxBytes?: number;
}

/**
 * The biggest real derivations (NixOS system closures, large buildEnvs) are a few MiB; 64 MiB
 * leaves ample room while keeping a hostile file from exhausting memory.
 */
export const DEFAULT_MAX_DRV_BYTES = 64 * 1024 * 1024;

/** Parses the text (or UTF-8 bytes) of a `.drv` file; throws FIRN_E_DRV_INVALID with an offset. */
export function parseDerivation(
  input: string | Uint8Array,
  options: ParseDerivationOptions = {},
): Derivation {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_DRV_BYTES;
  const text = typeof input === 'string' ? input : decodeUtf8(input, maxBytes);
  if (text.length > maxBytes || (text.length * 3 > maxBytes && byteLength(text) > maxBytes)) {
    throw tooLarge(maxBytes);
  }
  return new DrvReader(text, options.storeDir ?? DEFAULT_STORE_DIR).derivation();
}

function decodeUtf8(bytes: Uint8Array, maxBytes: number): string {
  if (bytes.length > maxBytes) {
    throw tooLarge(maxBytes);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const offset = firstInvalidUtf8(bytes);
    throw drvError('the derivation is not valid UTF-8', offset);
  }
}

/** Offset of the first byte that does not begin a well-formed UTF-8 sequence. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] ?? 0;
    if (lead < 0x80) {
      i++;
      continue;
    }
    const extra = lead >= 0xc2 && lead <= 0xdf ? 1 : lead >= 0xe0 && lead <= 0xef ? 2 : 3;
    if (lead < 0xc2 || lead > 0xf4) return i;
    let codePoint = lead & (0x3f >> extra);
    for (let k = 1; k <= extra; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return i;
      codePoint = (codePoint << 6) | (next & 0x3f);
    }
    const min = extra === 1 ? 0x80 : extra === 2 ? 0x800 : 0x10000;
    if (codePoint < min || codePoint > 0x10ffff || (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
      return i;
    }
    i += extra + 1;
  }
  return bytes.length;
}

function tooLarge(maxBytes: number): FirnError {
  return drvError(`the derivation is larger than the limit of ${maxBytes} bytes`, maxBytes, {
    limit: maxBytes,
  });
}
