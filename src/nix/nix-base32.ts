/**
 * nix-base32: Nix's own base-32 encoding of hashes. It uses an alphabet without e, o, u and t
 * and writes the bits of the input starting from the last byte, so it is not RFC 4648 base32.
 */
import { firnError } from '../errors.ts';

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const DIGIT_OF = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT_OF[NIX32_ALPHABET.charCodeAt(i)] = i;

/** Length of the nix-base32 form of `byteLength` bytes. */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

export function encodeNix32(bytes: Uint8Array): string {
  const length = nix32Length(bytes.length);
  let out = '';
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    const low = (bytes[i] ?? 0) >> j;
    const high = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0;
    out += NIX32_ALPHABET.charAt((low | high) & 0x1f);
  }
  return out;
}

/** Decodes `text` into exactly `byteLength` bytes; throws FIRN_E_BASE32_INVALID otherwise. */
export function decodeNix32(text: string, byteLength: number): Buffer {
  if (text.length !== nix32Length(byteLength)) {
    throw firnError(
      'FIRN_E_BASE32_INVALID',
      `nix-base32 string has length ${text.length}, expected ${nix32Length(byteLength)} for ${byteLength} bytes`,
    );
  }
  const out = Buffer.alloc(byteLength);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? (DIGIT_OF[code] ?? -1) : -1;
    if (digit < 0) {
      throw firnError(
        'FIRN_E_BASE32_INVALID',
        `invalid character ${JSON.stringify(text[text.length - n - 1])} in nix-base32 string`,
        { hint: `nix-base32 uses only the characters ${NIX32_ALPHABET}` },
      );
    }
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    out[i] = (out[i] ?? 0) | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < byteLength) {
      out[i + 1] = (out[i + 1] ?? 0) | carry;
    } else if (carry !== 0) {
      throw firnError(
        'FIRN_E_BASE32_INVALID',
        `nix-base32 string ${text} has bits beyond its length`,
      );
    }
  }
  return out;
}

export function isNix32(text: string): boolean {
  for (let k = 0; k < text.length; k++) {
    const code = text.charCodeAt(k);
    if (code >= 128 || DIGIT_OF[code] === -1) return false;
  }
  return true;
}
