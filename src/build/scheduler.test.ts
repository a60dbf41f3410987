import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FirnError } from '../errors.ts';
import { FakeClock, FakeExecutor } from './fake-clock.ts';
import {
  canBuild,
  criticalPath,
  remainingPath,
  schedule,
  type BuilderSpec,
  type JobSpec,
  type SchedulerEvent,
} from './scheduler.ts';

function job(
  name: string,
  seconds: number,
  deps: string[] = [],
  extra: Partial<JobSpec> = {},
): JobSpec {
  return {
    drvPath: name,
    name,
    system: 'aarch64-linux',
    requiredFeatures: [],
    deps,
    expectedSeconds: seconds,
    ...extra,
  };
}

function builder(name: string, extra: Partial<BuilderSpec> = {}): BuilderSpec {
  return {
    name,
    systems: ['x86_64-linux', 'aarch64-linux'],
    maxJobs: 2,
    speedFactor: 1,
    features: [],
    mandatoryFeatures: [],
    ...extra,
  };
}

/** The board graph: config → kernel → modules beside twelve packages. */
function boardGraph(): JobSpec[] {
  const jobs = [job('config', 1), job('kernel', 8, ['config']), job('modules', 1, ['kernel'])];
  for (let i = 0; i < 12; i++) jobs.push(job(`pkg${String(i).padStart(2, '0')}`, 2));
  return jobs;
}

async function simulate(
  jobs: JobSpec[],
  builders: BuilderSpec[],
  outcome?: ConstructorParameters<typeof FakeExecutor>[2],
  pushSeconds?: (job: JobSpec) => number,
): Promise<{
  result: Awaited<ReturnType<typeof schedule>>;
  executor: FakeExecutor;
  events: SchedulerEvent[];
}> {
  const clock = new FakeClock();
  const byPath = new Map(jobs.map((j) => [j.drvPath, j]));
  const executor = new FakeExecutor(
    clock,
    (j) => byPath.get(j.drvPath)?.expectedSeconds ?? 0,
    outcome,
    pushSeconds,
  );
  const events: SchedulerEvent[] = [];
  const result = await clock.run(
    schedule({ jobs, builders, executor, clock, onEvent: (e) => events.push(e), backoffMs: 1000 }),
  );
  return { result, executor, events };
}

test('remaining path and critical path follow the longest chain', () => {
  const jobs = boardGraph();
  const remaining = remainingPath(jobs);
  assert.equal(remaining.get('config'), 10);
  assert.equal(remaining.get('kernel'), 9);
  assert.equal(remaining.get('pkg00'), 2);
  assert.deepEqual(criticalPath(jobs), ['config', 'kernel', 'modules']);
});

test('critical path first: the board graph finishes at the lower bound', async () => {
  const builders = [builder('opi01'), builder('opi02'), builder('opi03')];
  const { result, executor } = await simulate(boardGraph(), builders);
  assert.equal(result.built.size, 15);
  // Lower bound: max(critical path 10 s, total work 34 s / 6 slots) = 10 s.
  assert.equal(result.wallMs, 10_000);
  const config = executor.runs.find((r) => r.drvPath === 'config');
  assert.equal(config?.start, 0);
  // Every derivation ran exactly once.
  assert.equal(executor.runs.length, 15);
  assert.equal(new Set(executor.runs.map((r) => r.drvPath)).size, 15);
});

test('max-jobs is respected per builder', async () => {
  const jobs = Array.from({ length: 10 }, (_, i) => job(`leaf${i}`, 1));
  const builders = [builder('a', { maxJobs: 3 }), builder('b', { maxJobs: 1 })];
  const { result, executor } = await simulate(jobs, builders);
  assert.equal(result.built.size, 10);
  assert.equal(executor.peak.get('a'), 3);
  assert.equal(executor.peak.get('b'), 1);
  assert.equal(result.wallMs, 3000);
});

