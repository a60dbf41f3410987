import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FirnError } from '../errors.ts';
import {
  currentNixSystem,
  parseMachines,
  serializeMachines,
  type Machine,
  type ParseMachinesOptions,
} from './machines.ts';

const OPTIONS = { thisSystem: 'x86_64-linux' } as const;
const KEY =
  'c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUZ0bHNMRUx2UENTRWFsY1JYK2RldmpXRVZqbytWazVvNDZ6aFJ4RHVXenogcm9vdEBvcGkwMQo=';

function parse(text: string, options: ParseMachinesOptions = OPTIONS): Machine[] {
  return parseMachines(text, options);
}

function assertInvalid(text: string, line: number, message: RegExp, options = OPTIONS): void {
  assert.throws(
    () => parseMachines(text, options),
    (error: unknown) => {
      assert.ok(FirnError.is(error), String(error));
      assert.equal(error.code, 'FIRN_E_MACHINES_INVALID');
      assert.equal(error.details?.line, line);
      assert.match(error.message, new RegExp(`line ${line}:`));
      assert.match(error.message, message);
      return true;
    },
  );
}

test('all eight fields', () => {
  const text = `ssh://builder@ser5 x86_64-linux,i686-linux /root/.ssh/id_builder 12 4 kvm,big-parallel,benchmark nixos-test ${KEY}\n`;
  assert.deepEqual(parse(text), [
    {
      uri: 'ssh://builder@ser5',
      systems: ['x86_64-linux', 'i686-linux'],
      sshKey: '/root/.ssh/id_builder',
      maxJobs: 12,
      speedFactor: 4,
      supportedFeatures: ['benchmark', 'big-parallel', 'kvm'],
      mandatoryFeatures: ['nixos-test'],
      publicHostKey: KEY,
    },
  ]);
});

test('a missing field or - takes the default; the default system is the local one', () => {
  const defaults: Machine = {
    uri: 'ssh-ng://opi01',
    systems: ['x86_64-linux'],
    maxJobs: 1,
    speedFactor: 1,
    supportedFeatures: [],
    mandatoryFeatures: [],
  };
  assert.deepEqual(parse('ssh-ng://opi01'), [defaults]);
  assert.deepEqual(parse('ssh-ng://opi01 - - - - - - -'), [defaults]);
  assert.deepEqual(parse('ssh-ng://opi01 aarch64-linux - 6 2'), [
    { ...defaults, systems: ['aarch64-linux'], maxJobs: 6, speedFactor: 2 },
  ]);
  assert.deepEqual(parse('ssh-ng://opi01', {}), [{ ...defaults, systems: [currentNixSystem()] }]);
  assert.match(currentNixSystem(), /^[a-z0-9_]+-[a-z]+$/);
});

test('URIs: a bare host means ssh://host; store URIs and paths are kept', () => {
  const uris = (text: string): string[] => parse(text).map((m) => m.uri);
  assert.deepEqual(
    uris('opi01\nbuilder@opi02\nssh-ng://u@h\nlocal\ndaemon\nauto?root=/x\n/tmp/st\n?x=1'),
    [
      'ssh://opi01',
      'ssh://builder@opi02',
      'ssh-ng://u@h',
      'local',
      'daemon',
      'auto?root=/x',
      '/tmp/st',
      '?x=1',
    ],
  );
});

test('lists: systems keep their order, features are sorted and deduplicated, empty items vanish', () => {
  const [m] = parse('h i686-linux,,x86_64-linux,i686-linux - 1 1 kvm,,big-parallel,kvm b,a');
  assert.ok(m);
  assert.deepEqual(m.systems, ['i686-linux', 'x86_64-linux', 'i686-linux']);
  assert.deepEqual(m.supportedFeatures, ['big-parallel', 'kvm']);
  assert.deepEqual(m.mandatoryFeatures, ['a', 'b']);
  // A lone comma is a set field with no items: the machine builds for no system.
  assert.deepEqual(parse('h ,')[0]?.systems, []);
});

