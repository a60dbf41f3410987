/**
 * Exponential backoff with jitter, for retrying requests to a cache that is restarting or
 * overloaded: the ceiling doubles each attempt, and each wait is drawn from its upper half so
 * that many clients failing together do not come back together.
 */

export interface BackoffPolicy {
  /** Retries after the first attempt; 0 means one attempt only. */
  readonly retries: number;
  /** Ceiling of the first wait, in milliseconds. */
  readonly baseMs: number;
  /** Largest wait, in milliseconds. */
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { retries: 5, baseMs: 250, maxMs: 15_000 };

/** The wait before retry number `retry` (0-based), in milliseconds. */
export function backoffDelay(
  policy: Pick<BackoffPolicy, 'baseMs' | 'maxMs'>,
  retry: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(retry, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