test('no polling: a freed slot is filled at the same instant', async () => {
  const jobs = [job('first', 2), job('second', 3), job('third', 0.5)];
  const { result, executor } = await simulate(jobs, [builder('only', { maxJobs: 1 })]);
  const starts = new Map(executor.runs.map((r) => [r.drvPath, r.start]));
  assert.equal(starts.get('second'), 0); // longest first
  assert.equal(starts.get('first'), 3000);
  assert.equal(starts.get('third'), 5000);
  assert.equal(result.wallMs, 5500);
});

test('ties go to the faster builder', async () => {
  const { executor } = await simulate(
    [job('x', 4)],
    [builder('slow', { speedFactor: 1 }), builder('fast', { speedFactor: 4 })],
  );
  assert.equal(executor.runs[0]?.builder, 'fast');
  assert.equal(executor.runs[0].end, 1000);
});

test('a dependent goes where its input was built when that builder is free', async () => {
  // Only b can take the kernel; a comes first in the list and is just as idle afterwards.
  const jobs = [job('kernel', 4, [], { requiredFeatures: ['big'] }), job('modules', 1, ['kernel'])];
  const { executor } = await simulate(jobs, [builder('a'), builder('b', { features: ['big'] })]);
  const where = new Map(executor.runs.map((r) => [r.drvPath, r.builder]));
  assert.equal(where.get('kernel'), 'b');
  assert.equal(where.get('modules'), 'b');
});

test('feature matching: required, supported and mandatory features', () => {
  const kvm = job('vm-test', 1, [], { requiredFeatures: ['kvm'] });
  const plain = job('plain', 1);
  const big = builder('big', { features: ['kvm'], mandatoryFeatures: ['big-parallel'] });
  assert.equal(canBuild(builder('none'), kvm), false);
  assert.equal(canBuild(builder('has', { features: ['kvm'] }), kvm), true);
  assert.equal(canBuild(builder('mand', { mandatoryFeatures: ['kvm'] }), kvm), true);
  assert.equal(canBuild(builder('mand', { mandatoryFeatures: ['kvm'] }), plain), false);
  assert.equal(canBuild(big, kvm), false);
  assert.equal(canBuild(builder('x86', { systems: ['x86_64-linux'] }), plain), false);
  assert.equal(canBuild(builder('zero', { maxJobs: 0 }), plain), false);
});

test('jobs go only to builders of their system, and features decide placement', async () => {
  const jobs = [
    job('arm', 1),
    job('x86', 1, [], { system: 'x86_64-linux' }),
    job('kvm', 1, [], { system: 'x86_64-linux', requiredFeatures: ['kvm'] }),
  ];
  const builders = [
    builder('opi', { systems: ['aarch64-linux'] }),
    builder('ser5', { systems: ['x86_64-linux'], features: ['kvm'] }),
  ];
  const { executor } = await simulate(jobs, builders);
  const where = new Map(executor.runs.map((r) => [r.drvPath, r.builder]));
  assert.deepEqual(Object.fromEntries(where), { arm: 'opi', x86: 'ser5', kvm: 'ser5' });
});

test('a derivation no builder can take is an error before anything runs', async () => {
  const jobs = [job('ok', 1), job('needs-kvm', 1, [], { requiredFeatures: ['kvm'] })];
  const clock = new FakeClock();
  const executor = new FakeExecutor(clock, () => 1);
  assert.throws(
    () => schedule({ jobs, builders: [builder('opi')], executor, clock }),
    (error: unknown) =>
      FirnError.is(error) &&
      error.code === 'FIRN_E_BUILD_NO_BUILDER' &&
      error.message.includes('needs-kvm needs a aarch64-linux builder with features {kvm}'),
  );
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(executor.runs.length, 0);
});