test('numbers: as boost::lexical_cast<unsigned> reads them; speed factor at least 1', () => {
  const jobs = (field: string): number | undefined => parse(`h - - ${field}`)[0]?.maxJobs;
  assert.equal(jobs('0'), 0);
  assert.equal(jobs('007'), 7);
  assert.equal(jobs('+3'), 3);
  assert.equal(jobs('4294967295'), 4294967295);
  assert.equal(parse('h - - 1 0')[0]?.speedFactor, 1);
  assert.equal(parse('h - - 1 8')[0]?.speedFactor, 8);
  for (const bad of ['-1', '1.5', 'x', '4294967296', '1e3', '0x10', '+', '١']) {
    assertInvalid(`# builders\nh - - ${bad}`, 2, /max jobs \(field 4\)/);
    assertInvalid(`h - - 1 ${bad}`, 1, /speed factor \(field 5\)/);
  }
});

test('comments, blank lines, CRLF, tabs, ; separators and extra fields', () => {
  const text = [
    '# the fleet',
    '',
    '   ',
    'ssh://ser5\tx86_64-linux  -  12 4 # fast box',
    'ssh://opi01 aarch64-linux - 6 2; ssh://opi02 aarch64-linux - 6 2\r',
    'opi03#no space before the comment',
    'a # a comment ends at ; b',
    'ssh://x - - 1 1 - - - extra fields are ignored',
  ].join('\n');
  const machines = parse(text);
  assert.deepEqual(
    machines.map((m) => [m.uri, m.systems.join(','), m.maxJobs, m.speedFactor]),
    [
      ['ssh://ser5', 'x86_64-linux', 12, 4],
      ['ssh://opi01', 'aarch64-linux', 6, 2],
      ['ssh://opi02', 'aarch64-linux', 6, 2],
      ['ssh://opi03', 'x86_64-linux', 1, 1],
      ['ssh://a', 'x86_64-linux', 1, 1],
      ['ssh://b', 'x86_64-linux', 1, 1],
      ['ssh://x', 'x86_64-linux', 1, 1],
    ],
  );
  assert.deepEqual(
    parse('ssh://a x86_64-linux;ssh://b aarch64-linux - 4').map((m) => m.uri),
    ['ssh://a', 'ssh://b'],
  );
  assert.deepEqual(parse(''), []);
  assert.deepEqual(parse('# only\n;;\n'), []);
});

test('public host key: base64 up to the first =, as Nix checks it', () => {
  assert.equal(parse(`h - - - - - - ${KEY}`)[0]?.publicHostKey, KEY);
  assert.equal(parse('h - - - - - - abc=*not-checked')[0]?.publicHostKey, 'abc=*not-checked');
  assertInvalid(
    `h1\nh2\nh3 - - - - - - ab*c`,
    3,
    /public host key \(field 8\) "ab\*c" is not base64/,
  );
});

test('a missing URI is an error naming the line and the source', () => {
  assertInvalid('ok\n- x86_64-linux', 2, /store URI/);
  assert.throws(
    () => parseMachines('\n\n- x', { ...OPTIONS, source: '/etc/nix/machines' }),
    /machines \/etc\/nix\/machines, line 3: the store URI/,
  );
});

test('@FILE includes another file; a missing one is skipped; loops are stopped', () => {
  const files: Record<string, string> = {
    '/etc/nix/more': 'ssh://b\n@/etc/nix/even-more',
    '/etc/nix/even-more': 'ssh://c',
    '/loop': '@/loop',
    '/bad': 'ok\nssh://x - - many',
  };
  const options = { ...OPTIONS, readInclude: (path: string) => files[path] };
  assert.deepEqual(
    parseMachines('ssh://a\n@ /etc/nix/more \n@/missing\nssh://d', options).map((m) => m.uri),
    ['ssh://a', 'ssh://b', 'ssh://c', 'ssh://d'],
  );
  assert.throws(() => parseMachines('@/loop', options), /nest more than 16 deep/);
  assert.throws(() => parseMachines('x\n@/bad', options), /machines \/bad, line 2: max jobs/);
  assertInvalid('ssh://a\n@/etc/nix/more', 2, /cannot include "\/etc\/nix\/more"/);
});

