/**
 * Random damage to encoded bytes for fuzzing parsers (fast-check): flip, cut, insert, delete,
 * and overwrite a length field with a hostile value. Where a format keeps its lengths and how
 * wide they are differ, so each format supplies its own `writeLength`.
 */
import fc from 'fast-check';

export type ByteMutation =
  | { readonly kind: 'flip'; readonly at: number; readonly value: number }
  | { readonly kind: 'cut'; readonly at: number }
  | { readonly kind: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly at: number; readonly count: number }
  | { readonly kind: 'length'; readonly at: number; readonly value: bigint };

export interface MutationOptions {
  /** Truncations too (leave them out where a property of their own covers them). */
  readonly cut: boolean;
  /** Values written into length fields. */
  readonly lengths: fc.Arbitrary<bigint>;
}

export function byteMutation(options: MutationOptions): fc.Arbitrary<ByteMutation> {
  const kinds: fc.Arbitrary<ByteMutation>[] = [
    fc.record({
      kind: fc.constant('flip' as const),
      at: fc.nat(),
      value: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
    fc.record({
      kind: fc.constant('delete' as const),
      at: fc.nat(),
      count: fc.integer({ min: 1, max: 16 }),
    }),
    fc.record({ kind: fc.constant('length' as const), at: fc.nat(), value: options.lengths }),
  ];
  if (options.cut) kinds.push(fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }));
  return fc.oneof(...kinds);
}

/** Writes `value` as a length field at (or near) `at` in `out`, if one fits there. */
export type LengthWriter = (out: Buffer, at: number, value: bigint) => void;

export function applyMutation(
  bytes: Buffer,
  mutation: ByteMutation,
  writeLength: LengthWriter,
): Buffer {
  const at = mutation.at % (bytes.length + 1);
  switch (mutation.kind) {
    case 'flip': {
      const out = Buffer.from(bytes);
      if (at < out.length) out[at] = mutation.value;
      return out;
    }
    case 'cut':
      return bytes.subarray(0, at);
    case 'insert':
      return Buffer.concat([bytes.subarray(0, at), mutation.bytes, bytes.subarray(at)]);
    case 'delete':
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + mutation.count)]);
    case 'length': {
      const out = Buffer.from(bytes);
      writeLength(out, at, mutation.value);
      return out;
    }
  }
}
