import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { FLEET_SCHEMA_URL, renderFleetSchema } from '../../scripts/fleet-schema.ts';

test('docs/firn.schema.json is generated from the inventory schema', async () => {
  const current = await readFile(FLEET_SCHEMA_URL, 'utf8');
  assert.equal(current, await renderFleetSchema(), 'run: node scripts/fleet-schema.ts --write');
});