test('serializeMachines writes all eight fields, - for defaults, and reads back equal', () => {
  const machines = parse(
    `ssh://ser5 x86_64-linux,i686-linux /k 12 4 kvm,big-parallel - ${KEY}\nssh-ng://opi01 aarch64-linux\nh ,`,
  );
  const text = serializeMachines(machines);
  assert.equal(
    text,
    `ssh://ser5 x86_64-linux,i686-linux /k 12 4 big-parallel,kvm - ${KEY}\n` +
      'ssh-ng://opi01 aarch64-linux - 1 1 - - -\n' +
      'ssh://h , - 1 1 - - -\n',
  );
  assert.deepEqual(parse(text), machines);
  assert.equal(serializeMachines([]), '');
});

test('serializeMachines refuses what a machines file cannot hold', () => {
  const base: Machine = {
    uri: 'ssh://h',
    systems: ['x86_64-linux'],
    maxJobs: 1,
    speedFactor: 1,
    supportedFeatures: [],
    mandatoryFeatures: [],
  };
  const bad: Machine[] = [
    { ...base, uri: '' },
    { ...base, uri: '-' },
    { ...base, uri: '@/etc/x' },
    { ...base, uri: 'ssh://a b' },
    { ...base, sshKey: '/my key' },
    { ...base, sshKey: '-' },
    { ...base, systems: ['a,b'] },
    { ...base, systems: ['-'] },
    { ...base, systems: [''] },
    { ...base, supportedFeatures: ['k#vm'] },
    { ...base, mandatoryFeatures: ['a;b'] },
    { ...base, maxJobs: -1 },
    { ...base, maxJobs: 1.5 },
    { ...base, speedFactor: 2 ** 32 },
    { ...base, publicHostKey: 'not base64!' },
  ];
  for (const machine of bad) {
    assert.throws(
      () => serializeMachines([base, machine]),
      (error: unknown) =>
        FirnError.is(error) &&
        error.code === 'FIRN_E_MACHINES_INVALID' &&
        error.message.startsWith('machine 2 '),
      JSON.stringify(machine),
    );
  }
});

const TOKEN_CHARS = Array.from(
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:+@=-',
);
const tokenArb = fc
  .string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 12 })
  .filter((token) => token !== '-');
const machineArb: fc.Arbitrary<Machine> = fc
  .record(
    {
      uri: fc
        .tuple(fc.constantFrom('ssh://', 'ssh-ng://'), tokenArb)
        .map(([scheme, host]) => scheme + host),
      systems: fc.array(tokenArb, { maxLength: 3 }),
      sshKey: tokenArb,
      maxJobs: fc.integer({ min: 0, max: 0xffffffff }),
      speedFactor: fc.integer({ min: 1, max: 0xffffffff }),
      supportedFeatures: fc.uniqueArray(tokenArb, { maxLength: 3 }).map((f) => f.sort()),
      mandatoryFeatures: fc.uniqueArray(tokenArb, { maxLength: 3 }).map((f) => f.sort()),
      publicHostKey: fc.base64String({ minLength: 4, maxLength: 40 }),
    },
    {
      requiredKeys: [
        'uri',
        'systems',
        'maxJobs',
        'speedFactor',
        'supportedFeatures',
        'mandatoryFeatures',
      ],
    },
  )
  .map((machine) => ({ ...machine }));

test('property: random machines survive serialize → parse unchanged', () => {
  fc.assert(
    fc.property(fc.array(machineArb, { maxLength: 4 }), (machines) => {
      assert.deepEqual(parse(serializeMachines(machines)), machines);
    }),
    { numRuns: 300 },
  );
});

test('property: any text parses or fails with FIRN_E_MACHINES_INVALID', () => {
  const pieces = fc.constantFrom(
    'h',
    'ssh://a',
    ' ',
    '\t',
    '\n',
    ';',
    '#',
    '-',
    ',',
    '0',
    '99999999999',
    'x',
    '@',
    '=',
    '*',
  );
  fc.assert(
    fc.property(fc.array(pieces, { maxLength: 30 }), (parts) => {
      try {
        parse(parts.join(''));
      } catch (error) {
        assert.ok(FirnError.is(error) && error.code === 'FIRN_E_MACHINES_INVALID', String(error));
      }
    }),
    { numRuns: 500 },
  );
});
