/**
 * What push and drain report as they go. Reporters turn these into a progress bar, plain lines
 * or NDJSON (`--json`, one event per line); the field names are part of that output.
 */

export type PushEvent =
  | {
      readonly event: 'plan';
      /** Paths asked for. */
      readonly roots: number;
      /** Paths in their closure. */
      readonly closure: number;
      /** Already in the cache. */
      readonly present: number;
      /** Skipped because an upstream cache has them. */
      readonly upstream: number;
      /** To upload now. */
      readonly upload: number;
      /** NAR bytes to upload. */
      readonly narBytes: number;
    }
  | {
      /**
       * A NAR sent by itself is in the cache (its narinfo may still wait for its references).
       * Paths sent in a batch have no such event: their NAR and narinfo arrive together.
       */
      readonly event: 'nar';
      readonly path: string;
      readonly narSize: number;
      readonly fileSize: number;
      /** false when the cache already held it. */
      readonly sent: boolean;
    }
  | {
      readonly event: 'uploaded';
      readonly path: string;
      readonly narSize: number;
      /** Compressed size. */
      readonly fileSize: number;
      /** false when the cache already held the NAR and only the narinfo was sent. */
      readonly narSent: boolean;
      readonly ms: number;
    }
  | {
      readonly event: 'retry';
      readonly request: string;
      readonly attempt: number;
      readonly retries: number;
      readonly delayMs: number;
      readonly reason: string;
    }
  | {
      readonly event: 'failed';
      readonly path: string;
      readonly code: string;
      readonly message: string;
    }
  | {
      readonly event: 'done';
      readonly uploaded: number;
      readonly failed: number;
      readonly narBytes: number;
      readonly fileBytes: number;
      readonly seconds: number;
    }
  | { readonly event: 'log'; readonly drv: string; readonly bytes: number }
  | {
      readonly event: 'drain';
      /** Spool entries taken in this round. */
      readonly entries: number;
      /** Distinct output paths they name. */
      readonly paths: number;
      /** Entries recovered from a drain that died. */
      readonly recovered: number;
    }
  | {
      readonly event: 'entry';
      readonly entry: string;
      readonly status: 'done' | 'retry-later' | 'failed';
      readonly reason?: string;
    }
  | { readonly event: 'warning'; readonly message: string };

export type Emit = (event: PushEvent) => void;
