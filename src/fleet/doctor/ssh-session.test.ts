import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFleet, type Host } from '../inventory.ts';
import { openSession, shellQuote, sshFailure } from './ssh-session.ts';

const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGC2IOBs+7L49MOh1KT4azAJNFfn1kFr3qjPonJVttom';

function host(extra = ''): Host {
  const fleet = parseFleet(
    `[defaults]\nssh-key = "~/.ssh/id_nix_builder"\n[hosts.opi01]\naddress = "opi01.lan"\n${extra}\n`,
    '/fleet/firn.toml',
  );
  const found = fleet.hosts[0];
  assert.ok(found !== undefined);
  return found;
}

const failure = (stderr: string, options: { timedOut?: boolean; pinned?: boolean } = {}) =>
  sshFailure({
    stderr,
    timedOut: options.timedOut ?? false,
    code: 255,
    host: host(options.pinned === true ? `host-key = "${HOST_KEY}"` : ''),
    timeoutMs: 4500,
  });

test('ssh: a timeout (ssh said so, or the deadline struck) is "no answer"', () => {
  for (const result of [
    failure('ssh: connect to host opi01.lan port 22: Connection timed out\n'),
    failure('', { timedOut: true }),
  ]) {
    assert.equal(result.id, 'ssh');
    assert.equal(result.ok, false);
    assert.equal(result.detail, 'nix-builder@opi01.lan: no answer within 4.5 s');
    assert.match(
      result.hint ?? '',
      /^is opi01 up and on the network\? check hosts\.opi01\.address/,
    );
  }
});

test('ssh: refused, unresolvable, unroutable', () => {
  const refused = failure('ssh: connect to host opi01.lan port 22: Connection refused\n');
  assert.equal(
    refused.detail,
    'nix-builder@opi01.lan: connection refused (ssh: connect to host opi01.lan port 22: Connection refused)',
  );
  assert.match(refused.hint ?? '', /^start sshd on opi01/);
  const unknown = failure('ssh: Could not resolve hostname opi01.lan: Name or service not known\n');
  assert.match(unknown.hint ?? '', /^fix hosts\.opi01\.address/);
  const unroutable = failure('ssh: connect to host opi01.lan port 22: No route to host\n');
  assert.match(unroutable.hint ?? '', /routes to it/);
});

test('ssh: a changed host key names the pin and how to renew it', () => {
  const stderr = `@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key for firn-opi01 has changed and you have requested strict checking.
Host key verification failed.
`;
  const pinned = failure(stderr, { pinned: true });
  assert.equal(
    pinned.detail,
    'nix-builder@opi01.lan: the host presented a different key than hosts.opi01.host-key',
  );
  assert.match(pinned.hint ?? '', /ssh-keyscan -t ed25519 opi01\.lan/);
  const unpinned = failure('Host key verification failed.\n');
  assert.match(unpinned.detail, /not in known_hosts/);
  assert.match(unpinned.hint ?? '', /^pin it: host-key = /);
});

test('ssh: a refused key names the key and where to authorize it', () => {
  const result = failure('nix-builder@opi01.lan: Permission denied (publickey).\n');
  assert.equal(
    result.detail,
    'nix-builder@opi01.lan: the host refused ~/.ssh/id_nix_builder (nix-builder@opi01.lan: Permission denied (publickey).)',
  );
  assert.match(
    result.hint ?? '',
    /^authorize ~\/\.ssh\/id_nix_builder\.pub for nix-builder on opi01 \(NixOS: users\.users\.nix-builder\.openssh\.authorizedKeys\.keys/,
  );
});

test('ssh: anything else quotes ssh and suggests ssh -v', () => {
  const result = failure('kex_exchange_identification: read: Connection reset by peer\n');
  assert.equal(
    result.detail,
    'nix-builder@opi01.lan: ssh failed (kex_exchange_identification: read: Connection reset by peer)',
  );
  assert.equal(result.hint, 'run `ssh -v nix-builder@opi01.lan true` to see why');
});

test('shellQuote leaves plain words alone and single-quotes the rest', () => {
  assert.equal(
    shellQuote(['nix-store', '--add', '/tmp/a b', "it's", '$HOME', '']),
    "nix-store --add '/tmp/a b' 'it'\\''s' '$HOME' ''",
  );
});

test('ssh: a key file that is not there fails before ssh runs', async () => {
  const missing = host('ssh-key = "/nonexistent/id_ed25519"');
  const opened = await openSession(missing, { dir: '/nonexistent', slot: 0, env: {} });
  assert.equal(opened.session, undefined);
  assert.deepEqual(opened.check, {
    id: 'ssh',
    ok: false,
    detail: 'the ssh-key /nonexistent/id_ed25519 cannot be read here (ENOENT)',
    hint: 'point ssh-key (in [defaults] or hosts.opi01) at the private key that logs in to opi01',
  });
});
