import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { FirnError } from '../errors.ts';
import {
  claim,
  complete,
  enqueue,
  ensureDir,
  fail,
  leave,
  ownerAlive,
  ownerId,
  parseEntry,
  pendingNames,
  recoverStale,
  release,
  removeTorn,
  spoolDirs,
  type SpoolEntry,
} from './spool.ts';

function spoolDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'firn-spool-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return join(dir, 'spool');
}

function entry(...outPaths: string[]): SpoolEntry {
  return { version: 1, outPaths, drvPath: '/nix/store/x.drv', queuedAt: new Date().toISOString() };
}

/** A pid no process has: above the kernel's pid_max (at most 2^22). */
const DEAD_OWNER = `${2 ** 22 + 17}-12345`;

test('enqueue writes one complete entry per call, oldest first, with no temp files left', (t) => {
  const spool = spoolDir(t);
  const names = [
    enqueue(spool, entry('/nix/store/a')),
    enqueue(spool, entry('/nix/store/b', '/nix/store/c')),
  ];
  assert.deepEqual(pendingNames(spool), names.sort());
  assert.deepEqual(readdirSync(spoolDirs(spool).pending).sort(), names);
  const [first] = pendingNames(spool);
  const parsed = parseEntry(readFileSync(join(spoolDirs(spool).pending, first ?? ''), 'utf8'));
  assert.deepEqual(parsed.outPaths, ['/nix/store/a']);
  assert.equal(parsed.drvPath, '/nix/store/x.drv');
});

test('enqueue into an unusable spool throws FIRN_E_SPOOL and leaves no temp file', (t) => {
  const spool = spoolDir(t);
  mkdirSync(spool, { recursive: true });
  writeFileSync(join(spool, 'pending'), 'not a directory');
  assert.throws(
    () => enqueue(spool, entry('/nix/store/a')),
    (error: unknown) =>
      FirnError.is(error) && error.code === 'FIRN_E_SPOOL' && error.message.includes(spool),
  );
});

test('torn temp files are never claimed, and old ones are removed', (t) => {
  const spool = spoolDir(t);
  enqueue(spool, entry('/nix/store/a'));
  const { pending } = spoolDirs(spool);
  const torn = join(pending, '.tmp-00000000000001-1-abc.json');
  writeFileSync(torn, '{"version":1,"outPa');
  const fresh = join(pending, '.tmp-00000000000002-2-def.json');
  writeFileSync(fresh, '');
  const old = (Date.now() - 2 * 3600_000) / 1000;
  utimesSync(torn, old, old);
  const claimed = claim(spool, ownerId(), 100);
  assert.equal(claimed.length, 1);
  assert.deepEqual(claimed[0]?.entry.outPaths, ['/nix/store/a']);
  assert.equal(removeTorn(spool, 3600_000), 1);
  assert.ok(!existsSync(torn));
  assert.ok(existsSync(fresh), 'a hook may still be writing a fresh temp file');
});

test('claim takes entries once; release gives them back; complete removes them', (t) => {
  const spool = spoolDir(t);
  for (const name of ['a', 'b', 'c']) enqueue(spool, entry(`/nix/store/${name}`));
  const owner = ownerId();
  const first = claim(spool, owner, 2);
  assert.equal(first.length, 2);
  assert.equal(pendingNames(spool).length, 1);
  const second = claim(spool, 'other-owner', 10);
  assert.equal(second.length, 1);
  assert.equal(claim(spool, owner, 10).length, 0);
  const [one, two] = first;
  if (one === undefined || two === undefined) throw new Error('expected two claims');
  release(spool, [one]);
  complete(spool, two);
  assert.deepEqual(pendingNames(spool), [one.name]);
  assert.ok(!existsSync(two.file));
  complete(spool, two); // twice is harmless
});

test('an unparseable entry goes to failed/ with its reason instead of blocking the spool', (t) => {
  const spool = spoolDir(t);
  enqueue(spool, entry('/nix/store/good'));
  const bad = '00000000000001-1-bad.json';
  writeFileSync(join(spoolDirs(spool).pending, bad), '{"version": 2}');
  const claimed = claim(spool, ownerId(), 10);
  assert.deepEqual(
    claimed.map((item) => item.entry.outPaths),
    [['/nix/store/good']],
  );
  const { failed } = spoolDirs(spool);
  assert.ok(existsSync(join(failed, bad)));
  assert.match(readFileSync(join(failed, `${bad}.reason`), 'utf8'), /unreadable entry/);
});

