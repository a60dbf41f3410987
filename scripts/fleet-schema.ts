/**
 * Renders docs/firn.schema.json, the JSON Schema editors use to check firn.toml (e.g. Taplo /
 * Even Better TOML: `#:schema ./docs/firn.schema.json` on the file's first line), from the zod
 * schema the loader itself uses, so the two cannot drift. `node scripts/fleet-schema.ts --write`
 * rewrites the file; test/fleet/schema.test.ts fails when it is stale.
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { fleetJsonSchema } from '../src/fleet/inventory-schema.ts';

export const FLEET_SCHEMA_URL = new URL('../docs/firn.schema.json', import.meta.url);

export async function renderFleetSchema(): Promise<string> {
  const options = (await resolveConfig(fileURLToPath(FLEET_SCHEMA_URL))) ?? {};
  return format(JSON.stringify(fleetJsonSchema()), { ...options, parser: 'json' });
}

if (process.argv.includes('--write')) {
  await writeFile(FLEET_SCHEMA_URL, await renderFleetSchema());
}
