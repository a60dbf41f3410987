import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stripVTControlCharacters, styleText } from 'node:util';
import { renderPlain, toJson } from './report.ts';
import { fail, pass, type DoctorReport } from './types.ts';

const REPORT: DoctorReport = {
  ok: false,
  hosts: [
    {
      name: 'opi01',
      address: '192.0.2.11',
      roles: ['builder', 'target'],
      ok: false,
      ms: 812,
      checks: [
        pass('ssh', 'nix-builder@192.0.2.11, host key pinned'),
        fail('systems', 'aarch64-linux declared but not supported', 'add extra-platforms'),
        pass('cache-reachable', 'HTTP 200'),
      ],
    },
    {
      name: 'calypso',
      address: 'calypso',
      roles: [],
      ok: true,
      ms: 300,
      checks: [pass('ssh', 'me@calypso, host key from known_hosts')],
    },
  ],
};

test('plain: a table per host, a fix under each ✗, a summary', () => {
  assert.equal(
    renderPlain(REPORT),
    `opi01  192.0.2.11  builder, target
  ✓ ssh              nix-builder@192.0.2.11, host key pinned
  ✗ systems          aarch64-linux declared but not supported
                     fix: add extra-platforms
  ✓ cache-reachable  HTTP 200

calypso  calypso  no roles
  ✓ ssh              me@calypso, host key from known_hosts

1 of 2 hosts has problems: opi01
`,
  );
});

test('plain: every host ok says so', () => {
  const host = REPORT.hosts[1];
  assert.ok(host !== undefined);
  assert.match(renderPlain({ ok: true, hosts: [host] }), /\n\nall 1 host ok\n$/);
  assert.match(renderPlain({ ok: true, hosts: [host, host] }), /\nall 2 hosts ok\n$/);
});

test('plain: the style function colours marks, names and the summary (styleText on a TTY)', () => {
  const text = renderPlain(REPORT, (format, value) =>
    styleText(format, value, { validateStream: false }),
  );
  assert.ok(text.includes(styleText('green', '✓', { validateStream: false })));
  assert.ok(text.includes(styleText('red', '✗', { validateStream: false })));
  assert.ok(text.includes(styleText('bold', 'opi01', { validateStream: false })));
  assert.ok(text.includes(styleText('yellow', 'fix:', { validateStream: false })));
  assert.notEqual(text, renderPlain(REPORT));
  assert.equal(stripVTControlCharacters(text), renderPlain(REPORT));
});

test('json: the documented shape, hint null for a ✓', () => {
  assert.deepEqual(JSON.parse(JSON.stringify(toJson(REPORT))), {
    hosts: [
      {
        name: 'opi01',
        ok: false,
        checks: [
          { id: 'ssh', ok: true, detail: 'nix-builder@192.0.2.11, host key pinned', hint: null },
          {
            id: 'systems',
            ok: false,
            detail: 'aarch64-linux declared but not supported',
            hint: 'add extra-platforms',
          },
          { id: 'cache-reachable', ok: true, detail: 'HTTP 200', hint: null },
        ],
      },
      {
        name: 'calypso',
        ok: true,
        checks: [
          { id: 'ssh', ok: true, detail: 'me@calypso, host key from known_hosts', hint: null },
        ],
      },
    ],
  });
});