test('fail moves an entry to failed/ with the reason', (t) => {
  const spool = spoolDir(t);
  enqueue(spool, entry('/nix/store/gone'));
  const [claimed] = claim(spool, ownerId(), 1);
  if (claimed === undefined) throw new Error('expected a claim');
  fail(spool, claimed, 'no longer in the local store');
  assert.equal(pendingNames(spool).length, 0);
  assert.match(
    readFileSync(join(spoolDirs(spool).failed, `${claimed.name}.reason`), 'utf8'),
    /no longer/,
  );
});

test('claims of a drain that died come back to pending/; a live owner keeps its claims', (t) => {
  const spool = spoolDir(t);
  for (const name of ['a', 'b', 'c']) enqueue(spool, entry(`/nix/store/${name}`));
  claim(spool, DEAD_OWNER, 2);
  const self = ownerId();
  claim(spool, self, 1);
  mkdirSync(join(spoolDirs(spool).tmp, DEAD_OWNER), { recursive: true });
  writeFileSync(join(spoolDirs(spool).tmp, DEAD_OWNER, 'firn-nar-1.tmp'), 'half a NAR');
  assert.equal(pendingNames(spool).length, 0);
  assert.equal(recoverStale(spool, 'someone-else'), 2);
  assert.equal(pendingNames(spool).length, 2);
  assert.ok(!existsSync(join(spoolDirs(spool).claimed, DEAD_OWNER)));
  assert.ok(!existsSync(join(spoolDirs(spool).tmp, DEAD_OWNER)));
  assert.equal(readdirSync(join(spoolDirs(spool).claimed, self)).length, 1);
});

test('owners: this process is alive, a dead pid or a reused pid is not', () => {
  assert.ok(ownerAlive(ownerId()));
  assert.ok(!ownerAlive(DEAD_OWNER));
  assert.ok(!ownerAlive(`${process.pid}-1`), 'same pid, different start time: a reused pid');
  assert.ok(!ownerAlive('garbage'));
});

test('leave removes an empty claim directory and the temp directory', (t) => {
  const spool = spoolDir(t);
  enqueue(spool, entry('/nix/store/a'));
  const owner = ownerId();
  const [claimed] = claim(spool, owner, 1);
  mkdirSync(join(spoolDirs(spool).tmp, owner), { recursive: true });
  leave(spool, owner);
  assert.ok(existsSync(join(spoolDirs(spool).claimed, owner)), 'still holds an entry');
  if (claimed !== undefined) complete(spool, claimed);
  leave(spool, owner);
  assert.ok(!existsSync(join(spoolDirs(spool).claimed, owner)));
  assert.ok(!existsSync(join(spoolDirs(spool).tmp, owner)));
});

test('parseEntry accepts entries with a drvPath and no outPaths (Nix 2.8.0), refuses junk', () => {
  assert.deepEqual(
    parseEntry('{"version":1,"outPaths":[],"drvPath":"/nix/store/x.drv","queuedAt":"t"}').outPaths,
    [],
  );
  for (const text of [
    'null',
    '{}',
    '{"version":1,"outPaths":[]}',
    '{"version":1,"outPaths":["rel"]}',
    '{"version":1,"outPaths":[1]}',
  ]) {
    assert.throws(() => parseEntry(text), Error, text);
  }
});

test('ensureDir makes missing parents, accepts existing ones, and gives up where mkdir -p would spin', (t) => {
  const base = spoolDir(t);
  ensureDir(join(base, 'a', 'b', 'c'));
  ensureDir(join(base, 'a', 'b', 'c'));
  assert.ok(existsSync(join(base, 'a', 'b', 'c')));
  // Node's own recursive mkdirSync loops forever here (ENOENT under an existing /proc).
  assert.throws(() => {
    ensureDir('/proc/firn-no-such-dir/pending');
  }, /ENOENT/);
});