test('a failure stops its dependents; independent branches go on', async () => {
  const jobs = [
    job('bad', 1),
    job('child', 1, ['bad']),
    job('grandchild', 1, ['child']),
    job('other', 3),
    job('after-other', 1, ['other']),
  ];
  const { result, executor, events } = await simulate(jobs, [builder('a')], (j) =>
    j.drvPath === 'bad' ? { kind: 'failed', message: 'exit 1', log: 'boom' } : { kind: 'built' },
  );
  assert.deepEqual([...result.built.keys()].sort(), ['after-other', 'other']);
  assert.deepEqual([...result.failed.keys()], ['bad']);
  assert.equal(result.failed.get('bad')?.log, 'boom');
  assert.deepEqual(Object.fromEntries(result.skipped), { child: 'bad', grandchild: 'bad' });
  assert.equal(
    executor.runs.some((r) => r.drvPath === 'child'),
    false,
  );
  assert.ok(events.some((e) => e.type === 'skipped' && e.drvPath === 'grandchild'));
});

test('a lost builder: its job is rescheduled elsewhere and it backs off', async () => {
  const jobs = [job('a', 2), job('b', 2), job('c', 2, ['a'])];
  const { result, executor, events } = await simulate(
    jobs,
    [builder('dies', { speedFactor: 2 }), builder('steady')],
    (_j, b) => (b.name === 'dies' ? { kind: 'builder-lost', message: 'gone' } : { kind: 'built' }),
  );
  assert.equal(result.built.size, 3);
  for (const path of ['a', 'b', 'c']) assert.equal(result.built.get(path)?.builder, 'steady');
  assert.ok(events.some((e) => e.type === 'builder-down' && e.builder === 'dies'));
  assert.ok(events.some((e) => e.type === 'requeued'));
  // While it was down, nothing more was sent to it.
  const lost = executor.runs.filter((r) => r.builder === 'dies');
  assert.ok(lost.length >= 1 && lost.length <= 3, `runs on the dead builder: ${lost.length}`);
});

test('a job lost on every attempt fails and stops its dependents', async () => {
  const jobs = [job('a', 1), job('b', 1, ['a'])];
  const { result } = await simulate(jobs, [builder('dies')], () => ({
    kind: 'builder-lost',
    message: 'connection closed',
  }));
  assert.equal(result.failed.get('a')?.message, 'connection closed');
  assert.equal(result.skipped.get('b'), 'a');
});

test('cancelling aborts running builds and ends the schedule', async () => {
  const clock = new FakeClock();
  const controller = new AbortController();
  const aborted: string[] = [];
  const executor = {
    execute(j: JobSpec, _b: BuilderSpec, signal: AbortSignal) {
      return new Promise<{ kind: 'failed'; message: string; log: string }>((resolve) => {
        signal.addEventListener('abort', () => {
          aborted.push(j.drvPath);
          resolve({ kind: 'failed', message: 'cancelled', log: '' });
        });
      });
    },
  };
  clock.setTimeout(() => {
    controller.abort();
  }, 500);
  const result = await clock.run(
    schedule({
      jobs: [job('x', 5), job('y', 5), job('z', 1, ['x'])],
      builders: [builder('a')],
      executor,
      clock,
      signal: controller.signal,
    }),
  );
  assert.equal(result.cancelled, true);
  assert.deepEqual(aborted.sort(), ['x', 'y']);
  assert.equal(result.built.size, 0);
});

// ── pipelining: dependents start on the builder that has the inputs while they are pushed ───

function startsOf(executor: FakeExecutor): Map<string, number> {
  return new Map(executor.runs.map((r) => [r.drvPath, r.start]));
}

test('pipelining: a dependent starts on the same builder while its input is pushed', async () => {
  const jobs = [job('config', 2), job('kernel', 2, ['config']), job('modules', 2, ['kernel'])];
  const { result, executor, events } = await simulate(
    jobs,
    [builder('a', { maxJobs: 1 })],
    undefined,
    () => 1,
  );
  const starts = startsOf(executor);
  assert.equal(starts.get('kernel'), 2000, 'kernel starts when config is valid, not pushed');
  assert.equal(starts.get('modules'), 4000);
  // Three builds of 2 s and the last push: 7 s, not 9 s.
  assert.equal(result.wallMs, 7000);
  assert.equal(result.built.size, 3);
  // Done in order: nothing counts as built before its inputs are.
  const built = events.filter((e) => e.type === 'built').map((e) => e.drvPath);
  assert.deepEqual(built, ['config', 'kernel', 'modules']);
});

