/**
 * Store derivations (`.drv` files): the ATerm text Nix writes,
 * `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`, read, written
 * and shown as JSON exactly as Nix 2.8 does.
 *
 * This module is the one path importers use; it re-exports the pieces, which live beside it:
 * the data model (`derivation-types.ts`), parsing (`derivation-parse.ts` for limits and UTF-8,
 * `derivation-reader.ts` for the ATerm itself), writing (`derivation-writer.ts`), the JSON form
 * of `nix show-derivation` (`derivation-json.ts`) and Nix's byte order (`derivation-order.ts`).
 */
export type { Derivation, DerivationOutput } from './derivation-types.ts';
export {
  DEFAULT_MAX_DRV_BYTES,
  parseDerivation,
  type ParseDerivationOptions,
} from './derivation-parse.ts';
export { compareBytes } from './derivation-order.ts';
export { serializeDerivation } from './derivation-writer.ts';
export { derivationToJson, formatShowDerivation, nixJsonString } from './derivation-json.ts';
