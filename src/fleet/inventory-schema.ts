/**
 * The zod schema of `firn.toml`, the fleet inventory, exactly as the file is spelt (kebab-case
 * keys, TOML tables). It holds no transforms, so `z.toJSONSchema` can turn it into the editor
 * schema `docs/firn.schema.json` (scripts/fleet-schema.ts writes it; a test keeps it current).
 * Defaults that depend on other keys (a host's address is its name) and checks across hosts
 * (duplicate addresses, a builder without systems) live in inventory.ts.
 *
 * Exports: `fleetFileSchema` (the whole file), `FleetFileInput` (its parsed TOML type),
 * `ROLES`, `KNOWN_KEYS` (for "did you mean" on unknown keys), `KEY_EXAMPLES` (what to write),
 * `HOST_NAME`, `fleetJsonSchema()`.
 */
import { z } from 'zod';
import { keyNameProblem } from '../nix/signing.ts';
import { parseSshPublicKey } from './ssh-host-key.ts';
import { closest } from './suggest.ts';
import { systemProblem } from './systems.ts';

export const ROLES = ['builder', 'cache', 'target'] as const;
export type Role = (typeof ROLES)[number];

/** Host names become file names (`DIR/<host>.nix`) and Nix attribute names. */
export const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const ADDRESS = /^[^\s@/]+$/;
const SSH_USER = /^[a-z_][a-z0-9_.-]{0,31}\$?$/;
/** Features and tags go into comma-separated, whitespace-split fields (the machines file). */
const WORD = /^[^\s,#;]+$/;

/** What to write for each key: ends error messages and fills the JSON schema's examples. */
export const KEY_EXAMPLES: Readonly<Record<string, string>> = {
  cache: '[cache] url = "http://ser5.internal:5000"',
  defaults: '[defaults] ssh-user = "nix-builder"',
  hosts: '[hosts.opi01] systems = ["aarch64-linux"]',
  url: 'url = "http://ser5.internal:5000"',
  'public-key': 'public-key = "ser5-1:7L4/e7RqMTG7uxqBtLEeQjrkUNPDoRtmguMMGpVONrg="',
  'ssh-user': 'ssh-user = "nix-builder"',
  'ssh-key': 'ssh-key = "~/.ssh/id_nix_builder"',
  'ssh-config': 'ssh-config = "~/.ssh/firn_config"',
  address: 'address = "opi01.internal"',
  systems: 'systems = ["aarch64-linux"]',
  'max-jobs': 'max-jobs = 6',
  'speed-factor': 'speed-factor = 2',
  features: 'features = ["big-parallel"]',
  'mandatory-features': 'mandatory-features = []',
  roles: 'roles = ["builder", "target"]',
  'host-key': 'host-key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA…"',
  tags: 'tags = ["opi"]',
};

const word = (what: string): z.ZodString =>
  z.string().regex(WORD, `a ${what} cannot be empty or hold whitespace, ",", "#" or ";"`);

const system = z
  .string()
  .check(
    z.superRefine((value, ctx) => {
      const problem = systemProblem(value);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    }),
  )
  .meta({
    description: 'a Nix system name: CPU-OS',
    // For editors only: the loader's own check (systemProblem) also says what to write instead.
    pattern: '^[a-z0-9_]+(-v[1-4])?-[a-z]+$',
    examples: ['x86_64-linux', 'aarch64-linux', 'aarch64-darwin'],
  });

const role = z
  .enum(ROLES, {
    error: (issue) => {
      const input = issue.input;
      if (typeof input !== 'string') return `a role is one of ${ROLES.join(', ')}`;
      const match = closest(input, ROLES);
      return `${JSON.stringify(input)} is not a role; ${match === undefined ? `write one of ${ROLES.map((r) => `"${r}"`).join(', ')}` : `did you mean "${match}"?`}`;
    },
  })
  .meta({
    description:
      'builder: builds for others (gets the builder user, pushes to the cache); cache: runs firn serve; target: receives deployments',
  });

const hostKey = z
  .string()
  .check(
    z.superRefine((value, ctx) => {
      const parsed = parseSshPublicKey(value);
      if (!parsed.ok) {
        ctx.addIssue({ code: 'custom', message: `this host key ${parsed.problem}` });
      }
    }),
  )
  .meta({
    description:
      "the host's SSH public key (`ssh-ed25519 AAAA…`); when given, ssh must present exactly this key",
    pattern: '^(ssh|ecdsa|sk)-[^\\s]+ [A-Za-z0-9+/]+={0,2}( .*)?$',
  });

const publicKey = z
  .string()
  .check(
    z.superRefine((value, ctx) => {
      const problem = nixPublicKeyProblem(value);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    }),
  )
  .meta({
    description:
      "the cache's signing key, name:base64 (print it with `firn cache key` on the cache box)",
    pattern: '^[^:\\s]+:[A-Za-z0-9+/]{43}=$',
  });

const sshUser = z
  .string()
  .regex(SSH_USER, 'a user name is lower-case letters, digits, "_", "-" or "."')
  .meta({ description: 'the user firn and Nix log in as' });
const sshKey = z
  .string()
  .min(1)
  .meta({ description: 'private key file for ssh -i; ~ is the home directory' });
const sshConfig = z
  .string()
  .min(1)
  .meta({ description: 'ssh configuration file, passed to ssh as -F' });

const cacheSchema = z
  .strictObject({
    url: z
      .url({ protocol: /^https?$/, error: 'write an http:// or https:// URL' })
      .meta({ description: 'the binary cache every host substitutes from and builders push to' }),
    'public-key': publicKey.optional(),
  })
  .meta({ description: 'the firn cache of this fleet' });

const defaultsSchema = z
  .strictObject({
    'ssh-user': sshUser.default('nix-builder'),
    'ssh-key': sshKey.optional(),
    'ssh-config': sshConfig.optional(),
  })
  .meta({ description: 'settings for every host unless the host says otherwise' });

export const hostSchema = z
  .strictObject({
    address: z
      .string()
      .regex(ADDRESS, 'an address is a host name or IP address, without user@ or a path')
      .optional()
      .meta({ description: 'DNS name or IP address; default: the host name' }),
    systems: z
      .array(system)
      .default([])
      .meta({ description: 'systems it builds for; a builder needs at least one' }),
    'max-jobs': z
      .number()
      .int()
      .min(1)
      .max(1024)
      .default(1)
      .meta({ description: 'builds it runs at once' }),
    'speed-factor': z
      .number()
      .int('Nix 2.8 reads a whole number here')
      .min(1)
      .max(1000)
      .default(1)
      .meta({ description: 'how fast it is relative to the others (higher is faster)' }),
    features: z
      .array(word('feature'))
      .default([])
      .meta({ description: 'system features it supports, e.g. big-parallel, kvm' }),
    'mandatory-features': z
      .array(word('feature'))
      .default([])
      .meta({ description: 'it only runs builds that require all of these' }),
    roles: z.array(role).default(['target']).meta({ description: 'what the host does' }),
    'host-key': hostKey.optional(),
    tags: z
      .array(word('tag'))
      .default([])
      .meta({ description: 'labels to select hosts with, as @tag' }),
    'ssh-user': sshUser.optional(),
    'ssh-key': sshKey.optional(),
    'ssh-config': sshConfig.optional(),
  })
  .meta({ description: 'one machine of the fleet' });

export const fleetFileSchema = z
  .strictObject({
    cache: cacheSchema.optional(),
    defaults: defaultsSchema.default({ 'ssh-user': 'nix-builder' }),
    hosts: z
      .record(
        z
          .string()
          .regex(
            HOST_NAME,
            'a host name is letters, digits, "-" and "_" (put a DNS name in `address`)',
          ),
        hostSchema,
      )
      .default({}),
  })
  .meta({
    title: 'firn fleet inventory (firn.toml)',
    description:
      'Every host of the fleet, its roles and systems, and the cache. See docs/fleet.md.',
  });

export type FleetFileInput = z.input<typeof fleetFileSchema>;
export type FleetFile = z.output<typeof fleetFileSchema>;
export type HostEntry = z.output<typeof hostSchema>;

/** The keys each table accepts, for "did you mean" on an unknown one. */
export const KNOWN_KEYS = {
  top: Object.keys(fleetFileSchema.shape),
  cache: Object.keys(cacheSchema.shape),
  defaults: Object.keys(defaultsSchema.shape),
  host: Object.keys(hostSchema.shape),
} as const;

/** The editor schema (JSON Schema 2020-12) of firn.toml, as the input is written. */
export function fleetJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(fleetFileSchema, { io: 'input' });
}

/** A Nix public key is `name:base64(32 bytes)`. */
function nixPublicKeyProblem(text: string): string | undefined {
  const colon = text.indexOf(':');
  const example = 'write it as firn cache key prints it, e.g. "ser5-1:7L4/e7Rq…="';
  if (colon < 0) return `a public key is name:base64 and this one has no ":"; ${example}`;
  const nameProblem = keyNameProblem(text.slice(0, colon));
  if (nameProblem !== undefined) return `${nameProblem}; ${example}`;
  const base64 = text.slice(colon + 1);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64) || Buffer.from(base64, 'base64').length !== 32) {
    const secret = Buffer.from(base64, 'base64').length === 64;
    return secret
      ? 'this is a SECRET key (64 bytes): never put it in the inventory; write the public key that `firn cache key` prints'
      : `the part after ":" is not base64 of 32 bytes; ${example}`;
  }
  return undefined;
}