test('pipelining: another builder waits until the input is in the cache', async () => {
  // Only a has "big"; only b can build the dependent (its mandatory feature).
  const jobs = [
    job('kernel', 2, [], { requiredFeatures: ['big'] }),
    job('image', 1, ['kernel'], { requiredFeatures: ['img'] }),
  ];
  const { executor } = await simulate(
    jobs,
    [builder('a', { features: ['big'] }), builder('b', { mandatoryFeatures: ['img'] })],
    undefined,
    () => 1.5,
  );
  assert.equal(startsOf(executor).get('image'), 3500, 'image waits for the push of kernel');
});

test('pipelining: the slot frees when the outputs are valid, not when the push ends', async () => {
  const jobs = [job('x', 2), job('y', 1)];
  const { executor, result } = await simulate(
    jobs,
    [builder('a', { maxJobs: 1 })],
    undefined,
    () => 3,
  );
  assert.equal(startsOf(executor).get('y'), 2000);
  assert.equal(executor.peak.get('a'), 1, 'never two builds at once');
  assert.equal(result.wallMs, 6000);
});

test('pipelining: a failed push fails the input and stops what runs on top of it', async () => {
  const jobs = [job('lib', 1), job('app', 5, ['lib']), job('test', 1, ['app']), job('other', 1)];
  const { result, executor, events } = await simulate(
    jobs,
    [builder('a', { maxJobs: 2 })],
    (j) =>
      j.drvPath === 'lib'
        ? { kind: 'failed', message: 'pushing failed', log: 'HTTP 500' }
        : { kind: 'built' },
    () => 2,
  );
  assert.deepEqual([...result.failed.keys()], ['lib']);
  assert.deepEqual(Object.fromEntries(result.skipped), { app: 'lib', test: 'lib' });
  assert.deepEqual([...result.built.keys()], ['other']);
  const app = executor.runs.find((r) => r.drvPath === 'app');
  assert.equal(app?.start, 1000, 'app was pipelined on lib');
  assert.equal(app.aborted, true, 'and stopped when the push of lib failed');
  assert.equal(app.end, 3000);
  assert.ok(!events.some((e) => e.type === 'built' && e.drvPath === 'app'));
  assert.ok(!executor.runs.some((r) => r.drvPath === 'test'));
});

test('pipelining: a dependent built before its input is pushed is done only after it', async () => {
  const jobs = [job('slow-push', 1), job('quick', 1, ['slow-push'])];
  const { result, events } = await simulate(jobs, [builder('a')], undefined, (j) =>
    j.drvPath === 'slow-push' ? 5 : 0,
  );
  assert.equal(result.built.get('quick')?.endMs, 2000, 'quick itself finished at 2 s');
  const built = events.filter((e) => e.type === 'built').map((e) => e.drvPath);
  assert.deepEqual(built, ['slow-push', 'quick']);
  assert.equal(result.wallMs, 6000);
});

test('pipelining: a builder lost while pushing requeues the input and its dependent', async () => {
  const jobs = [job('lib', 1), job('app', 1, ['lib'])];
  const { result } = await simulate(
    jobs,
    [builder('dies', { speedFactor: 2 }), builder('steady')],
    (j, b) => (b.name === 'dies' ? { kind: 'builder-lost', message: 'gone' } : { kind: 'built' }),
    () => 1,
  );
  assert.equal(result.built.get('lib')?.builder, 'steady');
  assert.equal(result.built.get('app')?.builder, 'steady');
  assert.equal(result.failed.size, 0);
});
