/**
 * SSH public host keys as the inventory holds them (`ssh-ed25519 AAAA…`, the line in
 * /etc/ssh/ssh_host_ed25519_key.pub without its comment) and as Nix wants them: base64 of that
 * line in the machines file's 8th field and in NixOS's `nix.buildMachines.*.publicHostKey`.
 *
 * The checks catch what people paste instead: a fingerprint (`SHA256:…`), a known_hosts line
 * (host name first), or the already-base64 machines-file form.
 */

const KEY_TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ssh-dss',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export interface SshPublicKey {
  /** e.g. `ssh-ed25519` */
  readonly type: string;
  /** The base64 key blob. */
  readonly blob: string;
}

export type ParsedHostKey =
  | { readonly ok: true; readonly key: SshPublicKey }
  | { readonly ok: false; readonly problem: string };

const HOW_TO_GET =
  'run `ssh-keyscan -t ed25519 ADDRESS` or read /etc/ssh/ssh_host_ed25519_key.pub on the host';

/** Parses `TYPE BASE64 [comment]`; on failure says what was pasted and what to write. */
export function parseSshPublicKey(text: string): ParsedHostKey {
  const fields = text.trim().split(/\s+/);
  const [first = '', second = ''] = fields;
  if (/^(SHA256|MD5):/i.test(first)) {
    return fail(
      `is a fingerprint, not a key; write the key line ("ssh-ed25519 AAAA…"): ${HOW_TO_GET}`,
    );
  }
  if (!KEY_TYPES.has(first)) {
    if (KEY_TYPES.has(second)) {
      return fail(
        `starts with ${JSON.stringify(first)}, as a known_hosts line does; drop the host name and write "${second} ${fields[2] ?? '…'}"`,
      );
    }
    const decoded = decodedMachinesForm(first);
    if (decoded !== undefined) {
      return fail(
        `is the base64 form the machines file uses; write the decoded line instead: "${decoded}"`,
      );
    }
    return fail(`does not start with a key type such as "ssh-ed25519"; ${HOW_TO_GET}`);
  }
  if (!BASE64.test(second)) {
    return fail(`has no base64 key after "${first}"; ${HOW_TO_GET}`);
  }
  const blob = Buffer.from(second, 'base64');
  const inner = blobKeyType(blob);
  if (inner !== first) {
    return fail(
      inner === undefined
        ? `holds a damaged key (its base64 does not decode to an SSH key); copy it again: ${HOW_TO_GET}`
        : `says "${first}" but holds a "${inner}" key; write "${inner} ${second}"`,
    );
  }
  return { ok: true, key: { type: first, blob: second } };
}

function fail(problem: string): ParsedHostKey {
  return { ok: false, problem };
}

/** An SSH key blob starts with its type as an SSH string: u32 length, then the name. */
function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  return blob.subarray(4, 4 + length).toString('latin1');
}

function decodedMachinesForm(field: string): string | undefined {
  if (!BASE64.test(field)) return undefined;
  const text = Buffer.from(field, 'base64').toString('utf8').trim();
  const type = text.split(/\s+/)[0] ?? '';
  return KEY_TYPES.has(type) ? text : undefined;
}

/** `ssh-ed25519 AAAA…`, without a comment: the form the inventory keeps. */
export function formatSshPublicKey(key: SshPublicKey): string {
  return `${key.type} ${key.blob}`;
}

/** Base64 of the key line: the machines file's 8th field and NixOS's `publicHostKey`. */
export function machinesHostKey(line: string): string {
  return Buffer.from(line.trim()).toString('base64');
}
