/**
 * The in-memory form of a store derivation (`.drv` file). It is shared by the parser, the
 * writer and the JSON form, so it lives on its own and none of them has to import another.
 */

export interface DerivationOutput {
  /** The output's store path; '' for floating content-addressed, deferred and impure outputs. */
  readonly path: string;
  /** `sha256` (flat) or `r:sha256` (recursive) for content-addressed outputs, else ''. */
  readonly hashAlgo: string;
  /** Base-16 digest of a fixed output, `impure` for an impure one, else ''. */
  readonly hash: string;
}

export interface Derivation {
  readonly outputs: ReadonlyMap<string, DerivationOutput>;
  /** drv path -> names of the outputs used */
  readonly inputDrvs: ReadonlyMap<string, readonly string[]>;
  readonly inputSrcs: readonly string[];
  readonly system: string;
  readonly builder: string;
  readonly args: readonly string[];
  readonly env: ReadonlyMap<string, string>;
}
