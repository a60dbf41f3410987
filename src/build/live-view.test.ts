import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { applyEvent, eta, LiveView, liveState, renderLive } from './live-view.ts';
import type { BuilderSpec, JobSpec } from './scheduler.ts';

const builder = (name: string): BuilderSpec => ({
  name,
  systems: ['aarch64-linux'],
  maxJobs: 2,
  speedFactor: 1,
  features: [],
  mandatoryFeatures: [],
});
const job = (name: string, seconds: number, deps: string[] = []): JobSpec => ({
  drvPath: name,
  name,
  system: 'aarch64-linux',
  requiredFeatures: [],
  deps,
  expectedSeconds: seconds,
});

test('renderLive shows each builder, totals and an ETA from the remaining chain', () => {
  const state = liveState(
    [job('config', 1), job('kernel', 8, ['config']), job('pkg', 2)],
    [builder('opi01'), builder('opi02')],
  );
  assert.equal(eta(state, 0), 9);
  applyEvent(
    state,
    {
      type: 'start',
      drvPath: 'config',
      name: 'config',
      builder: 'opi01',
      expectedSeconds: 1,
      at: 0,
    },
    0,
  );
  applyEvent(
    state,
    { type: 'start', drvPath: 'pkg', name: 'pkg', builder: 'opi01', expectedSeconds: 2, at: 0 },
    0,
  );
  applyEvent(
    state,
    { type: 'built', drvPath: 'config', name: 'config', builder: 'opi01', seconds: 1 },
    1000,
  );
  assert.deepEqual(renderLive(state, 1500), [
    '[opi01] pkg 2/2 s',
    '[opi02] idle',
    '1/3 built · 1 running · 0 failed · ETA 8 s',
  ]);
  applyEvent(
    state,
    { type: 'failed', drvPath: 'kernel', name: 'kernel', builder: 'opi02', message: 'x', log: '' },
    2000,
  );
  applyEvent(
    state,
    { type: 'built', drvPath: 'pkg', name: 'pkg', builder: 'opi01', seconds: 2 },
    2000,
  );
  assert.equal(eta(state, 2000), 0);
  assert.match(
    renderLive(state, 2000).at(-1) ?? '',
    /^2\/3 built · 0 running · 1 failed · ETA 0 s$/,
  );
});

test('LiveView scrolls finished lines above the view and erases it on close', () => {
  const out = new PassThrough();
  let text = '';
  out.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  const view = new LiveView(out, liveState([job('a', 1)], [builder('b1')]));
  view.event(
    { type: 'start', drvPath: 'a', name: 'a', builder: 'b1', expectedSeconds: 1, at: 0 },
    'ignored\n',
  );
  view.event(
    { type: 'built', drvPath: 'a', name: 'a', builder: 'b1', seconds: 1 },
    '[b1] built a in 1 s\n',
  );
  view.close();
  assert.doesNotMatch(text, /ignored/);
  assert.ok(text.includes('\x1b[2F\x1b[J[b1] built a in 1 s\n[b1] idle\n1/1 built'), text);
  assert.ok(text.endsWith('\x1b[2F\x1b[J'));
});
