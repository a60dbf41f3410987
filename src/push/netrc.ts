/**
 * The netrc file Nix (through curl) reads for credentials: `machine HOST login USER password
 * TOKEN` entries, a `default` entry, `macdef` blocks and `#` comments. firn reads the same file,
 * so a builder that can already `nix copy` to the cache can `firn push` with no more setup.
 */

export interface NetrcEntry {
  /** undefined for the `default` entry. */
  readonly machine: string | undefined;
  readonly login: string | undefined;
  readonly password: string | undefined;
}

/** Splits netrc text into tokens as curl does: whitespace-separated, `"…"` quoting, `#` comments. */
function tokenize(text: string): string[] {
  const tokens: string[] = [];
  let macro = false;
  for (const line of text.split('\n')) {
    // A macdef body runs until the first empty line; none of it is credentials.
    if (macro) {
      if (line.trim() === '') macro = false;
      continue;
    }
    const lineTokens = tokenizeLine(line);
    const macdef = lineTokens.indexOf('macdef');
    if (macdef >= 0) {
      tokens.push(...lineTokens.slice(0, macdef));
      macro = true;
      continue;
    }
    tokens.push(...lineTokens);
  }
  return tokens;
}

function tokenizeLine(line: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < line.length) {
    const char = line[i] ?? '';
    if (/\s/.test(char)) {
      i++;
    } else if (char === '#' && tokens.length === 0 && line.slice(0, i).trim() === '') {
      break; // a comment line
    } else if (char === '"') {
      let value = '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        value += line[i] ?? '';
        i++;
      }
      tokens.push(value);
      i++;
    } else {
      let end = i;
      while (end < line.length && !/\s/.test(line[end] ?? '')) end++;
      tokens.push(line.slice(i, end));
      i = end;
    }
  }
  return tokens;
}

export function parseNetrc(text: string): NetrcEntry[] {
  const entries: { machine: string | undefined; login?: string; password?: string }[] = [];
  const tokens = tokenize(text);
  let current: (typeof entries)[number] | undefined;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    const next = tokens[i + 1];
    if (token === 'machine' && next !== undefined) {
      current = { machine: next.toLowerCase() };
      entries.push(current);
      i++;
    } else if (token === 'default') {
      current = { machine: undefined };
      entries.push(current);
    } else if ((token === 'login' || token === 'password' || token === 'account') && next) {
      if (current !== undefined && token !== 'account') current[token] = next;
      i++;
    }
    // Anything else is not understood by curl either; skip it.
  }
  return entries.map((entry) => ({
    machine: entry.machine,
    login: entry.login,
    password: entry.password,
  }));
}

/**
 * The entry curl would use for `host`: the first `machine` entry naming it (case-insensitively,
 * without the port), else the `default` entry.
 */
export function netrcEntryFor(
  entries: readonly NetrcEntry[],
  host: string,
): NetrcEntry | undefined {
  const name = host.toLowerCase();
  return (
    entries.find((entry) => entry.machine === name) ??
    entries.find((entry) => entry.machine === undefined)
  );
}
