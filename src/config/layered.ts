/**
 * The one way firn reads settings: a TOML file (its own `[section]` table, or a file with no
 * tables at all), then FIRN_* environment variables, then flags, each layer overriding the last,
 * validated by one zod schema. `firn serve` and `firn push|drain|hook` share it.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { firnError, fromFsError } from '../errors.ts';

export interface LayerSources {
  readonly file?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly flags: Readonly<Record<string, string | boolean | readonly string[] | undefined>>;
}

export interface LayerSpec<S extends z.ZodType> {
  readonly schema: S;
  /** The TOML table that holds these settings, e.g. `serve`. */
  readonly section: string;
  /** Environment variable → settings key. */
  readonly envKeys: Readonly<Record<string, string>>;
  /** Turns a string from the environment or a flag into what the schema expects. */
  readonly coerce: (key: string, value: string) => unknown;
}

export async function loadLayered<S extends z.ZodType>(
  spec: LayerSpec<S>,
  sources: LayerSources,
): Promise<z.output<S>> {
  const fromFile =
    sources.file === undefined ? {} : await readConfigSection(sources.file, spec.section);
  const fromEnv: Record<string, unknown> = {};
  for (const [variable, key] of Object.entries(spec.envKeys)) {
    const value = sources.env[variable];
    if (value !== undefined && value !== '') fromEnv[key] = spec.coerce(key, value);
  }
  const fromFlags: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(sources.flags)) {
    if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    fromFlags[key] = typeof value === 'string' ? spec.coerce(key, value) : value;
  }
  const parsed = spec.schema.safeParse({ ...fromFile, ...fromEnv, ...fromFlags });
  if (!parsed.success) {
    throw firnError(
      'FIRN_E_CONFIG_INVALID',
      `invalid ${spec.section} configuration:\n${z.prettifyError(parsed.error)}`,
      {
        hint: `sources: ${sources.file ?? 'no config file'}, FIRN_* environment variables, command-line flags`,
      },
    );
  }
  return parsed.data;
}

/** The `[section]` table of a TOML file, or the whole file when it has no tables at all. */
export async function readConfigSection(
  file: string,
  section: string,
): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw fromFsError(error, file, 'read config file');
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = parseToml(text);
  } catch (error) {
    throw firnError('FIRN_E_CONFIG_INVALID', `${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const table = parsed[section];
  if (isTable(table)) return table;
  // Other tables ([serve], [push], [hosts.…]) belong to other commands.
  return Object.values(parsed).some(isTable) ? {} : parsed;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
  );
}
