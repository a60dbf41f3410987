/**
 * "Did you mean …?" for misspelt keys, roles and host names: the closest candidate by edit
 * distance, after first trying the spellings people reach for out of habit (`max_jobs`,
 * `maxJobs`, `Max-Jobs` for `max-jobs`).
 */

/** The candidate `word` most likely meant, or undefined when none is close enough. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const list = [...candidates];
  const normalized = kebab(word);
  const exact = list.find((candidate) => kebab(candidate) === normalized);
  if (exact !== undefined) return exact;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of list) {
    const distance = editDistance(normalized, kebab(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  // A short word is only "close" to a candidate when few of its letters changed.
  const limit = Math.max(1, Math.min(3, Math.floor(normalized.length / 3)));
  return bestDistance <= limit ? best : undefined;
}

/** `maxJobs`, `max_jobs`, `MAX-JOBS` → `max-jobs`. */
function kebab(text: string): string {
  return text
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/[_\s]+/g, '-')
    .toLowerCase();
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  const at = (i: number, j: number): number => d[i * cols + j] ?? 0;
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, at(i - 2, j - 2) + 1);
      }
      d[i * cols + j] = value;
    }
  }
  return at(a.length, b.length);
}

/** `; did you mean "x"?` to end a message with, or the empty string. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const match = closest(word, candidates);
  return match === undefined ? '' : `; did you mean "${match}"?`;
}
